//! Bad input and faults: each gets its CNI code, a message naming the field, no panic text on
//! stdout, and leaves the store exactly as it was.

use serde_json::{Value, json};

use super::{Cni, Net, add};

/// A store holding one allocation, and the network config that made it.
fn populated(tag: &str) -> (Net, Value) {
    let net = Net::new(tag);
    let conf = net.conf("1.0.0", json!({"range": "10.20.0.0/24"}));
    assert_eq!(add(&conf, "existing"), "10.20.0.1");
    (net, conf)
}

/// Runs `cni` on `stdin`, expects `code` with `field` in the message, and no store change.
fn rejects(net: &Net, cni: Cni, stdin: &str, code: u64, field: &str) -> String {
    let before = net.snapshot();
    assert!(!before.is_empty());
    let out = cni.run_text(stdin);
    let msg = out.err(code);
    assert!(msg.contains(field), "message does not name `{field}`: {msg}");
    assert_eq!(net.snapshot(), before, "the store changed after: {msg}");
    msg
}

fn with_ipam(conf: &Value, key: &str, value: Value) -> String {
    let mut conf = conf.clone();
    conf["ipam"][key] = value;
    conf.to_string()
}

#[test]
fn malformed_json_is_code_6() {
    let (net, _) = populated("malformed");
    rejects(
        &net,
        Cni::new("ADD"),
        r#"{"cniVersion": "1.0.0", "ipam": {"type": "hereabouts""#,
        6,
        "not valid JSON",
    );
    rejects(&net, Cni::new("DEL"), "", 6, "not valid JSON");
}

#[test]
fn config_mistakes_are_code_7_naming_the_field() {
    let (net, conf) = populated("config");
    let mut no_range = conf.clone();
    no_range["ipam"].as_object_mut().unwrap().remove("range");
    rejects(&net, Cni::new("ADD").container("x"), &no_range.to_string(), 7, "range");
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "range", json!("10.20.0.0/33")),
        7,
        "range",
    );
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "range", json!("10.20.0.300/24")),
        7,
        "10.20.0.300/24",
    );
    // What Whereabouts silently ignores is ignored the same way (the ADD succeeds), and logged
    // naming the field and the value.
    for (key, value, ignored) in [
        ("range_start", json!("10.21.0.5"), "10.21.0.5"),
        ("exclude", json!(["10.20.0.8/30", "10.9.0.0/24"]), "10.9.0.0/24"),
    ] {
        let out = Cni::new("ADD").container(key).run_text(&with_ipam(&conf, key, value));
        out.ok();
        assert!(out.stderr.contains(key) && out.stderr.contains(ignored), "{}", out.stderr);
        assert!(!out.stdout.contains(ignored), "warnings never reach stdout: {}", out.stdout);
    }
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "exclude", json!(["10.20.0.8/30", 7])),
        7,
        "exclude",
    );
    let ip_ranges = json!([{"range": "fd00::/64", "range_end": "fe00::x"}]);
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "ipRanges", ip_ranges),
        7,
        "ipRanges[0].range_end",
    );
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "type", json!("host-local")),
        7,
        "ipam.type",
    );
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "routes", json!([{"dst": "nowhere"}])),
        7,
        "ipam.routes[0].dst",
    );
    let mut no_ipam = conf.clone();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    rejects(&net, Cni::new("ADD").container("x"), &no_ipam.to_string(), 7, "ipam");
    // DEL reads the same way, but never fails the pod's deletion: a broken config frees
    // nothing, and the log says why (see switch.rs).
    let before = net.snapshot();
    let out = Cni::new("DEL").container("existing").run_text(&with_ipam(
        &conf,
        "range",
        json!("10.20.0.0/33"),
    ));
    out.ok();
    assert!(out.stderr.contains("ipam.range") || out.stderr.contains("range:"), "{}", out.stderr);
    assert_eq!(net.snapshot(), before, "a broken config never frees anything");
}

#[test]
fn unknown_cni_version_is_code_1() {
    let (net, conf) = populated("version");
    for version in ["0.5.0", "1.2.0", "2.0.0", ""] {
        let mut bad = conf.clone();
        bad["cniVersion"] = json!(version);
        let msg = rejects(&net, Cni::new("ADD").container("x"), &bad.to_string(), 1, "cniVersion");
        assert!(msg.contains("1.1.0"), "lists what is supported: {msg}");
    }
}

