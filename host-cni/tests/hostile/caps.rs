//! Oversized inputs and calls that would never end: each is refused, naming its limit.

use serde_json::{Value, json};

use super::{Cni, TempDir, conf};

/// 2 MiB on stdin (a valid config padded with spaces): refused without reading it all.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn stdin_is_capped() {
    let dir = TempDir::new("stdin");
    let text = conf(&dir, json!({})).to_string();
    let padded = format!("{text}{}", " ".repeat(2 << 20));
    let out = Cni::new("ADD").run_bytes(padded.into_bytes());
    let msg = out.err(7);
    assert!(msg.starts_with("stdin:") && msg.contains("1048576"), "{msg}");
    assert!(!dir.join("store").exists(), "nothing is touched");
    // 50 MB: the memory stays that of a normal call.
    let huge = format!("{text}{}", " ".repeat(50 << 20));
    let out = Cni::new("ADD").run_bytes(huge.into_bytes());
    out.err(7);
    assert!(out.peak_rss_kib < 100 << 10, "{} KiB for a refused stdin", out.peak_rss_kib);
}

/// 129 `ipRanges` (the cap is 128): refused by the core, naming the list.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn ranges_are_capped() {
    let dir = TempDir::new("ranges");
    let ranges: Vec<Value> = (0..129)
        .map(|i| json!({"range": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)}))
        .collect();
    let mut config = conf(&dir, json!({"ipRanges": ranges}));
    config["ipam"].as_object_mut().unwrap().remove("range");
    let msg = Cni::new("ADD").run(&config).err(7);
    assert!(msg.contains("ipRanges") && msg.contains("128"), "{msg}");
    let mut fits = config.clone();
    fits["ipam"]["ipRanges"].as_array_mut().unwrap().truncate(128);
    Cni::new("ADD").run(&fits).ok();
}

/// A 5,000-character `CNI_IFNAME` (Linux takes 15) and a 300-character container id are not
/// stored: ADD refuses them (CNI 4); DEL of anything stays possible.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn interface_names_and_container_ids_are_capped() {
    let dir = TempDir::new("names");
    let config = conf(&dir, json!({}));
    let long = "e".repeat(5000);
    let msg = Cni::new("ADD").env("CNI_IFNAME", &long).run(&config).err(4);
    assert!(msg.starts_with("CNI_IFNAME:") && msg.contains("15"), "{msg}");
    let msg = Cni::new("ADD").env("CNI_IFNAME", "eth0/../x").run(&config).err(4);
    assert!(msg.starts_with("CNI_IFNAME:"), "{msg}");
    let msg = Cni::new("ADD").container(&"c".repeat(300)).run(&config).err(4);
    assert!(msg.starts_with("CNI_CONTAINERID:") && msg.contains("256"), "{msg}");
    assert!(!dir.join("store/store.sqlite").exists(), "nothing was stored");
    Cni::new("ADD").env("CNI_IFNAME", "a23456789012345").run(&config).ok();
    Cni::new("DEL").env("CNI_IFNAME", &long).run(&config).ok();
}

impl Cni {
    pub fn container(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }
}

/// A store that accepts the connection and never answers: the call ends at its deadline with
/// CNI 11 ("try again later") instead of holding the runtime for ever.
#[test]
#[ignore = "hostile suite: ./test.sh hostile"]
fn every_call_has_a_deadline() {
    let dir = TempDir::new("deadline");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream); // accepted, never answered
        }
    });
    let config = conf(
        &dir,
        json!({"etcd_host": format!("127.0.0.1:{port}"), "etcd_dial_timeout": 3600,
               "etcd_request_timeout": 3600}),
    );
    let mut call = Cni::new("ADD").env("HEREABOUTS_CALL_DEADLINE_SECONDS", "2");
    call.limit = std::time::Duration::from_secs(20);
    let out = call.run(&config);
    let msg = out.err(11);
    assert!(msg.contains("deadline of 2 s"), "{msg}");
    assert!(out.elapsed < std::time::Duration::from_secs(10), "{:?}", out.elapsed);
}
