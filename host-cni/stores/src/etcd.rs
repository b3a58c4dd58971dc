//! The etcd store: the component's `store` import over etcd's v3 API, for cluster-wide IPAM.
//!
//! Every node's plugin talks to the same etcd; consistency comes from etcd's transactions alone.
//! An ADD or DEL is one read-only transaction (`read-pool`) and one conditional transaction
//! (`commit`), and neither reads nor writes an amount of data that grows with the pool: the
//! pool's head holds the core's summary of the used space, and an index finds an owner's slots.
//! No lock is held between calls and no leader is elected, so a plugin killed at any instant
//! leaves nothing behind to clean up.
//!
//! # Layout
//!
//! Under the prefix (default `/hereabouts/`; `%` and `/` inside a name are percent-encoded, so
//! every name is exactly one key segment):
//!
//! ```text
//! {prefix}pools/{pool}/head                          {"range":"10.0.0.0/20","network_name":"","summary":"1:0-41"}
//! {prefix}pools/{pool}/spec                          {"range":"10.0.0.0/20","network_name":""}
//! {prefix}pools/{pool}/alloc/{offset}                {"id":"<container id>","ifname":"eth0","podref":"ns/pod","cni_network":"net"}
//! {prefix}pools/{pool}/owner/{container id}/{ifname}/{offset}   the holder, as in alloc
//! {prefix}pools/{pool}/pod/{podref}/{ifname}/{offset}           the holder (only when podref is not "")
//! {prefix}reservations/{network}/{address}           the holder (overlapping-range reservation)
//! {prefix}slices/{network}/head                      {"range":"10.0.0.0/24","slice_size":"/28"}
//! {prefix}slices/{network}/claim/{slice}             {"node":"node-a","range":"10.0.0.0/24","slice_size":"/28"}
//! ```
//!
//! The `slices/` keys are the node-slice claims of a network with `node_slice_size` (see
//! [`slices`]): `{network}` is `network_name`, else the CNI network's `name`, and `{slice}` the
//! slice's CIDR. A node's slice is an ordinary pool (`[network_name-]<node>-<slice>`) under
//! `pools/`; a claim says only which node allocates in which slice.
//!
//! `{pool}` is Whereabouts' IPPool name and `{offset}` its allocation key (decimal offset from
//! the range's network address); holders use Whereabouts' field names (`id`, `ifname`, `podref`)
//! plus `cni_network`, left out when empty, so a value written by the previous layout is
//! byte-for-byte the one this layout writes for the same owner. The pool's version is the
//! `mod_revision` of `head`, which every commit puts again. `spec` is the previous layout's
//! pool key, kept as a fence (see below).
//!
//! Bytes per allocation with the default prefix, a 64-character container id and a pod
//! reference: ~160 for `alloc`, ~230 for the `owner` entry, ~180 for the `pod` entry: ~570 in
//! all (host-cni/bench/etcd-results.md has the measured figures and etcd's own overhead).
//!
//! # One transaction per call
//!
//! `read-pool` is one read-only `Txn`: `If` the head exists, `Then` get the head and the two
//! index ranges of the query (its attachment, its pod interface), `Else` get the previous
//! layout's pool (below). `commit` is one `Txn`:
//!
//! - `If`: the head's `mod_revision` is the version read (absent head and `spec` for ""); each
//!   claimed `alloc` key is absent; each freed or re-owned `alloc` key holds exactly the slot as
//!   read (so a foreign value is never deleted); each reservation to create is absent.
//! - `Then`: the head with the new summary, every `alloc` and index put or delete, every
//!   reservation put, and one nested `Txn` per release: `If` the value is the releasing owner's
//!   holder `Then` delete it (release-if-owned by value compare; a nested `Txn` never fails the
//!   outer one, so a release never refuses).
//! - `Else`: the head, `spec`, the query's two index ranges, and every key a compare named, so
//!   the store answers `stale(view)`, `occupied(slot)` or `reserved(holder)` without another
//!   round trip.
//!
//! The take-over rule (a reservation held by the same attachment, or by the same non-empty
//! podref and ifname, may be taken) needs the holder's value, which a create-if-absent compare
//! cannot see: on `Else` with only such holders in the way, the commit is sent once more with a
//! compare on each of those keys' `mod_revision` as read. The same second round fixes a freed
//! slot whose stored bytes differ from ours but name the same owner. A release whose stored
//! bytes name the releasing attachment in another spelling (never written by us) is deleted
//! right after, conditioned on its `mod_revision`.
//!
//! etcd refuses a transaction with more than `--max-txn-ops` (default 128) compares, or `Then`
//! operations, or `Else` operations (counted separately), and a nested `Txn` may use only what
//! the outer one left. The core sends at most 16 pool edits and 16 reservation edits per commit,
//! so the largest commit has 1 + 16 + 16 = 33 compares (35 when it upgrades a pool), 1 + 16 × 5
//! (a re-own moves both index entries) + 16 = 97 `Then` operations (98 when it creates the pool,
//! 99 when it upgrades one), and 4 + 16 + 16 = 36 `Else` reads: always one transaction, with room left for the nested ones.
//! A change that would exceed the budget is refused as a store failure before it is sent, never
//! split: the chain of transactions that could stop half-way is gone.
//!
//! # Pools of the previous layout
//!
//! The previous layout had `spec` + `alloc/{offset}` and no head: such a pool reads as a whole
//! pool (summary none; its version is `spec:{mod_revision of spec}`) and is upgraded by its next
//! commit, which writes the head with the core's summary and the index entries of every slot,
//! and puts `spec` again. When all of that fits the budget it is one transaction. A larger pool
//! first gets its index entries in transactions of up to 120 puts, each conditioned on `spec`
//! still at the version read and on no head existing, under a marker key
//! (`{pool}/upgrade` = that version) that lets concurrent upgraders at the same version share
//! the work and clears leftovers of an upgrade interrupted at an older version; then the commit
//! itself, conditioned on `spec` and the marker, is one transaction. Until that commit the pool
//! is still of the previous layout and reads as a whole pool, so an upgrade stopped at any point
//! loses nothing and is simply done again.
//!
//! A plugin of the previous layout refuses a pool holding `head` or index keys (CNI 5,
//! "unexpected key"), so it never writes an upgraded pool; and since every commit that creates
//! a head puts `spec` too, a previous-layout write conditioned on an older `spec` fails.
//!
//! # Bounded time
//!
//! Each etcd call is wrapped in the request timeout, and opening first checks within the dial
//! timeout that some endpoint accepts connections, so a dead etcd answers
//! [`StoreError::Unavailable`] (CNI 11) promptly instead of hanging.

pub mod slices;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KeyValue, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolListing, PoolRef, PoolView, Reservation,
    ReservationEdit, Slot, StoreError, describe_store_error,
};
use hereabouts_host::config::{ConfigError, IpamConfig, Step};
use hereabouts_host::error::CniError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// etcd's default `--max-txn-ops`: the most compares, `Then` or `Else` operations of one
/// transaction (each counted on its own).
pub const MAX_TXN_OPS: usize = 128;
/// Index puts per transaction while a large pool of the previous layout is upgraded.
const INDEX_PUTS_PER_TXN: usize = 120;
/// Keys per range request when reading a whole pool (~5 MiB of response at most).
const PAGE: i64 = 8192;
/// Rounds of one commit: the first, one more for the take-over rule, and slack for a value
/// that changes in between; after them the commit answers `stale` and the core retries.
const COMMIT_ROUNDS: usize = 4;
/// gRPC's default 4 MiB is less than a page of a large pool.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
pub const DEFAULT_PREFIX: &str = "/hereabouts/";
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd keys of an ipam section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// Full URLs (`http://…` or `https://…`).
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Always ends with `/`.
    pub prefix: String,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Reads the `etcd_*` keys; an error names the key (`ipam.etcd_host: …`).
    pub fn from_ipam(ipam: &IpamConfig) -> Result<Self, ConfigError> {
        let tls = ipam.etcd_ca_cert_file.is_some() || ipam.etcd_cert_file.is_some();
        let endpoints = parse_endpoints(ipam.etcd_host.as_ref(), tls)?;
        match (&ipam.etcd_cert_file, &ipam.etcd_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::at(
                    "etcd_key_file",
                    "missing: etcd_cert_file is set, and a client certificate needs its key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::at(
                    "etcd_cert_file",
                    "missing: etcd_key_file is set, but not the client certificate it belongs to",
                ));
            }
            _ => {}
        }
        if endpoints.iter().any(|e| e.starts_with("https://")) && ipam.etcd_ca_cert_file.is_none() {
            return Err(ConfigError::at(
                "etcd_ca_cert_file",
                "an https etcd endpoint needs the CA certificate that signed etcd's",
            ));
        }
        if ipam.etcd_password.is_some() && ipam.etcd_username.is_none() {
            return Err(ConfigError::at(
                "etcd_username",
                "etcd_password is set but etcd_username is not",
            ));
        }
        let prefix = match ipam.extra.get("etcd_prefix") {
            None | Some(Value::Null) => DEFAULT_PREFIX.to_string(),
            Some(Value::String(p)) if !p.is_empty() => {
                if p.ends_with('/') {
                    p.clone()
                } else {
                    format!("{p}/")
                }
            }
            Some(other) => {
                return Err(ConfigError::at(
                    "etcd_prefix",
                    format!("expected a non-empty string, found {other}"),
                ));
            }
        };
        Ok(Self {
            endpoints,
            username: ipam.etcd_username.clone().filter(|u| !u.is_empty()),
            password: ipam.etcd_password.clone(),
            ca_cert_file: ipam
                .etcd_ca_cert_file
                .clone()
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            cert_file: ipam.etcd_cert_file.clone().filter(|f| !f.is_empty()).map(PathBuf::from),
            key_file: ipam.etcd_key_file.clone().filter(|f| !f.is_empty()).map(PathBuf::from),
            prefix,
            dial_timeout: parse_duration(
                ipam.extra.get("etcd_dial_timeout"),
                "etcd_dial_timeout",
                DEFAULT_DIAL_TIMEOUT,
            )?,
            request_timeout: parse_duration(
                ipam.extra.get("etcd_request_timeout"),
                "etcd_request_timeout",
                DEFAULT_REQUEST_TIMEOUT,
            )?,
        })
    }
}

