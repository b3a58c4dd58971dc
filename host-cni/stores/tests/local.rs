//! The local store in-process: its conditional writes, its locking across open files (as
//! across processes), its refusal to read corrupt files; and the allocator component running
//! on it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    AllocateRequest, NetworkConfig, Owner, PoolEdit, PoolRef, RangeConfig, Slot, StoreError,
};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::local::LocalStore;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("local-{tag}-{}-{n}", std::process::id()));
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

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cni-test-cache")
}

fn pool() -> PoolRef {
    PoolRef { name: "10.0.0.0-24".into(), range: "10.0.0.0/24".into(), network_name: String::new() }
}

fn owner(id: &str) -> Owner {
    Owner { container_id: id.into(), ifname: "eth0".into(), podref: format!("ns/{id}") }
}

fn claim(offset: &str, id: &str) -> PoolEdit {
    PoolEdit::Claim(Slot { offset: offset.into(), owner: owner(id) })
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

#[test]
fn writes_are_conditional_on_the_version_read() {
    let dir = TempDir::new("cas");
    let mut store = LocalStore::open(&dir.0).unwrap();
    let empty = store.read_pool(&pool()).unwrap();
    assert_eq!(empty.version, "");
    assert!(empty.slots.is_empty());
    store.write_pool(&pool(), "", &[claim("1", "a")]).unwrap();
    // A writer that read the missing pool loses: it must re-read.
    assert!(matches!(store.write_pool(&pool(), "", &[claim("1", "b")]), Err(StoreError::Conflict)));
    let read = store.read_pool(&pool()).unwrap();
    assert_eq!(read.slots.len(), 1);
    store
        .write_pool(&pool(), &read.version, &[claim("2", "b"), PoolEdit::Free("1".into())])
        .unwrap();
    assert!(matches!(
        store.write_pool(&pool(), &read.version, &[claim("3", "c")]),
        Err(StoreError::Conflict)
    ));
    let after = store.read_pool(&pool()).unwrap();
    assert_ne!(after.version, read.version);
    assert_eq!(
        after
            .slots
            .iter()
            .map(|s| (s.offset.as_str(), s.owner.container_id.as_str()))
            .collect::<Vec<_>>(),
        [("2", "b")]
    );
    assert_eq!(after.slots[0].owner.podref, "ns/b");
}

#[test]
fn concurrent_writers_on_separate_files_lose_no_update() {
    let dir = TempDir::new("threads");
    // Each thread opens the store itself: separate descriptors, so the flock arbitrates
    // between them exactly as between processes.
    let writing = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        // A reader that never stops while the writers run: the file it opened may become the
        // next write's temporary (the writes swap names), so every read must still be whole.
        let reader = scope.spawn(|| {
            let mut store = LocalStore::open(&dir.0).unwrap();
            let (mut reads, mut last) = (0, 0);
            while writing.load(Ordering::Relaxed) {
                let slots = store
                    .read_pool(&pool())
                    .expect("a whole, parseable pool at every instant")
                    .slots
                    .len();
                assert!(slots >= last, "went back in time: {slots} < {last}");
                (reads, last) = (reads + 1, slots);
            }
            reads
        });
        let writers: Vec<_> = (0..6)
            .map(|t| {
                let path = dir.0.clone();
                scope.spawn(move || {
                    let mut store = LocalStore::open(&path).unwrap();
                    for i in 0..25 {
                        let offset = (t * 25 + i + 1).to_string();
                        loop {
                            let read = store.read_pool(&pool()).unwrap();
                            match store.write_pool(
                                &pool(),
                                &read.version,
                                &[claim(&offset, &format!("t{t}"))],
                            ) {
                                Ok(()) => break,
                                Err(StoreError::Conflict) => continue,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        writing.store(false, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    let mut store = LocalStore::open(&dir.0).unwrap();
    let read = store.read_pool(&pool()).unwrap();
    assert_eq!(read.slots.len(), 150);
    assert_eq!(read.version, "150", "one version per successful write");
    // Whole blocks, so the next write overwrites what exists; the previous version is the
    // next write's temporary file.
    let path = store.pool_path("10.0.0.0-24");
    assert_eq!(std::fs::metadata(&path).unwrap().len() % 4096, 0);
    let tmp = path.with_file_name(".10.0.0.0-24.json.tmp");
    let previous: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp).unwrap()).unwrap();
    assert_eq!(previous["version"], 149);
}

#[test]
fn reservations_are_create_if_absent_and_released_only_by_their_holder() {
    let dir = TempDir::new("reserve");
    let mut store = LocalStore::open(&dir.0).unwrap();
    assert!(store.reserve_address("blue", "10.0.0.5", &owner("a")).unwrap().is_none());
    assert!(
        store.reserve_address("blue", "10.0.0.5", &owner("a")).unwrap().is_none(),
        "the holder again"
    );
    assert_eq!(
        store.reserve_address("blue", "10.0.0.5", &owner("b")).unwrap().unwrap().container_id,
        "a"
    );
    assert!(
        store.reserve_address("red", "10.0.0.5", &owner("b")).unwrap().is_none(),
        "networks are separate"
    );
    store.release_address("blue", "10.0.0.5", &owner("b")).unwrap();
    assert_eq!(
        store.reserve_address("blue", "10.0.0.5", &owner("b")).unwrap().unwrap().container_id,
        "a"
    );
    store.release_address("blue", "10.0.0.5", &owner("a")).unwrap();
    assert!(store.reserve_address("blue", "10.0.0.5", &owner("b")).unwrap().is_none());
    store.release_address("green", "10.0.0.9", &owner("a")).unwrap();
    assert!(!store.reservations_path("green").exists(), "releasing nothing writes nothing");
}

#[test]
fn corrupt_or_unreadable_files_are_errors_naming_the_file() {
    let dir = TempDir::new("corrupt");
    let mut store = LocalStore::open(&dir.0).unwrap();
    let path = store.pool_path("10.0.0.0-24");
    std::fs::write(&path, "{\"version\": 2, \"range\": \"10.0.0.0/24\", \"alloc").unwrap();
    match store.read_pool(&pool()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains(path.to_str().unwrap()), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.write_pool(&pool(), "2", &[claim("1", "a")]),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\": 2, \"range\": \"10.0.0.0/24\", \"alloc"
    );
    // A directory where the file should be cannot be read.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    match store.read_pool(&pool()) {
        Err(StoreError::Failed(msg)) => assert!(msg.contains(path.to_str().unwrap()), "{msg}"),
        other => panic!("{other:?}"),
    }
    // And a store that cannot be created says where.
    let file = dir.0.join("file");
    std::fs::write(&file, "").unwrap();
    match LocalStore::open(&file.join("store")) {
        Err(StoreError::Failed(msg)) => {
            assert!(msg.starts_with("data_dir:") && msg.contains("file/store"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_component_allocates_lowest_free_through_the_local_store() {
    let dir = TempDir::new("component");
    let mut allocator =
        Allocator::with_cache(Box::new(LocalStore::open(&dir.0).unwrap()), Some(&cache())).unwrap();
    let net = network("10.0.0.0/24");
    let request = |id: &str| AllocateRequest { owner: owner(id), requested: vec![], sticky: false };
    let addresses: Vec<String> = (0..20)
        .map(|i| allocator.allocate(&net, &request(&format!("c{i}"))).unwrap()[0].address.clone())
        .collect();
    assert_eq!(addresses, (1..=20).map(|i| format!("10.0.0.{i}")).collect::<Vec<_>>());
    assert_eq!(allocator.release(&net, &owner("c4")).unwrap()[0].address, "10.0.0.5");
    assert_eq!(allocator.allocate(&net, &request("new")).unwrap()[0].address, "10.0.0.5");
    assert_eq!(allocator.list_leases(&net).unwrap().len(), 20);
    // A second store instance (another process, in effect) sees the same state.
    let mut other =
        Allocator::with_cache(Box::new(LocalStore::open(&dir.0).unwrap()), Some(&cache())).unwrap();
    assert_eq!(other.lookup(&net, &owner("new")).unwrap()[0].address, "10.0.0.5");
}
