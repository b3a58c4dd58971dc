//! Node slices (`node_slice_size`) on etcd: which node holds which slice of a network's range,
//! with no controller. A node claims a free slice itself, with one conditional transaction,
//! the first time it needs one, and keeps it until an operator releases it
//! (`hereabouts slices release`).
//!
//! The slicing is the core's: which slices there are, in which order, and the pool a node's
//! slice is (`node-slicing`, `on-node-slice`). This module only keeps the claims:
//!
//! ```text
//! {prefix}slices/{network}/head             {"range":"10.0.0.0/24","slice_size":"/28"}
//! {prefix}slices/{network}/claim/{slice}    {"node":"node-a","range":"10.0.0.0/24","slice_size":"/28"}
//! ```
//!
//! `{network}` is the slicing's pool name (`network_name`, else the CNI network's `name`: the
//! name Whereabouts gives the NodeSlicePool) and `{slice}` the slice's CIDR as the core prints
//! it, both percent-encoded. A claim records the range and slice size it was cut from, so a
//! claim made before the network was re-cut is recognised as such.
//!
//! Every claim is one `Txn`: `If` the claim key is absent and `head` is at the `mod_revision`
//! read (absent when none was), `Then` put the claim and `head`. `head` is the fence that
//! makes the claims of a network one sequence: a claimer decides with every claim in view,
//! so two claims never race past each other — one node never ends up with two slices, and a
//! slice overlapping one claimed under an older cut is never taken (the caller checks that
//! against what it read). A claim lost to another writer is read again and decided afresh.
//! Claims are rare (once per node and network), so the fence costs nothing that matters.
//!
//! A release is one `Txn` deleting the claim `If` its `mod_revision` and value are as read,
//! so an operator never frees a claim made again in between. It does not move `head`: a freed
//! slice only widens the choice of later claimers.

use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{EtcdStore, corrupt, decode, encode};
use hereabouts_host::bindings::StoreError;

/// What a claim records (the value of a claim key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub node: String,
    /// The range and slice size the slice was cut from (the core's `slicing`).
    pub range: String,
    pub slice_size: String,
}

/// One claim as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceClaim {
    /// The slice's CIDR (from the key).
    pub slice: String,
    pub record: ClaimRecord,
    /// The key and what a release compares.
    pub key: String,
    pub mod_revision: i64,
    pub value: Vec<u8>,
}

/// Every claim of a network, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct SliceClaims {
    /// `head`'s `mod_revision`; 0 when no claim was ever made.
    pub head_revision: i64,
    pub claims: Vec<SliceClaim>,
}

impl SliceClaims {
    /// The claim of `slice`, if any.
    pub fn of_slice(&self, slice: &str) -> Option<&SliceClaim> {
        self.claims.iter().find(|c| c.slice == slice)
    }

    /// The claims `node` holds.
    pub fn of_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a SliceClaim> + 'a {
        self.claims.iter().filter(move |c| c.record.node == node)
    }
}

/// How a claim attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    /// Another writer claimed something in the network (or this slice) since the read.
    Lost,
}

impl EtcdStore {
    /// `{prefix}slices/{network}/`
    fn slices_dir(&self, network: &str) -> String {
        format!("{}slices/{}/", self.config.prefix, encode(network))
    }

    /// Every claim of `network` (the slicing's pool name): one range read.
    pub fn slice_claims(&self, network: &str) -> Result<SliceClaims, StoreError> {
        let dir = self.slices_dir(network);
        let head = format!("{dir}head");
        let claim_dir = format!("{dir}claim/");
        let mut read = SliceClaims::default();
        for kv in self.read_prefix(&dir)? {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if key == head {
                read.head_revision = kv.mod_revision();
                continue;
            }
            let slice = key
                .strip_prefix(&claim_dir)
                .filter(|s| !s.is_empty() && !s.contains('/'))
                .map(decode)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{key}: not a slice claim key (expected {claim_dir}<slice>); nothing was changed"
                    ))
                })?;
            read.claims.push(parse_claim(&key, slice, &kv)?);
        }
        Ok(read)
    }

    /// Claims `slice` of `network` for `record.node`, if nothing was claimed in the network
    /// since `seen` was read (see the module doc).
    pub fn claim_slice(
        &self,
        network: &str,
        slice: &str,
        record: &ClaimRecord,
        seen: &SliceClaims,
    ) -> Result<ClaimOutcome, StoreError> {
        let dir = self.slices_dir(network);
        let head = format!("{dir}head");
        let key = format!("{dir}claim/{}", encode(slice));
        let fence = if seen.head_revision == 0 {
            Compare::create_revision(head.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(head.as_str(), CompareOp::Equal, seen.head_revision)
        };
        let head_value =
            serde_json::json!({"range": record.range, "slice_size": record.slice_size});
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0), fence])
            .and_then(vec![
                TxnOp::put(key.as_str(), claim_json(record), None),
                TxnOp::put(head.as_str(), head_value.to_string(), None),
            ]);
        let response = self.txn(txn, &format!("claiming slice {slice} of {network}"))?;
        Ok(if response.succeeded() { ClaimOutcome::Claimed } else { ClaimOutcome::Lost })
    }

    /// Deletes `claim` if it is still exactly as read; false when it changed or is gone.
    pub fn release_slice(&self, claim: &SliceClaim) -> Result<bool, StoreError> {
        let key = claim.key.as_str();
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(key, CompareOp::Equal, claim.mod_revision),
                Compare::value(key, CompareOp::Equal, claim.value.clone()),
            ])
            .and_then(vec![TxnOp::delete(key, None)]);
        let response = self.txn(txn, &format!("releasing slice claim {key}"))?;
        Ok(response.succeeded())
    }
}

/// The bytes of a claim.
fn claim_json(record: &ClaimRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

fn parse_claim(key: &str, slice: String, kv: &KeyValue) -> Result<SliceClaim, StoreError> {
    let record: ClaimRecord = serde_json::from_slice(kv.value())
        .map_err(|e| corrupt(key, kv.value(), &format!("not a slice claim: {e}")))?;
    if record.node.is_empty() {
        return Err(corrupt(key, kv.value(), "a slice claim without a node"));
    }
    Ok(SliceClaim {
        slice,
        record,
        key: key.to_string(),
        mod_revision: kv.mod_revision(),
        value: kv.value().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_the_record_as_json() {
        let record = ClaimRecord {
            node: "node-a".into(),
            range: "10.0.0.0/24".into(),
            slice_size: "/28".into(),
        };
        let bytes = claim_json(&record);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"node":"node-a","range":"10.0.0.0/24","slice_size":"/28"}"#
        );
        assert_eq!(serde_json::from_slice::<ClaimRecord>(&bytes).unwrap(), record);
    }
}
