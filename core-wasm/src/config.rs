//! Reading an ipam section exactly as Whereabouts reads it.
//!
//! A cluster switches from Whereabouts to Hereabouts without editing a single network: every
//! config Whereabouts accepts must hand out the same addresses from the same pools here. So
//! this module follows Whereabouts (v0.9.4, and its `master` as of 2026-06) step by step —
//! Go's `encoding/json` into `IPAMConfig` (pkg/types/types.go), `LoadIPAMConfig`
//! (pkg/config/config.go), `GetIPRange` (pkg/iphelpers) and the exclude handling of
//! `IterateForAssignment` (pkg/allocate) — and writes the outcome as a *normalised*
//! [`NetworkConfig`]: masked canonical CIDRs, only the bounds Whereabouts honours, canonical
//! addresses, excludes clipped to their range. That config is what every host hands back to
//! the allocator, and the strict [`Network::parse`] accepts it.
//!
//! Whereabouts silently ignores much of what users get wrong (a `range_start` outside the CIDR,
//! a `range_end` before the start, an exclude outside the range, …). We do the same — a cluster
//! that switches must keep working — but never silently: each ignored value becomes a
//! [`ConfigWarning`] whose `rule` is the id `hereabouts check` reports it under (as an error:
//! `check` is the strict gate for CI). What Whereabouts rejects, or what would make every ADD
//! fail there, is a [`ConfigError::Invalid`] naming the field.
//!
//! The one deliberate difference in *allocation* (IPv4 addresses ending in `.0` are never handed
//! out) lives in the index space (`addr`), not here. docs/semantics.md lists every difference.
//!
//! Rule ids of warnings (shared with `range`/`network` findings):
//! `range-start-invalid`/`range-end-invalid` (not an address, the other family, or overridden by
//! the `a-b/len` syntax), `range-start-outside-range`/`range-end-outside-range` (outside the
//! CIDR), `range-start-not-usable`/`range-end-not-usable` (the network or broadcast address),
//! `range-start-after-end`, `range-key-without-range` (top-level `range_start`, `range_end` or
//! `exclude` with no top-level `range`), `range-crosses-ipv4-mapped` (an IPv6 range reaching into
//! `::ffff:0:0/96`), `exclude-invalid` (the other family), `exclude-outside-range`,
//! `exclude-partly-outside-range`, `exclude-leading-zeros` (accepted here, fatal in
//! Whereabouts), `gateway-invalid` (the legacy `Gateway` key, unparsable),
//! `exclude-gateway-without-gateway` (`exclude_gateway: true` with no gateway to exclude).
//!
//! Our opt-in keys are read the same way (Go's case-insensitive matching, `null` keeps the
//! default), and Whereabouts ignores them, so a NAD that sets them stays valid for both:
//! `sticky`, and `exclude_gateway` (default false). With `exclude_gateway: true` the gateway
//! is written into the normalised config as one more exclude of every range that would
//! otherwise hand it out (see `Reader::exclude_gateway`). The key itself therefore never
//! crosses the contract: every host, `plan`, `check` and the playground get the effect from
//! the normalised config they already pass back, with no change to the WIT records.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::addr::{
    Family, GoParser, IPV4_MAPPED_FIRST, format_address, from_go16, host_mask, parse_address,
    parse_go_cidr, parse_go_ip, to_go16,
};
use crate::network::{HANDS_OUT_NOTHING, analyze};
use crate::range::{Range, field_path, finding};
use crate::types::{
    ConfigError, ConfigProblem, ConfigReading, ConfigWarning, FieldError, Finding, NetworkConfig,
    PlanDocument, RangeConfig, Severity,
};

/// The most `ipRanges` items a config may hold. Whereabouts has no cap; real configs have a
/// few (one per family), and 50,000 made one ADD take 10 s. Past it the config is refused
/// (rule `ipam-too-large`) by every host alike.
pub const MAX_RANGES: usize = 128;

/// The most items of one `exclude` list (top-level, or of one `ipRanges` item).
pub const MAX_EXCLUDES: usize = 1024;

/// Reads an ipam section (JSON text, the host having merged Whereabouts' flat file into it).
pub fn read_config(ipam_json: &str) -> Result<ConfigReading, ConfigError> {
    let value = parse_json(ipam_json, Shape::Ipam).map_err(ConfigError::Malformed)?;
    read_ipam(&value)
}

/// Reads `hereabouts plan`'s input, `{"ipam": {…}, "allocated": ["10.0.0.1", …],
/// "persistent": […]}`, so that every host rejects a bad document with the same words.
pub fn read_plan_document(text: &str) -> Result<PlanDocument, ConfigError> {
    let document = parse_json(text, Shape::PlanDocument)
        .map_err(|e| ConfigError::Malformed(format!("input is not valid JSON: {e}")))?;
    let Json::Object(entries) = &document else {
        return Err(invalid("input", "expected an object with \"ipam\" and \"allocated\""));
    };
    let last = |key: &str| entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let ipam = last("ipam")
        .ok_or_else(|| invalid("ipam", "missing (the ipam section of a CNI config)"))?;
    let reading = read_ipam(ipam)?;
    let addresses = |key: &str| match last(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Json::String(address) => Ok(address.clone()),
                _ => Err(invalid(&format!("{key}[{i}]"), "must be an address string")),
            })
            .collect(),
        Some(_) => Err(invalid(key, "must be a list of addresses")),
    };
    let allocated = addresses("allocated")?;
    let persistent = addresses("persistent")?;
    Ok(PlanDocument { reading, allocated, persistent })
}

