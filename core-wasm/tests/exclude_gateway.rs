//! `exclude_gateway` (issue 24, Whereabouts #601): an opt-in ipam key, default false, that
//! Whereabouts ignores. With it the gateway is never handed out: the reading writes it into the
//! normalised config as one more exclude of each range that would hand it out, so the
//! allocator, `plan`, `validate` and the range map see it with no key of their own in the
//! contract. These tests go from the ipam JSON through the reading to the allocator, as every
//! host does.

use hereabouts_core::allocator::allocate;
use hereabouts_core::config::{read_config, review_config};
use hereabouts_core::memory::MemoryStore;
use hereabouts_core::plan::{plan, range_map, validate};
use hereabouts_core::types::{
    AllocateRequest, ConfigError, IpamError, NetworkConfig, Owner, PlanRequest, Severity,
};

fn network(json: &str) -> NetworkConfig {
    read_config(json).unwrap_or_else(|e| panic!("{json}: {e}")).network
}

fn owner(i: usize) -> Owner {
    Owner::new(&format!("ctr-{i}"), "eth0", &format!("ns/pod-{i}"))
}

fn add(
    store: &mut MemoryStore,
    config: &NetworkConfig,
    i: usize,
    ips: &[&str],
) -> Result<Vec<String>, IpamError> {
    let request =
        AllocateRequest { owner: owner(i), requested: ips.iter().map(|s| s.to_string()).collect() };
    allocate(store, config, &request).map(|l| l.into_iter().map(|l| l.address).collect())
}

fn stores() -> [MemoryStore; 2] {
    [MemoryStore::new(), MemoryStore::whole_pools()]
}

/// (rule, field, ignored) of the reading's warnings.
fn warnings(json: &str) -> Vec<(String, String, String)> {
    read_config(json).unwrap().warnings.into_iter().map(|w| (w.rule, w.field, w.ignored)).collect()
}

#[test]
fn lowest_free_skips_the_gateway_in_ipv4_and_ipv6() {
    for mut store in stores() {
        let config = network(
            r#"{"ipRanges": [{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}],
                "gateway": "10.0.0.1", "exclude_gateway": true}"#,
        );
        assert_eq!(add(&mut store, &config, 1, &[]).unwrap(), ["10.0.0.2", "fd00::1"]);
        assert_eq!(add(&mut store, &config, 2, &[]).unwrap(), ["10.0.0.3", "fd00::2"]);
    }
    for mut store in stores() {
        let config = network(
            r#"{"range": "fd00:1::/120", "gateway": "fd00:1::1", "exclude_gateway": true}"#,
        );
        assert_eq!(add(&mut store, &config, 1, &[]).unwrap(), ["fd00:1::2"]);
    }
}

#[test]
fn off_by_default_and_false_changes_nothing() {
    for json in [
        r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1"}"#,
        r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1", "exclude_gateway": false}"#,
        r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1", "exclude_gateway": null}"#,
    ] {
        let config = network(json);
        assert!(config.range.as_ref().unwrap().exclude.is_empty(), "{json}");
        assert_eq!(add(&mut MemoryStore::new(), &config, 1, &[]).unwrap(), ["10.0.0.1"], "{json}");
    }
}

#[test]
fn the_gateway_becomes_an_exclude_of_the_ranges_that_would_hand_it_out() {
    // Appended after the user's excludes, as the normalised /32 or /128.
    let config = network(
        r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.128/25"], "gateway": "10.0.0.1",
            "exclude_gateway": true}"#,
    );
    assert_eq!(config.range.unwrap().exclude, ["10.0.0.128/25", "10.0.0.1/32"]);
    let config = network(
        r#"{"ipRanges": [{"range": "fd00::/64"}, {"range": "10.0.0.0/24"}],
            "gateway": "FD00::0:1", "exclude_gateway": true}"#,
    );
    assert_eq!(config.ip_ranges[0].exclude, ["fd00::1/128"]);
    assert!(config.ip_ranges[1].exclude.is_empty());
    // Go's case-insensitive key matching, as for every key.
    let config =
        network(r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1", "Exclude_Gateway": true}"#);
    assert_eq!(config.range.unwrap().exclude, ["10.0.0.1/32"]);
}

