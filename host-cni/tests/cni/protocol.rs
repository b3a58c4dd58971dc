//! The CNI verbs and result formats, on the embedded local store.

use serde_json::{Value, json};

use super::{Cni, Net, TempDir, add, address};

const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn version_lists_every_supported_version() {
    let out = Cni::new("VERSION").run(&json!({"cniVersion": "1.0.0"})).ok();
    assert_eq!(out["supportedVersions"], json!(VERSIONS));
    assert_eq!(out["cniVersion"], "1.1.0");
    // VERSION works without a config, as runtimes probe with whatever they have.
    assert_eq!(Cni::new("VERSION").run_text("").ok()["supportedVersions"], json!(VERSIONS));
}

#[test]
fn add_answers_in_the_request_version_layout() {
    let net = Net::new("layouts");
    for (i, version) in VERSIONS.iter().enumerate() {
        let conf = net.conf(version, json!({"range": "10.1.0.0/24", "gateway": "10.1.0.254"}));
        let result = Cni::new("ADD").container(&format!("c{i}")).run(&conf).ok();
        assert_eq!(result["cniVersion"], *version);
        let expected = format!("10.1.0.{}/24", i + 1);
        match *version {
            "0.1.0" | "0.2.0" => {
                assert_eq!(
                    result["ip4"],
                    json!({"ip": expected, "gateway": "10.1.0.254"}),
                    "{version}"
                );
                assert!(result.get("ips").is_none());
            }
            "0.3.0" | "0.3.1" | "0.4.0" => {
                assert_eq!(
                    result["ips"],
                    json!([{"version": "4", "address": expected, "gateway": "10.1.0.254"}]),
                    "{version}"
                );
            }
            _ => assert_eq!(
                result["ips"],
                json!([{"address": expected, "gateway": "10.1.0.254"}]),
                "{version}"
            ),
        }
    }
}

#[test]
fn add_is_idempotent_lowest_packed_and_del_frees() {
    let net = Net::new("lowest");
    let conf = net.conf("1.0.0", json!({"range": "10.2.0.0/29"}));
    assert_eq!(add(&conf, "a"), "10.2.0.1");
    assert_eq!(add(&conf, "b"), "10.2.0.2");
    assert_eq!(add(&conf, "c"), "10.2.0.3");
    // The same container and interface again: the same address, no new allocation.
    assert_eq!(add(&conf, "a"), "10.2.0.1");
    assert_eq!(net.allocations("10.2.0.0-29").len(), 3);
    // Another interface of the same container is another attachment.
    let eth1 = Cni::new("ADD").container("a").env("CNI_IFNAME", "eth1").run(&conf).ok();
    assert_eq!(address(&eth1, 0), "10.2.0.4");

    Cni::new("DEL").container("a").run(&conf).ok();
    assert_eq!(net.allocations("10.2.0.0-29").get("1"), None);
    assert_eq!(
        net.allocations("10.2.0.0-29").get("4").map(String::as_str),
        Some("a"),
        "eth1 is kept"
    );
    // The lowest free address comes back first.
    assert_eq!(add(&conf, "d"), "10.2.0.1");
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    let net = Net::new("del");
    let conf = net.conf("0.4.0", json!({"range": "10.3.0.0/24"}));
    add(&conf, "a");
    let before = net.snapshot();
    Cni::new("DEL").container("a").env_remove("CNI_NETNS").run(&conf).ok();
    assert_ne!(net.snapshot(), before);
    let after = net.snapshot();
    assert_eq!(Cni::new("DEL").container("a").run(&conf).ok(), Value::Null);
    assert_eq!(Cni::new("DEL").container("never-added").run(&conf).ok(), Value::Null);
    assert_eq!(net.snapshot(), after, "DEL of nothing writes nothing");
    assert!(net.allocations("10.3.0.0-24").is_empty());
}