/// A rejected value, under the rule id `check` reports it as.
fn rejected(rule: &str, field: &str, message: &str) -> ConfigError {
    ConfigError::Invalid(ConfigProblem {
        rule: rule.into(),
        field: field.into(),
        message: message.into(),
    })
}

/// A malformed plan document (not about the ipam section).
fn invalid(field: &str, message: &str) -> ConfigError {
    rejected("input-invalid", field, message)
}

// ---------------------------------------------------------------------------------------------
// JSON in document order.
//
// Go's `encoding/json` decodes object members in document order into struct fields matched by
// name — case-insensitively — and a later duplicate overwrites an earlier one. Which of `range`
// and `Range` wins therefore depends on order, so the reading keeps it (serde_json's own `Value`
// sorts keys). Values of keys the reading does not use are skipped unparsed, as Go skips them.

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number,
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Which keys of an object are kept; the others' values are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    PlanDocument,
    Ipam,
    IpRanges,
    RangeItem,
    Any,
}

impl Shape {
    /// The shape of the value under `key`, or `None` to skip it.
    fn member(self, key: &str) -> Option<Shape> {
        match self {
            Shape::PlanDocument => match key {
                "ipam" => Some(Shape::Ipam),
                "allocated" | "persistent" => Some(Shape::Any),
                _ => None,
            },
            Shape::Ipam => match ipam_key(key)? {
                IpamKey::IpRanges => Some(Shape::IpRanges),
                _ => Some(Shape::Any),
            },
            Shape::RangeItem => range_key(key).map(|_| Shape::Any),
            Shape::IpRanges | Shape::Any => Some(Shape::Any),
        }
    }

    fn element(self) -> Shape {
        match self {
            Shape::IpRanges => Shape::RangeItem,
            _ => Shape::Any,
        }
    }
}

fn parse_json(text: &str, shape: Shape) -> Result<Json, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = shape.deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.element())? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.member(&key) {
                Some(shape) => entries.push((key, map.next_value_seed(shape)?)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Json::Object(entries))
    }
}

// ---------------------------------------------------------------------------------------------
// Go's decoding into Whereabouts' structs.

/// The keys of Whereabouts' `IPAMConfig` the reading uses (plus our `sticky`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpamKey {
    IpRanges,
    NodeSliceSize,
    Exclude,
    Range,
    RangeStart,
    RangeEnd,
    /// `gateway` (Go's `GatewayStr`).
    Gateway,
    /// `Gateway`, exactly: the untagged `Gateway string` field of the alias struct in
    /// `IPAMConfig.UnmarshalJSON`, read through `backwardsCompatibleIPAddress` (an unparsable
    /// value is dropped) and used only when `gateway` is empty.
    LegacyGateway,
    EnableOverlappingRanges,
    Sticky,
    /// Ours: the gateway is never handed out (default false).
    ExcludeGateway,
    NetworkName,
}

/// Go's `encoding/json` field matching: an exact name first, else the first field in
/// declaration order whose name equals the key under Unicode simple case folding. Only
/// `gateway`/`Gateway` collide (both fold to GATEWAY; the tagged `gateway` is declared first).
fn ipam_key(key: &str) -> Option<IpamKey> {
    if key == "Gateway" {
        return Some(IpamKey::LegacyGateway);
    }
    const KEYS: [(&str, IpamKey); 11] = [
        ("ipRanges", IpamKey::IpRanges),
        ("node_slice_size", IpamKey::NodeSliceSize),
        ("exclude", IpamKey::Exclude),
        ("range", IpamKey::Range),
        ("range_start", IpamKey::RangeStart),
        ("range_end", IpamKey::RangeEnd),
        ("gateway", IpamKey::Gateway),
        ("enable_overlapping_ranges", IpamKey::EnableOverlappingRanges),
        ("network_name", IpamKey::NetworkName),
        // Ours, matched the same way so they read like their neighbours.
        ("sticky", IpamKey::Sticky),
        ("exclude_gateway", IpamKey::ExcludeGateway),
    ];
    KEYS.iter().find(|(name, _)| go_names_match(key, name)).map(|(_, k)| *k)
}

/// The keys of Whereabouts' `RangeConfiguration` (one `ipRanges` item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeKey {
    Exclude,
    Range,
    RangeStart,
    RangeEnd,
}

fn range_key(key: &str) -> Option<RangeKey> {
    const KEYS: [(&str, RangeKey); 4] = [
        ("exclude", RangeKey::Exclude),
        ("range", RangeKey::Range),
        ("range_start", RangeKey::RangeStart),
        ("range_end", RangeKey::RangeEnd),
    ];
    KEYS.iter().find(|(name, _)| go_names_match(key, name)).map(|(_, k)| *k)
}

