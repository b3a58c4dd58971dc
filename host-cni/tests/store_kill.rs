//! The kill test of the embedded SQLite store, through the real binary as runtimes call it.
//!
//! Several runtimes at once (threads, each starting fresh `hereabouts` processes with CNI ADD
//! and DEL on stdin/env) share one small pool (a /27: 30 addresses). About half of the ADDs
//! are SIGKILLed at a random instant of their run — before, during or after their store
//! transaction; half of the killed containers are torn down again (DEL) at once, the others
//! only at the end. Throughout, no address is ever told to two containers holding it at once.
//! Then the store must hold exactly what was acknowledged (every successful ADD not DELed yet,
//! with the address it was told; no acknowledged DEL undone), and nothing the runtimes do not
//! know of but killed containers. After a DEL of every container id used the store is empty,
//! and a fresh fill gets **every** address of the range: no address is stranded.
//!
//! The seed is printed; `HEREABOUTS_KILL_SEED=N` repeats a run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hereabouts");
const RUNTIMES: usize = 4;
const ADDS_PER_RUNTIME: usize = 100;
/// Containers a runtime keeps running before it tears the oldest down.
const LIVE_PER_RUNTIME: usize = 2;

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn conf(data_dir: &Path) -> String {
    json!({"cniVersion": "1.0.0", "name": "kill", "type": "bridge",
           "ipam": {"type": "hereabouts", "range": "10.40.0.0/27",
                    "data_dir": data_dir.to_str().unwrap()}})
    .to_string()
}

/// Starts one CNI call; `kill_after` SIGKILLs it that long after its start.
fn cni(verb: &str, container: &str, conf: &str, kill_after: Option<Duration>) -> Output {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=kill;K8S_POD_NAME={container}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    if let Some(after) = kill_after {
        std::thread::sleep(after);
        let _ = child.kill(); // SIGKILL; nothing if it has already exited
    }
    child.wait_with_output().unwrap()
}

fn address_of(out: &Output) -> String {
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}

fn code_of(out: &Output) -> Option<u64> {
    serde_json::from_slice::<Value>(&out.stdout).ok()?["code"].as_u64()
}