#[test]
fn pod_reference_and_interface_are_recorded_like_whereabouts() {
    let net = Net::new("podref");
    let conf = net.conf("1.0.0", json!({"range": "10.4.0.0/24", "network_name": "blue"}));
    Cni::new("ADD")
        .container("cid-1")
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=cid-1")
        .run(&conf)
        .ok();
    let pool = net.pool("blue-10.4.0.0-24");
    assert_eq!(pool["range"], "10.4.0.0/24");
    assert_eq!(
        pool["allocations"]["1"],
        json!({"id": "cid-1", "ifname": "eth0", "podref": "shop/web-0"})
    );
}

#[test]
fn requested_addresses_from_cni_args_and_runtime_config() {
    let net = Net::new("requested");
    let conf = net.conf("1.0.0", json!({"range": "10.5.0.0/24"}));
    let from_args = Cni::new("ADD").container("a").env("CNI_ARGS", "IP=10.5.0.50").run(&conf).ok();
    assert_eq!(address(&from_args, 0), "10.5.0.50");
    let mut with_ips = conf.clone();
    with_ips["runtimeConfig"] = json!({"ips": ["10.5.0.60/24"]});
    assert_eq!(add(&with_ips, "b"), "10.5.0.60");
    // A taken address is refused with our code 101, naming the address and its holder.
    let taken = Cni::new("ADD").container("c").env("CNI_ARGS", "IP=10.5.0.50").run(&conf);
    let msg = taken.err(101);
    assert!(msg.contains("10.5.0.50") && msg.contains('a'), "{msg}");
    // Without a request, allocation continues from the lowest free address.
    assert_eq!(add(&conf, "d"), "10.5.0.1");
}

/// `exclude_gateway: true` (issue 24): the gateway is never handed out, neither as the lowest
/// free address nor when asked for; the result still carries it as the gateway; DEL works.
#[test]
fn exclude_gateway_keeps_the_gateway_out_of_the_embedded_store() {
    let net = Net::new("exclude-gateway");
    let conf = net.conf(
        "1.0.0",
        json!({"ipRanges": [{"range": "10.6.0.0/24"}, {"range": "fd06::/64"}],
               "gateway": "10.6.0.1", "exclude_gateway": true}),
    );
    let first = Cni::new("ADD").container("a").run(&conf).ok();
    assert_eq!((address(&first, 0), address(&first, 1)), ("10.6.0.2".into(), "fd06::1".into()));
    assert_eq!(first["ips"][0]["gateway"], "10.6.0.1", "{first}");
    let asked = Cni::new("ADD").container("b").env("CNI_ARGS", "IP=10.6.0.1").run(&conf);
    let msg = asked.err(101);
    assert!(msg.contains("10.6.0.1") && msg.contains("exclude_gateway"), "{msg}");
    assert_eq!(add(&conf, "c"), "10.6.0.3");
    assert!(net.allocations("10.6.0.0-24").keys().all(|offset| offset != "1"));
    Cni::new("DEL").container("a").run(&conf).ok();
    assert_eq!(add(&conf, "d"), "10.6.0.2");
}

#[test]
fn static_routes_dns_and_addresses_pass_through() {
    let net = Net::new("statics");
    let conf = net.conf(
        "0.3.1",
        json!({
            "ipRanges": [{"range": "10.6.0.0/24", "exclude": ["10.6.0.1/32"]}, {"range": "fd06::/64"}],
            "gateway": "10.6.0.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.6.0.1"}, {"dst": "fd07::/64"}],
            "dns": {"nameservers": ["10.6.0.53"], "search": ["svc.local"]},
            "addresses": [{"address": "192.168.60.5/24", "gateway": "192.168.60.1"}]
        }),
    );
    let result = Cni::new("ADD").run(&conf).ok();
    assert_eq!(
        result["ips"],
        json!([
            {"version": "4", "address": "10.6.0.2/24", "gateway": "10.6.0.1"},
            {"version": "6", "address": "fd06::1/64"},
            {"version": "4", "address": "192.168.60.5/24", "gateway": "192.168.60.1"}
        ]),
        "the gateway goes on its own family only"
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.6.0.1"}, {"dst": "fd07::/64"}])
    );
    assert_eq!(result["dns"], json!({"nameservers": ["10.6.0.53"], "search": ["svc.local"]}));
}