/// `etcd_host`: one endpoint, a list, or a comma-separated string; a bare `host:port` gets
/// `https://` when TLS is configured, else `http://`.
fn parse_endpoints(value: Option<&Value>, tls: bool) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "etcd_host";
    let none = || ConfigError::at(KEY, "the etcd store needs at least one endpoint");
    let mut raw = Vec::new();
    match value {
        None | Some(Value::Null) => return Err(none()),
        Some(Value::String(s)) => raw.extend(s.split(',').map(str::to_string)),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(ConfigError::new(
                        vec![Step::key(KEY), Step::Index(i)],
                        format!("expected a string, found {item}"),
                    ));
                };
                raw.extend(s.split(',').map(str::to_string));
            }
        }
        Some(other) => {
            return Err(ConfigError::at(
                KEY,
                format!("expected a string or a list of strings, found {other}"),
            ));
        }
    }
    let mut endpoints = Vec::new();
    for endpoint in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let url = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            endpoint.to_string()
        } else if endpoint.contains("://") {
            return Err(ConfigError::at(
                KEY,
                format!("{endpoint:?}: only http:// and https:// endpoints are supported"),
            ));
        } else {
            format!("{}://{endpoint}", if tls { "https" } else { "http" })
        };
        if tls && url.starts_with("http://") {
            return Err(ConfigError::at(
                KEY,
                format!("{endpoint:?} is plain http, but TLS files are configured"),
            ));
        }
        endpoints.push(url);
    }
    if endpoints.is_empty() {
        return Err(none());
    }
    Ok(endpoints)
}

/// A duration key: seconds as a number, or a string with a unit (`500ms`, `2s`, `1m`).
fn parse_duration(
    value: Option<&Value>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let bad = |what: &dyn std::fmt::Display| {
        ConfigError::at(
            key,
            format!("{what}: expected seconds (e.g. 5) or a duration such as \"500ms\", \"5s\""),
        )
    };
    let seconds = match value {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad(n))?,
        Some(Value::String(s)) => {
            let s = s.trim();
            let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60.0)
            } else {
                (s, 1.0)
            };
            number.trim().parse::<f64>().map_err(|_| bad(&format!("{s:?}")))? * scale
        }
        Some(other) => return Err(bad(other)),
    };
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(ConfigError::at(key, format!("{seconds} s is out of bounds (0 < t ≤ 3600 s)")));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Opens the etcd store for a CNI call: config errors are CNI 7, a dead etcd CNI 11.
pub fn open(ipam: &IpamConfig) -> Result<EtcdStore, CniError> {
    let config = EtcdConfig::from_ipam(ipam)?;
    EtcdStore::connect(config).map_err(|e| match e {
        ConnectError::Config(e) => CniError::from(e),
        ConnectError::Store(e) => CniError::from(&e),
    })
}

/// Why [`EtcdStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS file cannot be read or used (names the key).
    #[error(transparent)]
    Config(ConfigError),
    #[error("{}", describe_store_error(.0))]
    Store(StoreError),
}

/// The etcd backend. Owns a current-thread tokio runtime; each call is one `block_on`.
pub struct EtcdStore {
    runtime: tokio::runtime::Runtime,
    client: Client,
    config: EtcdConfig,
    /// The last pool of the previous layout read whole: the commit that upgrades it needs
    /// every slot at exactly the version read, which this saves reading again.
    legacy: Option<LegacyPool>,
}

/// A pool of the previous layout, read whole at one version.
#[derive(Debug, Clone)]
struct LegacyPool {
    name: String,
    spec_revision: i64,
    /// The upgrade marker's value, if an upgrade was under way.
    marker: Option<Vec<u8>>,
    slots: Vec<Slot>,
}

/// The JSON of an allocation, index entry or reservation: Whereabouts' `IPAllocation` field
/// names, plus the CNI network (left out when empty, as the previous layout wrote it).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Holder {
    id: String,
    ifname: String,
    podref: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cni_network: String,
}

/// The bytes this store writes for `owner`; compares on values rely on them being canonical.
fn holder_json(owner: &Owner) -> Vec<u8> {
    serde_json::to_vec(&Holder {
        id: owner.container_id.clone(),
        ifname: owner.ifname.clone(),
        podref: owner.podref.clone(),
        cni_network: owner.cni_network.clone(),
    })
    .expect("serialisable")
}

/// The JSON of a pool's `head`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    range: String,
    network_name: String,
    summary: String,
}

/// The JSON of a pool's `spec` (the previous layout's pool key, now the fence).
#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    range: String,
    #[serde(default)]
    network_name: String,
}

/// A pool's version as the core carries it (opaque to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// No pool: "".
    Missing,
    /// A pool of the previous layout: `spec:{mod_revision of spec}`.
    Legacy(i64),
    /// The `mod_revision` of the head.
    Current(i64),
}

impl Version {
    fn parse(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Version::Missing);
        }
        let (legacy, number) = match text.strip_prefix("spec:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let revision = number.parse::<i64>().ok().filter(|r| *r > 0)?;
        Some(if legacy { Version::Legacy(revision) } else { Version::Current(revision) })
    }

    fn text(self) -> String {
        match self {
            Version::Missing => String::new(),
            Version::Legacy(r) => format!("spec:{r}"),
            Version::Current(r) => r.to_string(),
        }
    }

    fn is_legacy(self) -> bool {
        matches!(self, Version::Legacy(_))
    }

    /// The version of a pool whose head and spec read as these.
    fn of(head: Option<&KeyValue>, spec: Option<&KeyValue>) -> Self {
        match (head, spec) {
            (Some(head), _) => Version::Current(head.mod_revision()),
            (None, Some(spec)) => Version::Legacy(spec.mod_revision()),
            (None, None) => Version::Missing,
        }
    }
}

/// The keys of one pool.
struct PoolKeys {
    /// `{prefix}pools/{pool}/`
    dir: String,
}

impl PoolKeys {
    fn head(&self) -> String {
        format!("{}head", self.dir)
    }
    fn spec(&self) -> String {
        format!("{}spec", self.dir)
    }
    fn marker(&self) -> String {
        format!("{}upgrade", self.dir)
    }
    fn alloc_dir(&self) -> String {
        format!("{}alloc/", self.dir)
    }
    fn alloc(&self, offset: &str) -> String {
        format!("{}alloc/{offset}", self.dir)
    }
    fn owner_root(&self) -> String {
        format!("{}owner/", self.dir)
    }
    fn pod_root(&self) -> String {
        format!("{}pod/", self.dir)
    }
    /// Where the index entries of an attachment's slots live.
    fn owner_dir(&self, owner: &Owner) -> String {
        format!("{}owner/{}/{}/", self.dir, encode(&owner.container_id), encode(&owner.ifname))
    }
    /// Where the index entries of a pod interface's slots live; none for an unknown pod.
    fn pod_dir(&self, owner: &Owner) -> Option<String> {
        (!owner.podref.is_empty()).then(|| {
            format!("{}pod/{}/{}/", self.dir, encode(&owner.podref), encode(&owner.ifname))
        })
    }
    /// Every index key of a slot.
    fn index_keys(&self, slot: &Slot) -> impl Iterator<Item = String> + use<> {
        let owner = format!("{}{}", self.owner_dir(&slot.owner), slot.offset);
        let pod = self.pod_dir(&slot.owner).map(|dir| format!("{dir}{}", slot.offset));
        std::iter::once(owner).chain(pod)
    }
}

/// What a commit expects of one key (one compare).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Absent,
    Value(Vec<u8>),
    ModRevision(i64),
}

impl Expect {
    fn compare(&self, key: &str) -> Compare {
        match self {
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::Value(value) => Compare::value(key, CompareOp::Equal, value.clone()),
            Expect::ModRevision(revision) => {
                Compare::mod_revision(key, CompareOp::Equal, *revision)
            }
        }
    }
}

