//! `hereabouts plan` as a user runs it: stdin or --config, JSON or a text table, exit codes;
//! and every shared plan vector (vectors/plan.json) through it.

use std::io::Write;
use std::process::{Command, Stdio};

fn plan(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .arg("plan")
        .args(args)
        .env("HEREABOUTS_CACHE_DIR", std::env::temp_dir().join("hereabouts-plan-cli-test"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap())
}

const DOC: &str = r#"{"ipam":{"range":"192.168.2.225/28","exclude":["192.168.2.229/30"],
  "ipRanges":[{"range":"fd00::/64"}]},"allocated":["192.168.2.225"]}"#;

#[test]
fn json_from_stdin() {
    let (code, out) = plan(&[], DOC);
    assert_eq!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["ranges"][0]["next"], "192.168.2.226");
    assert_eq!(value["ranges"][0]["free"], "9");
    assert_eq!(value["ranges"][1]["capacity"], "18446744073709551614");
    assert_eq!(value["ranges"][1]["next"], "fd00::1");
}

#[test]
fn text_table_from_a_config_file() {
    let path = std::env::temp_dir().join(format!("hereabouts-plan-{}.json", std::process::id()));
    std::fs::write(&path, DOC).unwrap();
    let (code, out) = plan(&["--config", path.to_str().unwrap(), "--format", "text"], "");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("RANGE") && lines[0].contains("NEXT"), "{out}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        ["192.168.2.224/28", "192.168.2.225", "192.168.2.238", "10", "9", "192.168.2.226"]
    );
}

#[test]
fn invalid_input_is_a_cni_error_object_and_a_failure() {
    let (code, out) = plan(&[], r#"{"ipam":{"range":"10.0.0.0/16","exclude":["x"]}}"#);
    assert_ne!(code, 0);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"code": 7, "msg": "exclude[0]: x is not a CIDR or an IP address"})
    );
    let (code, out) = plan(&[], "{not json");
    assert_ne!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["code"], 6);
    let (code, out) = plan(&["--config", "/nonexistent/plan.json"], "");
    assert_ne!(code, 0);
    assert!(out.contains("/nonexistent/plan.json"), "{out}");
}

