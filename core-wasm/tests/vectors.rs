//! The shared vector file (vectors/plan.json) through the native core. The same file runs
//! through the wasm component (host-cni/tests/component.rs) and in Node and the browser
//! (host-web): one source of truth for what `plan` answers.

use hereabouts_core::plan::plan;
use hereabouts_core::types::{IpamError, NetworkConfig, PlanRequest, RangeConfig};
use serde_json::{Value, json};

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn range_config(object: &Value) -> RangeConfig {
    RangeConfig {
        range: object["range"].as_str().unwrap_or_default().to_string(),
        range_start: object.get("range_start").and_then(Value::as_str).map(String::from),
        range_end: object.get("range_end").and_then(Value::as_str).map(String::from),
        exclude: strings(object.get("exclude")),
    }
}

/// The ipam JSON → network config mapping every host performs (host-cni/src/config.rs).
fn network_config(ipam: &Value) -> NetworkConfig {
    NetworkConfig {
        range: ipam.get("range").and_then(Value::as_str).map(|_| range_config(ipam)),
        ip_ranges: ipam
            .get("ipRanges")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(range_config).collect())
            .unwrap_or_default(),
        gateway: ipam.get("gateway").and_then(Value::as_str).map(String::from),
        network_name: ipam
            .get("network_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        enable_overlapping_ranges: ipam
            .get("enable_overlapping_ranges")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        sticky: true,
    }
}

fn run(input: &Value) -> Value {
    let request = PlanRequest {
        network: network_config(&input["ipam"]),
        allocated: strings(input.get("allocated")),
        preview: 1,
    };
    match plan(&request) {
        Ok(reports) => json!({ "ranges": reports.iter().map(|r| json!({
            "range": r.range, "first": r.first, "last": r.last,
            "capacity": r.capacity, "free": r.free, "next": r.next.first(),
        })).collect::<Vec<_>>() }),
        Err(IpamError::InvalidConfig(e)) => {
            json!({ "code": 7, "msg": format!("{}: {}", e.field, e.message) })
        }
        Err(other) => panic!("plan cannot fail with {other:?}"),
    }
}

#[test]
fn every_plan_vector_passes_natively() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/plan.json"))
            .unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 40, "the vector file shrank to {}", vectors.len());
    let mut failures = Vec::new();
    for vector in &vectors {
        let got = run(&vector["input"]);
        if got != vector["expect"] {
            failures.push(format!(
                "{}\n  expected {}\n  got      {}",
                vector["name"], vector["expect"], got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}