/// Why a commit compares a key: what its failure means.
#[derive(Debug, Clone)]
enum CheckKind {
    /// A claimed offset must be free: else `occupied`.
    Claim(String),
    /// A freed or re-owned slot must be as read: else the index and the allocation disagree.
    Holds(Slot),
    /// A reservation to make must be free or ours to take over: else `reserved`.
    Reserve(Reservation),
}

#[derive(Debug, Clone)]
struct Check {
    key: String,
    kind: CheckKind,
    expect: Expect,
}

/// One key's write in a commit (the last edit of a key wins: etcd refuses a key twice).
#[derive(Debug, Clone)]
enum Write {
    Put(Vec<u8>),
    Delete,
    /// Deletes the reservation if it holds exactly `holder` (a nested transaction).
    Release {
        holder: Vec<u8>,
        owner: Owner,
    },
}

/// A commit as etcd operations, before the pool's own compares and writes.
#[derive(Debug, Clone, Default)]
struct Plan {
    checks: Vec<Check>,
    writes: BTreeMap<String, Write>,
}

impl Plan {
    fn new(
        keys: &PoolKeys,
        reservation_key: &dyn Fn(&Reservation) -> String,
        change: &PoolChange,
    ) -> Result<Self, StoreError> {
        let mut plan = Plan::default();
        for edit in &change.edits {
            let slot = match edit {
                PoolEdit::Claim(slot) | PoolEdit::Free(slot) => slot,
                PoolEdit::Reown(reown) => &reown.slot,
            };
            if !is_canonical_offset(&slot.offset) {
                return Err(StoreError::Failed(format!(
                    "a commit names {:?}, which is not a decimal offset",
                    slot.offset
                )));
            }
            let key = keys.alloc(&slot.offset);
            match edit {
                PoolEdit::Claim(slot) => {
                    plan.checks.push(Check {
                        key,
                        kind: CheckKind::Claim(slot.offset.clone()),
                        expect: Expect::Absent,
                    });
                    plan.put_slot(keys, slot);
                }
                PoolEdit::Free(slot) => {
                    plan.checks.push(Check {
                        key: key.clone(),
                        kind: CheckKind::Holds(slot.clone()),
                        expect: Expect::Value(holder_json(&slot.owner)),
                    });
                    plan.writes.insert(key, Write::Delete);
                    for index in keys.index_keys(slot) {
                        plan.writes.insert(index, Write::Delete);
                    }
                }
                PoolEdit::Reown(reown) => {
                    plan.checks.push(Check {
                        key,
                        kind: CheckKind::Holds(reown.slot.clone()),
                        expect: Expect::Value(holder_json(&reown.slot.owner)),
                    });
                    for index in keys.index_keys(&reown.slot) {
                        plan.writes.insert(index, Write::Delete);
                    }
                    let moved = Slot { offset: reown.slot.offset.clone(), owner: reown.to.clone() };
                    plan.put_slot(keys, &moved);
                }
            }
        }
        for edit in &change.reservations {
            match edit {
                ReservationEdit::Reserve(r) => {
                    let key = reservation_key(r);
                    plan.checks.push(Check {
                        key: key.clone(),
                        kind: CheckKind::Reserve(r.clone()),
                        expect: Expect::Absent,
                    });
                    plan.writes.insert(key, Write::Put(holder_json(&r.owner)));
                }
                ReservationEdit::Release(r) => {
                    plan.writes.insert(
                        reservation_key(r),
                        Write::Release { holder: holder_json(&r.owner), owner: r.owner.clone() },
                    );
                }
            }
        }
        Ok(plan)
    }

    /// The allocation and its index entries.
    fn put_slot(&mut self, keys: &PoolKeys, slot: &Slot) {
        let value = holder_json(&slot.owner);
        self.writes.insert(keys.alloc(&slot.offset), Write::Put(value.clone()));
        for index in keys.index_keys(slot) {
            self.writes.insert(index, Write::Put(value.clone()));
        }
    }
}

/// The pool's own part of a commit: its version compares and the head (and fence) it writes.
struct PoolWrite {
    version: Version,
    compares: Vec<Compare>,
    /// Written before the edits' own writes.
    writes: Vec<(String, Write)>,
}

/// The `Else` reads of a commit, in this order, then one get per check.
const ELSE_HEAD: usize = 0;
const ELSE_SPEC: usize = 1;
const ELSE_OWNER: usize = 2;
const ELSE_POD: usize = 3;
const ELSE_CHECKS: usize = 4;

/// What a lost round of a commit means.
enum Verdict {
    Answer(CommitOutcome),
    /// A check's expectation was corrected (the take-over rule, a foreign spelling): send again.
    Retry,
    /// Nothing the reads show explains the failure (the upgrade marker changed, or a value
    /// changed back in between).
    Unexplained,
}