/// Whether a JSON key selects the ASCII field name `name` in Go: equal under simple case
/// folding, where besides ASCII only U+017F (ſ, folds with s) and U+212A (Kelvin sign, folds
/// with k) reach an ASCII letter (Go's `foldName`).
fn go_names_match(key: &str, name: &str) -> bool {
    let mut name = name.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{17f}' => b'S',
            '\u{212a}' => b'K',
            c if c.is_ascii() => (c as u8).to_ascii_uppercase(),
            _ => return false,
        };
        if name.next().map(|b| b.to_ascii_uppercase()) != Some(folded) {
            return false;
        }
    }
    name.next().is_none()
}

/// A Go slice decoded into repeatedly: a duplicate key decodes its array *into the existing
/// elements* (Go's `decodeState.array` grows or shrinks the length but keeps the backing array
/// and its old contents, so `null` items and missing struct fields keep the earlier values); an
/// empty array or `null` starts afresh.
#[derive(Debug, Clone, Default)]
struct GoSlice<T> {
    backing: Vec<T>,
    len: usize,
}

impl<T: Default> GoSlice<T> {
    fn items(&self) -> &[T] {
        &self.backing[..self.len]
    }

    fn decode(
        &mut self,
        value: &Json,
        field: &str,
        max: usize,
        mut decode_item: impl FnMut(&mut T, &Json, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        match value {
            Json::Null => *self = GoSlice { backing: Vec::new(), len: 0 },
            Json::Array(items) if items.len() > max => {
                return Err(rejected(
                    "ipam-too-large",
                    field,
                    &format!("{} items, more than the {max} a config may hold", items.len()),
                ));
            }
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i == self.backing.len() {
                        self.backing.push(T::default());
                    }
                    decode_item(&mut self.backing[i], item, &format!("{field}[{i}]"))?;
                }
                self.len = items.len();
                if items.is_empty() {
                    self.backing.clear();
                }
            }
            other => return Err(wrong_type(field, "a list", other)),
        }
        Ok(())
    }
}

fn wrong_type(field: &str, expected: &str, found: &Json) -> ConfigError {
    rejected("ipam-type-error", field, &format!("must be {expected}, found {}", found.kind()))
}

/// Go's string field: a string sets it, `null` leaves it as it was.
fn decode_string(target: &mut String, value: &Json, field: &str) -> Result<(), ConfigError> {
    match value {
        Json::String(s) => *target = s.clone(),
        Json::Null => {}
        other => return Err(wrong_type(field, "a string", other)),
    }
    Ok(())
}

/// Go's bool field: `null` leaves it (so `"enable_overlapping_ranges": null` keeps the default).
fn decode_bool(target: &mut bool, value: &Json, field: &str) -> Result<(), ConfigError> {
    match value {
        Json::Bool(b) => *target = *b,
        Json::Null => {}
        other => return Err(wrong_type(field, "a boolean", other)),
    }
    Ok(())
}

/// A bound as written, with the address Go read from it (16-byte form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bound {
    text: String,
    address: Option<u128>,
}

/// An `ipRanges` item's `range_start`/`range_end`: a Go `net.IP`, decoded by its
/// `UnmarshalText` with the *strict* `net.ParseIP`. An unparsable one fails the whole config
/// (unlike the top-level keys); `""` and `null` are no bound.
fn decode_strict_bound(
    target: &mut Option<Bound>,
    value: &Json,
    field: &str,
) -> Result<(), ConfigError> {
    match value {
        Json::Null => *target = None,
        Json::String(s) if s.is_empty() => *target = None,
        Json::String(s) => match parse_go_ip(s, GoParser::Strict) {
            Some(address) => *target = Some(Bound { text: s.clone(), address: Some(address) }),
            None => {
                let rule = if field.ends_with("range_end") {
                    "range-end-invalid"
                } else {
                    "range-start-invalid"
                };
                return Err(rejected(
                    rule,
                    field,
                    &format!("{s} is not an IP address (an ipRanges bound must be one)"),
                ));
            }
        },
        other => return Err(wrong_type(field, "a string", other)),
    }
    Ok(())
}

/// A bound Go could read, where it was written.
#[derive(Debug, Clone)]
struct Written {
    field: String,
    text: String,
    /// 16-byte form.
    address: u128,
}

/// One `ipRanges` item as Go decoded it.
#[derive(Debug, Clone, Default)]
struct RangeFields {
    range: String,
    range_start: Option<Bound>,
    range_end: Option<Bound>,
    exclude: GoSlice<String>,
}

fn decode_range_item(
    target: &mut RangeFields,
    value: &Json,
    base: &str,
) -> Result<(), ConfigError> {
    let entries = match value {
        Json::Object(entries) => entries,
        Json::Null => return Ok(()), // Go leaves the struct as it was
        other => return Err(wrong_type(base, "an object", other)),
    };
    for (key, value) in entries {
        let Some(key) = range_key(key) else { continue };
        let field = |name: &str| field_path(base, name);
        match key {
            RangeKey::Range => decode_string(&mut target.range, value, &field("range"))?,
            RangeKey::RangeStart => {
                decode_strict_bound(&mut target.range_start, value, &field("range_start"))?
            }
            RangeKey::RangeEnd => {
                decode_strict_bound(&mut target.range_end, value, &field("range_end"))?
            }
            RangeKey::Exclude => {
                target.exclude.decode(value, &field("exclude"), MAX_EXCLUDES, decode_string)?;
            }
        }
    }
    Ok(())
}

