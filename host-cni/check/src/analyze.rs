//! The rules. Each network on its own first — keys, types, the core's `validate`, capacity
//! from the core's `plan` — then every pair of networks whose ranges may meet, through the
//! core's `overlaps`.
//!
//! No address arithmetic happens here: the core parses, normalises and intersects ranges.
//! The one thing this module does with addresses is order the first/last bounds `plan`
//! reports, so that only networks whose bounds meet are handed to `overlaps` (1,000 networks
//! are 499,500 pairs; a sweep over sorted bounds leaves the few that matter).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use hereabouts_host::bindings::{
    NetworkConfig, Overlap, OverlapKind, PlanRequest, RangeReport, Severity,
};
use hereabouts_host::config::{self as host_config, IpamConfig, KNOWN_IPAM_KEYS, Step};
use hereabouts_host::runtime::{Allocator, CallError, ReadError, RuntimeError};

use super::rules::{Level, NodeFlatFile, Settings};
use super::sources::{MIN_FREE_ANNOTATION, NODES_ANNOTATION, Site};
use super::tree::{PathDisplay, Seg, Spot, parse_path, value_at};

/// Keys of one `ipRanges` item.
const RANGE_KEYS: &[&str] = &["range", "range_start", "range_end", "exclude"];

/// One problem, where it is, and what it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: String,
    pub level: Level,
    pub file: String,
    pub spot: Spot,
    /// `NAD namespace/name` or `network NAME`; none for a file that could not be parsed.
    pub network: Option<String>,
    /// Path inside the CNI config, e.g. `plugins[1].ipam.exclude[0]`.
    pub field: Option<String>,
    /// The offending value as written.
    pub value: Option<Value>,
    pub message: String,
    /// The other end of a finding about two places (an overlap).
    pub related: Vec<Related>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Related {
    pub file: String,
    pub spot: Spot,
    pub network: String,
    pub field: String,
}

/// A network that passed validation, with what `plan` says about its ranges.
struct Planned {
    site: usize,
    config: NetworkConfig,
    ranges: Vec<RangeReport>,
}

/// Runs every enabled rule over `sites`. Fails only when the component cannot run.
pub fn analyze(
    sites: &[Site],
    settings: &Settings,
    allocator: &mut Allocator,
) -> Result<Vec<Finding>, RuntimeError> {
    let mut findings = Vec::new();
    let mut planned = Vec::new();
    for (index, site) in sites.iter().enumerate() {
        if let Some((config, ranges)) = one_network(site, settings, allocator, &mut findings)? {
            planned.push(Planned { site: index, config, ranges });
        }
    }
    if settings.enabled("networks-overlap") || settings.enabled("overlapping-ranges-disabled") {
        overlaps(sites, &planned, allocator, &mut findings)?;
    }
    Ok(findings)
}

/// The rules about one network; its config and ranges when it is valid (for the overlaps).
fn one_network(
    site: &Site,
    settings: &Settings,
    allocator: &mut Allocator,
    findings: &mut Vec<Finding>,
) -> Result<Option<(NetworkConfig, Vec<RangeReport>)>, RuntimeError> {
    if settings.enabled("unknown-ipam-key") {
        unknown_keys(site, findings);
    }
    // The host's keys (stores, logging) are typed here; the allocation keys by the core.
    if let Err(error) = IpamConfig::from_value(&site.ipam) {
        findings.push(type_error(site, &error));
        return Ok(None);
    }
    if settings.enabled("store-unchosen") {
        store_unchosen(site, settings, findings);
    }
    // The core's strict review: what Whereabouts silently ignores is an error here, beside
    // every other problem, each under its rule id.
    let text = site.ipam.to_string();
    let review = allocator.review_config(&text)?;
    let valid = !review.iter().any(|f| f.severity == Severity::Error);
    for finding in review {
        let level = match finding.severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warning,
        };
        let path = refine(site, parse_path(&finding.field));
        findings.push(at(site, &finding.rule, level, &path, finding.message));
    }
    if !valid {
        return Ok(None);
    }
    let config = match allocator.read_config(&text) {
        Ok(reading) => reading.network,
        Err(ReadError::Runtime(e)) => return Err(e),
        // The review found no error, so the reading does not fail.
        Err(ReadError::Config(e)) => {
            tracing::debug!(file = %site.file, "read-config failed after a clean review: {e:?}");
            return Ok(None);
        }
    };
    let request = PlanRequest {
        network: config.clone(),
        allocated: Vec::new(),
        persistent: Vec::new(),
        preview: 0,
    };
    let ranges = match allocator.plan(&request) {
        Ok(ranges) => ranges,
        Err(CallError::Runtime(e)) => return Err(e),
        // validate found nothing wrong, so this does not happen; if it did, the network is
        // left out of the capacity and overlap rules rather than failing the run.
        Err(CallError::Ipam(e)) => {
            tracing::debug!(file = %site.file, "plan failed after a clean validate: {e}");
            return Ok(None);
        }
    };
    capacity(site, &ranges, settings, findings);
    node_slices(site, &config, settings, allocator, findings)?;
    bridge_gateway(site, &config, &ranges, findings);
    Ok(Some((config, ranges)))
}