impl EtcdStore {
    /// Connects (lazily, as gRPC does) after checking that some endpoint accepts connections
    /// within the dial timeout; authenticates when a user is configured.
    pub fn connect(config: EtcdConfig) -> Result<Self, ConnectError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                ConnectError::Store(StoreError::Failed(format!(
                    "cannot start the etcd client runtime: {e}"
                )))
            })?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), config.request_timeout);
        if let Some(user) = &config.username {
            options = options.with_user(user.clone(), config.password.clone().unwrap_or_default());
        }
        if let Some(ca) = &config.ca_cert_file {
            // As every file a config names: no final symbolic link, a regular file, capped.
            let read = |path: &PathBuf, key: &str| {
                let limit = hereabouts_host::files::MAX_CONFIG_FILE_BYTES;
                hereabouts_host::files::read_capped(key, &path.to_string_lossy(), limit).map_err(
                    |e| {
                        let message = e.to_string();
                        let message = message.strip_prefix(&format!("{key}: ")).unwrap_or(&message);
                        ConnectError::Config(ConfigError::at(key, message.to_string()))
                    },
                )
            };
            let mut tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(ca, "etcd_ca_cert_file")?));
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "etcd_cert_file")?,
                    read(key, "etcd_key_file")?,
                ));
            }
            options = options.with_tls(tls);
        }
        let endpoints = config.endpoints.clone();
        let budget = config.dial_timeout + config.request_timeout;
        let client = runtime.block_on(async {
            let alive = probe_endpoints(&endpoints, config.dial_timeout).await?;
            match tokio::time::timeout(budget, Client::connect(&alive, Some(options))).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(classify(&e, &endpoints, "connecting")),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "etcd at {} did not answer within {:?}",
                    endpoints.join(", "),
                    budget
                ))),
            }
        });
        let client = client.map_err(ConnectError::Store)?;
        Ok(Self { runtime, client, config, legacy: None })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Deletes `reservation` if its key still names the same holder (reconcile frees one that
    /// no allocation backs): a read, then a delete conditioned on the `mod_revision` read.
    /// False when it is gone or held by someone else now.
    pub fn delete_reservation_if_unchanged(
        &self,
        reservation: &Reservation,
    ) -> Result<bool, StoreError> {
        let key = self.reservation_key(reservation);
        let what = format!("deleting reservation {key}");
        let mut kv = self.client.kv_client();
        let response = self
            .call_typed(kv.get(key.as_str(), None))
            .map_err(|failure| self.describe(&failure, &what))?;
        let Some(current) = response.kvs().first() else { return Ok(false) };
        let holder = parse_holder(&key, current.value())?;
        let wanted = &reservation.owner;
        if holder.container_id != wanted.container_id
            || holder.ifname != wanted.ifname
            || holder.podref != wanted.podref
        {
            return Ok(false);
        }
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                current.mod_revision(),
            )])
            .and_then(vec![TxnOp::delete(key.as_str(), None)]);
        Ok(self.txn(txn, &what)?.succeeded())
    }

    fn pool_keys(&self, pool: &PoolRef) -> PoolKeys {
        PoolKeys { dir: format!("{}pools/{}/", self.config.prefix, encode(&pool.name)) }
    }

    fn reservation_dir(&self, network_name: &str) -> String {
        format!("{}reservations/{}/", self.config.prefix, encode(network_name))
    }

    fn reservation_key(&self, reservation: &Reservation) -> String {
        format!(
            "{}{}",
            self.reservation_dir(&reservation.network_name),
            encode(&reservation.address)
        )
    }

    /// Runs one etcd call within the request timeout, keeping the client's typed error.
    fn call_typed<T, F>(&self, fut: F) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.config.request_timeout;
        // The timer must be made inside the runtime, hence the async block.
        match self.runtime.block_on(async { tokio::time::timeout(timeout, fut).await }) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Failure::Etcd(e)),
            Err(_) => Err(Failure::Timeout(timeout)),
        }
    }

    fn describe(&self, failure: &Failure, what: &str) -> StoreError {
        match failure {
            Failure::Etcd(e) => classify(e, &self.config.endpoints, what),
            Failure::Timeout(timeout) => StoreError::Unavailable(format!(
                "{what}: etcd at {} did not answer within {timeout:?}",
                self.config.endpoints.join(", ")
            )),
        }
    }

    fn txn_typed(&self, txn: Txn) -> Result<TxnResponse, Failure> {
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        self.call_typed(async move { kv.txn(txn).await })
    }

    fn txn(&self, txn: Txn, what: &str) -> Result<TxnResponse, StoreError> {
        self.txn_typed(txn).map_err(|failure| self.describe(&failure, what))
    }

    /// The rest of a range read in pages at `revision`, after the first page `kvs`. `None`:
    /// etcd compacted that revision meanwhile (the caller reads again from the top).
    fn rest_of_range(
        &self,
        dir: &str,
        mut kvs: Vec<KeyValue>,
        mut more: bool,
        revision: i64,
    ) -> Result<Option<Vec<KeyValue>>, StoreError> {
        let end = prefix_end(dir.as_bytes());
        while more {
            let Some(last) = kvs.last() else { break };
            let mut start = last.key().to_vec();
            start.push(0);
            let options =
                GetOptions::new().with_range(end.clone()).with_limit(PAGE).with_revision(revision);
            let mut kv = self.client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
            let mut response = match self.call_typed(kv.get(start, Some(options))) {
                Ok(response) => response,
                Err(failure) if failure.is_compaction() => return Ok(None),
                Err(failure) => return Err(self.describe(&failure, &format!("reading {dir}"))),
            };
            more = response.more();
            kvs.extend(response.take_kvs());
        }
        Ok(Some(kvs))
    }

    /// Every key under `dir` at one revision.
    fn read_prefix(&self, dir: &str) -> Result<Vec<KeyValue>, StoreError> {
        for _ in 0..3 {
            let txn = Txn::new().and_then(vec![TxnOp::get(dir, Some(page_of_prefix()))]);
            let response = self.txn(txn, &format!("reading {dir}"))?;
            let mut gets = gets(&response);
            let (kvs, more) = gets.swap_remove(0);
            if let Some(all) = self.rest_of_range(dir, kvs, more, revision_of(&response))? {
                return Ok(all);
            }
        }
        Err(compacted_thrice(dir))
    }

    /// The whole pool: version, summary (none for the previous layout) and every slot, read at
    /// one revision. Remembers a pool of the previous layout for the commit that upgrades it.
    fn read_whole(
        &mut self,
        pool: &PoolRef,
        keys: &PoolKeys,
    ) -> Result<(Version, Option<String>, Vec<Slot>), StoreError> {
        let dir = keys.alloc_dir();
        for _ in 0..3 {
            let txn = Txn::new().and_then(vec![
                TxnOp::get(keys.head(), None),
                TxnOp::get(keys.spec(), None),
                TxnOp::get(keys.marker(), None),
                TxnOp::get(dir.as_str(), Some(page_of_prefix())),
            ]);
            let response = self.txn(txn, &format!("reading pool {}", keys.dir))?;
            let mut gets = gets(&response);
            let (page, more) = gets.pop().expect("four reads");
            let Some(kvs) = self.rest_of_range(&dir, page, more, revision_of(&response))? else {
                continue;
            };
            let head = gets[0].0.first();
            let spec = gets[1].0.first();
            let marker = gets[2].0.first();
            return self.whole_pool(pool, keys, head, spec, marker, &kvs);
        }
        Err(compacted_thrice(&dir))
    }

    /// A whole pool from what was read of it.
    fn whole_pool(
        &mut self,
        pool: &PoolRef,
        keys: &PoolKeys,
        head: Option<&KeyValue>,
        spec: Option<&KeyValue>,
        marker: Option<&KeyValue>,
        kvs: &[KeyValue],
    ) -> Result<(Version, Option<String>, Vec<Slot>), StoreError> {
        let dir = keys.alloc_dir();
        let mut slots = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key());
            let offset = std::str::from_utf8(&kv.key()[dir.len()..])
                .ok()
                .filter(|o| is_canonical_offset(o))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{key}: not an allocation key (the offset must be a decimal number); nothing was changed"
                    ))
                })?;
            let owner = parse_allocation(&key, kv.value())?;
            slots.push(Slot { offset: offset.to_string(), owner });
        }
        let summary = match head {
            Some(head) => Some(parse_head(pool, head)?.summary),
            None => None,
        };
        if let Some(spec) = spec {
            check_spec(pool, spec)?;
        }
        let version = Version::of(head, spec);
        match version {
            Version::Missing if !slots.is_empty() => {
                return Err(StoreError::Corrupt(format!(
                    "{}head and {}spec: missing, yet the pool holds {} allocations; nothing was changed",
                    keys.dir,
                    keys.dir,
                    slots.len()
                )));
            }
            Version::Legacy(spec_revision) => {
                self.legacy = Some(LegacyPool {
                    name: pool.name.clone(),
                    spec_revision,
                    marker: marker.map(|m| m.value().to_vec()),
                    slots: slots.clone(),
                });
            }
            _ => {}
        }
        Ok((version, summary, slots))
    }

    /// The view of a pool with a head: the query's slots, from the index.
    fn index_view(
        &self,
        pool: &PoolRef,
        keys: &PoolKeys,
        query: &Owner,
        head: &KeyValue,
        by_owner: &[KeyValue],
        by_pod: &[KeyValue],
    ) -> Result<PoolView, StoreError> {
        let summary = parse_head(pool, head)?.summary;
        let mut slots: BTreeMap<String, Owner> = BTreeMap::new();
        let owner_dir = keys.owner_dir(query);
        for kv in by_owner {
            let (offset, owner) = parse_index_entry(&owner_dir, kv)?;
            if !owner.same_attachment(query) {
                return Err(entry_disagrees(kv, "container id and ifname"));
            }
            slots.insert(offset, owner);
        }
        if let Some(pod_dir) = keys.pod_dir(query) {
            for kv in by_pod {
                let (offset, owner) = parse_index_entry(&pod_dir, kv)?;
                if owner.podref != query.podref || owner.ifname != query.ifname {
                    return Err(entry_disagrees(kv, "podref and ifname"));
                }
                if slots.get(&offset).is_some_and(|known| *known != owner) {
                    return Err(entry_disagrees(
                        kv,
                        "holder (the attachment's entry names another)",
                    ));
                }
                slots.insert(offset, owner);
            }
        }
        Ok(PoolView {
            version: Version::Current(head.mod_revision()).text(),
            summary: Some(summary),
            slots: slots.into_iter().map(|(offset, owner)| Slot { offset, owner }).collect(),
        })
    }

    /// The slots of a pool of the previous layout at `spec_revision`, from the last read when
    /// it was of that version; `None` when the pool is no longer at it.
    fn legacy_slots(
        &mut self,
        pool: &PoolRef,
        keys: &PoolKeys,
        spec_revision: i64,
    ) -> Result<Option<LegacyPool>, StoreError> {
        if let Some(known) = &self.legacy
            && known.name == pool.name
            && known.spec_revision == spec_revision
        {
            return Ok(Some(known.clone()));
        }
        let (version, _, _) = self.read_whole(pool, keys)?;
        Ok(match (version, &self.legacy) {
            (Version::Legacy(r), Some(known)) if r == spec_revision && known.name == pool.name => {
                Some(known.clone())
            }
            _ => None,
        })
    }

    /// Sends a commit's transaction, and again while the take-over rule asks for it.
    fn run_commit(
        &mut self,
        pool: &PoolRef,
        keys: &PoolKeys,
        query: &Owner,
        base: &PoolWrite,
        mut plan: Plan,
    ) -> Result<Option<CommitOutcome>, StoreError> {
        let what = format!("committing to pool {}", keys.dir);
        for _ in 0..COMMIT_ROUNDS {
            let round = commit_txn(keys, query, base, &plan)?;
            let (compares, then, otherwise) = round.counts;
            tracing::debug!(pool = %pool.name, compares, then, otherwise, "etcd commit");
            let response = self.txn(round.txn, &what)?;
            if response.succeeded() {
                self.finish_releases(&response, &round.releases)?;
                let revision = revision_of(&response);
                if base.version.is_legacy() {
                    self.legacy = None;
                }
                return Ok(Some(CommitOutcome::Committed(Version::Current(revision).text())));
            }
            match self.judge(pool, keys, query, base.version, &mut plan, &response)? {
                Verdict::Answer(outcome) => return Ok(Some(outcome)),
                Verdict::Retry => continue,
                Verdict::Unexplained => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Reads a lost round's `Else` branch: the answer, or how to correct the next round.
    fn judge(
        &mut self,
        pool: &PoolRef,
        keys: &PoolKeys,
        query: &Owner,
        version: Version,
        plan: &mut Plan,
        response: &TxnResponse,
    ) -> Result<Verdict, StoreError> {
        let gets = gets(response);
        let first = |i: usize| gets.get(i).and_then(|(kvs, _)| kvs.first());
        let head = first(ELSE_HEAD);
        let spec = first(ELSE_SPEC);
        let fresh = Version::of(head, spec);
        if fresh != version {
            let view = match (fresh, head) {
                (Version::Current(_), Some(head)) => {
                    let pods: &[KeyValue] =
                        if keys.pod_dir(query).is_some() { &gets[ELSE_POD].0 } else { &[] };
                    self.index_view(pool, keys, query, head, &gets[ELSE_OWNER].0, pods)?
                }
                _ => self.read_pool(pool, query)?,
            };
            return Ok(Verdict::Answer(CommitOutcome::Stale(view)));
        }
        let mut corrected = false;
        for (i, check) in plan.checks.iter_mut().enumerate() {
            let stored = first(ELSE_CHECKS + i);
            match (&check.kind, stored) {
                (CheckKind::Claim(_), None) => {}
                (CheckKind::Claim(offset), Some(kv)) => {
                    let owner = parse_allocation(&check.key, kv.value())?;
                    let slot = Slot { offset: offset.clone(), owner };
                    return Ok(Verdict::Answer(CommitOutcome::Occupied(slot)));
                }
                (CheckKind::Holds(slot), None) => {
                    return Err(StoreError::Corrupt(format!(
                        "{}: missing, yet the pool's index says {} holds offset {}; nothing was changed",
                        check.key, slot.owner.container_id, slot.offset
                    )));
                }
                (CheckKind::Holds(slot), Some(kv)) => {
                    let owner = parse_allocation(&check.key, kv.value())?;
                    if owner != slot.owner {
                        return Err(StoreError::Corrupt(format!(
                            "{}: held by {} ({}), yet the pool's index says {} ({}); nothing was changed",
                            check.key,
                            owner.container_id,
                            owner.ifname,
                            slot.owner.container_id,
                            slot.owner.ifname
                        )));
                    }
                    corrected |= expect(check, Expect::ModRevision(kv.mod_revision()));
                }
                (CheckKind::Reserve(_), None) => corrected |= expect(check, Expect::Absent),
                (CheckKind::Reserve(wanted), Some(kv)) => {
                    let holder = parse_holder(&check.key, kv.value())?;
                    if !may_take_over(&holder, &wanted.owner) {
                        let reservation = Reservation { owner: holder, ..wanted.clone() };
                        return Ok(Verdict::Answer(CommitOutcome::Reserved(reservation)));
                    }
                    corrected |= expect(check, Expect::ModRevision(kv.mod_revision()));
                }
            }
        }
        Ok(if corrected { Verdict::Retry } else { Verdict::Unexplained })
    }

    /// A release whose compare failed on bytes that still name the releasing attachment (a
    /// foreign spelling): deleted now, conditioned on the revision just seen.
    fn finish_releases(
        &self,
        response: &TxnResponse,
        releases: &[(usize, String, Owner)],
    ) -> Result<(), StoreError> {
        if releases.is_empty() {
            return Ok(());
        }
        let responses = response.op_responses();
        for (index, key, owner) in releases {
            let Some(TxnOpResponse::Txn(nested)) = responses.get(*index) else { continue };
            if nested.succeeded() {
                continue;
            }
            let stored =
                gets(nested).into_iter().next().and_then(|(kvs, _)| kvs.into_iter().next());
            let Some(stored) = stored else { continue };
            match parse_holder(key, stored.value()) {
                Ok(holder) if holder.same_attachment(owner) => {
                    let txn = Txn::new()
                        .when(vec![Compare::mod_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            stored.mod_revision(),
                        )])
                        .and_then(vec![TxnOp::delete(key.as_str(), None)]);
                    self.txn(txn, &format!("releasing {key}"))?;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("left alone: {}", describe_store_error(&e)),
            }
        }
        Ok(())
    }

    /// Commits to a pool of the previous layout, upgrading it (see the module doc).
    fn commit_legacy(
        &mut self,
        pool: &PoolRef,
        keys: &PoolKeys,
        query: &Owner,
        change: &PoolChange,
        spec_revision: i64,
    ) -> Result<CommitOutcome, StoreError> {
        let version = Version::Legacy(spec_revision);
        let Some(legacy) = self.legacy_slots(pool, keys, spec_revision)? else {
            return Ok(CommitOutcome::Stale(self.read_pool(pool, query)?));
        };
        let reservation_key = |r: &Reservation| self.reservation_key(r);
        let plan = Plan::new(keys, &reservation_key, change)?;
        let head = self.head_write(pool, keys, change);
        let spec = (keys.spec(), Write::Put(spec_json(pool)));
        let fence = vec![
            Compare::mod_revision(keys.spec(), CompareOp::Equal, spec_revision),
            Compare::create_revision(keys.head(), CompareOp::Equal, 0),
        ];
        // One transaction when everything fits and no earlier upgrade left entries behind.
        let entries: usize =
            legacy.slots.iter().map(|s| if s.owner.podref.is_empty() { 1 } else { 2 }).sum();
        if legacy.marker.is_none() && plan.writes.len() + entries + 2 < MAX_TXN_OPS {
            let mut compares = fence.clone();
            compares.push(Compare::create_revision(keys.marker(), CompareOp::Equal, 0));
            let mut writes: Vec<(String, Write)> = index_entries(keys, &legacy.slots)
                .into_iter()
                .map(|(key, value)| (key, Write::Put(value)))
                .collect();
            writes.push(head.clone());
            writes.push(spec.clone());
            let base = PoolWrite { version, compares, writes };
            if let Some(outcome) = self.run_commit(pool, keys, query, &base, plan.clone())? {
                return Ok(outcome);
            }
            // Another upgrader started building the index meanwhile: share its work.
        }
        let marker = spec_revision.to_string().into_bytes();
        if !self.build_index(keys, spec_revision, &marker, &legacy.slots)? {
            return Ok(CommitOutcome::Stale(self.read_pool(pool, query)?));
        }
        let mut compares = fence;
        compares.push(Compare::value(keys.marker(), CompareOp::Equal, marker));
        let writes = vec![head, spec, (keys.marker(), Write::Delete)];
        let base = PoolWrite { version, compares, writes };
        match self.run_commit(pool, keys, query, &base, plan)? {
            Some(outcome) => Ok(outcome),
            None => Ok(CommitOutcome::Stale(self.read_pool(pool, query)?)),
        }
    }

    /// Writes the index entries of a pool of the previous layout in transactions of
    /// [`INDEX_PUTS_PER_TXN`], each conditioned on the pool still being at `spec_revision`
    /// with no head, under the marker. False when the pool moved on meanwhile.
    fn build_index(
        &self,
        keys: &PoolKeys,
        spec_revision: i64,
        marker: &[u8],
        slots: &[Slot],
    ) -> Result<bool, StoreError> {
        let what = format!("indexing pool {}", keys.dir);
        let unchanged = || {
            vec![
                Compare::mod_revision(keys.spec(), CompareOp::Equal, spec_revision),
                Compare::create_revision(keys.head(), CompareOp::Equal, 0),
            ]
        };
        // Claim the marker for this version; entries of an upgrade begun at another version
        // (the pool changed since) are dropped first.
        let reset = Txn::new()
            .when(vec![Compare::value(keys.marker(), CompareOp::Equal, marker.to_vec())])
            .and_then(vec![])
            .or_else(vec![
                TxnOp::delete(keys.owner_root(), Some(DeleteOptions::new().with_prefix())),
                TxnOp::delete(keys.pod_root(), Some(DeleteOptions::new().with_prefix())),
                TxnOp::put(keys.marker(), marker.to_vec(), None),
            ]);
        let txn = Txn::new().when(unchanged()).and_then(vec![TxnOp::txn(reset)]);
        if !self.txn(txn, &what)?.succeeded() {
            return Ok(false);
        }
        for chunk in index_entries(keys, slots).chunks(INDEX_PUTS_PER_TXN) {
            let mut compares = unchanged();
            compares.push(Compare::value(keys.marker(), CompareOp::Equal, marker.to_vec()));
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(key, value)| TxnOp::put(key.as_str(), value.clone(), None))
                .collect();
            if !self.txn(Txn::new().when(compares).and_then(ops), &what)?.succeeded() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn head_write(&self, pool: &PoolRef, keys: &PoolKeys, change: &PoolChange) -> (String, Write) {
        let head = Head {
            range: pool.range.clone(),
            network_name: pool.network_name.clone(),
            summary: change.summary.clone(),
        };
        (keys.head(), Write::Put(serde_json::to_vec(&head).expect("serialisable")))
    }
}

/// The index entries of every slot: key and value.
fn index_entries(keys: &PoolKeys, slots: &[Slot]) -> Vec<(String, Vec<u8>)> {
    let mut entries = Vec::new();
    for slot in slots {
        let value = holder_json(&slot.owner);
        entries.extend(keys.index_keys(slot).map(|k| (k, value.clone())));
    }
    entries
}

/// One round of a commit as an etcd transaction.
struct CommitTxn {
    txn: Txn,
    /// Where the nested releases are among the `Then` operations, with their keys and owners.
    releases: Vec<(usize, String, Owner)>,
    /// Compares, `Then` and `Else` operations: what etcd's `--max-txn-ops` counts.
    counts: (usize, usize, usize),
}

/// The transaction of one round of a commit; refused (never split) beyond etcd's budget.
fn commit_txn(
    keys: &PoolKeys,
    query: &Owner,
    base: &PoolWrite,
    plan: &Plan,
) -> Result<CommitTxn, StoreError> {
    let mut compares = base.compares.clone();
    compares.extend(plan.checks.iter().map(|c| c.expect.compare(&c.key)));
    let mut writes: BTreeMap<&str, &Write> = BTreeMap::new();
    for (key, write) in &base.writes {
        writes.insert(key, write);
    }
    for (key, write) in &plan.writes {
        writes.insert(key, write);
    }
    let mut then = Vec::with_capacity(writes.len());
    let mut releases = Vec::new();
    for (key, write) in writes {
        then.push(match write {
            Write::Put(value) => TxnOp::put(key, value.clone(), None),
            Write::Delete => TxnOp::delete(key, None),
            Write::Release { holder, owner } => {
                releases.push((then.len(), key.to_string(), owner.clone()));
                TxnOp::txn(
                    Txn::new()
                        .when(vec![Compare::value(key, CompareOp::Equal, holder.clone())])
                        .and_then(vec![TxnOp::delete(key, None)])
                        .or_else(vec![TxnOp::get(key, None)]),
                )
            }
        });
    }
    let mut otherwise = vec![
        TxnOp::get(keys.head(), None),
        TxnOp::get(keys.spec(), None),
        TxnOp::get(keys.owner_dir(query), Some(GetOptions::new().with_prefix())),
        // A query without a podref matches no pod entry: read an empty range instead.
        match keys.pod_dir(query) {
            Some(dir) => TxnOp::get(dir, Some(GetOptions::new().with_prefix())),
            None => TxnOp::get(keys.marker(), Some(GetOptions::new().with_count_only())),
        },
    ];
    otherwise.extend(plan.checks.iter().map(|c| TxnOp::get(c.key.as_str(), None)));
    // etcd's own check: each list on its own, and nested transactions get what is left.
    let largest = compares.len().max(then.len()).max(otherwise.len());
    let budget = if releases.is_empty() { MAX_TXN_OPS } else { MAX_TXN_OPS - 1 };
    if largest > budget {
        return Err(StoreError::Failed(format!(
            "a commit to pool {} needs {} compares, {} writes and {} reads in one etcd transaction; etcd allows {MAX_TXN_OPS} each (the core sends at most 16 pool and 16 reservation edits)",
            keys.dir,
            compares.len(),
            then.len(),
            otherwise.len()
        )));
    }
    let counts = (compares.len(), then.len(), otherwise.len());
    let txn = Txn::new().when(compares).and_then(then).or_else(otherwise);
    Ok(CommitTxn { txn, releases, counts })
}

/// Sets a check's expectation; true when it changed.
fn expect(check: &mut Check, wanted: Expect) -> bool {
    if check.expect == wanted {
        return false;
    }
    check.expect = wanted;
    true
}

/// Whether a reservation held by `holder` may be taken by `owner` (see `reserve` in the WIT).
fn may_take_over(holder: &Owner, owner: &Owner) -> bool {
    holder.same_attachment(owner)
        || (!holder.podref.is_empty()
            && holder.podref == owner.podref
            && holder.ifname == owner.ifname)
}

fn spec_json(pool: &PoolRef) -> Vec<u8> {
    serde_json::to_vec(&Spec { range: pool.range.clone(), network_name: pool.network_name.clone() })
        .expect("serialisable")
}

fn page_of_prefix() -> GetOptions {
    GetOptions::new().with_prefix().with_limit(PAGE)
}

fn revision_of(response: &TxnResponse) -> i64 {
    response.header().map(|h| h.revision()).unwrap_or(0)
}

fn compacted_thrice(dir: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "reading {dir}: etcd compacted the revision being read three times"
    ))
}

/// The range reads of a transaction's response, in order: their keys and whether more follow.
fn gets(response: &TxnResponse) -> Vec<(Vec<KeyValue>, bool)> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(mut get) => {
                let more = get.more();
                Some((get.take_kvs(), more))
            }
            _ => None,
        })
        .collect()
}