#[test]
fn check_passes_for_a_live_allocation_and_fails_clearly_otherwise() {
    let net = Net::new("check");
    let conf = net.conf("1.0.0", json!({"range": "10.7.0.0/24"}));
    let result = Cni::new("ADD").container("a").run(&conf).ok();
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    assert_eq!(Cni::new("CHECK").container("a").run(&with_prev).ok(), Value::Null);

    // prevResult that lacks the allocated address.
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.7.0.99/24");
    assert!(Cni::new("CHECK").container("a").run(&wrong).err(7).contains("10.7.0.1/24"));
    // No prevResult at all.
    assert!(Cni::new("CHECK").container("a").run(&conf).err(7).starts_with("prevResult:"));
    // CHECK came with 0.4.0.
    let mut old = with_prev.clone();
    old["cniVersion"] = json!("0.3.1");
    assert!(Cni::new("CHECK").container("a").run(&old).err(1).contains("CHECK"));
    // After DEL the container has nothing: error 3 naming the container.
    Cni::new("DEL").container("a").run(&conf).ok();
    let msg = Cni::new("CHECK").container("a").run(&with_prev).err(3);
    assert!(msg.contains("container a"), "{msg}");
}

#[test]
fn gc_frees_every_attachment_not_listed() {
    let net = Net::new("gc");
    let conf = net.conf("1.1.0", json!({"range": "10.8.0.0/24"}));
    for c in ["keep-1", "gone-1", "keep-2", "gone-2"] {
        add(&conf, c);
    }
    Cni::new("ADD").container("keep-1").env("CNI_IFNAME", "net1").run(&conf).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "keep-1", "ifname": "eth0"},
        {"containerID": "keep-2", "ifname": "eth0"},
        {"containerID": "unrelated", "ifname": "eth0"}
    ]);
    assert_eq!(
        Cni::new("GC").env_remove("CNI_CONTAINERID").env_remove("CNI_IFNAME").run(&gc).ok(),
        Value::Null
    );
    let left: Vec<(String, String)> = net.allocations("10.8.0.0-24").into_iter().collect();
    assert_eq!(left, vec![("1".into(), "keep-1".into()), ("3".into(), "keep-2".into())]);
    // The freed addresses are handed out again, lowest first.
    assert_eq!(add(&conf, "new"), "10.8.0.2");
    // GC came with 1.1.0; without the list, nothing is freed.
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    assert!(Cni::new("GC").run(&old).err(1).contains("GC"));
    let before = net.snapshot();
    assert!(Cni::new("GC").run(&conf).err(7).starts_with("cni.dev/valid-attachments"));
    assert_eq!(net.snapshot(), before);
}

#[test]
fn status_reports_whether_the_store_is_usable() {
    let net = Net::new("status");
    let conf = net.conf("1.1.0", json!({"range": "10.9.0.0/24"}));
    assert_eq!(Cni::new("STATUS").run(&conf).ok(), Value::Null);
    // A store directory that cannot exist: a regular file stands where it would go.
    let blocker = net.dir.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let mut broken = conf.clone();
    broken["ipam"]["data_dir"] = json!(blocker.join("store"));
    let msg = Cni::new("STATUS").run(&broken).err(50);
    assert!(msg.contains(blocker.to_str().unwrap()), "{msg}");
    // A damaged database makes the store unusable.
    add(&conf, "a");
    let database = net.data_dir().join(hereabouts_stores::sqlite::DATABASE_FILE);
    std::fs::write(&database, b"not a database, and long enough to look like a header".repeat(80))
        .unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let msg = Cni::new("STATUS").run(&conf).err(50);
    assert!(msg.contains(&database.display().to_string()), "{msg}");
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    Cni::new("STATUS").run(&old).err(1);
}