/// With `node_slice_size`, every node needs a slice of its own. How many nodes there are comes
/// from the NAD's `hereabouts.io/nodes`, else `--nodes`; whether they fit, and what would fit
/// them, is the core's verdict (`fit-nodes`), the one the playground shows.
fn node_slices(
    site: &Site,
    config: &NetworkConfig,
    settings: &Settings,
    allocator: &mut Allocator,
    findings: &mut Vec<Finding>,
) -> Result<(), RuntimeError> {
    let nodes = match &site.nodes {
        Some((text, spot)) => match text.trim().parse::<u32>() {
            Ok(nodes) => Some((nodes, NODES_ANNOTATION.to_string())),
            Err(_) => {
                let mut finding = at(
                    site,
                    "nodes-invalid",
                    Level::Error,
                    &[],
                    format!("{NODES_ANNOTATION} must be a whole number of nodes, found {text:?}"),
                );
                finding.spot = *spot;
                finding.field = Some(format!("metadata.annotations[\"{NODES_ANNOTATION}\"]"));
                finding.value = Some(Value::String(text.clone()));
                findings.push(finding);
                settings.nodes.map(|nodes| (nodes, "--nodes".to_string()))
            }
        },
        None => settings.nodes.map(|nodes| (nodes, "--nodes".to_string())),
    };
    let Some((nodes, source)) = nodes else { return Ok(()) };
    if config.node_slice_size.is_none() || !settings.enabled("node-slices-fewer-than-nodes") {
        return Ok(());
    }
    let verdict = match allocator.fit_nodes(config, nodes) {
        Ok(verdict) => verdict,
        Err(CallError::Runtime(e)) => return Err(e),
        // The review found node_slice_size valid, so this does not happen; if it did, the
        // network is left out of this rule rather than failing the run.
        Err(CallError::Ipam(e)) => {
            tracing::debug!(file = %site.file, "fit-nodes failed after a clean review: {e}");
            return Ok(());
        }
    };
    if let Some(finding) = verdict {
        let level = match finding.severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warning,
        };
        let path = parse_path(&finding.field);
        let message = format!("{source} {nodes}: {}", finding.message);
        findings.push(at(site, &finding.rule, level, &path, message));
    }
    Ok(())
}

/// A `bridge` with `isGateway: true` and no `gateway` in the ipam section puts the first
/// address of each range's subnet on the bridge itself (the CNI bridge plugin's
/// `calcGatewayIP`: the network address plus one). Pods get the lowest free address, so if the
/// core's `plan` reports that very address as the range's first allocatable one, the first pod
/// collides with the bridge.
fn bridge_gateway(
    site: &Site,
    config: &NetworkConfig,
    ranges: &[RangeReport],
    findings: &mut Vec<Finding>,
) {
    let is_gateway = site.plugin.get("isGateway").and_then(Value::as_bool) == Some(true);
    if !is_gateway || config.gateway.is_some() {
        return;
    }
    for report in ranges {
        let Some((network, _)) = report.range.split_once('/') else { continue };
        let bridge = match network.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
            Ok(IpAddr::V6(a)) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
            Err(_) => continue,
        };
        if report.first.as_deref().and_then(|f| f.parse::<IpAddr>().ok()) == Some(bridge) {
            let message = format!(
                "the bridge's isGateway takes {bridge}, the first address of {} (the ipam section \
                 sets no `gateway`), and it is the first address this range hands to a pod: set \
                 `gateway` to it with \"exclude_gateway\": true, or start the range after it",
                report.range
            );
            let path = range_key(&report.field);
            findings.push(at(site, "gateway-allocatable", Level::Warning, &path, message));
        }
    }
}