impl Backend for EtcdStore {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        let keys = self.pool_keys(pool);
        let dir = keys.alloc_dir();
        for _ in 0..3 {
            let mut indexed = vec![
                TxnOp::get(keys.head(), None),
                TxnOp::get(keys.owner_dir(query), Some(GetOptions::new().with_prefix())),
            ];
            if let Some(pod_dir) = keys.pod_dir(query) {
                indexed.push(TxnOp::get(pod_dir, Some(GetOptions::new().with_prefix())));
            }
            let txn = Txn::new()
                .when(vec![Compare::create_revision(keys.head(), CompareOp::Greater, 0)])
                .and_then(indexed)
                .or_else(vec![
                    TxnOp::get(keys.spec(), None),
                    TxnOp::get(keys.marker(), None),
                    TxnOp::get(dir.as_str(), Some(page_of_prefix())),
                ]);
            let response = self.txn(txn, &format!("reading pool {}", keys.dir))?;
            let mut gets = gets(&response);
            if response.succeeded() {
                let head = gets[0].0.first().ok_or_else(|| {
                    StoreError::Unavailable(format!("{}: vanished while read", keys.head()))
                })?;
                let by_pod: &[KeyValue] = gets.get(2).map(|(kvs, _)| kvs.as_slice()).unwrap_or(&[]);
                return self.index_view(pool, &keys, query, head, &gets[1].0, by_pod);
            }
            // No head: a pool of the previous layout, read whole, or no pool at all.
            let (page, more) = gets.pop().expect("three reads");
            let Some(kvs) = self.rest_of_range(&dir, page, more, revision_of(&response))? else {
                continue;
            };
            let (version, summary, slots) =
                self.whole_pool(pool, &keys, None, gets[0].0.first(), gets[1].0.first(), &kvs)?;
            return Ok(PoolView { version: version.text(), summary, slots });
        }
        Err(compacted_thrice(&dir))
    }

    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        let keys = self.pool_keys(pool);
        let (version, _, slots) = self.read_whole(pool, &keys)?;
        Ok(PoolListing { version: version.text(), slots })
    }

    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        let keys = self.pool_keys(pool);
        let version = Version::parse(&change.version).ok_or_else(|| {
            StoreError::Failed(format!(
                "pool {}: version {:?} is not one this store gave out",
                pool.name, change.version
            ))
        })?;
        let (compares, mut writes) = match version {
            Version::Legacy(spec_revision) => {
                return self.commit_legacy(pool, &keys, query, change, spec_revision);
            }
            Version::Missing => (
                vec![
                    Compare::create_revision(keys.head(), CompareOp::Equal, 0),
                    Compare::create_revision(keys.spec(), CompareOp::Equal, 0),
                ],
                // The fence: a plugin of the previous layout creating this pool meanwhile
                // (its compare is `spec` absent) fails.
                vec![(keys.spec(), Write::Put(spec_json(pool)))],
            ),
            Version::Current(revision) => {
                (vec![Compare::mod_revision(keys.head(), CompareOp::Equal, revision)], vec![])
            }
        };
        writes.push(self.head_write(pool, &keys, change));
        let base = PoolWrite { version, compares, writes };
        let reservation_key = |r: &Reservation| self.reservation_key(r);
        let plan = Plan::new(&keys, &reservation_key, change)?;
        match self.run_commit(pool, &keys, query, &base, plan)? {
            Some(outcome) => Ok(outcome),
            None => Ok(CommitOutcome::Stale(self.read_pool(pool, query)?)),
        }
    }

    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        let dir = self.reservation_dir(network_name);
        let kvs = self.read_prefix(&dir)?;
        let mut reservations = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let address = std::str::from_utf8(&kv.key()[dir.len()..])
                .ok()
                .filter(|a| !a.is_empty() && !a.contains('/'))
                .map(decode)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{key}: not a reservation key (one address after the network); nothing was changed"
                    ))
                })?;
            let owner = parse_holder(&key, kv.value())?;
            reservations.push(Reservation {
                network_name: network_name.to_string(),
                address,
                owner,
            });
        }
        Ok(reservations)
    }
}

