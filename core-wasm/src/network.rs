//! A whole ipam config: its ranges, gateway and network scope, validated together.
//!
//! Validation and parsing are one pass: [`analyze`] collects every finding (for editors and
//! `hereabouts check`), and [`Network::parse`] is the same pass stopping at the first error
//! (for allocation). The two can therefore never disagree.
//!
//! The gateway is kept for the range map and for `gateway-allocatable`, the warning that a pod
//! could be given it. `exclude_gateway: true` reaches this module only as an exclude the
//! reading wrote (see `config`), so the warning goes quiet by itself once the key is set, and
//! names the key as the fix while it is not.

use crate::addr::{Family, parse_address};
use crate::pool::Unavailable;
use crate::range::{Range, finding};
use crate::slice;
use crate::types::{FieldError, Finding, NetworkConfig, NodeSlice, Severity};

#[derive(Debug, Clone)]
pub struct Network {
    pub ranges: Vec<Range>,
    pub gateway: Option<(Family, u128)>,
    pub network_name: String,
    pub overlapping: bool,
    /// `node_slice_size`'s prefix length, checked against the first range.
    pub slice_size: Option<u32>,
}

/// The errors of a config that hands out nothing but still names its pools: no range at all,
/// or ranges with no address left. ADD fails on them; DEL, CHECK and GC read the pools
/// ([`Network::parse_held`]), so a pod whose NAD was edited so can still be deleted.
pub const HANDS_OUT_NOTHING: &[&str] = &["range-missing", "range-empty"];

/// Every finding for a config, and the parsed network when there is no error.
pub fn analyze(config: &NetworkConfig) -> (Option<Network>, Vec<Finding>) {
    analyze_with(config, false)
}

/// [`analyze`]; with `held`, a network is also returned when its only errors are
/// [`HANDS_OUT_NOTHING`], empty ranges kept (to find what their pools hold, never to allocate).
fn analyze_with(config: &NetworkConfig, held: bool) -> (Option<Network>, Vec<Finding>) {
    let mut findings = Vec::new();
    let mut ranges = Vec::new();
    // Whereabouts treats an empty top-level `range` as absent.
    let top = config.range.as_ref().filter(|r| !r.range.trim().is_empty());
    if top.is_none() && config.ip_ranges.is_empty() {
        findings.push(finding(
            "range-missing",
            Severity::Error,
            "range".into(),
            "no range configured: set `range` or `ipRanges`".into(),
        ));
    }
    if let Some(range) = top {
        ranges.extend(Range::parse_keeping_empty(range, "", &mut findings, held));
    }
    for (i, range) in config.ip_ranges.iter().enumerate() {
        ranges.extend(Range::parse_keeping_empty(
            range,
            &format!("ipRanges[{i}]"),
            &mut findings,
            held,
        ));
    }

    let mut gateway = None;
    if let Some(text) = config.gateway.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
        match parse_address(text) {
            None => findings.push(finding(
                "gateway-invalid",
                Severity::Error,
                "gateway".into(),
                format!("{text} is not an IP address"),
            )),
            Some((family, address)) => {
                gateway = Some((family, address));
                for range in ranges.iter().filter(|r| r.family == family) {
                    if range.pool(std::iter::empty()).check(address) == Ok(()) {
                        findings.push(finding(
                            "gateway-allocatable",
                            Severity::Warning,
                            "gateway".into(),
                            format!(
                                "{text} can be handed to a pod: it lies in the allocatable space of {} ({}); set \"exclude_gateway\": true (or exclude it, or move range_start past it)",
                                range.field,
                                range.cidr()
                            ),
                        ));
                    }
                }
            }
        }
    }

    let slice_size = node_slices(config, top.is_some(), &mut ranges, &mut findings);

    let usable = |f: &Finding| {
        f.severity != Severity::Error || (held && HANDS_OUT_NOTHING.contains(&f.rule.as_str()))
    };
    let network = findings.iter().all(usable).then(|| Network {
        ranges,
        gateway,
        network_name: config.network_name.trim().to_string(),
        overlapping: config.enable_overlapping_ranges,
        slice_size,
    });
    (network, findings)
}

