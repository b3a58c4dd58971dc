//! kill -9 at random moments during parallel ADDs, then proof that the store is consistent:
//! every file parses, no address is held twice, every container whose ADD succeeded is
//! recorded with the address it was told, and DEL cleans up after the killed ones.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BIN, Cni, Net, add, shared_cache};

#[path = "../common/rng.rs"]
mod rng;
use rng::Rng;

fn spawn_add(conf: &str, container: &str) -> Child {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("HEREABOUTS_CACHE_DIR", shared_cache())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    child
}

#[test]
fn killed_adds_leave_a_consistent_store() {
    let net = Net::new("chaos");
    let conf = net.conf("1.0.0", json!({"range": "10.30.0.0/24"}));
    let text = conf.to_string();
    // Compile the component into the shared cache first: killing a compiler is not the point.
    add(&conf, "warm-up");
    Cni::new("DEL").container("warm-up").run(&conf).ok();

    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            | 1;
    eprintln!("chaos seed: {seed}");
    let mut rng = Rng(seed);
    let mut survivors: BTreeMap<String, String> = BTreeMap::new();
    let mut killed: BTreeSet<String> = BTreeSet::new();
    for round in 0..4 {
        let start = Instant::now();
        let mut children: Vec<(String, Child, Option<Duration>)> = (0..30)
            .map(|i| {
                let container = format!("r{round}-c{i:02}");
                let child = spawn_add(&text, &container);
                // About half are killed, at a moment spread over the run's lifetime.
                let kill_at = (rng.below(2) == 0).then(|| Duration::from_micros(rng.below(60_000)));
                (container, child, kill_at)
            })
            .collect();
        let mut schedule: Vec<(Duration, usize)> = children
            .iter()
            .enumerate()
            .filter_map(|(i, (_, _, at))| at.map(|at| (at, i)))
            .collect();
        schedule.sort();
        for (at, i) in schedule {
            if let Some(wait) = at.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let _ = children[i].1.kill(); // SIGKILL; harmless if it already exited
        }
        for (container, child, _) in children {
            let out = child.wait_with_output().unwrap();
            match out.status.code() {
                Some(0) => {
                    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
                    let address = result["ips"][0]["address"]
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .to_string();
                    survivors.insert(container, address);
                }
                None => {
                    killed.insert(container);
                }
                Some(code) => panic!(
                    "{container} failed without being killed ({code}): {}",
                    String::from_utf8_lossy(&out.stdout)
                ),
            }
        }
    }
    eprintln!("{} ADDs succeeded, {} were killed", survivors.len(), killed.len());
    assert!(!survivors.is_empty() && !killed.is_empty(), "the schedule should both kill and spare");

    // The store as its own tool reads it (a damaged database fails here).
    let store = net.snapshot();
    let pool = &store["IPPool/10.30.0.0-24"];
    let slots: BTreeMap<String, String> = pool["allocations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(offset, holder)| (offset.clone(), holder["id"].as_str().unwrap().to_string()))
        .collect();
    // Each container holds at most one slot (offsets are unique keys by construction).
    let holders: BTreeSet<&String> = slots.values().collect();
    assert_eq!(holders.len(), slots.len(), "a container holds two addresses: {slots:?}");
    // Every successful ADD is recorded, with the address the container was told.
    let told: BTreeSet<&String> = survivors.values().collect();
    assert_eq!(told.len(), survivors.len(), "two containers were told one address: {survivors:?}");
    for (container, address) in &survivors {
        let offset = address.rsplit('.').next().unwrap();
        assert_eq!(
            slots.get(offset),
            Some(container),
            "{container} was told {address}; the pool says {slots:?}"
        );
    }
    // Anything else in the pool belongs to a killed ADD that got as far as its write.
    for (offset, holder) in &slots {
        assert!(
            survivors.contains_key(holder) || killed.contains(holder),
            "unknown holder {holder} at {offset}"
        );
    }
    // Every pool slot has its network reservation, held by the same container, and every
    // reservation its slot: both are written in one transaction, so a kill strands nothing.
    let reserved: BTreeMap<String, String> = store
        .iter()
        .filter_map(|(key, spec)| {
            let address = key.strip_prefix("OverlappingRangeIPReservation/")?;
            Some((address.to_string(), spec["containerid"].as_str().unwrap().to_string()))
        })
        .collect();
    let expected: BTreeMap<String, String> = slots
        .iter()
        .map(|(offset, holder)| (format!("10.30.0.{offset}"), holder.clone()))
        .collect();
    assert_eq!(reserved, expected, "reservations and slots disagree");

    // ADD again is idempotent for the survivors…
    for (container, address) in survivors.iter().take(5) {
        assert_eq!(&add(&conf, container), address);
    }
    // …and the runtime's DEL after a failed ADD frees what the killed ones took.
    for container in survivors.keys().chain(&killed) {
        Cni::new("DEL").container(container).run(&conf).ok();
    }
    assert!(net.allocations("10.30.0.0-24").is_empty(), "{:?}", net.allocations("10.30.0.0-24"));
    let fresh = add(&conf, "after-chaos");
    assert!(fresh.starts_with("10.30.0."), "{fresh}");
}
