//! `hereabouts status` on the embedded (SQLite) store, through the binary: the golden text and
//! JSON of a dual-stack network, `--who`, and the errors for input that is not a config.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hereabouts");

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("status-local-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn add(config: &Path, container: &str, pod: &str) {
    let output = Command::new(BIN)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", "/var/run/netns/x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"))
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::fs::File::open(config).unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

fn status(args: &[&str]) -> (String, i32) {
    let output = Command::new(BIN).arg("status").args(args).output().unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), output.status.code().unwrap())
}

#[test]
fn status_of_a_dual_stack_network_on_the_local_store() {
    let dir = temp_dir("dual");
    let config = dir.join("net.conflist");
    // A conflist: the ipam section sits in a chained plugin.
    let conflist = json!({"cniVersion": "1.0.0", "name": "dual", "plugins": [
        {"type": "bridge", "bridge": "br-dual", "ipam": {"type": "hereabouts",
         "ipRanges": [{"range": "10.71.0.0/29"}, {"range": "fd00:71::/125"}],
         "data_dir": dir.join("store"), "configuration_path": dir.join("no-flat-file.conf")}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    std::fs::write(&config, conflist.to_string()).unwrap();
    // The runtime passes the plugin's own config, with name and cniVersion.
    let single = dir.join("net.conf");
    let mut plugin = conflist["plugins"][0].clone();
    plugin["cniVersion"] = json!("1.0.0");
    plugin["name"] = json!("dual");
    std::fs::write(&single, plugin.to_string()).unwrap();
    for (container, pod) in [("c1", "p1"), ("c2", "p2"), ("c3", "p3")] {
        add(&single, container, pod);
    }
    let config = config.to_str().unwrap();

    let (stdout, code) = status(&["--config", config, "--format", "json"]);
    assert_eq!(code, 0, "{stdout}");
    let pool = |range: &str, name: &str, capacity: &str, free: &str| {
        json!({"network": "network dual", "network_name": "", "range": range, "pool": name,
               "capacity": capacity, "allocated": 3, "free": free, "reservations": 3,
               "persistent": [], "inconsistent": []})
    };
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"pools": [pool("10.71.0.0/29", "10.71.0.0-29", "6", "3"),
                         pool("fd00:71::/125", "fd00-71---125", "6", "3")]})
    );
    let (stdout, code) = status(&["--config", config]);
    assert_eq!(code, 0);
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec![
                "NETWORK",
                "NETWORK_NAME",
                "RANGE",
                "POOL",
                "CAPACITY",
                "ALLOCATED",
                "FREE",
                "RESERVATIONS"
            ],
            vec!["network", "dual", "-", "10.71.0.0/29", "10.71.0.0-29", "6", "3", "3", "3"],
            vec!["network", "dual", "-", "fd00:71::/125", "fd00-71---125", "6", "3", "3", "3"],
        ]
    );
    let (stdout, code) = status(&["--config", config, "--who", "fd00:71::2", "--format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"holders": [{"network": "network dual", "address": "fd00:71::2", "pool": "fd00-71---125",
                            "container_id": "c2", "podref": "default/p2", "ifname": "eth0"}]})
    );
}

#[test]
fn status_refuses_what_is_not_a_config() {
    let dir = temp_dir("bad");
    let broken = dir.join("broken.conf");
    std::fs::write(&broken, "{\"ipam\": ").unwrap();
    let (stdout, code) = status(&["--config", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    let error: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["code"], 6, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("broken.conf"), "{error}");
    let other = dir.join("other.conf");
    std::fs::write(
        &other,
        r#"{"cniVersion": "1.0.0", "name": "x", "type": "bridge", "ipam": {"type": "host-local"}}"#,
    )
    .unwrap();
    let (stdout, code) = status(&["--config", other.to_str().unwrap()]);
    assert_eq!(code, 1);
    let error: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["code"], 7, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("no ipam section of type hereabouts"),
        "{error}"
    );
}