/// The endpoints that accept a TCP connection now: fails fast when none does within the dial
/// timeout (gRPC would keep the first request pending until the request timeout), and leaves
/// out dead members, to which tonic's balancer would otherwise send some requests (a failed
/// connect is returned, not retried elsewhere). Once one endpoint answered, the others get a
/// short grace; a slow one left out only means this process does not use it.
async fn probe_endpoints(endpoints: &[String], dial: Duration) -> Result<Vec<String>, StoreError> {
    use futures_util::StreamExt;
    const GRACE: Duration = Duration::from_millis(50);
    let mut probes: futures_util::stream::FuturesUnordered<_> = endpoints
        .iter()
        .map(|url| async move {
            let authority = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
            let result =
                match tokio::time::timeout(dial, tokio::net::TcpStream::connect(authority)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("{authority}: {e}")),
                    Err(_) => Err(format!("{authority}: no connection within {dial:?}")),
                };
            (url.clone(), result)
        })
        .collect();
    let mut alive = Vec::new();
    let mut errors = Vec::new();
    let mut deadline = tokio::time::Instant::now() + dial;
    while let Ok(Some((url, result))) = tokio::time::timeout_at(deadline, probes.next()).await {
        match result {
            Ok(()) => {
                if alive.is_empty() {
                    deadline = deadline.min(tokio::time::Instant::now() + GRACE);
                }
                alive.push(url);
            }
            Err(e) => errors.push(e),
        }
    }
    if alive.is_empty() {
        if errors.is_empty() {
            errors.push(format!("no connection within {dial:?}"));
        }
        return Err(StoreError::Unavailable(format!(
            "cannot connect to any etcd endpoint ({})",
            errors.join("; ")
        )));
    }
    if !errors.is_empty() {
        tracing::debug!("etcd endpoints left out: {}", errors.join("; "));
    }
    // Keep the configured order (the balancer does not care, messages do).
    alive.sort_by_key(|url| endpoints.iter().position(|e| e == url));
    Ok(alive)
}

