//! The SQLite store in-process, on real SQLite (bundled) in real files: the store contract,
//! the index behind `read-pool`, what it does with files that are not a sound store of ours,
//! the import of the earlier JSON store, and the allocator component on it from several
//! threads. (Several processes: tests/processes.rs; killed CNI processes:
//! host-cni/tests/store_kill.rs.)

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{TempDir, allocator, network, owner, pool, range, write_json_store};
use hereabouts_host::Backend;
use hereabouts_host::bindings::{Owner, Slot, StoreError};
use hereabouts_host::contract::{self, Shape};
use hereabouts_host::error::{CniError, Code};
use hereabouts_stores::sqlite::{DATABASE_FILE, QUERY_SLOTS, SqliteStore, Synchronous};
use serde_json::json;

#[test]
fn the_store_contract_holds_on_a_fresh_database_per_case() {
    let mut dirs = Vec::new();
    let steps =
        contract::run(Shape { keeps_summaries: true, keeps_cni_network: true }, &mut || {
            let dir = TempDir::new("contract");
            let store = SqliteStore::open(&dir.0).unwrap();
            dirs.push(dir);
            Box::new(store)
        });
    assert!(steps > 50, "ran {steps} steps");
}

#[test]
fn the_contract_holds_at_synchronous_full_too() {
    let mut dirs = Vec::new();
    contract::run(Shape { keeps_summaries: true, keeps_cni_network: true }, &mut || {
        let dir = TempDir::new("contract-full");
        let store = SqliteStore::open_with(&dir.0, Synchronous::Full).unwrap();
        dirs.push(dir);
        Box::new(store)
    });
}

#[test]
fn read_pool_finds_the_query_slots_through_the_indexes_without_a_scan() {
    let dir = TempDir::new("index");
    let mut store = SqliteStore::open(&dir.0).unwrap();
    let mut plan =
        store.connection().prepare(&format!("EXPLAIN QUERY PLAN {QUERY_SLOTS}")).unwrap();
    let steps: Vec<String> = plan
        .query_map(["p", "c", "eth0", "ns/p"], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(plan);
    let searches: Vec<&String> = steps.iter().filter(|s| s.contains("allocations")).collect();
    assert_eq!(searches.len(), 2, "{steps:?}");
    assert!(
        searches.iter().any(|s| s.contains("SEARCH") && s.contains("allocations_by_attachment")),
        "{steps:?}"
    );
    assert!(
        searches.iter().any(|s| s.contains("SEARCH") && s.contains("allocations_by_pod_interface")),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s.starts_with("SCAN allocations")), "{steps:?}");

    // And what it returns from a big pool: the query's slots only.
    let p = pool("10.0.0.0/16", "");
    let mut version = String::new();
    for chunk in 0..64 {
        let edits = (0..16)
            .map(|i| {
                let n = chunk * 16 + i + 1;
                hereabouts_host::bindings::PoolEdit::Claim(Slot {
                    offset: n.to_string(),
                    owner: owner(&format!("c{n}")),
                })
            })
            .collect();
        let change = hereabouts_host::bindings::PoolChange {
            version: version.clone(),
            summary: format!("s{chunk}"),
            edits,
            reservations: vec![],
        };
        match store.commit(&p, &owner("x"), &change).unwrap() {
            hereabouts_host::bindings::CommitOutcome::Committed(v) => version = v,
            other => panic!("{other:?}"),
        }
    }
    let new_sandbox = Owner { container_id: "c77-new".into(), ..owner("c77") };
    let view = store.read_pool(&p, &new_sandbox).unwrap();
    assert_eq!(view.slots, [Slot { offset: "77".into(), owner: owner("c77") }]);
    assert_eq!(view.summary.as_deref(), Some("s63"));
    assert_eq!(store.list_slots(&p).unwrap().slots.len(), 1024);
}