/// A finding at `path` (relative to the ipam section) of `site`, showing the value there.
fn at(site: &Site, rule: &str, level: Level, path: &[Seg], message: String) -> Finding {
    let full: Vec<Seg> = site.ipam_path.iter().chain(path).cloned().collect();
    Finding {
        rule: rule.to_string(),
        level,
        file: site.file.clone(),
        spot: site.locator.value_spot(&full),
        network: Some(site.label.clone()),
        field: Some(PathDisplay(&full).to_string()),
        value: value_at(&site.ipam, path).map(|value| redacted(path.last(), value)),
        message,
        related: Vec::new(),
    }
}

/// What a report shows of a value: the value itself, but never that of a key that looks like
/// it holds a secret (`etcd_password`, a mistyped `etcd_passwd`, `token`, `etcd_key_file`…),
/// at any depth: reports end up in CI logs.
fn redacted(key: Option<&Seg>, value: &Value) -> Value {
    if let Some(Seg::Key(key)) = key
        && looks_secret(key)
    {
        return Value::String("<redacted>".into());
    }
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| (k.clone(), redacted(Some(&Seg::Key(k.clone())), v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redacted(None, v)).collect()),
        other => other.clone(),
    }
}

/// Whether a key's name says it holds a secret (case, `_` and `-` ignored).
pub fn looks_secret(key: &str) -> bool {
    let squashed: String =
        key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    ["password", "passwd", "pwd", "secret", "token", "key", "credential", "auth"]
        .iter()
        .any(|word| squashed.contains(word))
}

/// A finding about a whole range points at its `range` key: that is what identifies it.
fn refine(site: &Site, mut path: Vec<Seg>) -> Vec<Seg> {
    if value_at(&site.ipam, &path).is_some_and(|v| v.get("range").is_some()) && !path.is_empty() {
        path.push(Seg::Key("range".into()));
    }
    path
}

/// The path of a range's `range` key from the core's field name (`range` / `ipRanges[N]`).
fn range_key(field: &str) -> Vec<Seg> {
    let mut path = parse_path(field);
    if path != [Seg::Key("range".into())] {
        path.push(Seg::Key("range".into()));
    }
    path
}

/// `store-unchosen`: a network from Kubernetes (a NAD, or Whereabouts' ipam type) whose config
/// chooses no store once the nodes' flat file (`--flat-file`) is merged as the plugin merges
/// it: its ADD fails on such a node (host_config::unchosen_store says why).
fn store_unchosen(site: &Site, settings: &Settings, findings: &mut Vec<Finding>) {
    let Some(flat) = &settings.node_flat_file else { return };
    let kubernetes = site.label.starts_with("NAD ")
        || site.ipam.get("type").and_then(Value::as_str) == Some("whereabouts");
    if !kubernetes {
        return;
    }
    // The nodes' flat file stands for whatever `configuration_path` names on them.
    let mut ipam = site.ipam.clone();
    if let Some(object) = ipam.as_object_mut() {
        object.remove("configuration_path");
    }
    let (candidates, found) = match flat {
        NodeFlatFile::None => (Vec::new(), None),
        NodeFlatFile::File(path) => {
            let path = path.to_string_lossy().into_owned();
            match host_config::merge_flat_file(&mut ipam, &[path.as_str()]) {
                Ok(found) => (vec![path], found),
                Err(error) => {
                    let message = format!("--flat-file: {error}");
                    findings.push(at(site, "store-unchosen", Level::Error, &[], message));
                    return;
                }
            }
        }
    };
    let Ok(config) = IpamConfig::from_value(&ipam) else { return };
    if config.chooses_store() {
        return;
    }
    let message = host_config::unchosen_store(&candidates, found.as_deref());
    findings.push(at(site, "store-unchosen", Level::Error, &[Seg::Key("type".into())], message));
}