/// The ipam object as Go decoded it into `IPAMConfig`.
#[derive(Debug, Clone)]
struct IpamFields {
    range: String,
    range_start: String,
    range_end: String,
    exclude: GoSlice<String>,
    ip_ranges: GoSlice<RangeFields>,
    gateway: String,
    legacy_gateway: String,
    network_name: String,
    enable_overlapping_ranges: bool,
    sticky: bool,
    exclude_gateway: bool,
    node_slice_size: String,
}

impl Default for IpamFields {
    fn default() -> Self {
        Self {
            range: String::new(),
            range_start: String::new(),
            range_end: String::new(),
            exclude: GoSlice::default(),
            ip_ranges: GoSlice::default(),
            gateway: String::new(),
            legacy_gateway: String::new(),
            network_name: String::new(),
            // `DefaultOverlappingIPsFeatures`, set before decoding (types.go).
            enable_overlapping_ranges: true,
            sticky: true,
            exclude_gateway: false,
            node_slice_size: String::new(),
        }
    }
}

fn decode_ipam(value: &Json) -> Result<IpamFields, ConfigError> {
    let Json::Object(entries) = value else {
        return Err(rejected(
            "ipam-type-error",
            "ipam",
            &format!("expected an object, found {}", value.kind()),
        ));
    };
    let mut ipam = IpamFields::default();
    for (key, value) in entries {
        let Some(key) = ipam_key(key) else { continue };
        match key {
            IpamKey::Range => decode_string(&mut ipam.range, value, "range")?,
            IpamKey::RangeStart => decode_string(&mut ipam.range_start, value, "range_start")?,
            IpamKey::RangeEnd => decode_string(&mut ipam.range_end, value, "range_end")?,
            IpamKey::Exclude => {
                ipam.exclude.decode(value, "exclude", MAX_EXCLUDES, decode_string)?
            }
            IpamKey::IpRanges => {
                ipam.ip_ranges.decode(value, "ipRanges", MAX_RANGES, decode_range_item)?
            }
            IpamKey::Gateway => decode_string(&mut ipam.gateway, value, "gateway")?,
            IpamKey::LegacyGateway => decode_string(&mut ipam.legacy_gateway, value, "Gateway")?,
            IpamKey::NetworkName => decode_string(&mut ipam.network_name, value, "network_name")?,
            IpamKey::EnableOverlappingRanges => decode_bool(
                &mut ipam.enable_overlapping_ranges,
                value,
                "enable_overlapping_ranges",
            )?,
            IpamKey::Sticky => decode_bool(&mut ipam.sticky, value, "sticky")?,
            IpamKey::ExcludeGateway => {
                decode_bool(&mut ipam.exclude_gateway, value, "exclude_gateway")?
            }
            IpamKey::NodeSliceSize => {
                decode_string(&mut ipam.node_slice_size, value, "node_slice_size")?
            }
        }
    }
    Ok(ipam)
}

// ---------------------------------------------------------------------------------------------
// `LoadIPAMConfig`, `GetIPRange` and the exclude parser, writing a normalised config.

fn read_ipam(value: &Json) -> Result<ConfigReading, ConfigError> {
    let mut warnings = Vec::new();
    let network = read_ipam_into(value, &mut warnings)?;
    Ok(ConfigReading { network, warnings })
}

