//! What the SQLite store's test files share: scratch directories, owners and networks, and
//! files in the earlier JSON store's exact format.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hereabouts_host::bindings::{AllocateRequest, NetworkConfig, Owner, PoolRef};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::sqlite::SqliteStore;
use serde_json::{Value, json};

/// A scratch directory under the target directory (ext4 here, like a node's /var/lib), removed
/// when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sqlite-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The component's compiled cache, shared by the tests (private to this user).
pub fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sqlite-test-cache")
}

pub fn owner(id: &str) -> Owner {
    Owner {
        container_id: id.into(),
        ifname: "eth0".into(),
        podref: format!("ns/{id}"),
        cni_network: "net".into(),
    }
}

pub fn request(id: &str) -> AllocateRequest {
    AllocateRequest { owner: owner(id), requested: vec![] }
}

pub fn pool(range: &str, network_name: &str) -> PoolRef {
    let base = range.replace([':', '/'], "-");
    let name = if network_name.is_empty() { base } else { format!("{network_name}-{base}") };
    PoolRef { name, range: range.into(), network_name: network_name.into() }
}

/// The allocator component over the SQLite store of `dir`.
pub fn allocator(dir: &Path) -> Allocator {
    Allocator::with_cache(Box::new(SqliteStore::open(dir).unwrap()), Some(&cache())).unwrap()
}

/// An ipam section read by the core itself, as the plugin reads it.
pub fn network(allocator: &mut Allocator, ipam: Value) -> NetworkConfig {
    allocator.read_config(&ipam.to_string()).unwrap().network
}

pub fn range(range: &str) -> Value {
    json!({"type": "hereabouts", "range": range})
}

/// Writes a file exactly as the earlier file store did: compact JSON, a newline, spaces up to
/// a whole 4 KiB block.
pub fn write_padded(path: &Path, value: &Value) {
    let mut bytes = serde_json::to_vec(value).unwrap();
    bytes.push(b'\n');
    bytes.resize(bytes.len().div_ceil(4096) * 4096, b' ');
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A data directory of the earlier JSON store: the unnamed network's /24 (three allocations,
/// one of Whereabouts' era without podref), network blue's /25 (one) with its reservation, and
/// a killed writer's leftover temporary file, which must not be read.
pub fn write_json_store(dir: &Path) {
    write_padded(
        &dir.join("pools/10.0.0.0-24.json"),
        &json!({"version": 7, "range": "10.0.0.0/24", "network_name": "", "allocations": {
            "1": {"id": "old-1", "ifname": "eth0", "podref": "ns/old-1"},
            "2": {"id": "old-2", "ifname": "eth0", "podref": "ns/old-2"},
            "4": {"id": "old-4", "ifname": "net1"}
        }}),
    );
    write_padded(
        &dir.join("pools/.10.0.0.0-24.json.tmp"),
        &json!({"version": 6, "range": "10.0.0.0/24", "network_name": "", "allocations": {
            "9": {"id": "previous", "ifname": "eth0", "podref": "ns/previous"}
        }}),
    );
    write_padded(
        &dir.join("pools/blue-10.0.0.0-25.json"),
        &json!({"version": 2, "range": "10.0.0.0/25", "network_name": "blue", "allocations": {
            "5": {"id": "old-5", "ifname": "eth0", "podref": "ns/old-5"}
        }}),
    );
    write_padded(
        &dir.join("reservations/blue.json"),
        &json!({"version": 1, "network_name": "blue", "reservations": {
            "10.0.0.5": {"id": "old-5", "ifname": "eth0", "podref": "ns/old-5"}
        }}),
    );
    write_padded(
        &dir.join("reservations/_.json"),
        &json!({"version": 1, "network_name": "", "reservations": {}}),
    );
}