fn unknown_keys(site: &Site, findings: &mut Vec<Finding>) {
    let mut check = |path: Vec<Seg>, known: &[&str]| {
        let full: Vec<Seg> = site.ipam_path.iter().chain(&path).cloned().collect();
        for (key, spot) in site.locator.keys(&full) {
            if known.contains(&key.as_str()) {
                continue;
            }
            let mut message = format!("unknown key `{key}`, ignored by the plugin");
            if let Some(near) = did_you_mean(&key, known) {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            let mut key_path = path.clone();
            key_path.push(Seg::Key(key.clone()));
            let mut finding = at(site, "unknown-ipam-key", Level::Warning, &key_path, message);
            finding.spot = spot;
            findings.push(finding);
        }
    };
    check(Vec::new(), KNOWN_IPAM_KEYS);
    let items = site.ipam.get("ipRanges").and_then(Value::as_array).map_or(0, Vec::len);
    for index in 0..items {
        check(vec![Seg::Key("ipRanges".into()), Seg::Index(index)], RANGE_KEYS);
    }
}

/// The known key a mistyped one most likely meant: same letters ignoring case, `_` and `-`
/// (`rangeStart`, `ip_ranges`), else the nearest by edit distance.
pub fn did_you_mean<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let squashed = squash(key);
    if let Some(same) = known.iter().find(|k| squash(k) == squashed) {
        return Some(same);
    }
    known
        .iter()
        .map(|k| (strsim::levenshtein(&squashed, &squash(k)), *k))
        .filter(|(distance, k)| {
            *distance <= if k.len() > 10 { 3 } else { 2 } && *distance < key.len()
        })
        .min()
        .map(|(_, k)| k)
}

/// A value of the wrong type: the finding points at it, with what serde said of it.
fn type_error(site: &Site, error: &host_config::ConfigError) -> Finding {
    let path: Vec<Seg> = error
        .path
        .iter()
        .map(|step| match step {
            Step::Key(key) => Seg::Key(key.clone()),
            Step::Index(index) => Seg::Index(*index),
        })
        .collect();
    at(site, "ipam-type-error", Level::Error, &path, error.message())
}

fn capacity(site: &Site, ranges: &[RangeReport], settings: &Settings, findings: &mut Vec<Finding>) {
    let need = match &site.min_free {
        Some((text, spot)) => match text.trim().parse::<u128>() {
            Ok(need) => Some((need, MIN_FREE_ANNOTATION.to_string())),
            Err(_) => {
                let mut finding = at(
                    site,
                    "min-free-invalid",
                    Level::Error,
                    &[],
                    format!(
                        "{MIN_FREE_ANNOTATION} must be a whole number of addresses, found {text:?}"
                    ),
                );
                finding.spot = *spot;
                finding.field = Some(format!("metadata.annotations[\"{MIN_FREE_ANNOTATION}\"]"));
                finding.value = Some(Value::String(text.clone()));
                findings.push(finding);
                settings.min_free.map(|need| (need, "--min-free".to_string()))
            }
        },
        None => settings.min_free.map(|need| (need, "--min-free".to_string())),
    };
    for report in ranges {
        // Capacities are decimal strings (IPv6 ones exceed u64); one beyond u128 is plenty.
        let offered = report.capacity.parse::<u128>().unwrap_or(u128::MAX);
        if let Some((need, source)) = &need
            && offered < *need
        {
            let message = format!(
                "{} offers {offered} addresses, fewer than the {need} {source} asks for",
                report.range
            );
            findings.push(at(
                site,
                "capacity-below-need",
                Level::Error,
                &range_key(&report.field),
                message,
            ));
        }
        if report.range.contains(':') && offered < settings.ipv6_min_capacity {
            let message = format!(
                "IPv6 range {} offers only {offered} addresses (threshold {})",
                report.range, settings.ipv6_min_capacity
            );
            findings.push(at(
                site,
                "ipv6-range-small",
                Level::Warning,
                &range_key(&report.field),
                message,
            ));
        }
    }
}

/// One range's bounds, for the sweep.
struct Bounds {
    net: usize,
    range: usize,
    first: IpAddr,
    last: IpAddr,
}

