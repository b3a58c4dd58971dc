//! The store as Whereabouts' objects (`hereabouts store dump`), so people and scripts read
//! the node's allocations in the shape they know from the cluster.
//!
//! One Kubernetes `List` of `IPPool`s (`metadata.name`, `metadata.resourceVersion`: the
//! pool's version, `spec.range`, `spec.allocations`: offset → `{id, podref, ifname}`) and `OverlappingRangeIPReservation`s (named
//! `[network_name-]address` with `:` as `-`, `spec {containerid, podref, ifname}`), with
//! Whereabouts' serialisation (`ifname` and `containerid` left out when empty). The CNI
//! network and the core's summary have no field there and are not shown. Read in one
//! transaction: one consistent state.

use serde_json::{Map, Value, json};

use super::{SqliteStore, classify};
use hereabouts_host::bindings::StoreError;

const GROUP_VERSION: &str = "whereabouts.cni.cncf.io/v1alpha1";

impl SqliteStore {
    /// Every pool and reservation, as a `List` of Whereabouts objects.
    pub fn dump(&mut self) -> Result<Value, StoreError> {
        self.reading(|tx, path| {
            let db = |e| classify(path, e);
            let mut items = Vec::new();
            let mut pools =
                tx.prepare("SELECT name, range, version FROM pools ORDER BY name").map_err(db)?;
            let pools: Vec<(String, String, i64)> = pools
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(Iterator::collect)
                .map_err(db)?;
            let mut slots = tx
                .prepare(
                    "SELECT offset, container_id, ifname, podref FROM allocations WHERE pool = ?1",
                )
                .map_err(db)?;
            for (name, range, version) in pools {
                let allocations: Map<String, Value> = slots
                    .query_map([&name], |r| {
                        let ifname: String = r.get(2)?;
                        let mut holder =
                            json!({"id": r.get::<_, String>(1)?, "podref": r.get::<_, String>(3)?});
                        if !ifname.is_empty() {
                            holder["ifname"] = ifname.into();
                        }
                        Ok((r.get::<_, String>(0)?, holder))
                    })
                    .and_then(Iterator::collect)
                    .map_err(db)?;
                items.push(json!({
                    "apiVersion": GROUP_VERSION,
                    "kind": "IPPool",
                    "metadata": {"name": name, "resourceVersion": version.to_string()},
                    "spec": {"range": range, "allocations": allocations},
                }));
            }
            let mut reservations = tx
                .prepare(
                    "SELECT network_name, address, container_id, ifname, podref FROM reservations
                     ORDER BY network_name, address",
                )
                .map_err(db)?;
            let rows: Vec<(String, String, String, String, String)> = reservations
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .and_then(Iterator::collect)
                .map_err(db)?;
            for (network, address, container_id, ifname, podref) in rows {
                let mut spec = json!({"podref": podref});
                if !container_id.is_empty() {
                    spec["containerid"] = container_id.into();
                }
                if !ifname.is_empty() {
                    spec["ifname"] = ifname.into();
                }
                items.push(json!({
                    "apiVersion": GROUP_VERSION,
                    "kind": "OverlappingRangeIPReservation",
                    "metadata": {"name": reservation_name(&network, &address)},
                    "spec": spec,
                }));
            }
            Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
        })
    }
}

/// Whereabouts' OverlappingRangeIPReservation name: the address with `:` turned into `-`,
/// after `network_name-`.
pub fn reservation_name(network_name: &str, address: &str) -> String {
    let address = address.replace(':', "-");
    if network_name.is_empty() { address } else { format!("{network_name}-{address}") }
}
