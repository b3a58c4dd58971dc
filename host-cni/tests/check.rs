//! `hereabouts check` against the fixture trees in tests/check/: the real binary, the real
//! allocator component.
//!
//! - `good/` must be clean; `bad/` and `malformed/` must match the golden outputs in
//!   `golden/` (text, JSON and SARIF). `UPDATE_GOLDEN=1` rewrites them — then read the diff.
//! - `rules/<id>/fires` must raise rule `<id>`, `rules/<id>/holds` (its near miss) nothing;
//!   every rule of the catalogue has both, and every rule found is in the catalogue.
//! - A generated tree of 1,000 NADs is checked and timed (printed, not asserted).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hereabouts_check::{self as check, Settings};
use hereabouts_host::NoStore;
use hereabouts_host::config::KNOWN_IPAM_KEYS;
use hereabouts_host::runtime::Allocator;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hereabouts");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/check")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `hereabouts check ARGS…` in `dir`.
fn check_in(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("check")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run hereabouts");
    let run = Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    };
    assert!(!run.stderr.contains("panicked"), "hereabouts panicked: {}", run.stderr);
    run
}

fn check(args: &[&str]) -> Run {
    check_in(&fixtures(), args)
}

fn json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let run = check(&all);
    let value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", run.stdout, run.stderr));
    (run.code, value)
}

fn findings(report: &Value) -> &Vec<Value> {
    report["findings"].as_array().expect("findings")
}

fn rules_of(report: &Value) -> Vec<String> {
    findings(report).iter().map(|f| f["rule"].as_str().unwrap().to_string()).collect()
}

/// The catalogue, from `--list-rules` (its Markdown rows start with "| `id` |").
fn catalogue() -> Vec<(String, String)> {
    let run = check(&["--list-rules"]);
    assert_eq!(run.code, 0);
    run.stdout
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let id = cells.first()?.strip_prefix("| `")?.strip_suffix('`')?;
            Some((id.to_string(), cells.get(1)?.to_string()))
        })
        .collect()
}

fn golden(name: &str, actual: &str) {
    let path = fixtures().join("golden").join(name);
    let actual = actual.replace(
        &format!("\"version\": \"{}\"", env!("CARGO_PKG_VERSION")),
        "\"version\": \"@VERSION@\"",
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        panic!(
            "{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}"
        );
    }
}

#[test]
fn the_good_tree_is_clean() {
    let run = check(&["good"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // 4 files: notes.txt (other extension) and .scratch/ (hidden, and invalid) are skipped.
    // 6 networks: 2 NADs in nads.yaml (host-local and config-less NADs ignored), 2 in the
    // List, 1 in the chained conflist, 1 in the .conf.
    assert_eq!(run.stdout, "checked 4 files, 6 networks: no problems found\n");
    golden("good.txt", &run.stdout);
}

#[test]
fn the_bad_tree_matches_its_golden_outputs() {
    let text = check(&["bad"]);
    assert_eq!(text.code, 1, "{}", text.stderr);
    golden("bad.txt", &text.stdout);
    let json = check(&["bad", "--format", "json"]);
    assert_eq!(json.code, 1);
    golden("bad.json", &json.stdout);
    let sarif = check(&["bad", "--format", "sarif"]);
    assert_eq!(sarif.code, 1);
    golden("bad.sarif", &sarif.stdout);

    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    let found: BTreeSet<String> = rules_of(&report).into_iter().collect();
    for rule in [
        "exclude-outside-range",
        "gateway-allocatable",
        "unknown-ipam-key",
        "range-start-after-end",
        "networks-overlap",
        "overlapping-ranges-disabled",
        "ipv6-range-small",
        "capacity-below-need",
    ] {
        assert!(found.contains(rule), "bad/ should raise {rule}; found {found:?}");
    }
}

#[test]
fn the_sarif_log_is_well_formed() {
    let run = check(&["bad", "--format", "sarif"]);
    let log: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let sarif_run = &log["runs"][0];
    let rules = sarif_run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = sarif_run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for result in results {
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], result["ruleId"], "{result}");
        assert!(matches!(result["level"].as_str(), Some("error" | "warning")), "{result}");
        let location = &result["locations"][0]["physicalLocation"];
        let uri = location["artifactLocation"]["uri"].as_str().unwrap();
        assert!(
            fixtures().join(uri).is_file(),
            "uri {uri} is not a file relative to the checked root"
        );
        assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(location["region"]["startColumn"].as_u64().unwrap() >= 1);
    }
    let related: Vec<&Value> =
        results.iter().filter(|r| r.get("relatedLocations").is_some()).collect();
    assert!(!related.is_empty(), "overlap findings carry the other network as a related location");
}

