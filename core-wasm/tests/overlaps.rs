//! Table tests for `plan::overlaps`: where two networks' ranges share allocatable addresses, and
//! what kind of sharing it is (see `overlap-kind` in the WIT file).

use hereabouts_core::config::read_config;
use hereabouts_core::plan::overlaps;
use hereabouts_core::types::{NetworkConfig, OverlapKind};

fn network(ipam: &str) -> NetworkConfig {
    read_config(ipam).unwrap_or_else(|e| panic!("{ipam}: {e}")).network
}

/// (name, network a, network b, the expected shared span and kind).
type Case =
    (&'static str, &'static str, &'static str, Option<(&'static str, &'static str, OverlapKind)>);

#[test]
fn every_overlap_kind() {
    use OverlapKind::*;
    let cases: &[Case] = &[
        (
            "same range, same network: one IPPool",
            r#"{"range": "10.0.0.0/24"}"#,
            r#"{"range": "10.0.0.7/24", "range_start": "10.0.0.100"}"#,
            Some(("10.0.0.100", "10.0.0.254", SamePool)),
        ),
        (
            "an IPv4-mapped range is the same pool as its IPv4 twin",
            r#"{"range": "::ffff:10.0.0.0/120", "network_name": "blue"}"#,
            r#"{"range": "10.0.0.0/24", "network_name": "blue"}"#,
            Some(("10.0.0.1", "10.0.0.254", SamePool)),
        ),
        (
            "different pools, overlapping reservations on in both",
            r#"{"range": "10.0.0.0/24"}"#,
            r#"{"range": "10.0.0.0/25", "exclude": ["10.0.0.0/28"]}"#,
            Some(("10.0.0.16", "10.0.0.126", Protected)),
        ),
        (
            "different pools, reservations off in one",
            r#"{"range": "10.0.0.0/24"}"#,
            r#"{"range": "10.0.0.128/25", "enable_overlapping_ranges": false}"#,
            Some(("10.0.0.129", "10.0.0.254", Unprotected)),
        ),
        (
            "different network_name: separate address spaces",
            r#"{"range": "10.0.0.0/24", "network_name": "red"}"#,
            r#"{"range": "10.0.0.0/24", "network_name": "blue"}"#,
            Some(("10.0.0.1", "10.0.0.254", SeparateNetworks)),
        ),
        (
            "disjoint ranges do not overlap",
            r#"{"range": "10.0.0.0/25"}"#,
            r#"{"range": "10.0.0.128/25"}"#,
            None,
        ),
        (
            "excludes remove the shared span",
            r#"{"range": "10.0.0.0/24", "exclude": ["10.0.0.0/25"]}"#,
            r#"{"range": "10.0.0.0/25"}"#,
            None,
        ),
        (
            "an exclude Whereabouts ignores (outside the range) does not remove it",
            r#"{"range": "10.0.0.0/25", "exclude": ["10.9.0.0/16"]}"#,
            r#"{"range": "10.0.0.0/25", "network_name": "x"}"#,
            Some(("10.0.0.1", "10.0.0.126", SeparateNetworks)),
        ),
    ];
    for (name, a, b, expected) in cases {
        let found = overlaps(&network(a), &network(b)).unwrap();
        let found: Vec<_> =
            found.iter().map(|o| (o.first.as_str(), o.last.as_str(), o.kind)).collect();
        assert_eq!(found, expected.iter().copied().collect::<Vec<_>>(), "{name}");
    }
}
