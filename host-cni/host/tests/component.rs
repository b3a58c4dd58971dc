//! The real allocator component, loaded by the real runtime: its import list (no ambient
//! authority), allocation through the WIT `store` import, and what a fault inside it becomes.
//! (The shared plan vectors run through `hereabouts plan`: host-cni/tests/plan_cli.rs.)

use std::collections::BTreeSet;

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    AllocateRequest, NetworkConfig, Owner, PoolEdit, PoolRef, PoolSnapshot, RangeConfig, Slot,
    StoreError,
};
use hereabouts_host::error::{CniError, Code, guarded};
use hereabouts_host::memory::MemoryStore;
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
        "hereabouts:ipam/store@0.1.0".to_string(),
        "hereabouts:ipam/types@0.1.0".to_string(),
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
    }
}

fn request(i: usize) -> AllocateRequest {
    AllocateRequest {
        owner: Owner {
            container_id: format!("ctr-{i}"),
            ifname: "eth0".into(),
            podref: format!("ns/pod-{i}"),
        },
        requested: vec![],
        sticky: false,
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
    store.force_conflicts(3);
    assert_eq!(allocator.allocate(&config, &request(1)).unwrap()[0].cidr, "fd00::1/120");
    assert_eq!(allocator.allocate(&config, &request(2)).unwrap()[0].address, "fd00::2");
    assert_eq!(allocator.lookup(&config, &request(1).owner).unwrap()[0].address, "fd00::1");
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
    fn read_pool(&mut self, _: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        let slots = (0..100_000)
            .map(|i| Slot {
                offset: (i % 250 + 1).to_string(),
                owner: Owner {
                    container_id: format!("{i:0>128}"),
                    ifname: "eth0".into(),
                    podref: String::new(),
                },
            })
            .collect();
        Ok(PoolSnapshot { version: "1".into(), slots })
    }
    fn write_pool(&mut self, _: &PoolRef, _: &str, _: &[PoolEdit]) -> Result<(), StoreError> {
        Err(StoreError::Failed("this store is read-only".into()))
    }
    fn reserve_address(
        &mut self,
        _: &str,
        _: &str,
        _: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        Ok(None)
    }
    fn release_address(&mut self, _: &str, _: &str, _: &Owner) -> Result<(), StoreError> {
        Ok(())
    }
}

#[test]
fn a_trap_inside_the_component_is_an_error_not_a_crash() {
    let cache = cache_dir();
    let mut allocator =
        Allocator::with_limits(Box::new(HugePoolStore), Some(&cache.0), 8 << 20).unwrap();
    let error = allocator.allocate(&network("10.0.0.0/24"), &request(1)).unwrap_err();
    assert!(matches!(error, CallError::Runtime(RuntimeError::Trap(_))), "{error:?}");
    let cni = CniError::from(error);
    assert_eq!(cni.code, Code::Internal, "{cni:?}");
    assert!(cni.msg.contains("trapped"), "{}", cni.msg);
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
    fn read_pool(&mut self, _: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        panic!("storage import exploded")
    }
    fn write_pool(&mut self, _: &PoolRef, _: &str, _: &[PoolEdit]) -> Result<(), StoreError> {
        unreachable!()
    }
    fn reserve_address(
        &mut self,
        _: &str,
        _: &str,
        _: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        unreachable!()
    }
    fn release_address(&mut self, _: &str, _: &str, _: &Owner) -> Result<(), StoreError> {
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