#[test]
fn malformed_input_is_reported_with_its_location_never_a_panic() {
    let run = check(&["malformed"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    golden("malformed.txt", &run.stdout);
    golden("malformed.json", &check(&["malformed", "--format", "json"]).stdout);
    golden("malformed.sarif", &check(&["malformed", "--format", "sarif"]).stdout);
    let (_, report) = json(&["malformed"]);
    let parse_errors: BTreeSet<&str> = findings(&report)
        .iter()
        .filter(|f| f["rule"] == "parse-error")
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    for file in
        ["comma.yaml", "cut.conflist", "half.yaml", "latin1.conf", "mapping.yaml", "tabs.yaml"]
    {
        assert!(
            parse_errors.contains(format!("malformed/{file}").as_str()),
            "no parse-error for {file}: {parse_errors:?}"
        );
    }
    let at = |file: &str| {
        let f = findings(&report)
            .iter()
            .find(|f| f["file"] == file && f["rule"] == "parse-error")
            .unwrap();
        (f["line"].as_u64().unwrap(), f["column"].as_u64().unwrap())
    };
    // The missing comma inside spec.config is reported at its line in the YAML file: the
    // `"ipam"` that follows `"type": "macvlan"` on line 10.
    assert_eq!(at("malformed/comma.yaml").0, 10);
    // The second document's unclosed flow mapping; the first document is still checked.
    assert!(at("malformed/half.yaml").0 > 20);
    assert!(
        findings(&report)
            .iter()
            .any(|f| f["file"] == "malformed/half.yaml" && f["rule"] == "gateway-allocatable")
    );
    // The JSON cut short is reported at its end.
    assert_eq!(at("malformed/cut.conflist").0, 6);
}

#[test]
fn every_rule_has_a_case_that_fires_and_one_that_holds() {
    let catalogue = catalogue();
    assert!(catalogue.len() >= 20, "{catalogue:?}");
    let ids: BTreeSet<&str> = catalogue.iter().map(|(id, _)| id.as_str()).collect();
    let dirs: BTreeSet<String> = std::fs::read_dir(fixtures().join("rules"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dirs.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        ids,
        "rules/ must hold one directory per rule"
    );
    for (id, level) in &catalogue {
        // `rules/<id>/args`: flags the rule needs to run at all (one per line).
        let args = std::fs::read_to_string(fixtures().join("rules").join(id).join("args"))
            .unwrap_or_default();
        let args: Vec<&str> = args.lines().filter(|l| !l.is_empty()).collect();
        let fires_dir = format!("rules/{id}/fires");
        let (code, fires) = json(&[&[fires_dir.as_str()], args.as_slice()].concat());
        let fired: Vec<&Value> =
            findings(&fires).iter().filter(|f| f["rule"] == id.as_str()).collect();
        assert!(!fired.is_empty(), "rules/{id}/fires does not raise {id}: {fires:#}");
        assert!(
            fired.iter().all(|f| f["level"] == level.as_str()),
            "{id} fires at its default level {level}: {fires:#}"
        );
        assert_eq!(code, if level == "error" { 1 } else { 0 }, "exit code for {id}");
        for rule in rules_of(&fires) {
            assert!(ids.contains(rule.as_str()), "finding of uncatalogued rule {rule}");
        }
        let holds_dir = format!("rules/{id}/holds");
        let (code, holds) = json(&[&[holds_dir.as_str()], args.as_slice()].concat());
        assert_eq!(findings(&holds).len(), 0, "rules/{id}/holds should be clean: {holds:#}");
        assert_eq!(code, 0);
        assert!(holds["networks"].as_u64().unwrap() >= 1, "rules/{id}/holds checks nothing");
    }
}

/// `store-unchosen` runs only when told the nodes' flat file, and merges it as the plugin does:
/// a flat file with a kubeconfig gives every NAD its store; none at all leaves the NAD with none.
#[test]
fn store_unchosen_follows_the_nodes_flat_file() {
    let fired = |args: &[&str]| {
        let (code, report) = json(args);
        let found: Vec<Value> =
            findings(&report).iter().filter(|f| f["rule"] == "store-unchosen").cloned().collect();
        (code, found)
    };
    let nad = "rules/store-unchosen/fires";
    assert_eq!(fired(&[nad]), (0, vec![]), "without --flat-file the rule does not run");
    assert_eq!(fired(&[nad, "--flat-file", "flat/kubeconfig.json"]), (0, vec![]));
    let (code, found) = fired(&[nad, "--flat-file", "none"]);
    assert_eq!((code, found.len()), (1, 1));
    let message = found[0]["message"].as_str().unwrap();
    assert!(message.contains("there is no flat file"), "{message}");
    assert!(message.contains("\"datastore\": \"local\""), "says how to choose it: {message}");
    assert_eq!(found[0]["field"], "ipam.type");
    let (_, found) = fired(&[nad, "--flat-file", "flat/log-only.json"]);
    let message = found[0]["message"].as_str().unwrap();
    // The path as the plugin would read it: made absolute from where check runs.
    assert!(message.contains("the flat file /"), "an absolute path: {message}");
    assert!(message.contains("/flat/log-only.json names none either"), "{message}");
}

/// Each finding's `file:line:col` points at the offending text: the value as written (a key,
/// for an unknown key). Holds for every config written as a file or a literal block.
#[test]
fn locations_point_at_the_offending_text() {
    let mut checked = 0;
    let mut reports = vec![json(&["bad"]).1];
    for entry in std::fs::read_dir(fixtures().join("rules")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        reports.push(json(&[&format!("rules/{name}/fires")]).1);
    }
    for report in &reports {
        for f in findings(report) {
            let file = f["file"].as_str().unwrap();
            // quoted.yaml's config is a quoted scalar: its findings point at the scalar.
            if f["rule"] == "parse-error" || file.ends_with("quoted.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
            let line = text.lines().nth(f["line"].as_u64().unwrap() as usize - 1).unwrap();
            let from: String =
                line.chars().skip(f["column"].as_u64().unwrap() as usize - 1).collect();
            let expected = if f["rule"] == "unknown-ipam-key" {
                let field = f["field"].as_str().unwrap();
                format!("\"{}\"", field.rsplit('.').next().unwrap())
            } else {
                match &f["value"] {
                    Value::Null => continue,
                    value => value.to_string(),
                }
            };
            assert!(
                from.starts_with(&expected),
                "{file}:{}: expected {expected} at column {}: {line:?}\n{f:#}",
                f["line"],
                f["column"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} locations checked");
}

#[test]
fn ranges_of_one_network_overlapping_each_other_count_too() {
    let (_, report) = json(&["rules/overlapping-ranges-disabled/fires/self.yaml"]);
    let f = &findings(&report)[0];
    assert_eq!(
        (f["rule"].as_str(), f["field"].as_str()),
        (Some("overlapping-ranges-disabled"), Some("ipam.ipRanges[0].range"))
    );
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("overlaps this network's ipam.range 10.90.0.0/24"),
        "{f}"
    );
    assert_eq!(findings(&report).len(), 1, "each pair of ranges once");
}

#[test]
fn ipv6_ranges_overlap_too_and_ipv4_mapped_ranges_are_ipv4() {
    let dir = std::env::temp_dir().join(format!("hereabouts-check-v6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = |name: &str, ranges: &str| {
        format!(
            r#"{{"name": "{name}", "type": "macvlan", "ipam": {{"type": "hereabouts", "network_name": "{name}", "ipRanges": [{ranges}]}}}}"#
        )
    };
    std::fs::write(
        dir.join("a.conf"),
        conf("a", r#"{"range": "10.0.0.0/24"}, {"range": "fd00:a::/64"}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.conf"),
        conf("b", r#"{"range": "10.0.1.0/24"}, {"range": "fd00:a:0:0:8000::/65"}"#),
    )
    .unwrap();
    std::fs::write(dir.join("c.conf"), conf("c", r#"{"range": "::ffff:10.0.0.0/120"}"#)).unwrap();
    let run = check_in(&dir, &[".", "--format", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let found: Vec<(&str, &str)> = findings(&report)
        .iter()
        .map(|f| (f["file"].as_str().unwrap(), f["message"].as_str().unwrap()))
        .collect();
    // b meets a in IPv6 only; c's IPv4-mapped range is the IPv4 range 10.0.0.0/24 (as
    // Whereabouts reads it), so it meets a's IPv4 range — never the IPv6 one.
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[1].0, "c.conf");
    assert!(
        found[1].1.contains("10.0.0.0/24") && found[1].1.contains("on 10.0.0.1-10.0.0.254"),
        "{}",
        found[1].1
    );
    assert_eq!(found[0].0, "b.conf");
    assert!(
        found[0].1.contains("on fd00:a::8000:0:0:1-fd00:a::ffff:ffff:ffff:fffe"),
        "{}",
        found[0].1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_type_error_names_the_element_and_its_place() {
    let (code, report) = json(&["rules/ipam-type-error/fires/exclude.conf"]);
    assert_eq!(code, 1);
    let f = &findings(&report)[0];
    assert_eq!(
        (f["field"].as_str(), f["line"].as_u64(), f["column"].as_u64()),
        (Some("ipam.exclude[1]"), Some(8), Some(32))
    );
    assert_eq!(f["value"], 7);
    assert_eq!(f["message"], "must be a string, found a number");
}

#[test]
fn exit_codes() {
    // Warnings only: 0, unless --strict.
    assert_eq!(check(&["rules/gateway-allocatable/fires"]).code, 0);
    assert_eq!(check(&["rules/gateway-allocatable/fires", "--strict"]).code, 1);
    assert_eq!(check(&["good", "--strict"]).code, 0);
    // Could not run: 2, with the reason on stderr and nothing on stdout.
    let missing = check(&["good", "no-such-dir"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("no-such-dir"), "{}", missing.stderr);
    assert_eq!(missing.stdout, "");
    let typo = check(&["good", "--rule", "gateway-alocatable=off"]);
    assert_eq!(typo.code, 2);
    assert!(typo.stderr.contains("did you mean `gateway-allocatable`"), "{}", typo.stderr);
    assert_eq!(check(&["good", "--rule", "gateway-allocatable=loud"]).code, 2);
    assert_eq!(check(&["good", "--rules", "rules-files/typo.json"]).code, 2);
    assert_eq!(check(&["good", "--rules", "rules-files/unknown-key.json"]).code, 2);
    assert_eq!(check(&["good", "--rules", "rules-files/missing.json"]).code, 2);
    assert_eq!(check(&[]).code, 2, "no path is a usage error");
}

#[test]
fn rules_files_and_flags_disable_and_relevel_rules() {
    let (_, plain) = json(&["bad"]);
    let (code, relevelled) = json(&["bad", "--rules", "rules-files/relevel.json"]);
    assert_eq!(code, 1);
    let level_of = |report: &Value, rule: &str| -> Vec<String> {
        findings(report)
            .iter()
            .filter(|f| f["rule"] == rule)
            .map(|f| f["level"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!level_of(&plain, "networks-overlap").is_empty());
    assert!(level_of(&relevelled, "networks-overlap").is_empty(), "disabled by the rules file");
    assert_eq!(level_of(&plain, "gateway-allocatable"), ["warning", "warning"]);
    assert_eq!(level_of(&relevelled, "gateway-allocatable"), ["error", "error"]);
    assert_eq!(level_of(&relevelled, "range-start-after-end"), ["warning"]);
    assert_eq!(
        relevelled["errors"].as_u64().unwrap() + relevelled["warnings"].as_u64().unwrap(),
        findings(&relevelled).len() as u64
    );
    // A flag wins over the file.
    let (_, flagged) =
        json(&["bad", "--rules", "rules-files/relevel.json", "--rule", "gateway-allocatable=off"]);
    assert!(level_of(&flagged, "gateway-allocatable").is_empty());

    // `.hereabouts-check.json` in the working directory is read without being named; it is
    // hidden, so it is not itself checked as a config.
    let dir = fixtures().join("rules-files/cwd");
    let run = check_in(&dir, &["."]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "checked 1 file, 1 network: no problems found\n")
    );
    let run = check_in(&dir, &[".", "--rule", "gateway-allocatable=error"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.starts_with("nad.yaml:"), "paths stay relative: {}", run.stdout);
    // minFree 100 from the file; --min-free wins over it.
    let run = check_in(&dir, &[".", "--min-free", "300"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("capacity-below-need"), "{}", run.stdout);
}

#[test]
fn min_free_comes_from_the_annotation_or_the_flag() {
    // The .conf offers 10.44.0.5-10.44.0.50: 46 addresses.
    let (code, report) = json(&["good/cni/10-macvlan.conf", "--min-free", "100"]);
    assert_eq!(code, 1);
    let finding = &findings(&report)[0];
    assert_eq!(finding["rule"], "capacity-below-need");
    assert!(finding["message"].as_str().unwrap().contains("--min-free"), "{finding}");
    assert_eq!(json(&["good/cni/10-macvlan.conf", "--min-free", "46"]).0, 0);
    // The annotation (100 on a /25) wins over a larger flag.
    assert_eq!(json(&["rules/capacity-below-need/holds", "--min-free", "1000"]).0, 0);
}

#[test]
fn nodes_come_from_the_annotation_or_the_flag_and_slices_must_cover_them() {
    // rules/node-slices-fewer-than-nodes/fires: 10.2.0.0/24 cut into /26 slices, 6 nodes.
    let (code, report) = json(&["rules/node-slices-fewer-than-nodes/fires"]);
    assert_eq!(code, 0, "a warning does not fail check: {report:#}");
    let finding = &findings(&report)[0];
    assert_eq!(finding["rule"], "node-slices-fewer-than-nodes");
    assert_eq!(finding["level"], "warning");
    assert_eq!(finding["network"], "NAD default/fast");
    assert_eq!(finding["field"], "ipam.node_slice_size");
    assert_eq!(finding["value"], "/26");
    assert_eq!(
        finding["message"],
        "hereabouts.io/nodes 6: node_slice_size /26 cuts 10.2.0.0/24 into 4 slices of 62 \
         addresses, fewer than the 6 nodes: 2 nodes get no slice, and pods there no address; \
         node_slice_size \"/27\" cuts it into 8 slices of 30 addresses; or a /23 range (such as \
         10.2.0.0/23) keeps 62 addresses per slice for 8 slices"
    );
    // It points at node_slice_size's value, line 19 of the file, column 28.
    assert_eq!(
        (&finding["line"], &finding["column"]),
        (&Value::from(19), &Value::from(28)),
        "{finding}"
    );
    let strict = check(&["rules/node-slices-fewer-than-nodes/fires", "--strict"]);
    assert_eq!(strict.code, 1, "{}", strict.stdout);
    assert!(
        strict.stdout.contains("warning[node-slices-fewer-than-nodes] NAD default/fast: "),
        "{}",
        strict.stdout
    );
    // The annotation (4 nodes, 4 slices) wins over a larger flag for its NAD.
    assert_eq!(
        findings(&json(&["rules/node-slices-fewer-than-nodes/holds", "--nodes", "50"]).1).len(),
        0
    );
    // The flag covers a config without the annotation; a network without slices is not asked.
    let conf = r#"{"cniVersion": "1.0.0", "name": "n", "type": "macvlan",
        "ipam": {"type": "hereabouts", "range": "10.3.0.0/24", "node_slice_size": "/25"}}"#;
    let dir = std::env::temp_dir().join(format!("hereabouts-check-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("n.conf"), conf).unwrap();
    std::fs::write(dir.join("plain.conf"), conf.replace(r#", "node_slice_size": "/25""#, ""))
        .unwrap();
    let run = check_in(&dir, &[".", "--nodes", "3", "--format", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let fired = findings(&report);
    assert_eq!(fired.len(), 1, "{report:#}");
    assert_eq!(fired[0]["file"], "n.conf");
    let message = fired[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("--nodes 3: node_slice_size /25 cuts 10.3.0.0/24 into 2 slices"),
        "{message}"
    );
    assert!(
        message.contains("node_slice_size \"/26\" cuts it into 4 slices of 62 addresses"),
        "{message}"
    );
    let run = check_in(&dir, &[".", "--nodes", "2", "--format", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(findings(&report).len(), 0, "{report:#}");
    assert_eq!(report["networks"], 2);
    // `nodes` in the rules file is the default; --nodes wins over it.
    std::fs::write(dir.join(".hereabouts-check.json"), r#"{"nodes": 3}"#).unwrap();
    let run = check_in(&dir, &[".", "--format", "json"]);
    assert_eq!(
        rules_of(&serde_json::from_str(&run.stdout).unwrap()),
        ["node-slices-fewer-than-nodes"]
    );
    let run = check_in(&dir, &[".", "--nodes", "2", "--format", "json"]);
    assert_eq!(findings(&serde_json::from_str(&run.stdout).unwrap()).len(), 0, "{}", run.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
    // A bad annotation is an error of its own; the flag then stands in for it.
    let (code, report) = json(&["rules/nodes-invalid/fires", "--nodes", "5"]);
    assert_eq!(code, 1);
    assert_eq!(rules_of(&report), ["nodes-invalid", "node-slices-fewer-than-nodes"]);
    assert!(findings(&report)[1]["message"].as_str().unwrap().starts_with("--nodes 5: "));
}

#[test]
fn standard_input_and_byte_order_marks() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["check", "-", "--format", "json"])
        .current_dir(fixtures())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(fixtures().join("bad/web.yaml")).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (_, from_file) = json(&["bad/web.yaml"]);
    assert_eq!(findings(&report).len(), findings(&from_file).len());
    assert!(findings(&report).iter().all(|f| f["file"] == "<stdin>"), "{report:#}");
    assert_eq!(findings(&report)[0]["line"], findings(&from_file)[0]["line"]);

    let dir = std::env::temp_dir().join(format!("hereabouts-check-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = "\u{feff}{\"name\": \"bom\", \"type\": \"macvlan\", \"ipam\": {\"type\": \"whereabouts\", \"range\": \"10.1.0.0/24\", \"gatway\": \"10.1.0.1\"}}";
    std::fs::write(dir.join("bom.conf"), conf).unwrap();
    let run = check_in(&dir, &["bom.conf"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.starts_with("bom.conf:1:"), "{}", run.stdout);
    assert!(run.stdout.contains("did you mean `gateway`?"), "{}", run.stdout);
    // The same file named twice, or through `./`, is read once.
    let run = check_in(&dir, &["bom.conf", "./bom.conf", "."]);
    assert!(run.stdout.ends_with("checked 1 file, 1 network: 1 warning\n"), "{}", run.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every prefix of a real NAD stream and a real conflist (cut every few bytes, as an editor
/// or a failed download leaves them) is checked without a panic, and every finding has a
/// place.
#[test]
fn truncated_files_never_panic() {
    let dir = std::env::temp_dir().join(format!("hereabouts-check-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut written = 0;
    for source in
        ["bad/web.yaml", "bad/cni/30-sriov.conflist", "good/shared.yaml", "bad/quoted.yaml"]
    {
        let text = std::fs::read(fixtures().join(source)).unwrap();
        let ext = Path::new(source).extension().unwrap().to_str().unwrap();
        for cut in (1..text.len()).step_by(5) {
            std::fs::write(dir.join(format!("{written:04}.{ext}")), &text[..cut]).unwrap();
            written += 1;
        }
    }
    let mut allocator = Allocator::new(Box::new(NoStore)).unwrap();
    let report =
        check::run(std::slice::from_ref(&dir), &Settings::default(), &mut allocator).expect("runs");
    assert_eq!(report.files, written);
    assert!(report.networks > 0);
    assert!(report.findings.iter().any(|f| f.rule == "parse-error"));
    for f in &report.findings {
        assert!(f.spot.line >= 1 && f.spot.col >= 1, "{f:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn did_you_mean_finds_the_key_meant() {
    let meant = |key| check::did_you_mean(key, KNOWN_IPAM_KEYS);
    assert_eq!(meant("rangeStart"), Some("range_start"));
    assert_eq!(meant("ip_ranges"), Some("ipRanges"));
    assert_eq!(meant("gatway"), Some("gateway"));
    assert_eq!(meant("excludes"), Some("exclude"));
    assert_eq!(meant("enable_overlapping_range"), Some("enable_overlapping_ranges"));
    assert_eq!(meant("mtu"), None);
    assert_eq!(meant("something_else_entirely"), None);
}

#[test]
fn the_docs_list_every_rule_as_the_catalogue_does() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/check.md"))
            .unwrap();
    let table = check(&["--list-rules"]).stdout;
    for row in table.lines() {
        assert!(
            docs.contains(row),
            "docs/check.md lacks the catalogue row:\n{row}\n(paste `hereabouts check --list-rules`)"
        );
    }
}

/// Writes 1,000 NADs in 10 directories: distinct /24s (every fourth dual-stack), ten pairs
/// sharing a pool, and one wide /16 under another network_name that overlaps the 200 /24s
/// inside it.
fn thousand_nads(root: &Path) {
    for i in 0..1000 {
        let dir = root.join(format!("team-{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let ipam = if i == 999 {
            r#""range": "10.0.0.0/16", "network_name": "wide""#.to_string()
        } else if i % 100 == 1 {
            // Shares the pool of NAD i - 1: same range, same (empty) network_name.
            format!(r#""range": "10.{}.{}.0/24""#, (i - 1) / 200, (i - 1) % 200)
        } else if i % 4 == 0 {
            format!(
                r#""ipRanges": [{{"range": "10.{}.{}.0/24"}}, {{"range": "fd10:{i:x}::/64"}}]"#,
                i / 200,
                i % 200
            )
        } else {
            format!(
                r#""range": "10.{}.{}.0/24", "exclude": ["10.{}.{}.0/28"]"#,
                i / 200,
                i % 200,
                i / 200,
                i % 200
            )
        };
        let nad = format!(
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: net-{i}\n  namespace: team-{}\nspec:\n  config: |\n    {{\n      \"cniVersion\": \"0.3.1\",\n      \"type\": \"macvlan\",\n      \"ipam\": {{\"type\": \"whereabouts\", {ipam}}}\n    }}\n",
            i / 100
        );
        std::fs::write(dir.join(format!("net-{i}.yaml")), nad).unwrap();
    }
}

#[test]
fn a_thousand_nads_are_checked_quickly() {
    let root = std::env::temp_dir().join(format!("hereabouts-check-1000-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    thousand_nads(&root);

    let mut allocator = Allocator::new(Box::new(NoStore)).expect("component loads");
    let start = Instant::now();
    let report = check::run(std::slice::from_ref(&root), &Settings::default(), &mut allocator)
        .expect("runs");
    let in_process = start.elapsed();
    assert_eq!((report.files, report.networks), (1000, 1000));
    let overlaps: Vec<_> =
        report.findings.iter().filter(|f| f.rule == "networks-overlap").collect();
    assert_eq!(overlaps.len(), 200, "the /16 overlaps the 200 /24s inside it");
    assert!(
        overlaps.iter().all(
            |f| f.file.ends_with("net-999.yaml") || f.related[0].file.ends_with("net-999.yaml")
        )
    );
    assert_eq!(
        report.findings.len(),
        200,
        "nothing else: {:?}",
        report.findings.iter().find(|f| f.rule != "networks-overlap")
    );

    let start = Instant::now();
    let output = Command::new(BIN).arg("check").arg(&root).output().unwrap();
    let whole = start.elapsed();
    assert_eq!(output.status.code(), Some(0), "warnings only");
    println!(
        "1,000 NADs: check::run {:.1} ms in process; `hereabouts check` {:.1} ms as a process (component load included)",
        in_process.as_secs_f64() * 1e3,
        whole.as_secs_f64() * 1e3
    );
    std::fs::remove_dir_all(&root).unwrap();
}