#[test]
fn whereabouts_type_and_flat_file_are_accepted() {
    let net = Net::new("flat");
    let flat = net.dir.path().join("whereabouts.conf");
    // The flat file fills in what the network config lacks; the network config wins.
    std::fs::write(
        &flat,
        json!({"range": "10.99.0.0/24", "exclude": ["10.10.0.1/32"], "network_name": "flat"})
            .to_string(),
    )
    .unwrap();
    let conf = net.conf(
        "1.0.0",
        json!({"type": "whereabouts", "range": "10.10.0.0/24", "configuration_path": flat}),
    );
    assert_eq!(add(&conf, "a"), "10.10.0.2");
    assert_eq!(net.allocations("flat-10.10.0.0-24").len(), 1);
    // An unknown store named in the flat file is refused before anything is written.
    std::fs::write(&flat, json!({"datastore": "zookeeper"}).to_string()).unwrap();
    let before = net.snapshot();
    let msg = Cni::new("ADD").container("b").run(&conf).err(7);
    assert!(msg.starts_with("ipam.datastore:"), "{msg}");
    assert_eq!(net.snapshot(), before);
}

#[test]
fn logs_go_to_log_file_never_to_stdout() {
    let net = Net::new("logs");
    let log = net.dir.path().join("hereabouts.log");
    let conf =
        net.conf("1.0.0", json!({"range": "10.11.0.0/24", "log_file": log, "log_level": "debug"}));
    let out = Cni::new("ADD").env("HEREABOUTS_LOG_DIR", net.dir.path()).run(&conf);
    let result = out.ok();
    assert_eq!(address(&result, 0), "10.11.0.1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("allocated") && text.contains("10.11.0.1/24"), "{text}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// Slices mean nothing on one node: the local store accepts `node_slice_size`, says once per
/// call that it has no effect, and allocates from the whole range as one pool.
#[test]
fn node_slice_size_on_the_local_store_is_accepted_and_has_no_effect() {
    let net = Net::new("slices");
    let log = net.dir.path().join("hereabouts.log");
    let ipam = json!({"range": "10.13.0.0/24", "node_slice_size": "/28", "log_file": log,
                      "log_level": "verbose"});
    let conf = net.conf("1.0.0", ipam);
    let logging = |c: &str| Cni::new("ADD").container(c).env("HEREABOUTS_LOG_DIR", net.dir.path());
    let first = logging("a").run(&conf).ok();
    let second = logging("b").run(&conf).ok();
    assert_eq!((address(&first, 0), address(&second, 0)), ("10.13.0.1".into(), "10.13.0.2".into()));
    assert_eq!(first["ips"][0]["address"], "10.13.0.1/24");
    assert_eq!(net.allocations("10.13.0.0-24").len(), 2);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("node_slice_size has no effect").count(), 2, "{text}");
    // A size that cannot cut the range is refused, naming the key.
    let bad = net.conf("1.0.0", json!({"range": "10.13.0.0/24", "node_slice_size": "/16"}));
    let message = Cni::new("ADD").container("c").run(&bad).err(7);
    assert!(message.starts_with("node_slice_size: /16 is shorter"), "{message}");
}

#[test]
fn a_corrupt_component_cache_is_recompiled() {
    let dir = TempDir::new("cache");
    let net = Net::new("cache");
    let conf = net.conf("1.0.0", json!({"range": "10.12.0.0/24"}));
    let run =
        |c: &str| Cni::new("ADD").container(c).env("HEREABOUTS_CACHE_DIR", dir.path()).run(&conf);
    assert_eq!(address(&run("a").ok(), 0), "10.12.0.1");
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    std::fs::write(&cached[0], b"not a compiled component").unwrap();
    assert_eq!(address(&run("b").ok(), 0), "10.12.0.2");
    let repaired = std::fs::read(&cached[0]).unwrap();
    assert!(
        repaired.len() > 1000 && repaired != b"not a compiled component",
        "cache entry rewritten"
    );
}