/// An etcd call that failed: the client's own error, or no answer in time.
enum Failure {
    Etcd(etcd_client::Error),
    Timeout(Duration),
}

impl Failure {
    /// etcd answers a read at a compacted revision with gRPC OUT_OF_RANGE.
    fn is_compaction(&self) -> bool {
        matches!(self, Failure::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.code() as i32 == grpc::OUT_OF_RANGE)
    }
}

/// gRPC status codes (tonic's `Code`, which etcd-client does not re-export).
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Sorts an etcd client error into the store's kinds, with a message for the person reading it.
fn classify(error: &etcd_client::Error, endpoints: &[String], what: &str) -> StoreError {
    // etcd-client's error has no `source`; the TLS or connection detail sits in tonic's.
    let mut text = match error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::TransportError(e) => std::error::Error::source(e),
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        _ => None,
    };
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = e.source();
    }
    let at = endpoints.join(", ");
    let lower = text.to_lowercase();
    if lower.contains("certificate")
        || lower.contains("handshake")
        || lower.contains("unknownissuer")
        || lower.contains("tls")
    {
        return StoreError::Failed(format!(
            "{what}: TLS with etcd at {at} failed (check etcd_ca_cert_file, etcd_cert_file, etcd_key_file): {text}"
        ));
    }
    if let etcd_client::Error::GRpcStatus(status) = error {
        use grpc::*;
        let msg = status.message();
        return match status.code() as i32 {
            UNAUTHENTICATED | PERMISSION_DENIED => StoreError::Failed(format!(
                "{what}: etcd at {at} refused the credentials (etcd_username/etcd_password): {msg}"
            )),
            INVALID_ARGUMENT
                if msg.contains("authentication failed") || msg.contains("user name") =>
            {
                StoreError::Failed(format!(
                    "{what}: etcd at {at} refused the credentials (etcd_username/etcd_password): {msg}"
                ))
            }
            UNAVAILABLE | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | CANCELLED
            | UNKNOWN => StoreError::Unavailable(format!("{what}: etcd at {at}: {msg}")),
            OUT_OF_RANGE => {
                StoreError::Unavailable(format!("{what}: etcd at {at}: {msg} (compacted)"))
            }
            _ => StoreError::Failed(format!("{what}: etcd at {at}: {:?}: {msg}", status.code())),
        };
    }
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            StoreError::Unavailable(format!("{what}: etcd at {at}: {text}"))
        }
        _ => StoreError::Failed(format!("{what}: etcd at {at}: {text}")),
    }
}

impl Holder {
    fn into_owner(self) -> Owner {
        Owner {
            container_id: self.id,
            ifname: self.ifname,
            podref: self.podref,
            cni_network: self.cni_network,
        }
    }
}

/// A reservation's holder.
fn parse_holder(key: &str, value: &[u8]) -> Result<Owner, StoreError> {
    let holder: Holder = serde_json::from_slice(value)
        .map_err(|e| corrupt(key, value, &format!("not a reservation: {e}")))?;
    Ok(holder.into_owner())
}

/// An allocation's holder (also an index entry's): it must name a container.
fn parse_allocation(key: &str, value: &[u8]) -> Result<Owner, StoreError> {
    let holder: Holder = serde_json::from_slice(value)
        .map_err(|e| corrupt(key, value, &format!("not an allocation: {e}")))?;
    if holder.id.is_empty() {
        return Err(corrupt(key, value, "allocation without a container id"));
    }
    Ok(holder.into_owner())
}

/// An index entry under `dir`: its offset and holder.
fn parse_index_entry(dir: &str, kv: &KeyValue) -> Result<(String, Owner), StoreError> {
    let key = String::from_utf8_lossy(kv.key());
    let offset = std::str::from_utf8(&kv.key()[dir.len()..])
        .ok()
        .filter(|o| is_canonical_offset(o))
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{key}: not an index entry (it must end in a decimal offset); nothing was changed"
            ))
        })?;
    let holder: Holder = serde_json::from_slice(kv.value())
        .map_err(|e| corrupt(&key, kv.value(), &format!("not an index entry: {e}")))?;
    if holder.id.is_empty() {
        return Err(corrupt(&key, kv.value(), "index entry without a container id"));
    }
    Ok((offset.to_string(), holder.into_owner()))
}

fn entry_disagrees(kv: &KeyValue, what: &str) -> StoreError {
    corrupt(
        &String::from_utf8_lossy(kv.key()),
        kv.value(),
        &format!("the index entry's {what} disagree with its key"),
    )
}

fn parse_head(pool: &PoolRef, kv: &KeyValue) -> Result<Head, StoreError> {
    let key = String::from_utf8_lossy(kv.key());
    let head: Head = serde_json::from_slice(kv.value())
        .map_err(|e| corrupt(&key, kv.value(), &format!("not a pool head: {e}")))?;
    if head.range != pool.range {
        return Err(StoreError::Corrupt(format!(
            "{key}: holds the pool of range {}, not {} (two ranges share the pool name {:?}); nothing was changed",
            head.range, pool.range, pool.name
        )));
    }
    Ok(head)
}

fn check_spec(pool: &PoolRef, kv: &KeyValue) -> Result<(), StoreError> {
    let key = String::from_utf8_lossy(kv.key());
    let spec: Spec = serde_json::from_slice(kv.value())
        .map_err(|e| corrupt(&key, kv.value(), &format!("not a pool spec: {e}")))?;
    if spec.range != pool.range {
        return Err(StoreError::Corrupt(format!(
            "{key}: holds the pool of range {}, not {} (two ranges share the pool name {:?}); nothing was changed",
            spec.range, pool.range, pool.name
        )));
    }
    Ok(())
}

fn corrupt(key: &str, value: &[u8], why: &str) -> StoreError {
    let shown: String = String::from_utf8_lossy(value).chars().take(80).collect();
    StoreError::Corrupt(format!(
        "{key}: {why} (value {shown:?}, {} bytes); nothing was changed",
        value.len()
    ))
}

/// Offsets as the core writes them: decimal, no sign, no leading zeros.
fn is_canonical_offset(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
}

