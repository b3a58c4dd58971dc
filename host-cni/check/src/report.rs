//! Output: text for people (`file:line:col: level[rule] …`), JSON for scripts, SARIF 2.1.0 for
//! code-scanning UIs. All three carry the same findings in the same order.

use serde::Serialize;
use serde_json::{Value, json};

use super::Report;
use super::analyze::Finding;
use super::rules::{self, Level, Origin};

/// The part of a finding after its rule: `network: field = value: message`.
pub fn headline(finding: &Finding) -> String {
    let mut out = String::new();
    if let Some(network) = &finding.network {
        out.push_str(network);
        out.push_str(": ");
    }
    if let Some(field) = &finding.field {
        out.push_str(field);
        if let Some(value) = &finding.value {
            out.push_str(" = ");
            out.push_str(&short_value(value));
        }
        out.push_str(": ");
    }
    out.push_str(&finding.message);
    out
}

/// A value as written, compact, cut at 60 characters.
fn short_value(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn count(n: usize, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
}

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{}:{}:{}: {}[{}] {}\n",
            f.file,
            f.spot.line,
            f.spot.col,
            f.level.as_str(),
            f.rule,
            headline(f)
        ));
    }
    let (errors, warnings) = report.counts();
    let verdict = match (errors, warnings) {
        (0, 0) => "no problems found".to_string(),
        (_, 0) => count(errors, "error"),
        (0, _) => count(warnings, "warning"),
        _ => format!("{}, {}", count(errors, "error"), count(warnings, "warning")),
    };
    out.push_str(&format!(
        "checked {}, {}: {verdict}\n",
        count(report.files, "file"),
        count(report.networks, "network")
    ));
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    files: usize,
    networks: usize,
    errors: usize,
    warnings: usize,
    findings: Vec<JsonFinding<'a>>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    rule: &'a str,
    level: Level,
    file: &'a str,
    line: usize,
    column: usize,
    network: Option<&'a str>,
    field: Option<&'a str>,
    value: Option<&'a Value>,
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    related: Vec<JsonRelated<'a>>,
}

#[derive(Serialize)]
struct JsonRelated<'a> {
    file: &'a str,
    line: usize,
    column: usize,
    network: &'a str,
    field: &'a str,
}

pub fn json(report: &Report) -> String {
    let (errors, warnings) = report.counts();
    let findings = report
        .findings
        .iter()
        .map(|f| JsonFinding {
            rule: &f.rule,
            level: f.level,
            file: &f.file,
            line: f.spot.line,
            column: f.spot.col,
            network: f.network.as_deref(),
            field: f.field.as_deref(),
            value: f.value.as_ref(),
            message: &f.message,
            related: f
                .related
                .iter()
                .map(|r| JsonRelated {
                    file: &r.file,
                    line: r.spot.line,
                    column: r.spot.col,
                    network: &r.network,
                    field: &r.field,
                })
                .collect(),
        })
        .collect();
    let out =
        JsonReport { files: report.files, networks: report.networks, errors, warnings, findings };
    serde_json::to_string_pretty(&out).expect("serialisable") + "\n"
}

fn sarif_level(level: Level) -> &'static str {
    match level {
        Level::Off => "none",
        Level::Warning => "warning",
        Level::Error => "error",
    }
}

/// A relative path as a URI reference: unreserved characters and `/` kept, the rest escaped.
fn uri(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn location(file: &str, line: usize, column: usize) -> Value {
    json!({
        "artifactLocation": { "uri": uri(file) },
        "region": { "startLine": line, "startColumn": column }
    })
}

/// SARIF 2.1.0: one run, the rule catalogue as the driver's rules.
pub fn sarif(report: &Report) -> String {
    let mut ids: Vec<&str> = rules::RULES.iter().map(|r| r.id).collect();
    // A rule the core has and the catalogue does not yet: listed too, so ruleIndex is valid.
    for f in &report.findings {
        if !ids.contains(&f.rule.as_str()) {
            ids.push(&f.rule);
        }
    }
    let descriptors: Vec<Value> = ids
        .iter()
        .map(|id| match rules::find(id) {
            Some(rule) => json!({
                "id": rule.id,
                "shortDescription": { "text": rule.summary },
                "defaultConfiguration": { "level": sarif_level(rule.level) },
                "properties": { "decidedBy": match rule.origin { Origin::Core => "core", Origin::Check => "check" } }
            }),
            None => json!({ "id": id, "shortDescription": { "text": "Reported by the allocator core." } }),
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": f.rule,
                "ruleIndex": ids.iter().position(|id| *id == f.rule),
                "level": sarif_level(f.level),
                "message": { "text": headline(f) },
                "locations": [{ "physicalLocation": location(&f.file, f.spot.line, f.spot.col) }]
            });
            if !f.related.is_empty() {
                result["relatedLocations"] = f
                    .related
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        json!({
                            "id": i + 1,
                            "physicalLocation": location(&r.file, r.spot.line, r.spot.col),
                            "message": { "text": format!("{}: {}", r.network, r.field) }
                        })
                    })
                    .collect();
            }
            result
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "hereabouts check",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": descriptors
            }},
            "columnKind": "unicodeCodePoints",
            "results": results
        }]
    });
    serde_json::to_string_pretty(&log).expect("serialisable") + "\n"
}