/// Reads into `warnings`, which keep what was found even when the reading then fails.
fn read_ipam_into(
    value: &Json,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<NetworkConfig, ConfigError> {
    let ipam = decode_ipam(value)?;
    let mut reader = Reader { warnings, allocation_error: None };

    // `LoadIPAMConfig` prepends the top-level keys as a range when `range` is not "" (no
    // trimming); otherwise they are never read.
    let mut ranges = Vec::new();
    if ipam.range.is_empty() {
        for (key, text) in [("range_start", &ipam.range_start), ("range_end", &ipam.range_end)] {
            if !text.is_empty() {
                reader.warn("range-key-without-range", key, text, NO_TOP_LEVEL_RANGE);
            }
        }
        for (i, text) in ipam.exclude.items().iter().enumerate() {
            reader.warn(
                "range-key-without-range",
                &format!("exclude[{i}]"),
                text,
                NO_TOP_LEVEL_RANGE,
            );
        }
    } else {
        // The top-level bounds go through `backwardsCompatibleIPAddress`: sloppy, and
        // silently dropped when unparsable.
        let start = reader.sanitized_bound("range_start", &ipam.range_start);
        let end = reader.sanitized_bound("range_end", &ipam.range_end);
        let fields = RangeFields {
            range: ipam.range.clone(),
            range_start: start,
            range_end: end,
            exclude: ipam.exclude.clone(),
        };
        ranges.push(reader.range(&fields, "")?);
    }
    for (i, item) in ipam.ip_ranges.items().iter().enumerate() {
        ranges.push(reader.range(item, &format!("ipRanges[{i}]"))?);
    }

    let gateway = reader.gateway(&ipam)?;
    if ipam.exclude_gateway {
        reader.exclude_gateway(gateway.as_deref(), &mut ranges);
    }
    let mut ranges = ranges.into_iter();
    let network = NetworkConfig {
        range: if ipam.range.is_empty() { None } else { ranges.next() },
        ip_ranges: ranges.collect(),
        gateway,
        network_name: ipam.network_name,
        enable_overlapping_ranges: ipam.enable_overlapping_ranges,
        sticky: ipam.sticky,
        allocation_error: reader.allocation_error.take(),
        // Go's `NodeSliceSize string`: "" is unset. Checked (with the ranges) by `analyze`.
        node_slice_size: Some(ipam.node_slice_size).filter(|s| !s.is_empty()),
        node_slice: None,
    };
    // The normalised config must be one the allocator accepts; what it still refuses fails
    // every ADD. A config that merely hands out nothing (no range at all, every range empty)
    // still names its pools: it reads with that error as its `allocation_error`, so DEL,
    // CHECK and GC work there (a NAD edited after its pods' ADDs) while ADD fails as before.
    let mut network = network;
    if let Some(error) = first_error(&network) {
        let held_only = analyze(&network)
            .1
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .all(|f| HANDS_OUT_NOTHING.contains(&f.rule.as_str()));
        if !held_only {
            return Err(rejected(&error.rule, &error.field, &error.message));
        }
        network.allocation_error.get_or_insert(FieldError {
            field: error.field.clone(),
            message: error.message.clone(),
        });
    }
    Ok(network)
}

/// The first error the allocator finds in a normalised config.
fn first_error(network: &NetworkConfig) -> Option<Finding> {
    analyze(network).1.into_iter().find(|f| f.severity == Severity::Error)
}

/// The strict reading for CI (`hereabouts check`, editors): every problem at once. What
/// Whereabouts silently ignores is an error here, under its rule id, beside the error that
/// stops the reading (if any) and, for a config that reads, every finding of `validate`.
pub fn review_config(ipam_json: &str) -> Vec<Finding> {
    let value = match parse_json(ipam_json, Shape::Ipam) {
        Ok(value) => value,
        Err(message) => {
            return vec![finding("parse-error", Severity::Error, String::new(), message)];
        }
    };
    let mut warnings = Vec::new();
    let read = read_ipam_into(&value, &mut warnings);
    let mut findings: Vec<Finding> = warnings
        .into_iter()
        .map(|w| {
            let ignored = serde_json::to_string(&w.ignored).unwrap_or(w.ignored);
            let message = format!("{ignored} is ignored: {}", w.reason);
            finding(&w.rule, Severity::Error, w.field, message)
        })
        .collect();
    match read {
        // A config that hands out nothing: its first error, as for any refused config.
        Ok(network) => match first_error(&network) {
            Some(error) => findings.push(error),
            None => findings.extend(crate::plan::validate(&network)),
        },
        Err(ConfigError::Invalid(p)) => {
            findings.push(finding(&p.rule, Severity::Error, p.field, p.message))
        }
        Err(ConfigError::Malformed(m)) => {
            findings.push(finding("parse-error", Severity::Error, String::new(), m))
        }
    }
    findings
}

const NO_TOP_LEVEL_RANGE: &str =
    "there is no top-level `range`, so Whereabouts never reads it (ipRanges items carry their own)";

struct Reader<'a> {
    warnings: &'a mut Vec<ConfigWarning>,
    /// The first value that, in Whereabouts, fails the allocation of a new address but
    /// nothing else (see `allocation_error` in [`NetworkConfig`]).
    allocation_error: Option<FieldError>,
}

/// A range as Go's `IPNet` holds it after `LoadIPAMConfig`.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    family: Family,
    network: u128,
    prefix: u32,
}

impl Cidr {
    fn broadcast(&self) -> u128 {
        self.network | host_mask(self.family, self.prefix)
    }

    fn text(&self) -> String {
        format!("{}/{}", format_address(self.family, self.network), self.prefix)
    }

    /// Go's `IPNet.Contains` for a 16-byte address: same family (IPv4-mapped is IPv4) and inside.
    fn contains_go16(&self, address: u128) -> bool {
        let (family, value) = from_go16(address);
        family == self.family && value >= self.network && value <= self.broadcast()
    }

    /// `address` in Go's 16-byte form, the way `CompareIPs` compares it.
    fn go16(&self, address: u128) -> u128 {
        to_go16(self.family, address)
    }

    fn format_go16(&self, address: u128) -> String {
        match (self.family, from_go16(address)) {
            (Family::V4, (Family::V4, v4)) => format_address(Family::V4, v4),
            // An IPv4-mapped bound honoured in an IPv6 range stays a 128-bit value.
            _ => format_address(Family::V6, address),
        }
    }
}