#[test]
fn a_gateway_no_range_hands_out_changes_nothing_and_is_no_error() {
    for json in [
        // Outside every range (a routed gateway).
        r#"{"range": "10.0.0.0/24", "gateway": "192.168.0.1", "exclude_gateway": true}"#,
        // The other family.
        r#"{"range": "10.0.0.0/24", "gateway": "fd00::1", "exclude_gateway": true}"#,
        // Already excluded by the user, before range_start, or the network address.
        r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.0/30"], "gateway": "10.0.0.1", "exclude_gateway": true}"#,
        r#"{"range": "10.0.0.0/24", "range_start": "10.0.0.10", "gateway": "10.0.0.1", "exclude_gateway": true}"#,
        r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.0", "exclude_gateway": true}"#,
    ] {
        let reading = read_config(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert!(reading.warnings.is_empty(), "{json}: {:?}", reading.warnings);
        let before = network(&json.replace(r#", "exclude_gateway": true"#, ""));
        assert_eq!(reading.network, before, "{json}");
        assert!(review_config(json).is_empty(), "{json}: {:?}", review_config(json));
    }
}

#[test]
fn a_non_boolean_value_is_an_error_naming_the_field() {
    for (value, kind) in
        [(r#""true""#, "a string"), ("1", "a number"), ("[]", "an array"), ("{}", "an object")]
    {
        let json = format!(
            r#"{{"range": "10.0.0.0/24", "gateway": "10.0.0.1", "exclude_gateway": {value}}}"#
        );
        match read_config(&json) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!(
                    (p.rule.as_str(), p.field.as_str()),
                    ("ipam-type-error", "exclude_gateway")
                );
                assert_eq!(
                    p.to_string(),
                    format!("exclude_gateway: must be a boolean, found {kind}")
                );
            }
            other => panic!("{json}: {other:?}"),
        }
    }
}

#[test]
fn without_a_gateway_it_warns_and_excludes_nothing() {
    let w = |rule: &str, field: &str, ignored: &str| (rule.into(), field.into(), ignored.into());
    let json = r#"{"range": "10.0.0.0/24", "exclude_gateway": true}"#;
    assert_eq!(warnings(json), [w("exclude-gateway-without-gateway", "exclude_gateway", "true")]);
    assert!(network(json).range.unwrap().exclude.is_empty());
    let review = review_config(json);
    assert_eq!(review.len(), 1, "{review:?}");
    assert_eq!(
        (review[0].rule.as_str(), review[0].severity),
        ("exclude-gateway-without-gateway", Severity::Error)
    );
    // An empty gateway is none; an unparsable legacy `Gateway` is dropped (its own warning).
    let json =
        r#"{"range": "10.0.0.0/24", "gateway": "", "Gateway": "nope", "exclude_gateway": true}"#;
    assert_eq!(
        warnings(json),
        [
            w("gateway-invalid", "Gateway", "nope"),
            w("exclude-gateway-without-gateway", "exclude_gateway", "true")
        ]
    );
    // The legacy `Gateway`, when it parses, is the gateway.
    let json = r#"{"range": "10.0.0.0/24", "Gateway": "10.0.0.1", "exclude_gateway": true}"#;
    assert_eq!(network(json).range.unwrap().exclude, ["10.0.0.1/32"]);
}

#[test]
fn a_request_for_the_gateway_is_refused_naming_exclude_gateway() {
    for mut store in stores() {
        let config =
            network(r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1", "exclude_gateway": true}"#);
        match add(&mut store, &config, 1, &["10.0.0.1"]) {
            Err(IpamError::AddressUnavailable(message)) => {
                assert_eq!(
                    message,
                    "requested address 10.0.0.1 in 10.0.0.0/24 is excluded: it is the gateway, kept out by \"exclude_gateway\": true (or an exclude covering it)"
                );
            }
            other => panic!("expected the gateway refused, got {other:?}"),
        }
        // Nothing was taken; other requested addresses are honoured.
        assert_eq!(add(&mut store, &config, 1, &["10.0.0.7/24"]).unwrap(), ["10.0.0.7"]);
        assert_eq!(add(&mut store, &config, 2, &[]).unwrap(), ["10.0.0.2"]);
        // An ordinary exclude keeps its plain word.
        let config = network(
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.9"], "gateway": "10.0.0.1", "exclude_gateway": true}"#,
        );
        match add(&mut store, &config, 3, &["10.0.0.9"]) {
            Err(IpamError::AddressUnavailable(message)) => {
                assert_eq!(message, "requested address 10.0.0.9 in 10.0.0.0/24 is excluded");
            }
            other => panic!("expected 10.0.0.9 refused, got {other:?}"),
        }
    }
}

#[test]
fn validate_no_longer_warns_and_its_warning_names_the_key() {
    let plain = network(r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1"}"#);
    let findings = validate(&plain);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].rule, "gateway-allocatable");
    assert!(
        findings[0].message.contains(r#"set "exclude_gateway": true"#),
        "{}",
        findings[0].message
    );
    let excluded =
        network(r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1", "exclude_gateway": true}"#);
    assert!(validate(&excluded).is_empty(), "{:?}", validate(&excluded));
}

#[test]
fn plan_and_the_range_map_show_the_gateway_excluded() {
    let config =
        network(r#"{"range": "10.0.0.0/29", "gateway": "10.0.0.1", "exclude_gateway": true}"#);
    let request =
        PlanRequest { network: config, allocated: vec![], persistent: vec![], preview: 2 };
    let report = &plan(&request).unwrap()[0];
    assert_eq!(report.first.as_deref(), Some("10.0.0.2"));
    assert_eq!(report.capacity, "5");
    assert_eq!(report.next, ["10.0.0.2", "10.0.0.3"]);
    // One bucket per address: the gateway's is excluded, and marked as the gateway.
    let map = range_map(&request, 0, None, None, 8).unwrap();
    let gateway = &map[1];
    assert_eq!((gateway.first.as_str(), gateway.excluded.as_str()), ("10.0.0.1", "1"));
    assert!(gateway.has_gateway);
    assert_eq!(map[2].allocatable, "1");
    assert!(!map[2].has_gateway);
}

#[test]
fn a_node_slice_keeps_the_gateway_out() {
    use hereabouts_core::slice::{on_node_slice, slicing};
    let config = network(
        r#"{"range": "10.0.0.0/24", "node_slice_size": "/26", "gateway": "10.0.0.1",
            "exclude_gateway": true}"#,
    );
    let first = slicing(&config, "net").unwrap().slices[0].clone();
    let sliced = on_node_slice(&config, "node-a", &first).unwrap();
    assert_eq!(add(&mut MemoryStore::new(), &sliced, 1, &[]).unwrap(), ["10.0.0.2"]);
}

#[test]
fn a_range_of_the_gateway_alone_hands_out_nothing() {
    // range_start = range_end = the gateway: nothing is left, and ADD says so (DEL still works).
    let config = network(
        r#"{"range": "10.0.0.0/24", "range_start": "10.0.0.1", "range_end": "10.0.0.1",
            "gateway": "10.0.0.1", "exclude_gateway": true}"#,
    );
    let error = config.allocation_error.clone().expect("hands out nothing");
    assert_eq!(error.field, "range");
    match add(&mut MemoryStore::new(), &config, 1, &[]) {
        Err(IpamError::InvalidConfig(e)) => assert_eq!(e, error),
        other => panic!("{other:?}"),
    }
}
