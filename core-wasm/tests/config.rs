//! Table tests for `read_config`: every warning, every error, the defaults, and the Go quirks
//! the reading follows (see the module doc of `config.rs` for the rule ids).

use hereabouts_core::config::{read_config, read_plan_document};
use hereabouts_core::network::Network;
use hereabouts_core::types::{ConfigError, ConfigReading, RangeConfig};

fn read(json: &str) -> ConfigReading {
    read_config(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// (rule, field, ignored) of a warning.
type Warned = (String, String, String);

fn warnings(json: &str) -> Vec<Warned> {
    read(json).warnings.into_iter().map(|w| (w.rule, w.field, w.ignored)).collect()
}

/// The error every ADD of `json` fails with: the reading's, or, for a config that hands out
/// nothing but still names its pools, its `allocation_error`.
fn invalid(json: &str) -> String {
    match read_config(json) {
        Err(ConfigError::Invalid(e)) => e.to_string(),
        Ok(ConfigReading { network, .. }) if network.allocation_error.is_some() => {
            network.allocation_error.unwrap().to_string()
        }
        other => panic!("{json}: expected an invalid config, got {other:?}"),
    }
}

fn top(json: &str) -> RangeConfig {
    read(json).network.range.unwrap()
}

fn w(rule: &str, field: &str, ignored: &str) -> Warned {
    (rule.into(), field.into(), ignored.into())
}

#[test]
fn every_warning_kind() {
    let cases: &[(&str, Vec<Warned>)] = &[
        (
            r#"{"range": "10.0.0.0/24", "range_start": "10.0.0"}"#,
            vec![w("range-start-invalid", "range_start", "10.0.0")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "range_end": " 10.0.0.9"}"#,
            vec![w("range-end-invalid", "range_end", " 10.0.0.9")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "range_start": "fd00::1"}"#,
            vec![w("range-start-invalid", "range_start", "fd00::1")],
        ),
        (
            r#"{"range": "10.0.0.5-10.0.0.25/24", "range_start": "10.0.0.7", "range_end": "10.0.0.25"}"#,
            vec![w("range-start-invalid", "range_start", "10.0.0.7")],
        ),
        (
            r#"{"range": "10.0.0.5-10.0.0.25/24", "range_end": "10.0.0.30"}"#,
            vec![w("range-end-invalid", "range_end", "10.0.0.30")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "range_start": "10.1.0.1"}"#,
            vec![w("range-start-outside-range", "range_start", "10.1.0.1")],
        ),
        (
            r#"{"ipRanges": [{"range": "10.0.0.0/24", "range_end": "10.0.1.1"}]}"#,
            vec![w("range-end-outside-range", "ipRanges[0].range_end", "10.0.1.1")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "range_start": "10.0.0.255"}"#,
            vec![w("range-start-not-usable", "range_start", "10.0.0.255")],
        ),
        (
            r#"{"range": "10.0.0.5-10.0.0.255/24"}"#,
            vec![w("range-end-not-usable", "range", "10.0.0.5-10.0.0.255/24")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "range_start": "10.0.0.9", "range_end": "10.0.0.5"}"#,
            vec![w("range-start-after-end", "range_end", "10.0.0.5")],
        ),
        (
            r#"{"range_start": "10.0.0.5", "range_end": "10.0.0.9", "exclude": ["10.0.0.0/30"], "ipRanges": [{"range": "10.0.0.0/24"}]}"#,
            vec![
                w("range-key-without-range", "range_start", "10.0.0.5"),
                w("range-key-without-range", "range_end", "10.0.0.9"),
                w("range-key-without-range", "exclude[0]", "10.0.0.0/30"),
            ],
        ),
        (r#"{"range": "::/64"}"#, vec![w("range-crosses-ipv4-mapped", "range", "::/64")]),
        (
            r#"{"range": "10.0.0.0/24", "exclude": ["fd00::/64"]}"#,
            vec![w("exclude-invalid", "exclude[0]", "fd00::/64")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.1.0/24"]}"#,
            vec![w("exclude-outside-range", "exclude[0]", "10.0.1.0/24")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.0/30", "10.0.0.0/16"], "range_start": "10.0.0.1"}"#,
            vec![w("exclude-partly-outside-range", "exclude[1]", "10.0.0.0/16")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.010"]}"#,
            vec![w("exclude-leading-zeros", "exclude[0]", "10.0.0.010")],
        ),
        (
            r#"{"range": "10.0.0.0/24", "Gateway": "banana"}"#,
            vec![w("gateway-invalid", "Gateway", "banana")],
        ),
        (r#"{"range": "10.0.0.0/24", "range_start": "", "gateway": ""}"#, vec![]),
    ];
    for (json, expected) in cases {
        if expected.iter().any(|(rule, ..)| rule == "exclude-partly-outside-range") {
            // Every partly-outside exclude contains the range: nothing is left to hand out.
            let e = invalid(json);
            assert!(e.contains("leaves no address"), "{json}: {e}");
            continue;
        }
        assert_eq!(&warnings(json), expected, "{json}");
    }
}

#[test]
fn warnings_say_why_and_what_is_used_instead() {
    let reading = read(r#"{"range": "10.0.0.0/24", "range_start": "10.0.0.255"}"#);
    let warning = &reading.warnings[0];
    assert!(warning.reason.contains("broadcast address of 10.0.0.0/24"), "{}", warning.reason);
    assert!(warning.reason.contains("10.0.0.1"), "{}", warning.reason);
    // The start on the broadcast falls back to the whole CIDR (GetIPRange), not to nothing.
    assert_eq!(reading.network.range.unwrap().range_start, None);
}

#[test]
fn the_normalised_config_holds_only_what_whereabouts_honours() {
    let range = top(
        r#"{"range": "0010.0.0.77/024", "range_start": "10.0.0.009", "range_end": "10.0.0.300",
            "exclude": ["10.0.0.5", "10.0.1.0/24", "fd00::1", "10.0.0.16/28"]}"#,
    );
    assert_eq!(
        range,
        RangeConfig {
            range: "10.0.0.0/24".into(),
            range_start: Some("10.0.0.9".into()),
            range_end: None,
            exclude: vec!["10.0.0.5/32".into(), "10.0.0.16/28".into()],
        }
    );
    // The a-b/len syntax becomes explicit bounds.
    let range = top(r#"{"range": "10.0.0.5-10.0.0.25/24", "range_start": "10.0.0.7"}"#);
    assert_eq!(range.range_start.as_deref(), Some("10.0.0.5"));
    assert_eq!(range.range_end.as_deref(), Some("10.0.0.25"));
    assert_eq!(range.range, "10.0.0.0/24");
    // Canonical IPv6 text.
    let range = top(r#"{"range": "FD00:0:0:0::00001/64", "range_end": "fd00::0000100"}"#);
    assert_eq!(range.range, "fd00::/64");
    assert_eq!(range.range_end.as_deref(), Some("fd00::100"));
    // What read_config returns is what the allocator takes.
    for json in [
        r#"{"range": "::ffff:10.0.0.0/120", "exclude": ["::ffff:10.0.0.0/126"]}"#,
        r#"{"range": "::/64", "range_end": "::ffff:10.0.0.5"}"#,
        r#"{"range": "192.168.0.0/29", "range_start": "192.168.0.0", "range_end": "192.168.0.8"}"#,
    ] {
        Network::parse(&read(json).network).unwrap_or_else(|e| panic!("{json}: {e}"));
    }
}

#[test]
fn ipv4_mapped_ranges_are_ipv4_with_the_ipv4_pool_name() {
    let reading = read(
        r#"{"range": "::ffff:10.0.0.0/120", "range_start": "::ffff:10.0.0.9", "gateway": "::ffff:10.0.0.1",
            "exclude": ["::ffff:10.0.0.16/124"], "network_name": "blue"}"#,
    );
    let range = reading.network.range.clone().unwrap();
    assert_eq!(range.range, "10.0.0.0/24");
    assert_eq!(range.range_start.as_deref(), Some("10.0.0.9"));
    assert_eq!(range.exclude, vec!["10.0.0.16/28".to_string()]);
    assert_eq!(reading.network.gateway.as_deref(), Some("10.0.0.1"));
    assert!(reading.warnings.is_empty(), "{:?}", reading.warnings);
    let network = Network::parse(&reading.network).unwrap();
    assert_eq!(network.ranges[0].pool_name(&network.network_name), "blue-10.0.0.0-24");
    assert_eq!(network.ranges[0].pool_name(""), "10.0.0.0-24");
    // ::ffff:a.b.c.d/96 is all of IPv4 (Go: IPNet.String() keeps the last 4 mask bytes).
    assert_eq!(top(r#"{"range": "::ffff:10.0.0.0/96"}"#).range, "0.0.0.0/0");
    // Below /96 the mask cuts into ::ffff and the network is IPv6.
    assert_eq!(top(r#"{"range": "::ffff:10.0.0.5/90"}"#).range, "::ffc0:0:0/90");
    // IPv4-mapped in the a-b/len syntax, either side.
    let range = top(r#"{"range": "::ffff:10.0.0.5-10.0.0.25/24"}"#);
    assert_eq!(
        (range.range_start.unwrap(), range.range_end.unwrap()),
        ("10.0.0.5".into(), "10.0.0.25".into())
    );
    let range = top(r#"{"range": "10.0.0.5-::ffff:10.0.0.25/120"}"#);
    assert_eq!(range.range, "10.0.0.0/24");
    // A bare IPv4-mapped exclude: Whereabouts appends /32 and gets ::/32, no IPv4 network.
    let warned = warnings(r#"{"range": "10.0.0.0/24", "exclude": ["::ffff:10.0.0.5"]}"#);
    assert_eq!(warned, vec![w("exclude-invalid", "exclude[0]", "::ffff:10.0.0.5")]);
}

#[test]
fn ipv6_ranges_and_the_ipv4_mapped_block() {
    // The walk stops where net.IP turns IPv4: the range ends just before ::ffff:0:0.
    assert_eq!(top(r#"{"range": "::/64"}"#).range_end.as_deref(), Some("::fffe:ffff:ffff"));
    // An IPv4 range_end inside such a range is honoured as the mapped address, then cut.
    let reading = read(r#"{"range": "::/64", "range_end": "10.0.0.5"}"#);
    assert_eq!(reading.network.range.unwrap().range_end.as_deref(), Some("::fffe:ffff:ffff"));
    // An IPv4 range_start there: Whereabouts' walk begins outside its own IPNet, every ADD fails.
    let e = invalid(r#"{"range": "::/64", "range_start": "10.0.0.5"}"#);
    assert!(
        e.starts_with("range_start: 10.0.0.5 is an IPv4 address inside IPv6 range ::/64"),
        "{e}"
    );
    // Ranges above the block are untouched.
    assert!(warnings(r#"{"range": "fd00::/64"}"#).is_empty());
    assert_eq!(top(r#"{"range": "::1/126"}"#).range_end, None);
}

#[test]
fn leading_zeros_follow_parse_sloppy() {
    // Any number of leading zeros, in the address and in the prefix (k8s.io/utils dtoi).
    assert_eq!(top(r#"{"range": "0000000000192.168.1.0/0000024"}"#).range, "192.168.1.0/24");
    let range = top(r#"{"range": "00192.00168.1.5-000000192.168.1.25/24"}"#);
    assert_eq!(range.range, "192.168.1.0/24");
    assert_eq!(range.range_start.as_deref(), Some("192.168.1.5"));
    assert_eq!(range.range_end.as_deref(), Some("192.168.1.25"));
    assert_eq!(top(r#"{"range": "fd00::000000001/120"}"#).range, "fd00::/120");
    assert_eq!(top(r#"{"range": "::ffff:010.000.000.001/120"}"#).range, "10.0.0.0/24");
    // But not where Go reads strictly: an ipRanges bound is a net.IP (UnmarshalText, ParseIP).
    let e = invalid(r#"{"ipRanges": [{"range": "10.0.0.0/24", "range_start": "10.0.0.05"}]}"#);
    assert_eq!(
        e,
        "ipRanges[0].range_start: 10.0.0.05 is not an IP address (an ipRanges bound must be one)"
    );
    let e = invalid(r#"{"ipRanges": [{"range": "fd00::/64", "range_end": "fd00::00001"}]}"#);
    assert!(e.starts_with("ipRanges[0].range_end: fd00::00001"), "{e}");
    // Values too large are no address however written.
    assert_eq!(
        warnings(r#"{"range": "10.0.0.0/24", "range_start": "10.0.0.256"}"#)[0].0,
        "range-start-invalid"
    );
    assert!(invalid(r#"{"range": "10.0.0.0/033"}"#).contains("not a valid range"));
}

#[test]
fn every_error_kind() {
    let cases: &[(&str, &str)] = &[
        // Wrong JSON types name the field as written and the type found.
        (r#"{"range": 10}"#, "range: must be a string, found a number"),
        (r#"{"range_start": true}"#, "range_start: must be a string, found a boolean"),
        (r#"{"range_end": []}"#, "range_end: must be a string, found an array"),
        (r#"{"exclude": "10.0.0.0/30"}"#, "exclude: must be a list, found a string"),
        (
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.0/30", 7]}"#,
            "exclude[1]: must be a string, found a number",
        ),
        (r#"{"ipRanges": {}}"#, "ipRanges: must be a list, found an object"),
        (r#"{"ipRanges": ["10.0.0.0/24"]}"#, "ipRanges[0]: must be an object, found a string"),
        (r#"{"ipRanges": [{"range": 5}]}"#, "ipRanges[0].range: must be a string, found a number"),
        (
            r#"{"ipRanges": [{"range": "10.0.0.0/24", "range_start": 5}]}"#,
            "ipRanges[0].range_start: must be a string, found a number",
        ),
        (
            r#"{"ipRanges": [{"range": "10.0.0.0/24", "exclude": [{}]}]}"#,
            "ipRanges[0].exclude[0]: must be a string, found an object",
        ),
        (r#"{"range": "10.0.0.0/24", "gateway": 7}"#, "gateway: must be a string, found a number"),
        (
            r#"{"range": "10.0.0.0/24", "network_name": 1}"#,
            "network_name: must be a string, found a number",
        ),
        (
            r#"{"range": "10.0.0.0/24", "enable_overlapping_ranges": "yes"}"#,
            "enable_overlapping_ranges: must be a boolean, found a string",
        ),
        (r#"{"range": "10.0.0.0/24", "sticky": 1}"#, "sticky: must be a boolean, found a number"),
        (
            r#"{"range": "10.0.0.0/24", "node_slice_size": 24}"#,
            "node_slice_size: must be a string, found a number",
        ),
        // The first problem in document order is reported, as Go's decoder meets it.
        (r#"{"range": 5, "gateway": 7}"#, "range: must be a string, found a number"),
        // node slices: what would make every ADD fail in Whereabouts.
        (
            r#"{"range": "10.0.0.0/24", "node_slice_size": "/x"}"#,
            "node_slice_size: /x is not a prefix length: expected e.g. \"/28\" or \"28\" (Whereabouts makes no slice from it, so every ADD would fail)",
        ),
        (
            r#"{"range": "10.0.0.0/24", "node_slice_size": "/16"}"#,
            "node_slice_size: /16 is shorter than range 10.0.0.0/24's prefix /24: a slice cannot be larger than the range",
        ),
        (
            r#"{"range": "10.0.0.0/24", "node_slice_size": "31"}"#,
            "node_slice_size: 31 leaves no usable address in a slice (the slice's network and broadcast addresses are never handed out): at most /30 for IPv4",
        ),
        (
            r#"{"range": "10.0.0.0/8", "node_slice_size": "/24"}"#,
            "node_slice_size: /24 cuts range 10.0.0.0/8 into 2^16 slices; at most 16384 fit in one NodeSlicePool",
        ),
        (
            r#"{"range": "10.0.0.0/24", "ipRanges": [{"range": "fd00::/64"}], "node_slice_size": "/28"}"#,
            "node_slice_size: /28: node slices need exactly one range, found 2 (Whereabouts slices only the first and gives every other range that slice too)",
        ),
        // What Whereabouts rejects too.
        (
            r#"{"range": "10.0.0.0"}"#,
            "range: 10.0.0.0 is not a valid range: expected a CIDR such as 10.0.0.0/24",
        ),
        (
            r#"{"range": " 10.0.0.0/24"}"#,
            "range:  10.0.0.0/24 is not a valid range: expected a CIDR such as 10.0.0.0/24",
        ),
        (
            r#"{"range": "10.0.0.5-banana/24"}"#,
            "range: 10.0.0.5-banana/24 is not a valid range: expected first-last/prefix, e.g. 10.0.0.5-10.0.0.25/24",
        ),
        (
            r#"{"range": "banana-10.0.0.25/24"}"#,
            "range: banana-10.0.0.25/24 is not a valid range: the start banana is not an IP address",
        ),
        (r#"{"range": "10.1.0.5-10.0.0.25/24"}"#, "range: 10.1.0.5 is outside range 10.0.0.0/24"),
        (
            r#"{"range": "fd00::5-::ffff:10.0.0.25/120"}"#,
            "range: fd00::5 is outside range 10.0.0.0/24",
        ),
        (
            r#"{"ipRanges": [{"range": ""}]}"#,
            "ipRanges[0].range: is empty: expected a CIDR such as 10.0.0.0/24",
        ),
        (
            r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.256"}"#,
            "gateway: 10.0.0.256 is not an IP address",
        ),
        // What makes every ADD fail.
        (
            r#"{"range": "10.0.0.7/32"}"#,
            "range: 10.0.0.7/32 leaves no address to hand out (network, broadcast, .0, range_start/range_end and excludes remove them all)",
        ),
        (r#"{}"#, "range: no range configured: set `range` or `ipRanges`"),
        (r#"[]"#, "ipam: expected an object, found an array"),
        (r#"null"#, "ipam: expected an object, found null"),
    ];
    for (json, message) in cases {
        assert_eq!(&invalid(json), message, "{json}");
    }
}

#[test]
fn malformed_json_is_serde_jsons_message_with_line_and_column() {
    assert_eq!(
        read_config("{\"range\": \"10.0.0.0/24\",\n  asdf}"),
        Err(ConfigError::Malformed("key must be a string at line 2 column 3".into()))
    );
    assert_eq!(
        read_config(""),
        Err(ConfigError::Malformed("EOF while parsing a value at line 1 column 0".into()))
    );
    assert!(
        matches!(read_config("{} x"), Err(ConfigError::Malformed(m)) if m.contains("trailing characters"))
    );
    // A number serde cannot hold, in a key the reading uses, is malformed to serde_json ...
    assert!(matches!(read_config(r#"{"range": 1e400}"#), Err(ConfigError::Malformed(_))));
    // ... but under a key it skips, it is skipped unparsed, as Go skips it.
    assert_eq!(
        read(r#"{"range": "10.0.0.0/30", "leader_lease_duration": 1e400}"#)
            .network
            .range
            .unwrap()
            .range,
        "10.0.0.0/30"
    );
}

#[test]
fn sticky_and_overlapping_default_true_and_are_explicit_switches() {
    let network = read(r#"{"range": "10.0.0.0/24"}"#).network;
    assert!(network.sticky && network.enable_overlapping_ranges);
    let network =
        read(r#"{"range": "10.0.0.0/24", "sticky": false, "enable_overlapping_ranges": false}"#)
            .network;
    assert!(!network.sticky && !network.enable_overlapping_ranges);
    // null leaves a Go bool as it was: the defaults.
    let network =
        read(r#"{"range": "10.0.0.0/24", "sticky": null, "enable_overlapping_ranges": null}"#)
            .network;
    assert!(network.sticky && network.enable_overlapping_ranges);
    let network =
        read(r#"{"range": "10.0.0.0/24", "sticky": true, "network_name": "blue"}"#).network;
    assert!(network.sticky);
    assert_eq!(network.network_name, "blue");
}

#[test]
fn keys_match_as_go_matches_them() {
    // Case-insensitive, in document order, the last one winning.
    assert_eq!(top(r#"{"Range": "10.0.0.0/24"}"#).range, "10.0.0.0/24");
    assert_eq!(top(r#"{"range": "10.0.0.0/24", "RANGE": "10.1.0.0/24"}"#).range, "10.1.0.0/24");
    assert_eq!(top(r#"{"RANGE": "10.1.0.0/24", "range": "10.0.0.0/24"}"#).range, "10.0.0.0/24");
    // Go's simple folding: ſ is s, the Kelvin sign is k.
    assert_eq!(
        top("{\"range\": \"10.0.0.0/24\", \"range_\u{17f}tart\": \"10.0.0.9\"}")
            .range_start
            .as_deref(),
        Some("10.0.0.9")
    );
    assert_eq!(
        read("{\"range\": \"10.0.0.0/24\", \"networ\u{212a}_name\": \"b\"}").network.network_name,
        "b"
    );
    assert_eq!(
        read("{\"range\": \"10.0.0.0/24\", \"r\u{e4}nge\": 5}").network.range.unwrap().range,
        "10.0.0.0/24"
    );
    // `Gateway` exactly is another (legacy, lenient) field; other spellings are `gateway`.
    let gateway = |json: &str| read(json).network.gateway;
    assert_eq!(
        gateway(r#"{"range": "10.0.0.0/24", "Gateway": "10.0.0.1"}"#).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        gateway(r#"{"range": "10.0.0.0/24", "GATEWAY": "10.0.0.2", "Gateway": "10.0.0.1"}"#)
            .as_deref(),
        Some("10.0.0.2")
    );
    assert!(invalid(r#"{"range": "10.0.0.0/24", "GateWay": "x"}"#).starts_with("gateway: x"));
    // null leaves a string field as it was.
    assert_eq!(top(r#"{"range": "10.0.0.0/24", "range": null}"#).range, "10.0.0.0/24");
    // Unknown and host keys are ignored, whatever their type.
    let reading = read(
        r#"{"range": "10.0.0.0/30", "etcd_host": ["a"], "kubernetes": 5, "log_file": {}, "routes": [{"dst": "0.0.0.0/0"}], "x": null}"#,
    );
    assert_eq!(reading.network.range.unwrap().range, "10.0.0.0/30");
}

#[test]
fn duplicate_arrays_decode_into_the_old_elements_as_go_does() {
    // Go's decoder reuses the slice: the second ipRanges' item 0 keeps the first's range_start.
    let network = read(
        r#"{"ipRanges": [{"range": "10.0.0.0/24", "range_start": "10.0.0.9"}, {"range": "10.1.0.0/24", "exclude": ["10.1.0.0/30"]}],
            "ipRanges": [{"range": "10.2.0.0/24"}], "ipRanges": [{}, {}]}"#,
    )
    .network;
    assert_eq!(network.ip_ranges.len(), 2);
    assert_eq!(network.ip_ranges[0].range, "10.2.0.0/24");
    assert_eq!(network.ip_ranges[0].range_start, None); // 10.0.0.9 is outside 10.2.0.0/24 now
    assert_eq!(network.ip_ranges[1].exclude, vec!["10.1.0.0/30".to_string()]);
    // An empty array starts afresh.
    let network = read(r#"{"ipRanges": [{"range": "10.0.0.0/24"}], "ipRanges": [], "ipRanges": [{"range": "10.3.0.0/24"}]}"#).network;
    assert_eq!(network.ip_ranges.len(), 1);
    // A null item keeps the element it lands on.
    let range = top(
        r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.4/30", "10.0.0.8/30"], "exclude": [null]}"#,
    );
    assert_eq!(range.exclude, vec!["10.0.0.4/30".to_string()]);
}

#[test]
fn plan_documents_keep_the_hosts_words() {
    let error = |text: &str| match read_plan_document(text) {
        Err(ConfigError::Invalid(p)) => format!("{}: {}", p.field, p.message),
        Err(ConfigError::Malformed(m)) => m,
        Ok(doc) => panic!("{text}: accepted {doc:?}"),
    };
    assert_eq!(error("[]"), "input: expected an object with \"ipam\" and \"allocated\"");
    assert_eq!(error("{}"), "ipam: missing (the ipam section of a CNI config)");
    assert_eq!(
        error(r#"{"ipam": {"range": "10.0.0.0/24"}, "allocated": "x"}"#),
        "allocated: must be a list of addresses"
    );
    assert_eq!(
        error(r#"{"ipam": {"range": "10.0.0.0/24"}, "allocated": ["10.0.0.1", 2]}"#),
        "allocated[1]: must be an address string"
    );
    assert_eq!(error(r#"{"ipam": 1}"#), "ipam: expected an object, found a number");
    assert_eq!(
        error("{\"ipam\":"),
        "input is not valid JSON: EOF while parsing a value at line 1 column 8"
    );
    let doc = read_plan_document(r#"{"ipam": {"range": "10.0.0.0/24", "range_start": "x"}, "allocated": null, "other": 1e999}"#).unwrap();
    assert!(doc.allocated.is_empty());
    assert_eq!(doc.reading.warnings[0].rule, "range-start-invalid");
}

#[test]
fn an_unparsable_exclude_refuses_new_addresses_only() {
    // Whereabouts parses excludes only when it walks for a new address: that walk fails, but a
    // pod that holds an address gets it again and DEL works. The reading keeps the error for
    // `allocate` instead of failing every call.
    for (json, message) in [
        (
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.0/40", "10.0.0.5"]}"#,
            "exclude[0]: 10.0.0.0/40 is not a CIDR or an IP address",
        ),
        (
            r#"{"range": "10.0.0.0/24", "exclude": [null]}"#,
            "exclude[0]: is empty: expected a CIDR or an IP address",
        ),
    ] {
        let reading = read(json);
        assert_eq!(
            reading.network.allocation_error.map(|e| e.to_string()).as_deref(),
            Some(message)
        );
        assert!(reading.warnings.is_empty(), "{json}");
    }
    assert_eq!(read(r#"{"range": "10.0.0.0/24"}"#).network.allocation_error, None);
}

#[test]
fn every_rejection_names_the_rule_check_reports_it_under() {
    for (json, rule, field) in [
        (r#"{"range": 5}"#, "ipam-type-error", "range"),
        (r#"{"range": "10.0.0.0/33"}"#, "range-invalid", "range"),
        (r#"{"range": "10.0.1.5-10.0.0.9/24"}"#, "range-start-outside-range", "range"),
        (
            r#"{"ipRanges": [{"range": "10.0.0.0/24", "range_end": "x"}]}"#,
            "range-end-invalid",
            "ipRanges[0].range_end",
        ),
        (r#"{"range": "10.0.0.0/24", "gateway": "10.0.0"}"#, "gateway-invalid", "gateway"),
        (
            r#"{"range": "10.0.0.0/24", "node_slice_size": "/20"}"#,
            "node-slice-size-invalid",
            "node_slice_size",
        ),
    ] {
        match read_config(json) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!((p.rule.as_str(), p.field.as_str()), (rule, field), "{json}")
            }
            other => panic!("{json}: {other:?}"),
        }
    }
}

/// A config that hands out nothing — a /32, every address excluded, no range at all — reads,
/// with that error as its allocation error: ADD (strict parse, and so `plan`) fails with it as
/// before, while DEL, CHECK and GC still find the pools it names (a NAD edited after its pods'
/// ADDs). `check` still reports it under its rule.
#[test]
fn a_config_that_hands_out_nothing_still_names_its_pools() {
    use hereabouts_core::config::review_config;
    for (json, rule, ranges, message) in [
        (
            r#"{"range": "10.7.0.4/30", "exclude": ["10.7.0.4/30"]}"#,
            "range-empty",
            1,
            "range: 10.7.0.4/30 leaves no address to hand out (network, broadcast, .0, range_start/range_end and excludes remove them all)",
        ),
        (
            r#"{"range": "10.0.0.7/32"}"#,
            "range-empty",
            1,
            "range: 10.0.0.7/32 leaves no address to hand out (network, broadcast, .0, range_start/range_end and excludes remove them all)",
        ),
        (
            r#"{"ipRanges": [{"range": "10.8.0.0/24"}, {"range": "fd08::/128"}]}"#,
            "range-empty",
            2,
            "ipRanges[1].range: fd08::/128 leaves no address to hand out (network, broadcast, .0, range_start/range_end and excludes remove them all)",
        ),
        (r#"{}"#, "range-missing", 0, "range: no range configured: set `range` or `ipRanges`"),
    ] {
        let network = read(json).network;
        assert_eq!(network.allocation_error.as_ref().unwrap().to_string(), message, "{json}");
        assert_eq!(Network::parse(&network).unwrap_err().to_string(), message, "{json}");
        let held = Network::parse_held(&network).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(held.ranges.len(), ranges, "{json}");
        let review = review_config(json);
        assert_eq!(review.len(), 1, "{json}: {review:?}");
        assert_eq!(review[0].rule, rule, "{json}");
    }
    // Anything else the allocator refuses is still refused by the reading.
    assert!(read_config(r#"{"range": "10.0.0.7/32", "gateway": "10.0.0"}"#).is_err());
}

#[test]
fn the_strict_review_reports_every_problem_at_once() {
    use hereabouts_core::config::review_config;
    use hereabouts_core::types::Severity;
    let rules = |json: &str| -> Vec<(String, Severity)> {
        review_config(json).into_iter().map(|f| (f.rule, f.severity)).collect()
    };
    // What the reading only warns about is an error, and the error that stops it follows.
    assert_eq!(
        rules(r#"{"range": "10.1.0.0/24", "range_start": "10.2.0.1", "exclude": ["10.1.0.0/16"]}"#),
        [
            ("range-start-outside-range".to_string(), Severity::Error),
            ("exclude-partly-outside-range".to_string(), Severity::Error),
            ("range-empty".to_string(), Severity::Error),
        ]
    );
    // A config that reads gets validate's findings too (here a warning).
    assert_eq!(
        rules(r#"{"range": "10.0.0.0/24", "gateway": "10.0.0.1"}"#),
        [("gateway-allocatable".to_string(), Severity::Warning)]
    );
    assert_eq!(rules(r#"{"range": 5"#)[0].0, "parse-error");
    assert!(review_config(r#"{"range": "10.0.0.0/24"}"#).is_empty());
}

/// Whereabouts has no cap on a config's lists; 50,000 ranges made one ADD take 10 s. The
/// caps are the core's, so every host refuses the same configs, naming the list.
#[test]
fn ranges_and_excludes_are_capped() {
    use hereabouts_core::config::{MAX_EXCLUDES, MAX_RANGES};
    let ranges = |n: usize| {
        let items: Vec<String> =
            (0..n).map(|i| format!(r#"{{"range": "10.{}.{}.0/24"}}"#, i / 256, i % 256)).collect();
        format!(r#"{{"ipRanges": [{}]}}"#, items.join(","))
    };
    assert_eq!(read(&ranges(MAX_RANGES)).network.ip_ranges.len(), MAX_RANGES);
    let excludes = |n: usize| {
        let items: Vec<String> =
            (0..n).map(|i| format!(r#""10.0.{}.{}/32""#, i / 256, i % 256)).collect();
        items.join(",")
    };
    let top = |n: usize| format!(r#"{{"range": "10.0.0.0/16", "exclude": [{}]}}"#, excludes(n));
    let inner = |n: usize| {
        format!(r#"{{"ipRanges": [{{"range": "10.0.0.0/16", "exclude": [{}]}}]}}"#, excludes(n))
    };
    assert!(read_config(&top(MAX_EXCLUDES)).is_ok());
    assert!(read_config(&inner(MAX_EXCLUDES)).is_ok());
    for (json, field) in [
        (ranges(MAX_RANGES + 1), "ipRanges"),
        (ranges(50_000), "ipRanges"),
        (top(MAX_EXCLUDES + 1), "exclude"),
        (inner(MAX_EXCLUDES + 1), "ipRanges[0].exclude"),
    ] {
        match read_config(&json) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!((p.rule.as_str(), p.field.as_str()), ("ipam-too-large", field));
                assert!(p.message.contains("more than the"), "{}", p.message);
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}
