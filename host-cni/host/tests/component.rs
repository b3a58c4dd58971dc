//! The real allocator component, loaded by the real runtime: its import list (no ambient
//! authority), allocation through the WIT `store` import, and what a fault inside it becomes.
//! (The shared plan vectors run through `hereabouts plan`: host-cni/tests/plan_cli.rs.)

use std::collections::BTreeSet;

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    AllocateRequest, CommitOutcome, NetworkConfig, Owner, PoolChange, PoolListing, PoolRef,
    PoolView, RangeConfig, Reservation, Slot, StoreError,
};
use hereabouts_host::error::{CniError, Code, guarded};
use hereabouts_host::memory::Memory as MemoryStore;
use hereabouts_host::runtime::{Allocator, COMPONENT, CallError, RuntimeError};

fn cache_dir() -> tempdir::Dir {
    tempdir::Dir::new()
}

/// A private cache directory per test, removed afterwards.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir()
                .join(format!("hereabouts-component-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn the_component_imports_exactly_its_contract() {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, COMPONENT).unwrap();
    let imports: BTreeSet<String> =
        component.component_type().imports(&engine).map(|(name, _)| name.to_string()).collect();
    // The store the host serves and the types it speaks in; no WASI, so no clock, randomness,
    // files, sockets, environment or stdio — not even as traps.
    let contract = BTreeSet::from([
        "hereabouts:ipam/store@0.2.0".to_string(),
        "hereabouts:ipam/types@0.2.0".to_string(),
    ]);
    assert_eq!(imports, contract, "the component's imports are not exactly its contract");
}

fn network(range: &str) -> NetworkConfig {
    NetworkConfig {
        range: Some(RangeConfig {
            range: range.into(),
            range_start: None,
            range_end: None,
            exclude: vec![],
        }),
        ip_ranges: vec![],
        gateway: None,
        network_name: String::new(),
        enable_overlapping_ranges: true,
        sticky: true,
        allocation_error: None,
        node_slice_size: None,
        node_slice: None,
    }
}

fn request(i: usize) -> AllocateRequest {
    AllocateRequest {
        owner: Owner {
            container_id: format!("ctr-{i}"),
            ifname: "eth0".into(),
            podref: format!("ns/pod-{i}"),
            cni_network: "blue".into(),
        },
        requested: vec![],
    }
}

#[test]
fn concurrent_allocators_through_the_store_import_never_share_an_address() {
    let store = MemoryStore::new();
    let config = network("10.0.0.0/24");
    let cache = cache_dir();
    // Compile once into the cache so the threads race on allocation, not on compilation.
    drop(Allocator::with_cache(Box::new(store.clone()), Some(&cache.0)).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (store, config, dir) = (store.clone(), config.clone(), cache.0.clone());
            std::thread::spawn(move || {
                let mut allocator = Allocator::with_cache(Box::new(store), Some(&dir)).unwrap();
                (0..25)
                    .map(|i| {
                        allocator.allocate(&config, &request(t * 100 + i)).unwrap()[0]
                            .address
                            .clone()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 100, "duplicates among {all:?}");
    let expected: BTreeSet<String> = (1..=100).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "not lowest-packed"
    );
    assert_eq!(store.pool("10.0.0.0-24").len(), 100);
}

#[test]
fn lost_writes_are_retried_by_the_component_and_release_frees() {
    let store = MemoryStore::new();
    let cache = cache_dir();
    let mut allocator = Allocator::with_cache(Box::new(store.clone()), Some(&cache.0)).unwrap();
    let config = network("fd00::/120");
    store.state().races_to_inject = 3;
    assert_eq!(allocator.allocate(&config, &request(1)).unwrap()[0].cidr, "fd00::1/120");
    assert_eq!(store.state().commits, 4, "three lost commits, then the one that won");
    assert_eq!(allocator.allocate(&config, &request(2)).unwrap()[0].address, "fd00::2");
    assert_eq!(allocator.leases_of(&config, &request(1).owner).unwrap()[0].address, "fd00::1");
    assert_eq!(allocator.release(&config, &request(1).owner).unwrap().len(), 1);
    assert!(allocator.release(&config, &request(1).owner).unwrap().is_empty());
    assert_eq!(allocator.allocate(&config, &request(3)).unwrap()[0].address, "fd00::1");
    assert_eq!(store.reservations().len(), 2);
}

#[test]
fn a_cached_artifact_is_reused_and_a_damaged_one_is_recompiled() {
    let cache = cache_dir();
    drop(Allocator::with_cache(Box::new(MemoryStore::new()), Some(&cache.0)).unwrap());
    let files: Vec<_> = std::fs::read_dir(&cache.0).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    std::fs::write(&files[0], b"not a compiled component").unwrap();
    let mut allocator =
        Allocator::with_cache(Box::new(MemoryStore::new()), Some(&cache.0)).unwrap();
    assert_eq!(
        allocator.allocate(&network("10.0.0.0/30"), &request(1)).unwrap()[0].address,
        "10.0.0.1"
    );
    assert!(
        std::fs::metadata(&files[0]).unwrap().len() > 1000,
        "the damaged cache entry was not replaced"
    );
}

/// A store that answers every read with an enormous pool (as a corrupt or hostile store
/// could): the component must trap at its memory cap, and the CNI layer must turn that into
/// error 102, not a crash or an exhausted node.
struct HugePoolStore;

impl Backend for HugePoolStore {
    fn read_pool(&mut self, _: &PoolRef, _: &Owner) -> Result<PoolView, StoreError> {
        let slots = (0..100_000)
            .map(|i| Slot {
                offset: (i % 250 + 1).to_string(),
                owner: Owner {
                    container_id: format!("{i:0>128}"),
                    ifname: "eth0".into(),
                    podref: String::new(),
                    cni_network: String::new(),
                },
            })
            .collect();
        Ok(PoolView { version: "1".into(), summary: None, slots })
    }
    fn list_slots(&mut self, _: &PoolRef) -> Result<PoolListing, StoreError> {
        Err(StoreError::Failed("this store is read-only".into()))
    }
    fn commit(
        &mut self,
        _: &PoolRef,
        _: &Owner,
        _: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        Err(StoreError::Failed("this store is read-only".into()))
    }
    fn list_reservations(&mut self, _: &str) -> Result<Vec<Reservation>, StoreError> {
        Ok(Vec::new())
    }
}

#[test]
fn a_trap_inside_the_component_is_an_error_not_a_crash() {
    let cache = cache_dir();
    let mut allocator =
        Allocator::with_limits(Box::new(HugePoolStore), Some(&cache.0), 8 << 20).unwrap();
    let error = allocator.allocate(&network("10.0.0.0/24"), &request(1)).unwrap_err();
    assert!(matches!(error, CallError::Runtime(RuntimeError::MemoryLimit(_))), "{error:?}");
    let cni = CniError::from(error);
    assert_eq!(cni.code, Code::Internal, "{cni:?}");
    // A plain error naming the limit, not a wasm backtrace.
    assert!(cni.msg.contains("memory limit of 8 MiB"), "{}", cni.msg);
    assert!(!cni.msg.contains("backtrace") && !cni.msg.contains('\n'), "{}", cni.msg);
    assert!(cni.details.is_empty(), "{cni:?}");
    // The default cap leaves room for such a pool: the same call then gets to the write.
    let mut roomy = Allocator::with_cache(Box::new(HugePoolStore), Some(&cache.0)).unwrap();
    let answer = roomy.allocate(&network("10.0.0.0/24"), &request(1));
    assert!(
        matches!(&answer, Err(CallError::Ipam(e)) if e.to_string().contains("read-only")),
        "{answer:?}"
    );
}

/// A backend whose storage import blows up: a host-side bug while the component is running.
struct ExplodingStore;

impl Backend for ExplodingStore {
    fn read_pool(&mut self, _: &PoolRef, _: &Owner) -> Result<PoolView, StoreError> {
        panic!("storage import exploded")
    }
    fn list_slots(&mut self, _: &PoolRef) -> Result<PoolListing, StoreError> {
        unreachable!()
    }
    fn commit(
        &mut self,
        _: &PoolRef,
        _: &Owner,
        _: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        unreachable!()
    }
    fn list_reservations(&mut self, _: &str) -> Result<Vec<Reservation>, StoreError> {
        unreachable!()
    }
}

#[test]
fn a_fault_inside_the_component_becomes_cni_error_102() {
    let cache = cache_dir();
    let mut allocator = Allocator::with_cache(Box::new(ExplodingStore), Some(&cache.0)).unwrap();
    let net = network("10.0.0.0/24");
    // The panic unwinds out of the import, through the component's frames, to the boundary
    // every CNI verb runs under; it must leave as error 102 with the cause in `details`.
    for _ in 0..2 {
        let error =
            guarded(|| allocator.allocate(&net, &request(1)).map_err(CniError::from)).unwrap_err();
        assert_eq!(error.code, Code::Internal);
        assert!(error.details.contains("storage import exploded"), "{error:?}");
        assert_eq!(error.to_json("1.0.0")["code"], 102);
    }
}

#[test]
fn traps_and_load_failures_map_to_cni_error_102() {
    for error in [
        RuntimeError::Trap("wasm trap: unreachable".into()),
        RuntimeError::Load("bad artifact".into()),
    ] {
        let cni = CniError::from(CallError::Runtime(error));
        assert_eq!(cni.code, Code::Internal, "{cni:?}");
    }
}

#[test]
fn a_cache_others_can_write_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let cache = cache_dir();
    drop(Allocator::with_cache(Box::new(MemoryStore::new()), Some(&cache.0)).unwrap());
    let file = std::fs::read_dir(&cache.0).unwrap().next().unwrap().unwrap().path();
    let compiled = std::fs::read(&file).unwrap();
    // A planted file in a world-writable directory: not loaded, not overwritten, and the
    // allocator still works (compiled in memory).
    std::fs::set_permissions(&cache.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&file, b"planted").unwrap();
    let mut allocator =
        Allocator::with_cache(Box::new(MemoryStore::new()), Some(&cache.0)).unwrap();
    assert_eq!(
        allocator.allocate(&network("10.0.0.0/30"), &request(1)).unwrap()[0].address,
        "10.0.0.1"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"planted");
    // A private directory, but the file writable by others: ignored and replaced.
    std::fs::set_permissions(&cache.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    drop(Allocator::with_cache(Box::new(MemoryStore::new()), Some(&cache.0)).unwrap());
    assert_eq!(std::fs::read(&file).unwrap(), compiled);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}

/// The shared vector files through the component, as every host runs them.
#[test]
fn the_shared_plan_vectors_hold_through_the_component() {
    use hereabouts_host::bindings::PlanRequest;
    use serde_json::{Value, json};
    let cache = cache_dir();
    let mut allocator =
        Allocator::with_cache(Box::new(hereabouts_host::NoStore), Some(&cache.0)).unwrap();
    let mut ran = 0;
    for file in ["plan.json", "whereabouts.json", "plan-host-web.json"] {
        let path = format!("{}/../../vectors/{file}", env!("CARGO_MANIFEST_DIR"));
        let vectors: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for vector in &vectors {
            let text = match vector.get("stdin") {
                Some(Value::String(text)) => text.clone(),
                _ => vector["input"].to_string(),
            };
            let answer = match allocator.read_plan_document(&text) {
                Err(e) => {
                    let e = CniError::from(e);
                    json!({"code": e.code, "msg": e.msg})
                }
                Ok(document) => {
                    let request = PlanRequest {
                        network: document.reading.network,
                        allocated: document.allocated,
                        persistent: document.persistent,
                        preview: 1,
                    };
                    // `persistent` per range only for a document that lists some.
                    let lists_persistent = !request.persistent.is_empty();
                    let slicing = match request.network.node_slice_size {
                        Some(_) => Some(allocator.node_slicing(&request.network, "")),
                        None => None,
                    };
                    match (allocator.plan(&request), slicing) {
                        (Err(e), _) | (Ok(_), Some(Err(e))) => {
                            let e = CniError::from(e);
                            json!({"code": e.code, "msg": e.msg})
                        }
                        (Ok(reports), slicing) => {
                            let mut out = json!({
                                "ranges": reports.iter().map(|r| {
                                    let mut range = json!({"range": r.range, "first": r.first, "last": r.last,
                                        "capacity": r.capacity, "free": r.free, "next": r.next.first()});
                                    if lists_persistent {
                                        range["persistent"] = json!(r.persistent);
                                    }
                                    range
                                }).collect::<Vec<_>>(),
                                "warnings": document.reading.warnings.iter().map(|w| json!({"rule": w.rule, "field": w.field,
                                    "ignored": w.ignored, "reason": w.reason})).collect::<Vec<_>>(),
                            });
                            if let Some(Ok(s)) = slicing {
                                out["node_slices"] = json!({"addresses_per_slice": s.addresses_per_slice,
                                    "count": s.slices.len(), "range": s.range, "slice_size": s.slice_size,
                                    "slices": s.slices});
                            }
                            out
                        }
                    }
                }
            };
            let mut expect = vector["expect"].clone();
            if expect.get("ranges").is_some() && expect.get("warnings").is_none() {
                expect["warnings"] = json!([]);
            }
            assert_eq!(answer, expect, "{file}: {}", vector["name"]);
            ran += 1;
        }
    }
    assert!(ran > 200, "only {ran} vectors ran");
}

/// Persistent addresses cross the WIT both ways: the request's list in, the plan's count and
/// the map's own kind out, the map's kinds partitioning every bucket.
#[test]
fn persistent_addresses_are_their_own_kind_through_the_component() {
    use hereabouts_host::bindings::PlanRequest;
    let cache = cache_dir();
    let mut allocator =
        Allocator::with_cache(Box::new(hereabouts_host::NoStore), Some(&cache.0)).unwrap();
    let document = allocator
        .read_plan_document(
            r#"{"ipam": {"range": "10.0.0.0/29"}, "allocated": ["10.0.0.1", "10.0.0.2"],
                "persistent": ["10.0.0.2", "10.0.0.3"]}"#,
        )
        .unwrap();
    assert_eq!(document.persistent, ["10.0.0.2", "10.0.0.3"]);
    let request = PlanRequest {
        network: document.reading.network,
        allocated: document.allocated,
        persistent: document.persistent,
        preview: 2,
    };
    let report = &allocator.plan(&request).unwrap()[0];
    assert_eq!((report.free.as_str(), report.persistent.as_str()), ("3", "2"));
    assert_eq!(report.next, ["10.0.0.4", "10.0.0.5"]);
    let map = allocator.range_map(&request, 0, None, None, 8).unwrap();
    let kinds: Vec<(&str, &str, &str, &str)> = map
        .iter()
        .map(|b| {
            (
                b.allocatable.as_str(),
                b.allocated.as_str(),
                b.persistent.as_str(),
                b.reserved.as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("0", "0", "0", "1"),
            ("0", "1", "0", "0"),
            ("0", "0", "1", "0"),
            ("0", "0", "1", "0"),
            ("1", "0", "0", "0"),
            ("1", "0", "0", "0"),
            ("1", "0", "0", "0"),
            ("0", "0", "0", "1")
        ]
    );
    let bad = PlanRequest { persistent: vec!["nope".into()], ..request };
    let error = CniError::from(allocator.plan(&bad).unwrap_err());
    assert_eq!(error.msg, "persistent[0]: nope is not an IP address");
}

#[test]
fn the_memory_store_meets_the_store_contract_in_both_shapes() {
    use hereabouts_host::contract::{Shape, run};
    let summaries = Shape { keeps_summaries: true, keeps_cni_network: true };
    assert!(run(summaries, &mut || Box::new(MemoryStore::new())) > 50);
    let whole = Shape { keeps_summaries: false, keeps_cni_network: true };
    assert!(run(whole, &mut || Box::new(MemoryStore::whole_pools())) > 50);
}