impl Reader<'_> {
    fn warn(&mut self, rule: &str, field: &str, ignored: &str, reason: &str) {
        self.warnings.push(ConfigWarning {
            rule: rule.into(),
            field: field.into(),
            ignored: ignored.into(),
            reason: reason.into(),
        });
    }

    /// A top-level bound through `backwardsCompatibleIPAddress` (`ParseIPSloppy`, nil on error).
    fn sanitized_bound(&mut self, field: &str, text: &str) -> Option<Bound> {
        if text.is_empty() {
            return None;
        }
        let address = parse_go_ip(text, GoParser::Sloppy);
        if address.is_none() {
            let rule =
                if field == "range_start" { "range-start-invalid" } else { "range-end-invalid" };
            self.warn(rule, field, text, "is not an IP address; Whereabouts drops it silently");
        }
        Some(Bound { text: text.into(), address })
    }

    /// One range of `LoadIPAMConfig`'s loop, bounded as `GetIPRange` bounds it.
    fn range(&mut self, fields: &RangeFields, base: &str) -> Result<RangeConfig, ConfigError> {
        let range_field = field_path(base, "range");
        let text = fields.range.as_str();
        if text.is_empty() {
            return Err(rejected(
                "range-invalid",
                &range_field,
                "is empty: expected a CIDR such as 10.0.0.0/24",
            ));
        }
        let (cidr, start, end) = match text.split_once('-') {
            // `a-b/len`: start `a`, end `b` (host bits kept); the keys are overridden.
            Some((start_text, cidr_text)) => {
                let Some(start) = parse_go_ip(start_text, GoParser::Sloppy) else {
                    return Err(rejected(
                        "range-invalid",
                        &range_field,
                        &format!(
                            "{text} is not a valid range: \
                             the start {start_text} is not an IP address"
                        ),
                    ));
                };
                let Some(parsed) = parse_go_cidr(cidr_text, GoParser::Sloppy) else {
                    return Err(rejected(
                        "range-invalid",
                        &range_field,
                        &format!(
                            "{text} is not a valid range: \
                             expected first-last/prefix, e.g. 10.0.0.5-10.0.0.25/24"
                        ),
                    ));
                };
                let cidr = cidr_of(parsed.network());
                if !cidr.contains_go16(start) {
                    return Err(rejected(
                        "range-start-outside-range",
                        &range_field,
                        &format!("{} is outside range {}", start_text, cidr.text()),
                    ));
                }
                let syntax_end = parsed.address;
                for (key, bound, from_syntax) in [
                    ("range_start", &fields.range_start, start),
                    ("range_end", &fields.range_end, syntax_end),
                ] {
                    if let Some(bound) = bound.as_ref().filter(|b| b.address.is_some())
                        && bound.address != Some(from_syntax)
                    {
                        let rule = if key == "range_start" {
                            "range-start-invalid"
                        } else {
                            "range-end-invalid"
                        };
                        self.warn(
                            rule,
                            &field_path(base, key),
                            &bound.text,
                            &format!(
                                "range {text} sets it with the a-b/len syntax, \
                                     which wins: {} is used",
                                cidr.format_go16(from_syntax)
                            ),
                        );
                    }
                }
                (
                    cidr,
                    Some(Written {
                        field: range_field.clone(),
                        text: start_text.into(),
                        address: start,
                    }),
                    Some(Written {
                        field: range_field.clone(),
                        text: text.into(),
                        address: syntax_end,
                    }),
                )
            }
            None => {
                let Some(parsed) = parse_go_cidr(text, GoParser::Sloppy) else {
                    return Err(rejected(
                        "range-invalid",
                        &range_field,
                        &format!(
                            "{text} is not a valid range: expected a CIDR such as 10.0.0.0/24"
                        ),
                    ));
                };
                let bound = |key: &str, b: &Option<Bound>| {
                    let b = b.as_ref()?;
                    Some(Written {
                        field: field_path(base, key),
                        text: b.text.clone(),
                        address: b.address?,
                    })
                };
                (
                    cidr_of(parsed.network()),
                    bound("range_start", &fields.range_start),
                    bound("range_end", &fields.range_end),
                )
            }
        };

        let mut normalised = RangeConfig { range: cidr.text(), ..Default::default() };
        let usable = cidr.broadcast() - cidr.network >= 2;
        if usable {
            let (first, last) = self.bounds(&cidr, start, end, &mut normalised)?;
            self.stop_at_ipv4_mapped(&cidr, base, text, first, last, &mut normalised);
        }
        // Otherwise (/31, /32, /127, /128) `GetIPRange` fails every ADD; `Network::parse`
        // reports it.
        for (i, exclude) in fields.exclude.items().iter().enumerate() {
            let field = field_path(base, &format!("exclude[{i}]"));
            if let Some(text) = self.exclude(&cidr, &field, exclude)? {
                normalised.exclude.push(text);
            }
        }
        Ok(normalised)
    }

    /// `GetIPRange`: a bound is honoured only inside first usable..last usable, compared as
    /// 16-byte addresses (`CompareIPs`), and the end only from the (possibly new) start on.
    /// Returns the first and last address of the walk, in the range's family.
    fn bounds(
        &mut self,
        cidr: &Cidr,
        start: Option<Written>,
        end: Option<Written>,
        normalised: &mut RangeConfig,
    ) -> Result<(u128, u128), ConfigError> {
        let first_usable = cidr.go16(cidr.network + 1);
        let last_usable = cidr.go16(cidr.broadcast() - 1);
        let mut first = first_usable;
        if let Some(Written { field, text, address }) = start {
            if (first_usable..=last_usable).contains(&address) {
                if cidr.family == Family::V6 && from_go16(address).0 == Family::V4 {
                    // `IterateForAssignment` starts its walk at this IPv4 address, which an
                    // IPv6 `IPNet.Contains` never accepts: the walk ends before it begins.
                    return Err(rejected(
                        "range-start-invalid",
                        &field,
                        &format!(
                            "{} is an IPv4 address inside IPv6 range {}: Whereabouts would start \
                             there and find nothing, so every ADD would fail",
                            text,
                            cidr.text()
                        ),
                    ));
                }
                first = address;
                normalised.range_start = Some(cidr.format_go16(address));
            } else {
                let (rule, reason) = self.unused_bound(cidr, address, "range-start", None);
                self.warn(&rule, &field, &text, &reason);
            }
        }
        let mut last = last_usable;
        if let Some(Written { field, text, address }) = end {
            if (first..=last_usable).contains(&address) {
                last = address;
                normalised.range_end = Some(cidr.format_go16(address));
            } else {
                let (rule, reason) = self.unused_bound(cidr, address, "range-end", Some(first));
                self.warn(&rule, &field, &text, &reason);
            }
        }
        let value = |a: u128| if cidr.family == Family::V4 { a & u32::MAX as u128 } else { a };
        Ok((value(first), value(last)))
    }

    /// Why `GetIPRange` ignores a bound, and what it uses instead.
    fn unused_bound(
        &self,
        cidr: &Cidr,
        address: u128,
        rule_prefix: &str,
        start: Option<u128>,
    ) -> (String, String) {
        let range = cidr.text();
        let (family, _) = from_go16(address);
        let instead = match start {
            None => format!(
                "the walk starts at the first usable address {}",
                cidr.format_go16(cidr.go16(cidr.network + 1))
            ),
            Some(_) => format!(
                "the range ends at the last usable address {}",
                cidr.format_go16(cidr.go16(cidr.broadcast() - 1))
            ),
        };
        if family != cidr.family {
            return (
                format!("{rule_prefix}-invalid"),
                format!(
                    "is {} but range {range} is {}; Whereabouts ignores it: {instead}",
                    family.name(),
                    cidr.family.name()
                ),
            );
        }
        if !cidr.contains_go16(address) {
            return (
                format!("{rule_prefix}-outside-range"),
                format!("is outside range {range}; Whereabouts ignores it: {instead}"),
            );
        }
        let (_, value) = from_go16(address);
        if value == cidr.network || value == cidr.broadcast() {
            let which = if value == cidr.network { "network" } else { "broadcast" };
            return (
                format!("{rule_prefix}-not-usable"),
                format!("is the {which} address of {range}; Whereabouts ignores it: {instead}"),
            );
        }
        let start = start.map(|s| cidr.format_go16(s)).unwrap_or_default();
        (
            "range-start-after-end".into(),
            format!("is before range_start {start}; Whereabouts drops the end: {instead}"),
        )
    }

    /// In an IPv6 range, Whereabouts' walk ends where the IPv4-mapped block begins: the first
    /// address in `::ffff:0:0/96` turns IPv4 for `net.IP` (`To4()`), and the range's
    /// `IPNet.Contains` then refuses it. Nothing from there on is ever handed out.
    fn stop_at_ipv4_mapped(
        &mut self,
        cidr: &Cidr,
        base: &str,
        text: &str,
        first: u128,
        last: u128,
        normalised: &mut RangeConfig,
    ) {
        if cidr.family == Family::V6 && first < IPV4_MAPPED_FIRST && last >= IPV4_MAPPED_FIRST {
            let stop = format_address(Family::V6, IPV4_MAPPED_FIRST - 1);
            self.warn(
                "range-crosses-ipv4-mapped",
                &field_path(base, "range"),
                text,
                &format!(
                    "reaches into the IPv4-mapped block ::ffff:0:0/96, where Whereabouts' walk \
                     stops: nothing from ::ffff:0.0.0.0 to {} is handed out; \
                     the range ends at {stop}",
                    format_address(Family::V6, last)
                ),
            );
            normalised.range_end = Some(stop);
        }
    }

    /// One exclude, as `parseExcludedRange` reads it at every ADD: Go's strict `ParseCIDR`, or a
    /// bare address with `/32` (any address `To4()` accepts, IPv4-mapped included) or `/128`
    /// appended. Returns the normalised exclude, `None` when it excludes nothing.
    fn exclude(
        &mut self,
        cidr: &Cidr,
        field: &str,
        text: &str,
    ) -> Result<Option<String>, ConfigError> {
        // `Some((network, appended))`: `appended` when the text was a bare IPv4-mapped address.
        let read = |parser| {
            if let Some(parsed) = parse_go_cidr(text, parser) {
                return Some((parsed, false));
            }
            let address = parse_go_ip(text, parser)?;
            let v4 = from_go16(address).0 == Family::V4;
            let bits = if v4 { "32" } else { "128" };
            let mapped = v4 && text.contains(':');
            Some((parse_go_cidr(&format!("{text}/{bits}"), parser)?, mapped))
        };
        let (parsed, mapped_bare) = match read(GoParser::Strict) {
            Some(parsed) => parsed,
            None => match read(GoParser::Sloppy) {
                // Deliberate: we read leading zeros here as everywhere else.
                Some((parsed, mapped_bare)) => {
                    self.warn(
                        "exclude-leading-zeros",
                        field,
                        text,
                        &format!(
                            "Whereabouts' exclude parser rejects leading zeros and fails \
                             every ADD; Hereabouts reads it as {}",
                            cidr_of(parsed.network()).text()
                        ),
                    );
                    (parsed, mapped_bare)
                }
                // Whereabouts parses excludes only when it walks for a new address
                // (`IterateForAssignment`): such an exclude fails every new allocation, while a
                // pod that holds an address gets it again, and DEL works. So here: the exclude
                // is dropped, and the config carries the error for `allocate`.
                None => {
                    let message = if text.is_empty() {
                        "is empty: expected a CIDR or an IP address".to_string()
                    } else {
                        format!("{text} is not a CIDR or an IP address")
                    };
                    self.allocation_error
                        .get_or_insert(FieldError { field: field.into(), message });
                    return Ok(None);
                }
            },
        };
        let exclude = cidr_of(parsed.network());
        let range = cidr.text();
        if exclude.family != cidr.family {
            let mapped_note = if mapped_bare {
                format!(
                    " (Whereabouts appends /32 to the IPv4-mapped address and gets the IPv6 \
                     network {})",
                    exclude.text()
                )
            } else {
                String::new()
            };
            self.warn(
                "exclude-invalid",
                field,
                text,
                &format!(
                    "is {}{mapped_note} but range {range} is {}: it excludes nothing",
                    exclude.family.name(),
                    cidr.family.name()
                ),
            );
            return Ok(None);
        }
        let (first, last) = (exclude.network, exclude.broadcast());
        if last < cidr.network || first > cidr.broadcast() {
            self.warn(
                "exclude-outside-range",
                field,
                text,
                &format!("is outside range {range}: it excludes nothing"),
            );
            return Ok(None);
        }
        if first < cidr.network || last > cidr.broadcast() {
            self.warn(
                "exclude-partly-outside-range",
                field,
                text,
                &format!(
                    "extends outside range {range}: only {range} itself, the whole range, \
                     is excluded"
                ),
            );
            return Ok(Some(range));
        }
        Ok(Some(exclude.text()))
    }

    /// `exclude_gateway: true`: the gateway becomes one more exclude (a /32 or /128, appended)
    /// of each normalised range that would otherwise hand it out — same family, inside
    /// range_start..range_end, not `.0`, not excluded already. A gateway no range hands out
    /// (outside every range, the other family, excluded by the user) changes nothing, and is
    /// no mistake: a routed gateway often lies outside the pod range. Written as an exclude so
    /// that the allocator, `plan`, `check` and every host see it without a key of their own;
    /// the allocator names `exclude_gateway` when a pod asks for the gateway by address.
    fn exclude_gateway(&mut self, gateway: Option<&str>, ranges: &mut [RangeConfig]) {
        let Some((family, address)) = gateway.and_then(parse_address) else {
            self.warn(
                "exclude-gateway-without-gateway",
                "exclude_gateway",
                "true",
                "there is no `gateway` to exclude: set `gateway`, or drop the key",
            );
            return;
        };
        for config in ranges.iter_mut() {
            // A range the allocator refuses anyway is reported by `first_error`, untouched.
            let Some(range) = Range::parse(config, "", &mut Vec::new()) else { continue };
            if range.family == family && range.pool(std::iter::empty()).check(address).is_ok() {
                config.exclude.push(format!(
                    "{}/{}",
                    format_address(family, address),
                    family.bits()
                ));
            }
        }
    }

    /// `gateway` through `ParseIPSloppy` (an error when unparsable), else the legacy `Gateway`.
    fn gateway(&mut self, ipam: &IpamFields) -> Result<Option<String>, ConfigError> {
        let canonical = |address: u128| {
            let (family, value) = from_go16(address);
            format_address(family, value)
        };
        if !ipam.gateway.is_empty() {
            return match parse_go_ip(&ipam.gateway, GoParser::Sloppy) {
                Some(address) => Ok(Some(canonical(address))),
                None => Err(rejected(
                    "gateway-invalid",
                    "gateway",
                    &format!("{} is not an IP address", ipam.gateway),
                )),
            };
        }
        if ipam.legacy_gateway.is_empty() {
            return Ok(None);
        }
        match parse_go_ip(&ipam.legacy_gateway, GoParser::Sloppy) {
            Some(address) => Ok(Some(canonical(address))),
            None => {
                self.warn(
                    "gateway-invalid",
                    "Gateway",
                    &ipam.legacy_gateway,
                    "is not an IP address; Whereabouts drops it silently and returns no gateway",
                );
                Ok(None)
            }
        }
    }
}

fn cidr_of((family, network, prefix): (Family, u128, u32)) -> Cidr {
    Cidr { family, network, prefix }
}