/// `hereabouts store dump`: (address → holder) of the pool, and the reservations' count.
fn dump(data_dir: &Path) -> (BTreeMap<String, String>, usize) {
    let out = Command::new(BIN)
        .args(["store", "dump", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "store dump: {}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut held, mut reservations) = (BTreeMap::new(), 0);
    for item in list["items"].as_array().unwrap() {
        match item["kind"].as_str().unwrap() {
            "IPPool" => {
                assert_eq!(item["spec"]["range"], "10.40.0.0/27");
                for (offset, holder) in item["spec"]["allocations"].as_object().unwrap() {
                    let address = format!("10.40.0.{offset}");
                    held.insert(address, holder["id"].as_str().unwrap().to_string());
                }
            }
            "OverlappingRangeIPReservation" => reservations += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (held, reservations)
}

/// The median of the last ADDs this runtime saw finish (5 ms before it has seen any).
fn typical_add(durations: &[Duration]) -> Duration {
    let mut last: Vec<Duration> = durations.iter().rev().take(15).copied().collect();
    last.sort();
    last.get(last.len() / 2).copied().unwrap_or(Duration::from_millis(5))
}

#[derive(Default)]
struct Ledger {
    /// Address → container, for every acknowledged ADD not yet being torn down.
    told: BTreeMap<String, String>,
    /// Containers whose ADD was killed and which were not DELed yet.
    killed_pending: BTreeSet<String>,
    every_container: BTreeSet<String>,
    violations: Vec<String>,
    adds_ok: usize,
    adds_killed: usize,
    adds_exhausted: usize,
    dels: usize,
}

#[test]
fn killed_cni_processes_never_strand_nor_duplicate_an_address() {
    let scratch = Scratch(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("store-kill-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&scratch.0);
    let data_dir = scratch.0.join("store");
    let conf = conf(&data_dir);
    // Compile the component into the store's cache first: killing the compiler is not the point.
    assert!(cni("ADD", "warm-up", &conf, None).status.success());
    assert!(cni("DEL", "warm-up", &conf, None).status.success());

    let seed = std::env::var("HEREABOUTS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
                | 1
        });
    eprintln!("kill test seed: {seed} (HEREABOUTS_KILL_SEED={seed} repeats it)");
    let ledger = Mutex::new(Ledger::default());
    std::thread::scope(|scope| {
        for runtime in 0..RUNTIMES {
            let (conf, ledger) = (&conf, &ledger);
            let mut rng = Rng(seed.wrapping_add(runtime as u64 * 0x9e37_79b9) | 1);
            scope.spawn(move || {
                let mut live: Vec<(String, String)> = Vec::new();
                let mut durations: Vec<Duration> = Vec::new();
                let del = |container: &str| {
                    let out = cni("DEL", container, conf, None);
                    assert!(
                        out.status.success(),
                        "DEL {container}: {}",
                        String::from_utf8_lossy(&out.stdout)
                    );
                    ledger.lock().unwrap().dels += 1;
                };
                for n in 0..ADDS_PER_RUNTIME {
                    let container = format!("rt{runtime}-c{n:03}");
                    ledger.lock().unwrap().every_container.insert(container.clone());
                    // Half are killed, at an instant spread over a typical ADD as this
                    // runtime sees them now (process start, the component's load, the store's
                    // read and commit, the answer), a little past its end for the slow ones.
                    let typical = typical_add(&durations).as_micros() as u64;
                    let kill_after = (rng.below(2) == 0).then(|| {
                        Duration::from_micros(typical / 5 + rng.below(typical * 9 / 10 + 1))
                    });
                    let started = Instant::now();
                    let out = cni("ADD", &container, conf, kill_after);
                    if kill_after.is_none() && out.status.success() {
                        durations.push(started.elapsed());
                    }
                    if out.status.code().is_none() {
                        ledger.lock().unwrap().adds_killed += 1;
                        if rng.below(2) == 0 {
                            del(&container); // the runtime tears the failed sandbox down
                        } else {
                            ledger.lock().unwrap().killed_pending.insert(container);
                        }
                        continue;
                    }
                    if !out.status.success() {
                        // The pool is full of stranded-for-now killed containers: fine.
                        assert_eq!(
                            code_of(&out),
                            Some(100),
                            "ADD {container}: {}",
                            String::from_utf8_lossy(&out.stdout)
                        );
                        ledger.lock().unwrap().adds_exhausted += 1;
                        del(&container);
                        continue;
                    }
                    let address = address_of(&out);
                    {
                        let mut l = ledger.lock().unwrap();
                        l.adds_ok += 1;
                        if let Some(other) = l.told.insert(address.clone(), container.clone()) {
                            l.violations.push(format!(
                                "{address} told to {container} while {other} holds it"
                            ));
                        }
                    }
                    live.push((container, address));
                    if live.len() > LIVE_PER_RUNTIME {
                        let (old, address) = live.remove(0);
                        // From now on the address may go to someone else.
                        ledger.lock().unwrap().told.remove(&address);
                        del(&old);
                    }
                }
            });
        }
    });
    let ledger = ledger.into_inner().unwrap();
    eprintln!(
        "{} ADDs acknowledged, {} killed, {} exhausted; {} DELs",
        ledger.adds_ok, ledger.adds_killed, ledger.adds_exhausted, ledger.dels
    );
    assert!(ledger.violations.is_empty(), "{:#?}", ledger.violations);
    assert!(ledger.adds_ok > 0 && ledger.adds_killed > 0, "the schedule should kill and spare");

    // The store holds exactly what was acknowledged, plus killed containers not yet DELed.
    let (held, _) = dump(&data_dir);
    for (address, container) in &ledger.told {
        assert_eq!(held.get(address), Some(container), "an acknowledged ADD was lost: {address}");
    }
    let holders: BTreeSet<&String> = held.values().collect();
    assert_eq!(holders.len(), held.len(), "a container holds two addresses: {held:?}");
    let killed_in_store = held
        .values()
        .filter(|c| !ledger.told.values().any(|t| t == *c))
        .inspect(|c| {
            assert!(ledger.killed_pending.contains(*c), "{c} is held but was DELed or never got it")
        })
        .count();
    eprintln!(
        "{killed_in_store} of the killed ADDs not DELed at once had committed before the kill"
    );

    // DEL of every container id used: nothing is left, not even a reservation.
    for container in &ledger.every_container {
        let out = cni("DEL", container, &conf, None);
        assert!(out.status.success(), "DEL {container}: {}", String::from_utf8_lossy(&out.stdout));
    }
    let (held, reservations) = dump(&data_dir);
    assert!(
        held.is_empty() && reservations == 0,
        "left after DEL of everyone: {held:?}, {reservations} reservations"
    );

    // A fresh fill gets every address of the /27, lowest first, and then the pool is full.
    let filled: Vec<String> = (0..30)
        .map(|i| {
            let out = cni("ADD", &format!("fill-{i:02}"), &conf, None);
            assert!(out.status.success(), "fill {i}: {}", String::from_utf8_lossy(&out.stdout));
            address_of(&out)
        })
        .collect();
    let every: Vec<String> = (1..=30).map(|i| format!("10.40.0.{i}")).collect();
    assert_eq!(filled, every, "an address was stranded");
    assert_eq!(code_of(&cni("ADD", "one-too-many", &conf, None)), Some(100));

    let check = Command::new(BIN)
        .args(["store", "check", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}