/// Percent-encodes `%` and `/` so a name is exactly one key segment.
fn encode(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// The inverse of [`encode`] (any other `%` is kept as it is).
fn decode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("%2F") {
            out.push('/');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%25") {
            out.push('%');
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ipam(value: Value) -> IpamConfig {
        IpamConfig::from_value(&value).unwrap()
    }

    #[test]
    fn endpoints_as_string_list_or_comma_separated() {
        let one = EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "127.0.0.1:2379"}))).unwrap();
        assert_eq!(one.endpoints, vec!["http://127.0.0.1:2379"]);
        let comma =
            EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "a:1, http://b:2 ,"}))).unwrap();
        assert_eq!(comma.endpoints, vec!["http://a:1", "http://b:2"]);
        let list = EtcdConfig::from_ipam(&ipam(
            json!({"etcd_host": ["a:1", "b:2,c:3"], "etcd_ca_cert_file": "/ca"}),
        ))
        .unwrap();
        assert_eq!(list.endpoints, vec!["https://a:1", "https://b:2", "https://c:3"]);
        assert_eq!(list.prefix, "/hereabouts/");
    }

    #[test]
    fn bad_etcd_keys_name_the_key() {
        let path = |v| EtcdConfig::from_ipam(&ipam(v)).unwrap_err().path;
        let key = |k: &str| vec![Step::key(k)];
        let cases = [
            (json!({}), key("etcd_host")),
            (json!({"etcd_host": ""}), key("etcd_host")),
            (json!({"etcd_host": ["a:1", 7]}), vec![Step::key("etcd_host"), Step::Index(1)]),
            (json!({"etcd_host": "ftp://a:1"}), key("etcd_host")),
            (json!({"etcd_host": "https://a:1"}), key("etcd_ca_cert_file")),
            (json!({"etcd_host": "a:1", "etcd_cert_file": "/c"}), key("etcd_key_file")),
            (json!({"etcd_host": "a:1", "etcd_key_file": "/k"}), key("etcd_cert_file")),
            (json!({"etcd_host": "a:1", "etcd_password": "p"}), key("etcd_username")),
            (json!({"etcd_host": "a:1", "etcd_prefix": 5}), key("etcd_prefix")),
            (
                json!({"etcd_host": "a:1", "etcd_request_timeout": "soon"}),
                key("etcd_request_timeout"),
            ),
            (json!({"etcd_host": "a:1", "etcd_dial_timeout": 0}), key("etcd_dial_timeout")),
        ];
        for (value, want) in cases {
            assert_eq!(path(value.clone()), want, "{value}");
        }
        let error = EtcdConfig::from_ipam(&ipam(json!({"etcd_host": ["a:1", 7]}))).unwrap_err();
        assert_eq!(error.to_string(), "ipam.etcd_host[1]: expected a string, found 7");
    }

    #[test]
    fn timeouts_and_prefix() {
        let c =
            EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "a:1", "etcd_dial_timeout": "250ms",
            "etcd_request_timeout": 3, "etcd_prefix": "/x"})))
            .unwrap();
        assert_eq!(c.dial_timeout, Duration::from_millis(250));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.prefix, "/x/");
        let d = EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "a:1"}))).unwrap();
        assert_eq!(
            (d.dial_timeout, d.request_timeout),
            (DEFAULT_DIAL_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
        );
    }

    fn test_owner(id: &str, podref: &str) -> Owner {
        Owner {
            container_id: format!("{id:0>64}"),
            ifname: "eth0".into(),
            podref: podref.into(),
            cni_network: "net".into(),
        }
    }

    /// The largest commits the core can send, as the transactions etcd would get: under the
    /// default `--max-txn-ops` in each of its three counts, with room for the nested releases.
    #[test]
    fn the_largest_commits_fit_one_transaction() {
        let keys = PoolKeys { dir: "/hereabouts/pools/10.0.0.0-24/".into() };
        let reservation_key = |r: &Reservation| format!("/hereabouts/reservations//{}", r.address);
        let query = test_owner("q", "ns/q");
        let reservation = |i: usize, owner: &Owner| Reservation {
            network_name: String::new(),
            address: format!("10.0.0.{i}"),
            owner: owner.clone(),
        };
        // 16 moves to other pods (both index entries move) + 16 releases, completing an
        // upgrade (spec, head absent, marker compared; head, spec, marker written).
        let moves = PoolChange {
            version: "spec:7".into(),
            summary: "1:0-15".into(),
            edits: (1..=16)
                .map(|i| {
                    PoolEdit::Reown(hereabouts_host::bindings::Reown {
                        slot: Slot {
                            offset: i.to_string(),
                            owner: test_owner(&format!("a{i}"), "ns/a"),
                        },
                        to: test_owner(&format!("b{i}"), &format!("ns/b{i}")),
                    })
                })
                .collect(),
            reservations: (1..=16)
                .map(|i| {
                    ReservationEdit::Release(reservation(i, &test_owner(&format!("a{i}"), "ns/a")))
                })
                .collect(),
        };
        let upgrade = PoolWrite {
            version: Version::Legacy(7),
            compares: vec![
                Compare::mod_revision(keys.spec(), CompareOp::Equal, 7),
                Compare::create_revision(keys.head(), CompareOp::Equal, 0),
                Compare::value(keys.marker(), CompareOp::Equal, "7"),
            ],
            writes: vec![
                (keys.head(), Write::Put(b"{}".to_vec())),
                (keys.spec(), Write::Put(b"{}".to_vec())),
                (keys.marker(), Write::Delete),
            ],
        };
        let plan = Plan::new(&keys, &reservation_key, &moves).unwrap();
        let round = commit_txn(&keys, &query, &upgrade, &plan).unwrap();
        assert_eq!(round.counts, (3 + 16, 3 + 16 * 5 + 16, 4 + 16));
        assert_eq!(round.releases.len(), 16);
        // 16 claims + 16 reservations creating the pool: the most compares and Else reads.
        let claims = PoolChange {
            version: String::new(),
            summary: "1:0-15".into(),
            edits: (1..=16)
                .map(|i| PoolEdit::Claim(Slot { offset: i.to_string(), owner: query.clone() }))
                .collect(),
            reservations: (1..=16)
                .map(|i| ReservationEdit::Reserve(reservation(i, &query)))
                .collect(),
        };
        let create = PoolWrite {
            version: Version::Missing,
            compares: vec![
                Compare::create_revision(keys.head(), CompareOp::Equal, 0),
                Compare::create_revision(keys.spec(), CompareOp::Equal, 0),
            ],
            writes: vec![
                (keys.spec(), Write::Put(b"{}".to_vec())),
                (keys.head(), Write::Put(b"{}".to_vec())),
            ],
        };
        let plan = Plan::new(&keys, &reservation_key, &claims).unwrap();
        let round = commit_txn(&keys, &query, &create, &plan).unwrap();
        assert_eq!(round.counts, (2 + 32, 2 + 16 * 3 + 16, 4 + 32));
        let (compares, then, otherwise) = round.counts;
        assert!(compares.max(then).max(otherwise) < MAX_TXN_OPS);
        // Past the budget (far more edits than the core sends) the commit is refused, not split.
        let mut huge = moves.clone();
        huge.edits = huge.edits.iter().cycle().take(30).cloned().collect::<Vec<_>>();
        for (i, edit) in huge.edits.iter_mut().enumerate() {
            if let PoolEdit::Reown(r) = edit {
                r.slot.offset = (i + 1).to_string();
            }
        }
        let plan = Plan::new(&keys, &reservation_key, &huge).unwrap();
        let error = commit_txn(&keys, &query, &upgrade, &plan).err().expect("refused");
        assert!(
            matches!(&error, StoreError::Failed(m) if m.contains("etcd allows 128")),
            "{error:?}"
        );
    }

    #[test]
    fn the_last_edit_of_a_key_wins() {
        let keys = PoolKeys { dir: "/p/".into() };
        let reservation_key = |r: &Reservation| format!("/r/{}", r.address);
        let a = test_owner("a", "ns/pod");
        let a2 = test_owner("a2", "ns/pod");
        // A re-own within the pod interface: its pod entry is put, not deleted and put.
        let change = PoolChange {
            version: "3".into(),
            summary: "1:0".into(),
            edits: vec![PoolEdit::Reown(hereabouts_host::bindings::Reown {
                slot: Slot { offset: "1".into(), owner: a.clone() },
                to: a2.clone(),
            })],
            reservations: vec![],
        };
        let plan = Plan::new(&keys, &reservation_key, &change).unwrap();
        let writes: Vec<(&str, bool)> =
            plan.writes.iter().map(|(k, w)| (k.as_str(), matches!(w, Write::Put(_)))).collect();
        let old_owner = format!("/p/owner/{}/eth0/1", a.container_id);
        let new_owner = format!("/p/owner/{}/eth0/1", a2.container_id);
        let mut expected = vec![
            ("/p/alloc/1", true),
            (old_owner.as_str(), false),
            (new_owner.as_str(), true),
            ("/p/pod/ns%2Fpod/eth0/1", true),
        ];
        expected.sort();
        assert_eq!(writes, expected);
        let bad = PoolChange {
            edits: vec![PoolEdit::Claim(Slot { offset: "01".into(), owner: a })],
            ..change
        };
        assert!(Plan::new(&keys, &reservation_key, &bad).is_err());
    }

    #[test]
    fn versions_and_holders() {
        for v in [Version::Missing, Version::Legacy(5), Version::Current(12)] {
            assert_eq!(Version::parse(&v.text()), Some(v));
        }
        for bad in ["0", "-3", "spec:", "spec:x", "x", "spec:0"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        // The previous layout's bytes are ours for an owner without a CNI network.
        let owner = Owner { cni_network: String::new(), ..test_owner("c", "ns/p") };
        let json = holder_json(&owner);
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            format!(r#"{{"id":"{}","ifname":"eth0","podref":"ns/p"}}"#, owner.container_id)
        );
        assert_eq!(parse_allocation("k", &json).unwrap(), owner);
        let with = test_owner("c", "ns/p");
        assert_eq!(parse_allocation("k", &holder_json(&with)).unwrap(), with);
        assert!(parse_allocation("k", br#"{"id":"","ifname":"eth0","podref":""}"#).is_err());
        assert!(may_take_over(&with, &Owner { container_id: "new".into(), ..with.clone() }));
        let no_pod = Owner { podref: String::new(), ..with.clone() };
        assert!(!may_take_over(&no_pod, &Owner { container_id: "new".into(), ..no_pod.clone() }));
    }

    #[test]
    fn keys_and_offsets() {
        assert_eq!(encode("blue/10.0.0.0-24"), "blue%2F10.0.0.0-24");
        for name in ["", "a/b", "%2F", "100%/x%", "fd00::1"] {
            assert_eq!(decode(&encode(name)), name);
        }
        let keys = PoolKeys { dir: "/h/pools/p/".into() };
        let o = Owner { podref: "ns/pod".into(), ..test_owner("c/1", "") };
        assert_eq!(
            keys.owner_dir(&o),
            format!("/h/pools/p/owner/{}/eth0/", encode(&o.container_id))
        );
        assert_eq!(keys.pod_dir(&o).as_deref(), Some("/h/pools/p/pod/ns%2Fpod/eth0/"));
        assert_eq!(keys.pod_dir(&Owner { podref: String::new(), ..o }), None);
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert!(is_canonical_offset("0") && is_canonical_offset("65534"));
        assert!(
            !is_canonical_offset("01") && !is_canonical_offset("-1") && !is_canonical_offset("")
        );
    }
}