#[test]
fn missing_environment_is_code_4_naming_the_variable() {
    let (net, conf) = populated("env");
    let text = conf.to_string();
    rejects(&net, Cni::new("ADD").env_remove("CNI_CONTAINERID"), &text, 4, "CNI_CONTAINERID");
    rejects(&net, Cni::new("ADD").env_remove("CNI_NETNS"), &text, 4, "CNI_NETNS");
    rejects(&net, Cni::new("ADD").env("CNI_IFNAME", ""), &text, 4, "CNI_IFNAME");
    rejects(&net, Cni::new("DEL").env_remove("CNI_CONTAINERID"), &text, 4, "CNI_CONTAINERID");
    rejects(&net, Cni::new("ADD").env("CNI_COMMAND", "ATTACH"), &text, 4, "CNI_COMMAND");
    rejects(&net, Cni::new("ADD").env("CNI_ARGS", "K8S_POD_NAME"), &text, 4, "CNI_ARGS");
}

#[test]
fn exhausted_pool_is_code_100_and_takes_nothing() {
    let net = Net::new("exhausted");
    // A /30 has two usable addresses.
    let conf = net.conf("1.0.0", json!({"range": "10.21.0.0/30"}));
    assert_eq!(add(&conf, "a"), "10.21.0.1");
    assert_eq!(add(&conf, "b"), "10.21.0.2");
    let msg = rejects(&net, Cni::new("ADD").container("c"), &conf.to_string(), 100, "10.21.0.0/30");
    assert!(msg.contains("range"), "{msg}");
    // Two ranges: when the second is exhausted, the address taken in the first is given back.
    let dual = net
        .conf("1.0.0", json!({"ipRanges": [{"range": "10.22.0.0/24"}, {"range": "10.21.0.0/30"}]}));
    let msg = Cni::new("ADD").container("c").run(&dual).err(100);
    assert!(msg.contains("ipRanges[1]"), "{msg}");
    assert!(net.allocations("10.22.0.0-24").is_empty());
    assert_eq!(net.allocations("10.21.0.0-30").len(), 2);
}

#[test]
fn an_excluded_or_foreign_requested_address_is_code_101() {
    let (net, conf) = populated("requested");
    let excluded = with_ipam(&conf, "exclude", json!(["10.20.0.96/27"]));
    rejects(
        &net,
        Cni::new("ADD").container("x").env("CNI_ARGS", "IP=10.20.0.100"),
        &excluded,
        101,
        "10.20.0.100",
    );
    rejects(
        &net,
        Cni::new("ADD").container("x").env("CNI_ARGS", "IP=192.168.0.1"),
        &conf.to_string(),
        101,
        "192.168.0.1",
    );
}

#[test]
fn an_unwritable_data_dir_is_code_5_naming_it() {
    let (net, conf) = populated("unwritable");
    // Tests may run as root, which ignores permission bits: a regular file where the directory
    // (or its parent) would be cannot be written by anyone.
    let file = net.dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let msg = rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "data_dir", json!(file)),
        5,
        "a-file",
    );
    assert!(msg.contains("data_dir"), "{msg}");
    rejects(
        &net,
        Cni::new("ADD").container("x"),
        &with_ipam(&conf, "data_dir", json!(file.join("sub"))),
        5,
        "a-file/sub",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
    // Without root, a read-only directory must fail the same way.
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = net.dir.path().join("read-only");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        rejects(
            &net,
            Cni::new("ADD").container("x"),
            &with_ipam(&conf, "data_dir", json!(dir.join("store"))),
            5,
            "read-only",
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_corrupt_store_file_is_code_5_naming_it_and_left_untouched() {
    let (net, conf) = populated("corrupt");
    let database = net.data_dir().join(hereabouts_stores::sqlite::DATABASE_FILE);
    // A database file that is not one (its write-ahead log gone with it, as after a bad copy).
    let garbage = b"not a database at all, but long enough to be read as a header".repeat(80);
    std::fs::write(&database, &garbage).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let out = Cni::new("ADD").container("existing").run_text(&conf.to_string());
    let msg = out.err(5);
    assert!(msg.contains(&database.display().to_string()), "names the file: {msg}");
    // DEL lets the pod go, logging the file it could not use.
    let out = Cni::new("DEL").container("existing").run_text(&conf.to_string());
    out.ok();
    assert!(out.stderr.contains(&database.display().to_string()), "names the file: {out:?}");
    assert_eq!(std::fs::read(&database).unwrap(), garbage, "never reset");
}