fn expect_corrupt(result: Result<impl std::fmt::Debug, StoreError>, file: &Path) -> String {
    match result {
        Err(e @ StoreError::Corrupt(_)) => {
            let cni = CniError::from(&e);
            assert_eq!(cni.code, Code::Io, "{cni:?}");
            assert!(cni.msg.contains(file.to_str().unwrap()), "{cni:?} does not name {file:?}");
            cni.msg
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_a_database_is_error_5_naming_it_and_left_untouched() {
    let dir = TempDir::new("notadb");
    let file = dir.0.join(DATABASE_FILE);
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&file, &garbage).unwrap();
    expect_corrupt(SqliteStore::open(&dir.0), &file);
    expect_corrupt(SqliteStore::open_existing(&dir.0), &file);
    assert!(std::fs::read(&file).unwrap() == garbage, "the file was changed");
}

#[test]
fn a_database_damaged_inside_is_error_5_at_the_first_read_and_integrity_check_names_it() {
    let dir = TempDir::new("damaged");
    {
        let mut a = allocator(&dir.0);
        let net = network(&mut a, range("10.0.0.0/16"));
        for i in 0..300 {
            a.allocate(&net, &common::request(&format!("ctr-{i:03}-with-a-long-container-id")))
                .unwrap();
        }
    }
    let file = dir.0.join(DATABASE_FILE);
    // Everything into the database file, so the damage below is all there is to read.
    rusqlite::Connection::open(&file)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    // Page 1 (the header and the schema) stays; every page after it is overwritten.
    for (i, byte) in bytes.iter_mut().enumerate().skip(4096) {
        *byte = (i % 251) as u8;
    }
    std::fs::write(&file, &bytes).unwrap();

    let mut store = SqliteStore::open(&dir.0).expect("the header is sound");
    let p = pool("10.0.0.0/16", "");
    expect_corrupt(store.read_pool(&p, &owner("ctr-000")), &file);
    expect_corrupt(store.list_slots(&p), &file);
    let msg = expect_corrupt(store.integrity_check(), &file);
    assert!(msg.contains("integrity check failed") || msg.contains("malformed"), "{msg}");
    drop(store);
    assert!(std::fs::read(&file).unwrap() == bytes, "the file was changed");
}

#[test]
fn a_foreign_or_newer_database_is_error_5_and_left_untouched() {
    // Somebody else's database (no application id, their own tables).
    let dir = TempDir::new("foreign");
    let file = dir.0.join(DATABASE_FILE);
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE notes (x TEXT)")
        .unwrap();
    let before = std::fs::read(&file).unwrap();
    let msg = expect_corrupt(SqliteStore::open(&dir.0), &file);
    assert!(msg.contains("not a Hereabouts store"), "{msg}");
    assert!(std::fs::read(&file).unwrap() == before, "the file was changed");

    // Another application's id.
    let dir = TempDir::new("foreign-id");
    let file = dir.0.join(DATABASE_FILE);
    rusqlite::Connection::open(&file).unwrap().pragma_update(None, "application_id", 42).unwrap();
    let msg = expect_corrupt(SqliteStore::open(&dir.0), &file);
    assert!(msg.contains("application_id 0x2a"), "{msg}");

    // Ours, from a newer schema.
    let dir = TempDir::new("newer");
    drop(SqliteStore::open(&dir.0).unwrap());
    let file = dir.0.join(DATABASE_FILE);
    rusqlite::Connection::open(&file).unwrap().pragma_update(None, "user_version", 9).unwrap();
    let msg = expect_corrupt(SqliteStore::open(&dir.0), &file);
    assert!(msg.contains("newer Hereabouts (schema 9"), "{msg}");
}

/// Makes a directory or file read-only for this process: mode 0555, and as root (who ignores
/// modes) the immutable attribute as well. Undone when dropped.
struct ReadOnly<'a>(&'a Path, std::fs::Permissions);

impl<'a> ReadOnly<'a> {
    fn new(path: &'a Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let before = std::fs::metadata(path).unwrap().permissions();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            let done = std::process::Command::new("chattr").arg("+i").arg(path).status();
            assert!(
                done.is_ok_and(|s| s.success()),
                "chattr +i {path:?} failed: as root, the test needs it to make {path:?} read-only"
            );
        }
        ReadOnly(path, before)
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(self.0).status();
        let _ = std::fs::set_permissions(self.0, self.1.clone());
    }
}