/// Checks `node_slice_size` (see [`crate::slice`]) and, when the config names a node's slice,
/// narrows the first range to it. Returns the slice prefix length.
fn node_slices(
    config: &NetworkConfig,
    has_top: bool,
    ranges: &mut [Range],
    findings: &mut Vec<Finding>,
) -> Option<u32> {
    let Some(text) = config.node_slice_size.as_deref() else {
        if config.node_slice.is_some() {
            findings.push(finding(
                "node-slice-invalid",
                Severity::Error,
                "node_slice".into(),
                "the network has no node_slice_size, so it has no node slices".into(),
            ));
        }
        return None;
    };
    let configured = usize::from(has_top) + config.ip_ranges.len();
    if configured > 1 {
        findings.push(finding(
            "node-slice-size-invalid",
            Severity::Error,
            "node_slice_size".into(),
            format!(
                "{text}: node slices need exactly one range, found {configured} (Whereabouts \
                 slices only the first and gives every other range that slice too)"
            ),
        ));
        return None;
    }
    let range = ranges.first_mut()?;
    let size = match slice::check_size(text, range) {
        Ok(size) => size,
        Err(message) => {
            findings.push(finding(
                "node-slice-size-invalid",
                Severity::Error,
                "node_slice_size".into(),
                message,
            ));
            return None;
        }
    };
    if let Some(NodeSlice { node, slice: text }) = &config.node_slice {
        match slice::slice_of(range, size, text) {
            Some(network) if !node.trim().is_empty() => {
                *range = range.sliced(node.trim(), network, size);
            }
            Some(_) => findings.push(finding(
                "node-slice-invalid",
                Severity::Error,
                "node_slice.node".into(),
                "is empty: a node slice needs the node's name".into(),
            )),
            None => findings.push(finding(
                "node-slice-invalid",
                Severity::Error,
                "node_slice.slice".into(),
                format!("{text} is not one of range {}'s /{size} slices", range.cidr()),
            )),
        }
    }
    Some(size)
}

impl Network {
    /// Parses a config, failing with its first error.
    pub fn parse(config: &NetworkConfig) -> Result<Network, FieldError> {
        Self::parse_with(config, false)
    }

    /// Parses a config to find what its pools hold (DEL, CHECK, GC, listing): a config that
    /// hands out nothing ([`HANDS_OUT_NOTHING`]) still names its pools.
    pub fn parse_held(config: &NetworkConfig) -> Result<Network, FieldError> {
        Self::parse_with(config, true)
    }

    fn parse_with(config: &NetworkConfig, held: bool) -> Result<Network, FieldError> {
        let (network, findings) = analyze_with(config, held);
        network.ok_or_else(|| {
            let first = findings
                .into_iter()
                .find(|f| f.severity == Severity::Error)
                .expect("an error finding");
            FieldError { field: first.field, message: first.message }
        })
    }

    /// The range that contains `address` (the first, if several do).
    pub fn range_containing(&self, family: Family, address: u128) -> Option<usize> {
        self.ranges.iter().position(|r| r.contains(family, address))
    }
}

/// Why `address` of `range` cannot be handed out, in words: [`describe`], and for the excluded
/// gateway which keys keep it out. The normalised config does not say whether the gateway's
/// exclude came from `exclude_gateway` (the reading writes it as an exclude, so the contract
/// needs no key of its own) or from the user, so the message names both.
pub fn describe_at(network: &Network, range: &Range, address: u128, reason: Unavailable) -> String {
    if reason == Unavailable::Excluded && network.gateway == Some((range.family, address)) {
        return "excluded: it is the gateway, kept out by \"exclude_gateway\": true \
                (or an exclude covering it)"
            .into();
    }
    describe(reason).into()
}

/// A human word for why an address is unavailable.
pub fn describe(reason: Unavailable) -> &'static str {
    match reason {
        Unavailable::Reserved => {
            "never handed out (network or broadcast address, IPv4 .0, or outside range_start..range_end)"
        }
        Unavailable::Excluded => "excluded",
        Unavailable::Allocated => "already allocated",
    }
}