fn overlaps(
    sites: &[Site],
    planned: &[Planned],
    allocator: &mut Allocator,
    findings: &mut Vec<Finding>,
) -> Result<(), RuntimeError> {
    // Unparsable bounds (never from the core, but not trusted blindly) meet everything.
    let (low, high) = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::from(u128::MAX)));
    let mut bounds: Vec<Bounds> = Vec::new();
    for (net, p) in planned.iter().enumerate() {
        for (range, report) in p.ranges.iter().enumerate() {
            let (Some(first), Some(last)) = (&report.first, &report.last) else { continue };
            let first = first.parse().unwrap_or(low);
            let last = last.parse().unwrap_or(high);
            bounds.push(Bounds { net, range, first, last });
        }
    }
    bounds.sort_by_key(|a| (a.first, a.net, a.range));
    let mut pairs = BTreeSet::new();
    let mut active: Vec<&Bounds> = Vec::new();
    for current in &bounds {
        active.retain(|open| open.last >= current.first);
        for open in &active {
            let (x, y) = if open.net <= current.net { (*open, current) } else { (current, *open) };
            if x.net != y.net || x.range != y.range {
                pairs.insert((x.net, y.net));
            }
        }
        active.push(current);
    }
    for (x, y) in pairs {
        let (a, b) = (&planned[x], &planned[y]);
        let found = match allocator.overlaps(&a.config, &b.config) {
            Ok(found) => found,
            Err(CallError::Runtime(e)) => return Err(e),
            Err(CallError::Ipam(e)) => {
                tracing::debug!("overlaps failed on validated networks: {e}");
                continue;
            }
        };
        for overlap in found {
            let (Some(ra), Some(rb)) = (
                a.ranges.iter().find(|r| r.field == overlap.a_field),
                b.ranges.iter().find(|r| r.field == overlap.b_field),
            ) else {
                continue;
            };
            // Within one network, each pair of its ranges once.
            if x == y && field_order(&overlap.a_field) >= field_order(&overlap.b_field) {
                continue;
            }
            // The verdict is the core's: one pool, or reservations protecting it, is no finding.
            if let Some(finding) = overlap_finding(sites, a, ra, b, rb, &overlap) {
                findings.push(finding);
            }
        }
    }
    Ok(())
}

/// `range` first, then `ipRanges[N]` in order.
fn field_order(field: &str) -> usize {
    match parse_path(field).as_slice() {
        [Seg::Key(_), Seg::Index(n)] => n + 1,
        _ => 0,
    }
}

/// Reported at the later network (in file order), pointing back at the earlier one.
fn overlap_finding(
    sites: &[Site],
    a: &Planned,
    ra: &RangeReport,
    b: &Planned,
    rb: &RangeReport,
    overlap: &Overlap,
) -> Option<Finding> {
    let (sa, sb) = (&sites[a.site], &sites[b.site]);
    let (first, last) = (&overlap.first, &overlap.last);
    let span = if first == last { first.to_string() } else { format!("{first}-{last}") };
    let a_path: Vec<Seg> = sa.ipam_path.iter().cloned().chain(range_key(&ra.field)).collect();
    let a_spot = sa.locator.value_spot(&a_path);
    let a_field = PathDisplay(&a_path).to_string();
    let whose = if a.site == b.site { "this network's".to_string() } else { sa.label.clone() };
    let other = format!("{whose} {a_field} {} ({}:{})", ra.range, sa.file, a_spot.line);
    let (rule, level, message) = match overlap.kind {
        OverlapKind::SamePool | OverlapKind::Protected => return None,
        OverlapKind::SeparateNetworks => {
            let message = format!(
                "overlaps {other} on {span}; network_name {:?} vs {:?}: each can hand out these addresses",
                b.config.network_name, a.config.network_name
            );
            ("networks-overlap", Level::Warning, message)
        }
        OverlapKind::Unprotected => {
            let off = match (a.config.enable_overlapping_ranges, b.config.enable_overlapping_ranges)
            {
                _ if a.site == b.site => "",
                (false, false) => " on both",
                (true, false) => " here",
                _ => " there",
            };
            let message = format!(
                "overlaps {other} on {span} in network_name {:?}, and enable_overlapping_ranges is false{off}: both pools can hand out these addresses",
                b.config.network_name
            );
            ("overlapping-ranges-disabled", Level::Error, message)
        }
    };
    let mut finding = at(sb, rule, level, &range_key(&rb.field), message);
    finding.related.push(Related {
        file: sa.file.clone(),
        spot: a_spot,
        network: sa.label.clone(),
        field: a_field,
    });
    Some(finding)
}
