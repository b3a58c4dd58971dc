//! Switching from Whereabouts without surprises (issue 20): a pod never gets an address from a
//! store nobody chose, DEL always lets the pod go, and `GATEWAY=` in CNI_ARGS is read.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BIN, Cni, Net, add, shared_cache};
use hereabouts_host::config::FLAT_FILE_PATHS;

const POD: &str = "K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-0";

/// `conf` without the `data_dir` the test harness adds: a config that chooses no store.
fn without_store(conf: &Value) -> Value {
    let mut conf = conf.clone();
    conf["ipam"].as_object_mut().unwrap().remove("data_dir");
    conf
}

#[test]
fn a_pod_never_gets_an_address_from_a_store_nobody_chose() {
    let net = Net::new("unchosen");
    let flat = net.dir.path().join("not-there.conf");
    let conf = net.conf(
        "1.0.0",
        json!({"type": "whereabouts", "range": "10.30.0.0/24", "configuration_path": flat}),
    );
    let bare = without_store(&conf);
    // Whereabouts' type, no kubeconfig, no etcd, no flat file: ADD fails, naming every path
    // searched and the way to choose the node-local store on purpose.
    let msg = Cni::new("ADD").env("CNI_ARGS", POD).run(&bare).err(7);
    assert!(msg.starts_with("no store configured"), "{msg}");
    for path in std::iter::once(flat.to_str().unwrap()).chain(FLAT_FILE_PATHS.iter().copied()) {
        assert!(msg.contains(path), "does not list {path}: {msg}");
    }
    assert!(msg.contains(r#""datastore": "local""#) && msg.contains("data_dir"), "{msg}");
    // Refused before any store is opened (the harness's data_dir was removed from the config,
    // so the directory must stay absent).
    assert!(!net.data_dir().exists());
    // CHECK and STATUS refuse it the same way; DEL succeeds and frees nothing.
    let mut check = bare.clone();
    check["prevResult"] = json!({"cniVersion": "1.0.0", "ips": []});
    assert!(Cni::new("CHECK").env("CNI_ARGS", POD).run(&check).err(7).contains("no store"));
    let mut status = bare.clone();
    status["cniVersion"] = json!("1.1.0");
    assert!(Cni::new("STATUS").run(&status).err(7).contains("no store"));
    Cni::new("DEL").env("CNI_ARGS", POD).run(&bare).ok();
    // `type: hereabouts` with a pod's args is a Kubernetes call too.
    let mut ours = bare.clone();
    ours["ipam"]["type"] = json!("hereabouts");
    assert!(Cni::new("ADD").env("CNI_ARGS", POD).run(&ours).err(7).contains("no store"));

    // Chosen on purpose, the same pod gets its address from the local store: `data_dir` …
    assert_eq!(
        Cni::new("ADD").env("CNI_ARGS", POD).run(&conf).ok()["ips"][0]["address"],
        "10.30.0.1/24"
    );
    // … or `datastore: local` (with data_dir, so as not to write the node's default) …
    let mut local = conf.clone();
    local["ipam"]["datastore"] = json!("local");
    assert_eq!(add(&local, "c-local"), "10.30.0.2");
    // … or a flat file that chooses it (Whereabouts' configuration_path, merged).
    std::fs::write(&flat, json!({"datastore": "local", "data_dir": net.data_dir()}).to_string())
        .unwrap();
    let other_pod = "K8S_POD_NAMESPACE=web;K8S_POD_NAME=db-1";
    let out = Cni::new("ADD").container("c-flat").env("CNI_ARGS", other_pod).run(&bare).ok();
    assert_eq!(out["ips"][0]["address"], "10.30.0.3/24");
    // A flat file that names no store is no store: the message says so.
    std::fs::write(&flat, r#"{"log_level": "debug"}"#).unwrap();
    let msg = Cni::new("ADD").container("c-x").env("CNI_ARGS", POD).run(&bare).err(7);
    assert!(msg.contains(&format!("the flat file {} names none either", flat.display())), "{msg}");
}

/// A config the core refuses because it hands out nothing (everything excluded): ADD fails as
/// before; DEL of a container that got its address before the NAD was edited frees it.
#[test]
fn del_frees_under_a_config_that_hands_out_nothing() {
    let net = Net::new("del-empty");
    let conf = net.conf("1.0.0", json!({"range": "10.7.0.4/30"}));
    assert_eq!(add(&conf, "before-edit"), "10.7.0.5");
    let mut edited = conf.clone();
    edited["ipam"]["exclude"] = json!(["10.7.0.4/30"]);
    let msg = Cni::new("ADD").container("after-edit").run(&edited).err(7);
    assert!(msg.contains("leaves no address to hand out"), "{msg}");
    assert_eq!(net.allocations("10.7.0.4-30").len(), 1);
    let out = Cni::new("DEL").container("before-edit").run(&edited);
    assert_eq!(out.ok(), Value::Null);
    assert_eq!(net.allocations("10.7.0.4-30").len(), 0, "DEL freed the address");
    // A /32 and no range at all: DEL succeeds (nothing to free there).
    for ipam in [json!({"range": "10.7.0.9/32"}), json!({})] {
        let mut conf = net.conf("1.0.0", ipam);
        if conf["ipam"].get("range").is_none() {
            conf["ipam"].as_object_mut().unwrap().remove("range");
        }
        Cni::new("DEL").container("before-edit").run(&conf).ok();
    }
    // A range that does not parse: nothing can be found to free; DEL logs why, succeeds.
    let mut broken = conf.clone();
    broken["ipam"]["range"] = json!("10.7.0.4/33");
    assert_eq!(add(&conf, "kept"), "10.7.0.5");
    let before = net.snapshot();
    let out = Cni::new("DEL").container("kept").run(&broken);
    out.ok();
    assert!(out.stderr.contains("range") && out.stderr.contains("nothing freed"), "{}", out.stderr);
    assert_eq!(net.snapshot(), before);
}

/// The store cannot be reached (here: another writer holds SQLite's lock past the busy
/// timeout). DEL does what Whereabouts does — logs and succeeds — and the address stays
/// allocated, which `hereabouts status` shows (and `reconcile` frees).
#[test]
fn del_on_an_unreachable_store_succeeds_and_status_shows_what_was_left() {
    let net = Net::new("del-locked");
    let conf = net.conf("1.0.0", json!({"range": "10.31.0.0/29"}));
    assert_eq!(add(&conf, "left"), "10.31.0.1");
    let store = hereabouts_stores::sqlite::SqliteStore::open_existing(&net.data_dir()).unwrap();
    store.connection().execute_batch("BEGIN EXCLUSIVE").unwrap();
    let t0 = Instant::now();
    let out = Cni::new("DEL").container("left").run(&conf);
    let waited = t0.elapsed();
    store.connection().execute_batch("ROLLBACK").unwrap();
    drop(store);
    assert_eq!(out.ok(), Value::Null, "DEL succeeds");
    assert!(waited >= Duration::from_secs(1), "DEL did wait for the lock: {waited:?}");
    assert!(
        out.stderr.contains("nothing freed") && out.stderr.contains("hereabouts reconcile"),
        "DEL logs what it left: {}",
        out.stderr
    );
    // What was left behind: the address, still held by the deleted container.
    let config = net.dir.path().join("net.conf");
    std::fs::write(&config, conf.to_string()).unwrap();
    let status = std::process::Command::new(BIN)
        .args(["status", "--format", "json", "--config"])
        .arg(&config)
        .env("HEREABOUTS_CACHE_DIR", shared_cache())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    let pools = report["pools"].as_array().expect("pools");
    assert_eq!(pools[0]["allocated"], 1, "{report}");
    let who = std::process::Command::new(BIN)
        .args(["status", "--who", "10.31.0.1", "--config"])
        .arg(&config)
        .env("HEREABOUTS_CACHE_DIR", shared_cache())
        .output()
        .unwrap();
    let who = String::from_utf8_lossy(&who.stdout);
    assert!(who.contains("left"), "status names the deleted container as the holder: {who}");
    // Once the store is back, the runtime's next DEL (or reconcile) frees it.
    Cni::new("DEL").container("left").run(&conf).ok();
    assert!(net.allocations("10.31.0.0-29").is_empty());
}

/// CNI_ARGS `GATEWAY=`, as Whereabouts reads it: on the static addresses whose network
/// contains it, and on an address asked for with `IP=`; a bad one fails ADD (4), never DEL.
#[test]
fn gateway_in_cni_args_goes_on_the_addresses_that_contain_it() {
    let net = Net::new("gateway-args");
    let conf = net.conf(
        "1.0.0",
        json!({"range": "192.168.1.44/28", "gateway": "192.168.1.1", "addresses": [
            {"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
            {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"}]}),
    );
    let gateways = |result: &Value| -> Vec<String> {
        result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                format!(
                    "{} via {}",
                    ip["address"].as_str().unwrap(),
                    ip["gateway"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    let plain = Cni::new("ADD").container("a").run(&conf).ok();
    assert_eq!(
        gateways(&plain),
        [
            "192.168.1.33/28 via 192.168.1.1",
            "10.10.0.1/24 via 10.10.0.254",
            "3ffe:ffff:0:01ff::1/64 via 3ffe:ffff:0::1"
        ]
    );
    let args = "IgnoreUnknown=1;GATEWAY=10.10.0.200,3ffe:ffff:0:1ff::fe";
    let result = Cni::new("ADD").container("b").env("CNI_ARGS", args).run(&conf).ok();
    assert_eq!(
        gateways(&result),
        [
            "192.168.1.34/28 via 192.168.1.1",
            "10.10.0.1/24 via 10.10.0.200",
            "3ffe:ffff:0:01ff::1/64 via 3ffe:ffff:0:1ff::fe"
        ]
    );
    let args = "IP=192.168.1.40;GATEWAY=192.168.1.46";
    let result = Cni::new("ADD").container("c").env("CNI_ARGS", args).run(&conf).ok();
    assert_eq!(gateways(&result)[0], "192.168.1.40/28 via 192.168.1.46");
    let before = net.snapshot();
    let msg = Cni::new("ADD").container("d").env("CNI_ARGS", "GATEWAY=router").run(&conf).err(4);
    assert_eq!(msg, r#"CNI_ARGS: GATEWAY: "router" is not an IP address"#);
    assert_eq!(net.snapshot(), before, "nothing allocated for a bad GATEWAY");
    Cni::new("DEL").container("c").env("CNI_ARGS", "GATEWAY=router").run(&conf).ok();
    assert_eq!(net.allocations("192.168.1.32-28").len(), 2, "DEL freed c's address");
}

/// etcd and the API server down (a closed loopback port): ADD fails so the runtime retries
/// (CNI 11 or 5), DEL succeeds and logs what it could not free.
#[test]
fn del_succeeds_when_etcd_or_the_api_server_cannot_be_reached() {
    let net = Net::new("del-down");
    let kubeconfig = net.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .unwrap();
    for store in [
        json!({"etcd_host": "127.0.0.1:1", "etcd_dial_timeout": 1, "etcd_request_timeout": 1}),
        json!({"kubernetes": {"kubeconfig": kubeconfig}}),
    ] {
        let mut ipam = json!({"type": "whereabouts", "range": "10.32.0.0/24"});
        ipam.as_object_mut().unwrap().extend(store.as_object().unwrap().clone());
        let conf = without_store(&net.conf("1.0.0", ipam));
        let add = Cni::new("ADD").env("CNI_ARGS", POD).run(&conf);
        assert_ne!(add.status, Some(0), "{store}: {add:?}");
        let del = Cni::new("DEL").env("CNI_ARGS", POD).run(&conf);
        assert_eq!(del.ok(), Value::Null, "{store}");
        assert!(del.stderr.contains("nothing freed"), "{store}: {}", del.stderr);
    }
}