#[test]
fn a_read_only_data_dir_is_a_failed_store_naming_the_file() {
    let expect_failed = |result: Result<SqliteStore, StoreError>, file: &Path| match result {
        Err(e @ StoreError::Failed(_)) => {
            let cni = CniError::from(&e);
            assert_eq!(cni.code, Code::Io);
            assert!(cni.msg.contains(file.to_str().unwrap()), "{cni:?}");
        }
        other => panic!("expected failed, got {other:?}"),
    };
    // No database yet: it cannot be created.
    let dir = TempDir::new("readonly-new");
    let guard = ReadOnly::new(&dir.0);
    expect_failed(SqliteStore::open(&dir.0), &dir.0.join(DATABASE_FILE));
    drop(guard);

    // A store whose database file cannot be written: reads work, a commit fails naming it.
    let dir = TempDir::new("readonly-file");
    {
        let mut a = allocator(&dir.0);
        let net = network(&mut a, range("10.0.0.0/24"));
        a.allocate(&net, &common::request("before")).unwrap();
    }
    let file = dir.0.join(DATABASE_FILE);
    let guard = ReadOnly::new(&file);
    let mut store = SqliteStore::open(&dir.0).unwrap();
    let p = pool("10.0.0.0/24", "");
    let view = store.read_pool(&p, &owner("before")).unwrap();
    assert_eq!(view.slots.len(), 1);
    let change = hereabouts_host::bindings::PoolChange {
        version: view.version.clone(),
        summary: "s".into(),
        edits: vec![hereabouts_host::bindings::PoolEdit::Claim(Slot {
            offset: "9".into(),
            owner: owner("after"),
        })],
        reservations: vec![],
    };
    match store.commit(&p, &owner("after"), &change) {
        Err(e @ StoreError::Failed(_)) => {
            let cni = CniError::from(&e);
            assert_eq!(cni.code, Code::Io);
            assert!(cni.msg.contains(file.to_str().unwrap()), "{cni:?}");
        }
        other => panic!("expected failed, got {other:?}"),
    }
    drop((store, guard));
    // Writable again, everything is still there and nothing else.
    let mut store = SqliteStore::open(&dir.0).unwrap();
    assert_eq!(store.list_slots(&pool("10.0.0.0/24", "")).unwrap().slots.len(), 1);

    // A data_dir that cannot be a directory says so.
    let file = dir.0.join("a-file");
    std::fs::write(&file, "").unwrap();
    match SqliteStore::open(&file.join("store")) {
        Err(StoreError::Failed(msg)) => {
            assert!(
                msg.starts_with("data_dir: cannot create") && msg.contains("a-file/store"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
}

fn offsets(slots: &[Slot]) -> Vec<(String, String, String)> {
    let mut list: Vec<_> = slots
        .iter()
        .map(|s| (s.offset.clone(), s.owner.container_id.clone(), s.owner.podref.clone()))
        .collect();
    list.sort();
    list
}

#[test]
fn a_json_store_is_imported_once_and_its_files_kept() {
    let dir = TempDir::new("import");
    write_json_store(&dir.0);
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in ["pools", "reservations"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
        files.sort();
        files
    };
    let before = files(&dir.0);

    let mut store = SqliteStore::open(&dir.0).unwrap();
    let unnamed = pool("10.0.0.0/24", "");
    let blue = pool("10.0.0.0/25", "blue");
    // No summary yet: a read returns the whole pool, whoever asks.
    let view = store.read_pool(&unnamed, &owner("somebody")).unwrap();
    assert_eq!((view.version.as_str(), view.summary.as_deref()), ("7", None));
    assert_eq!(
        offsets(&view.slots),
        [
            ("1".into(), "old-1".into(), "ns/old-1".into()),
            ("2".into(), "old-2".into(), "ns/old-2".into()),
            ("4".into(), "old-4".into(), String::new()),
        ]
    );
    assert!(view.slots.iter().all(|s| s.owner.cni_network.is_empty()));
    assert_eq!(view.slots.iter().find(|s| s.offset == "4").unwrap().owner.ifname, "net1");
    assert_eq!(store.list_slots(&blue).unwrap().slots.len(), 1);
    let reservations = store.list_reservations("blue").unwrap();
    assert_eq!(reservations.len(), 1);
    assert_eq!(
        (reservations[0].address.as_str(), reservations[0].owner.container_id.as_str()),
        ("10.0.0.5", "old-5")
    );
    let meta = store.meta().unwrap();
    assert!(
        meta.iter().any(|(k, v)| k == "json_import"
            && v == "imported 2 pools (4 allocations) and 1 reservations from JSON files (kept)"),
        "{meta:?}"
    );
    drop(store);
    assert!(files(&dir.0) == before, "the JSON files were changed");

    // The allocator goes on from there: lowest free, and its commit writes the summary.
    let mut a = allocator(&dir.0);
    let net = network(&mut a, range("10.0.0.0/24"));
    assert_eq!(a.allocate(&net, &common::request("new")).unwrap()[0].address, "10.0.0.3");
    assert_eq!(a.allocate(&net, &common::request("newer")).unwrap()[0].address, "10.0.0.5");
    assert_eq!(
        a.release(&net, &Owner { ifname: "net1".into(), podref: String::new(), ..owner("old-4") })
            .unwrap()
            .len(),
        1
    );
    drop(a);
    let mut store = SqliteStore::open(&dir.0).unwrap();
    let view = store.read_pool(&unnamed, &owner("new")).unwrap();
    assert!(view.summary.is_some(), "the core wrote a summary");
    assert_eq!(offsets(&view.slots), [("3".into(), "new".into(), "ns/new".into())]);

    // A later change to the JSON files is not imported again.
    common::write_padded(
        &dir.0.join("pools/10.0.0.0-24.json"),
        &json!({"version": 8, "range": "10.0.0.0/24", "network_name": "", "allocations": {}}),
    );
    drop(store);
    let mut store = SqliteStore::open(&dir.0).unwrap();
    assert_eq!(store.list_slots(&unnamed).unwrap().slots.len(), 4);
}

#[test]
fn a_json_file_that_does_not_parse_stops_the_import_naming_it() {
    let dir = TempDir::new("import-bad");
    write_json_store(&dir.0);
    let bad = dir.0.join("pools/blue-10.0.0.0-25.json");
    std::fs::write(&bad, "{\"version\": 2, \"range\": \"10.0.0.0/25\", \"alloc").unwrap();
    expect_corrupt(SqliteStore::open(&dir.0), &bad);
    // Nothing was imported partly: once the file is mended, the import runs whole.
    common::write_padded(
        &bad,
        &json!({"version": 2, "range": "10.0.0.0/25", "network_name": "blue", "allocations": {}}),
    );
    let mut store = SqliteStore::open(&dir.0).unwrap();
    assert_eq!(store.list_slots(&pool("10.0.0.0/24", "")).unwrap().slots.len(), 3);
}

#[test]
fn allocators_on_threads_with_their_own_connections_never_share_an_address() {
    let dir = TempDir::new("threads");
    drop(allocator(&dir.0)); // compile the component into the cache once
    let addresses: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|t| {
                let dir = &dir.0;
                scope.spawn(move || {
                    let mut a = allocator(dir);
                    let net = network(&mut a, range("10.1.0.0/24"));
                    (0..20)
                        .map(|i| {
                            let r = common::request(&format!("t{t}-{i}"));
                            a.allocate(&net, &r).unwrap()[0].address.clone()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 120, "an address was handed out twice");
    let expected: BTreeSet<String> = (1..=120).map(|i| format!("10.1.0.{i}")).collect();
    assert_eq!(distinct.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
    let mut store = SqliteStore::open(&dir.0).unwrap();
    assert_eq!(store.list_slots(&pool("10.1.0.0/24", "")).unwrap().slots.len(), 120);
}

#[test]
fn dump_shows_whereabouts_objects() {
    let dir = TempDir::new("dump");
    write_json_store(&dir.0);
    let mut store = SqliteStore::open(&dir.0).unwrap();
    let dump = store.dump().unwrap();
    assert_eq!(dump["kind"], "List");
    let items = dump["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{dump:#}");
    assert_eq!(
        items[0],
        json!({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
               "metadata": {"name": "10.0.0.0-24", "resourceVersion": "7"},
               "spec": {"range": "10.0.0.0/24", "allocations": {
                   "1": {"id": "old-1", "podref": "ns/old-1", "ifname": "eth0"},
                   "2": {"id": "old-2", "podref": "ns/old-2", "ifname": "eth0"},
                   "4": {"id": "old-4", "podref": "", "ifname": "net1"}}}})
    );
    assert_eq!(items[1]["metadata"]["name"], "blue-10.0.0.0-25");
    assert_eq!(
        items[2],
        json!({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
               "kind": "OverlappingRangeIPReservation",
               "metadata": {"name": "blue-10.0.0.5"},
               "spec": {"containerid": "old-5", "podref": "ns/old-5", "ifname": "eth0"}})
    );
    store.integrity_check().unwrap();
}

#[test]
fn the_wal_is_truncated_by_commits_and_never_grows_past_its_mark() {
    use hereabouts_stores::sqlite::CHECKPOINT_PAGES;
    let dir = TempDir::new("wal");
    let wal = dir.0.join(format!("{DATABASE_FILE}-wal"));
    let frame = 4096 + 24;
    let mut largest = 0;
    for i in 0..200 {
        // A store opened and closed per ADD, as by a CNI process: each open rebuilds the WAL
        // index from the WAL, so only our own checkpoint keeps the WAL short.
        let mut a = allocator(&dir.0);
        let net = network(&mut a, range("10.3.0.0/16"));
        a.allocate(&net, &common::request(&format!("c{i}"))).unwrap();
        drop(a);
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(largest > 0, "the WAL was never written");
    // One commit past the mark at most: an ADD writes a handful of pages.
    assert!(
        largest <= (CHECKPOINT_PAGES + 16) * frame,
        "the WAL grew to {} pages",
        largest / frame
    );
    let mut store = SqliteStore::open(&dir.0).unwrap();
    assert_eq!(store.list_slots(&pool("10.3.0.0/16", "")).unwrap().slots.len(), 200);
}
