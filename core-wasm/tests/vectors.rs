//! The shared vector files through the native core, exactly as every host runs them: the
//! document text goes through `read_plan_document` and the reading through `plan`; the answer is
//! `hereabouts plan`'s output, `{"ranges": [...], "warnings": [...]}` (and `"node_slices"`, from
//! `node-slicing`, for a config with node_slice_size), or `{"code", "msg"}`.
//!
//! The same files run through the wasm component (host-cni) and in Node and Chromium
//! (host-web). A vector is `{"name", "input" | "stdin", "expect", "source"?,
//! "whereabouts_answer"?}`: `input` is the document as JSON, `stdin` its raw text (for syntax
//! errors and wherever key order matters); an `expect` without `warnings` expects none;
//! `whereabouts_answer` records what Whereabouts answers where we deliberately differ (never
//! compared). A range has `persistent` (the count of addresses kept for an IPAMClaim or
//! StatefulSet member with no pod) when the document lists `persistent` addresses, as
//! `hereabouts plan` prints it then only. Files:
//! - vectors/plan.json — our semantics, generated and checked by the naive vectors/oracle.py;
//! - vectors/whereabouts.json — facts from Whereabouts' own Go tests, each naming its test;
//! - vectors/plan-host-web.json — how documents and ipam sections are read and rejected.

use hereabouts_core::config::read_plan_document;
use hereabouts_core::plan::plan;
use hereabouts_core::slice::slicing;
use hereabouts_core::types::{ConfigError, IpamError, PlanRequest};
use serde_json::{Value, json};

/// `hereabouts plan`'s output for a document.
pub fn run(text: &str) -> Value {
    let document = match read_plan_document(text) {
        Ok(document) => document,
        Err(ConfigError::Malformed(msg)) => return json!({ "code": 6, "msg": msg }),
        Err(ConfigError::Invalid(e)) => return json!({ "code": 7, "msg": e.to_string() }),
    };
    let request = PlanRequest {
        network: document.reading.network,
        allocated: document.allocated,
        persistent: document.persistent,
        preview: 1,
    };
    // `persistent` per range only for a document that lists persistent addresses.
    let lists_persistent = !request.persistent.is_empty();
    let mut out = match plan(&request) {
        Ok(reports) => json!({
            "ranges": reports.iter().map(|r| {
                let mut range = json!({
                    "range": r.range, "first": r.first, "last": r.last,
                    "capacity": r.capacity, "free": r.free, "next": r.next.first(),
                });
                if lists_persistent {
                    range["persistent"] = json!(r.persistent);
                }
                range
            }).collect::<Vec<_>>(),
            "warnings": document.reading.warnings.iter().map(|w| json!({
                "rule": w.rule, "field": w.field, "ignored": w.ignored, "reason": w.reason,
            })).collect::<Vec<_>>(),
        }),
        Err(IpamError::InvalidConfig(e)) => return json!({ "code": 7, "msg": e.to_string() }),
        Err(other) => panic!("plan cannot fail with {other:?}"),
    };
    // `node_slices` only for a config with node_slice_size: the core's node-slicing.
    if request.network.node_slice_size.is_some() {
        match slicing(&request.network, "") {
            Ok(s) => {
                out["node_slices"] = json!({
                    "addresses_per_slice": s.addresses_per_slice, "count": s.slices.len(),
                    "range": s.range, "slice_size": s.slice_size, "slices": s.slices,
                });
            }
            Err(IpamError::InvalidConfig(e)) => return json!({ "code": 7, "msg": e.to_string() }),
            Err(other) => panic!("node-slicing cannot fail with {other:?}"),
        }
    }
    out
}

fn document_text(vector: &Value) -> String {
    match vector.get("stdin") {
        Some(Value::String(text)) => text.clone(),
        _ => vector["input"].to_string(),
    }
}

fn expected(vector: &Value) -> Value {
    let mut expect = vector["expect"].clone();
    if let Some(object) = expect.as_object_mut()
        && object.contains_key("ranges")
        && !object.contains_key("warnings")
    {
        object.insert("warnings".into(), json!([]));
    }
    expect
}

fn check_file(name: &str, at_least: usize) {
    let path = format!("{}/../vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= at_least, "{name} shrank to {} vectors", vectors.len());
    let mut failures = Vec::new();
    let mut answers = Vec::new();
    for vector in &vectors {
        let got = run(&document_text(vector));
        answers.push(json!({ "name": vector["name"], "got": got }));
        let want = expected(vector);
        if got != want {
            failures.push(format!("{}\n  expected {want}\n  got      {got}", vector["name"]));
        }
    }
    // Writing new vectors: HEREABOUTS_VECTORS_DUMP=DIR saves every answer, to review (and to
    // check with vectors/oracle.py) before it becomes an expectation.
    if let Ok(dir) = std::env::var("HEREABOUTS_VECTORS_DUMP") {
        let out = serde_json::to_string_pretty(&answers).unwrap();
        std::fs::write(format!("{dir}/{name}"), out).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors of {name} failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn every_plan_vector_passes_natively() {
    check_file("plan.json", 40);
}

#[test]
fn every_host_web_vector_passes_natively() {
    check_file("plan-host-web.json", 60);
}

#[test]
fn every_whereabouts_vector_passes_natively() {
    check_file("whereabouts.json", 60);
}