#[test]
fn what_whereabouts_ignores_is_printed_as_a_warning() {
    let doc =
        r#"{"ipam":{"range":"10.0.0.0/24","range_start":"10.0.1.5","exclude":["10.9.0.0/24"]}}"#;
    let (code, out) = plan(&[], doc);
    assert_eq!(code, 0, "{out}");
    // Byte for byte (host-web's plan.mjs prints the same): keys sorted, one line.
    assert!(
        out.starts_with(r#"{"ranges":[{"capacity":"254","first":"10.0.0.1","free":"254","#),
        "{out}"
    );
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<&str> =
        value["warnings"].as_array().unwrap().iter().map(|w| w["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["range-start-outside-range", "exclude-outside-range"]);
    assert_eq!(value["warnings"][0]["field"], "range_start");
    assert_eq!(value["warnings"][0]["ignored"], "10.0.1.5");
    let (code, text) = plan(&["--format", "text"], doc);
    assert_eq!(code, 0);
    assert!(
        text.lines().any(|l| l.starts_with("warning: range_start: ignored 10.0.1.5: ")
            && l.ends_with("[range-start-outside-range]")),
        "{text}"
    );
}

/// The vectors every host runs (native, wasmtime, Node, Chromium): here through the binary's
/// `plan`, which runs them in the embedded component.
#[test]
fn every_plan_vector_passes_through_the_binary() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in ["plan.json", "whereabouts.json", "plan-host-web.json"] {
        let path = format!("{}/../../vectors/{file}", env!("CARGO_MANIFEST_DIR"));
        let vectors: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(vectors.len() > 20, "{path}: only {} vectors", vectors.len());
        for vector in &vectors {
            let stdin = match vector.get("stdin") {
                Some(serde_json::Value::String(text)) => text.clone(),
                _ => vector["input"].to_string(),
            };
            let (code, out) = plan(&[], &stdin);
            let got: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {out}", vector["name"]));
            let mut expect = vector["expect"].clone();
            if expect.get("ranges").is_some() && expect.get("warnings").is_none() {
                expect["warnings"] = serde_json::json!([]);
            }
            let failed = expect.get("code").is_some();
            if got != expect || (code != 0) != failed {
                failures.push(format!(
                    "{file}: {} (exit {code})\n  expected {expect}\n  got      {got}",
                    vector["name"]
                ));
            }
            ran += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `node_slice_size`: the JSON gains `node_slices` (only then), the text a `node slices:` line.
#[test]
fn node_slices_are_shown_in_json_and_text() {
    let doc = r#"{"ipam":{"range":"10.0.0.0/24","node_slice_size":"/28"}}"#;
    let (code, out) = plan(&[], doc);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(r#"{"node_slices":{"addresses_per_slice":"14","count":16,"#), "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let slices = value["node_slices"]["slices"].as_array().unwrap();
    assert_eq!(slices.len(), 16);
    assert_eq!(slices[1], "10.0.0.16/28");
    assert_eq!(slices[15], "10.0.0.240/28");
    assert_eq!(value["node_slices"]["slice_size"], "/28");
    let (code, text) = plan(&["--format", "text"], doc);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.lines().nth(2).unwrap(),
        "node slices: 16 of /28 in 10.0.0.0/24, 14 addresses each: 10.0.0.0/28, 10.0.0.16/28, \
         10.0.0.32/28, 10.0.0.48/28, 10.0.0.64/28, 10.0.0.80/28, ..., 10.0.0.240/28"
    );
    // Few slices are all listed; without node_slice_size neither the key nor the line.
    let (_, text) =
        plan(&["--format", "text"], r#"{"ipam":{"range":"10.0.0.0/24","node_slice_size":"/25"}}"#);
    assert!(text.contains("\nnode slices: 2 of /25 in 10.0.0.0/24, 126 addresses each: 10.0.0.0/25, 10.0.0.128/25\n"), "{text}");
    let (_, out) = plan(&[], r#"{"ipam":{"range":"10.0.0.0/24"}}"#);
    assert!(!out.contains("node_slices"), "{out}");
    let (_, text) = plan(&["--format", "text"], r#"{"ipam":{"range":"10.0.0.0/24"}}"#);
    assert!(!text.contains("node slices"), "{text}");
}

/// `persistent` (kept for an IPAMClaim or StatefulSet member, no pod): the JSON gains a count per
/// range (only for a document that lists some), the text a PERSISTENT column (only when a range
/// has some); the addresses are not free and not next.
#[test]
fn persistent_addresses_are_counted_per_range_in_json_and_text() {
    let doc = r#"{"ipam":{"range":"10.0.0.0/29","ipRanges":[{"range":"fd00::/126"}]},
      "allocated":["10.0.0.1","10.0.0.2"],"persistent":["10.0.0.2","10.0.0.3"]}"#;
    let (code, out) = plan(&[], doc);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(
            r#"{"ranges":[{"capacity":"6","first":"10.0.0.1","free":"3","last":"10.0.0.6","next":"10.0.0.4","persistent":"2","range":"10.0.0.0/29"},"#
        ),
        "{out}"
    );
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["ranges"][1]["persistent"], "0");
    let (code, text) = plan(&["--format", "text"], doc);
    assert_eq!(code, 0, "{text}");
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["RANGE", "FIRST", "LAST", "CAPACITY", "FREE", "PERSISTENT", "NEXT"]);
    assert_eq!(rows[1], ["10.0.0.0/29", "10.0.0.1", "10.0.0.6", "6", "3", "2", "10.0.0.4"]);
    assert_eq!(rows[2], ["fd00::/126", "fd00::1", "fd00::2", "2", "2", "0", "fd00::1"]);
    // Listed but none in any range: the key, but no column.
    let none = r#"{"ipam":{"range":"10.0.0.0/29"},"persistent":["10.9.0.1"]}"#;
    let (_, out) = plan(&[], none);
    assert!(out.contains(r#""persistent":"0""#), "{out}");
    let (_, text) = plan(&["--format", "text"], none);
    assert!(!text.contains("PERSISTENT"), "{text}");
    // Not listed: neither.
    let (_, out) = plan(&[], r#"{"ipam":{"range":"10.0.0.0/29"},"allocated":["10.0.0.1"]}"#);
    assert!(!out.contains("persistent"), "{out}");
    let (code, out) = plan(&[], r#"{"ipam":{"range":"10.0.0.0/29"},"persistent":["10.0.0.1",7]}"#);
    assert_ne!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"code": 7, "msg": "persistent[1]: must be an address string"})
    );
}
