//! The SQLite store shared by several processes, as the plugin's processes share it on a node:
//! the one-time import of a JSON store raced by processes starting at once, and allocators in
//! separate processes on one pool. SQLite's locks are per process (POSIX locks), so only
//! processes show what threads cannot.
//!
//! The processes are this test binary started again (`--child …`), so this target has its own
//! `main` (`harness = false` in Cargo.toml) and prints `N passed, N failed` like the others.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, allocator, network, pool, range, write_json_store};
use hereabouts_host::Backend;
use hereabouts_stores::sqlite::SqliteStore;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        std::process::exit(child(&args[2..]));
    }
    let tests: [(&str, fn()); 2] = [
        ("processes_starting_at_once_import_a_json_store_exactly_once", import_race),
        ("allocators_in_separate_processes_never_share_an_address", allocating_processes),
    ];
    // cargo test passes a filter (and flags); run what matches, as the default harness does.
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// A child's work; prints its findings on stdout, one per line.
fn child(args: &[String]) -> i32 {
    match args {
        [verb, dir, go] if verb == "open" => {
            wait_for(Path::new(go));
            let mut store = SqliteStore::open(Path::new(dir)).unwrap();
            let slots = store.list_slots(&pool("10.0.0.0/24", "")).unwrap().slots.len();
            println!("{slots}");
            0
        }
        [verb, dir, go, tag, count] if verb == "allocate" => {
            let mut a = allocator(Path::new(dir));
            let net = network(&mut a, range("10.2.0.0/24"));
            wait_for(Path::new(go));
            for i in 0..count.parse::<usize>().unwrap() {
                let lease = a.allocate(&net, &common::request(&format!("{tag}-{i}"))).unwrap();
                println!("{}", lease[0].address);
            }
            0
        }
        other => {
            eprintln!("unknown child {other:?}");
            2
        }
    }
}

/// Spins until `go` exists, so the children start their work at one instant.
fn wait_for(go: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "{go:?} never appeared");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts the children, lets them go at once, and returns each one's stdout lines.
fn run_together(go: &Path, children: Vec<Child>) -> Vec<Vec<String>> {
    std::thread::sleep(Duration::from_millis(200)); // let them all reach the barrier
    std::fs::write(go, "").unwrap();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "a child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
        })
        .collect()
}

fn import_race() {
    for round in 0..3 {
        let dir = TempDir::new(&format!("import-race-{round}"));
        write_json_store(&dir.0);
        let go: PathBuf = dir.0.join("go");
        let (d, g) = (dir.0.to_str().unwrap(), go.to_str().unwrap());
        let children = (0..4).map(|_| spawn(&["open", d, g])).collect();
        let seen = run_together(&go, children);
        // A second import would have failed on the first one's rows (primary keys): every
        // process opened the store and saw exactly the imported pool.
        assert!(seen.iter().all(|lines| lines == &["3"]), "{seen:?}");
        let mut store = SqliteStore::open(&dir.0).unwrap();
        let meta = store.meta().unwrap();
        let imports: Vec<_> = meta.iter().filter(|(k, _)| k == "json_import").collect();
        assert_eq!(imports.len(), 1, "{meta:?}");
        assert!(imports[0].1.starts_with("imported 2 pools (4 allocations)"), "{meta:?}");
        assert_eq!(store.list_reservations("blue").unwrap().len(), 1);
    }
}

fn allocating_processes() {
    let dir = TempDir::new("processes");
    drop(allocator(&dir.0)); // compile the component into the cache once
    let go = dir.0.join("go");
    let (d, g) = (dir.0.to_str().unwrap(), go.to_str().unwrap());
    let children = (0..4).map(|p| spawn(&["allocate", d, g, &format!("p{p}"), "20"])).collect();
    let addresses: Vec<String> = run_together(&go, children).into_iter().flatten().collect();
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 80, "an address was handed out twice: {addresses:?}");
    let expected: BTreeSet<String> = (1..=80).map(|i| format!("10.2.0.{i}")).collect();
    assert_eq!(distinct.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
    let mut store = SqliteStore::open(&dir.0).unwrap();
    assert_eq!(store.list_slots(&pool("10.2.0.0/24", "")).unwrap().slots.len(), 80);
}
