//! Property tests of the permissive reading against a *reference model of Whereabouts*: every
//! config `read_config` accepts must yield the same first and next (lowest free) address as the
//! model, and every config the model rejects (or leaves with nothing to hand out) must be
//! rejected.
//!
//! The model is written here from Whereabouts' documented behaviour and shares no code with the
//! core: it parses the rendered JSON text itself (std's parsers for Go's strict `ParseIP`, and a
//! zero-trimming pre-pass over them for k8s.io/utils' `ParseIPSloppy`), applies `GetIPRange`'s
//! rules on 16-byte values, and walks address by address as `IterateForAssignment` does — plus
//! our one deliberate rule, never an IPv4 address ending in `.0`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hereabouts_core::addr::{GoParser, parse_go_cidr, parse_go_ip};
use hereabouts_core::config::read_plan_document;
use hereabouts_core::plan::plan;
use hereabouts_core::types::PlanRequest;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The model.

const MAPPED: u128 = 0xffff << 32;

fn is_mapped(a: u128) -> bool {
    a >> 32 == 0xffff
}

/// Go's strict `net.ParseIP`, 16-byte form: std's parsers have the same rules.
fn strict_ip(s: &str) -> Option<u128> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(MAPPED | u128::from(u32::from(a))),
        IpAddr::V6(a) => Some(u128::from(a)),
    }
}

/// k8s.io/utils' `ParseIPSloppy`: leading zeros are allowed, so trim them and ask std.
fn sloppy_ip(s: &str) -> Option<u128> {
    fn trim(field: &str) -> String {
        let t = field.trim_start_matches('0');
        if t.is_empty() && !field.is_empty() { "0".into() } else { t.into() }
    }
    let dotted = |q: &str| q.split('.').map(trim).collect::<Vec<_>>().join(".");
    if !s.contains(':') {
        return strict_ip(&dotted(s)).filter(|_| s.contains('.'));
    }
    let groups: Vec<String> = s
        .split(':')
        .map(|g| {
            if g.contains('.') {
                dotted(g)
            } else if g.is_empty() {
                String::new()
            } else {
                trim(g)
            }
        })
        .collect();
    groups.join(":").parse::<Ipv6Addr>().ok().map(u128::from)
}

/// (family is v4, network, prefix in that family) of `a/p`, as Go's IPNet sees it.
fn network_of(address: u128, written_v4: bool, prefix: u32) -> Option<(bool, u128, u32)> {
    if written_v4 {
        if prefix > 32 {
            return None;
        }
        let v = address & 0xffff_ffff;
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) } as u128;
        return Some((true, v & mask, prefix));
    }
    if prefix > 128 {
        return None;
    }
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    let net = address & mask;
    if is_mapped(net) {
        Some((true, net & 0xffff_ffff, prefix - 96))
    } else {
        Some((false, net, prefix))
    }
}

fn cidr(s: &str, ip: fn(&str) -> Option<u128>) -> Option<(u128, bool, u32)> {
    let (a, p) = s.split_once('/')?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let address = ip(a)?;
    let written_v4 = !a.contains(':');
    Some((address, written_v4, p.parse().ok()?))
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Whereabouts refuses the config or fails every ADD.
    Rejected,
    /// (first address without allocations, lowest free address), canonical text.
    Hands(String, Option<String>),
}

fn model(ipam: &serde_json::Value, allocated: &[String], in_ip_ranges: bool) -> Outcome {
    let r = if in_ip_ranges { &ipam["ipRanges"][0] } else { ipam };
    let text = r["range"].as_str().unwrap();
    let bound = |key: &str| -> Result<Option<u128>, ()> {
        match r.get(key).and_then(|v| v.as_str()) {
            None | Some("") => Ok(None),
            // ipRanges bounds are net.IP: strict, and fatal when unparsable.
            Some(s) if in_ip_ranges => strict_ip(s).map(Some).ok_or(()),
            // top-level bounds: sloppy, and dropped when unparsable.
            Some(s) => Ok(sloppy_ip(s)),
        }
    };
    let (Ok(mut start), Ok(mut end)) = (bound("range_start"), bound("range_end")) else {
        return Outcome::Rejected;
    };
    let (v4, net, prefix);
    if let Some((a, c)) = text.split_once('-') {
        let Some(s) = sloppy_ip(a) else { return Outcome::Rejected };
        let Some((ip, w4, p)) = cidr(c, sloppy_ip) else { return Outcome::Rejected };
        let Some(n) = network_of(ip, w4, p) else { return Outcome::Rejected };
        (v4, net, prefix) = n;
        let size = 1u128 << ((if v4 { 32 } else { 128 }) - prefix);
        let s_v4 = is_mapped(s);
        let s_value = if s_v4 { s & 0xffff_ffff } else { s };
        if s_v4 != v4 || s_value < net || s_value >= net + size {
            return Outcome::Rejected;
        }
        start = Some(s);
        end = Some(ip);
    } else {
        let Some((ip, w4, p)) = cidr(text, sloppy_ip) else { return Outcome::Rejected };
        let Some(n) = network_of(ip, w4, p) else { return Outcome::Rejected };
        (v4, net, prefix) = n;
    }
    let bits = if v4 { 32 } else { 128 };
    let last_address = net + ((1u128 << (bits - prefix)) - 1);
    if last_address - net < 2 {
        return Outcome::Rejected; // GetIPRange: no usable address
    }
    let go16 = |a: u128| if v4 { MAPPED | a } else { a };
    let (mut lo, mut hi) = (go16(net + 1), go16(last_address - 1));
    let usable_hi = hi;
    if let Some(s) = start.filter(|s| (lo..=usable_hi).contains(s)) {
        lo = s;
    }
    if let Some(e) = end.filter(|e| (lo..=usable_hi).contains(e)) {
        hi = e;
    }
    let value = |a: u128| if v4 { a & 0xffff_ffff } else { a };
    let (lo, hi) = (value(lo), value(hi));

    let mut excludes = Vec::new();
    for e in r.get("exclude").and_then(|v| v.as_array()).into_iter().flatten() {
        let e = e.as_str().unwrap();
        // Go's strict parser; we also accept what only the sloppy one reads (documented).
        let parsed =
            [strict_ip as fn(&str) -> Option<u128>, sloppy_ip].into_iter().find_map(|ip| {
                cidr(e, ip).or_else(|| {
                    let a = ip(e)?;
                    Some((a, !e.contains(':'), if is_mapped(a) { 32 } else { 128 }))
                })
            });
        let Some((a, w4, p)) = parsed else { return Outcome::Rejected };
        let Some((e_v4, e_net, e_p)) = network_of(a, w4, p) else { return Outcome::Rejected };
        if e_v4 == v4 {
            let e_bits = if e_v4 { 32 } else { 128 };
            let e_last = e_net | ((1u128 << (e_bits - e_p)) - 1);
            excludes.push((e_net, e_last));
        }
    }
    let used: Vec<u128> = allocated.iter().filter_map(|a| sloppy_ip(a)).map(value).collect();
    let allocatable = |a: &u128| {
        let dot_zero = v4 && a & 0xff == 0;
        let excluded = excludes.iter().any(|(x, y)| x <= a && a <= y);
        !dot_zero && !excluded
    };
    let format = |a: u128| {
        if v4 { Ipv4Addr::from(a as u32).to_string() } else { Ipv6Addr::from(a).to_string() }
    };
    let Some(first) = (lo..=hi).find(allocatable) else { return Outcome::Rejected };
    let next = (lo..=hi).filter(allocatable).find(|a| !used.contains(a));
    Outcome::Hands(format(first), next.map(format))
}

fn core(document: &str) -> Outcome {
    let Ok(document) = read_plan_document(document) else { return Outcome::Rejected };
    let request = PlanRequest {
        network: document.reading.network,
        allocated: document.allocated,
        persistent: document.persistent,
        preview: 1,
    };
    match plan(&request) {
        Ok(reports) => {
            let r = &reports[0];
            Outcome::Hands(r.first.clone().unwrap(), r.next.first().cloned())
        }
        Err(_) => Outcome::Rejected,
    }
}

// ---------------------------------------------------------------------------------------------
// Configs: random and boundary values, written in every way Whereabouts accepts.

#[derive(Debug, Clone, Copy)]
enum Written {
    Inside(u32),
    Network,
    Broadcast,
    Outside(u32),
    OtherFamily,
    Garbage,
    Mapped(u32),
    LeadingZeros(u32),
}

fn written() -> impl Strategy<Value = Written> {
    prop_oneof![
        4 => any::<u32>().prop_map(Written::Inside),
        1 => Just(Written::Network),
        1 => Just(Written::Broadcast),
        2 => any::<u32>().prop_map(Written::Outside),
        1 => Just(Written::OtherFamily),
        1 => Just(Written::Garbage),
        1 => any::<u32>().prop_map(Written::Mapped),
        1 => any::<u32>().prop_map(Written::LeadingZeros),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    v6: bool,
    /// IPv4 written as `::ffff:a.b.c.d/(96 + prefix)`.
    mapped_range: bool,
    host_bits: u32,
    base: u128,
    host: u32,
    zeros: usize,
    syntax: Option<Written>,
    start: Option<Written>,
    end: Option<Written>,
    excludes: Vec<(u8, u32, u32)>,
    allocated: Vec<u32>,
    in_ip_ranges: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), any::<bool>(), 2u32..=10, any::<u128>(), any::<u32>(), 0usize..10),
        (prop::option::of(written()), prop::option::of(written()), prop::option::of(written())),
        prop::collection::vec((0u8..7, any::<u32>(), 0u32..6), 0..4),
        prop::collection::vec(any::<u32>(), 0..12),
        any::<bool>(),
    )
        .prop_map(
            |(
                (v6, mapped, host_bits, base, host, zeros),
                (syntax, start, end),
                excludes,
                allocated,
                in_ip_ranges,
            )| Case {
                v6,
                mapped_range: mapped && !v6,
                host_bits,
                base,
                host,
                zeros,
                syntax,
                start,
                end,
                excludes,
                allocated,
                in_ip_ranges,
            },
        )
}

impl Case {
    fn size(&self) -> u128 {
        1u128 << self.host_bits
    }

    fn network(&self) -> u128 {
        let base = if self.v6 {
            // Away from ::ffff:0:0/96, whose walk rule the table tests cover.
            (0xfd00u128 << 112) | (self.base & (u128::MAX >> 16))
        } else {
            self.base & 0xffff_ffff
        };
        base & !(self.size() - 1)
    }

    fn text(&self, a: u128, zeros: usize) -> String {
        let pad = "0".repeat(zeros);
        if self.v6 {
            let s = Ipv6Addr::from(a).to_string();
            s.split(':')
                .map(|g| if g.is_empty() { String::new() } else { format!("{pad}{g}") })
                .collect::<Vec<_>>()
                .join(":")
        } else {
            let s = Ipv4Addr::from(a as u32).to_string();
            s.split('.').map(|o| format!("{pad}{o}")).collect::<Vec<_>>().join(".")
        }
    }

    /// A bound as written; `strict` writes no leading zeros unless asked to.
    fn bound(&self, w: Written, strict: bool) -> String {
        let (net, size) = (self.network(), self.size());
        let zeros = if strict { 0 } else { self.zeros % 3 };
        match w {
            Written::Inside(o) => self.text(net + u128::from(o) % size, zeros),
            Written::Network => self.text(net, zeros),
            Written::Broadcast => self.text(net + size - 1, zeros),
            Written::Outside(o) => self.text(
                net.wrapping_add(size + u128::from(o % 64))
                    & if self.v6 { u128::MAX } else { 0xffff_ffff },
                zeros,
            ),
            Written::OtherFamily => {
                if self.v6 {
                    "10.0.0.5".into()
                } else {
                    "fd00::5".into()
                }
            }
            Written::Garbage => {
                ["banana", "10.0.0", " 10.0.0.1", "1.2.3.4.5", "::1::2"][(self.zeros) % 5].into()
            }
            Written::Mapped(o) if !self.v6 => {
                format!("::ffff:{}", Ipv4Addr::from((net + u128::from(o) % size) as u32))
            }
            Written::Mapped(o) | Written::LeadingZeros(o) => {
                self.text(net + u128::from(o) % size, 1 + self.zeros % 4)
            }
        }
    }

    fn range_text(&self) -> String {
        let prefix = if self.v6 { 128 } else { 32 } - self.host_bits;
        let address = self.network() + u128::from(self.host) % self.size();
        let cidr = if self.mapped_range {
            format!("::ffff:{}/{}", Ipv4Addr::from(address as u32), 96 + prefix)
        } else {
            format!("{}/{}{prefix}", self.text(address, self.zeros % 4), "0".repeat(self.zeros % 2))
        };
        match self.syntax {
            None => cidr,
            Some(w) => format!("{}-{cidr}", self.bound(w, false)),
        }
    }

    fn exclude(&self, (kind, offset, extra): (u8, u32, u32)) -> String {
        let (net, size) = (self.network(), self.size());
        let bits = if self.v6 { 128 } else { 32 };
        let prefix = (bits - self.host_bits + extra).min(bits);
        let at = net + u128::from(offset) % size;
        match kind {
            0 => format!("{}/{prefix}", self.text(at, 0)),
            1 => self.text(at, 0),
            2 => format!(
                "{}/{prefix}",
                self.text(
                    net.wrapping_add(size * 3) & if self.v6 { u128::MAX } else { 0xffff_ffff },
                    0
                )
            ),
            3 => {
                if self.v6 {
                    "10.0.0.0/30".into()
                } else {
                    "fd00::/126".into()
                }
            }
            4 => format!("{}/{}", self.text(net, 0), bits - self.host_bits - 1),
            5 if !self.v6 => format!("::ffff:{}/{}", Ipv4Addr::from(at as u32), 96 + prefix),
            _ => format!("{}/{prefix}", self.text(at, 2)),
        }
    }

    fn document(&self) -> (serde_json::Value, Vec<String>) {
        let mut r = serde_json::json!({ "range": self.range_text() });
        let strict = self.in_ip_ranges;
        if let Some(w) = self.start {
            r["range_start"] = self.bound(w, strict).into();
        }
        if let Some(w) = self.end {
            r["range_end"] = self.bound(w, strict).into();
        }
        let excludes: Vec<String> = self.excludes.iter().map(|e| self.exclude(*e)).collect();
        if !excludes.is_empty() {
            r["exclude"] = excludes.into();
        }
        let allocated: Vec<String> = self
            .allocated
            .iter()
            .map(|o| self.text(self.network() + u128::from(*o) % self.size(), 0))
            .collect();
        let ipam = if self.in_ip_ranges { serde_json::json!({ "ipRanges": [r] }) } else { r };
        (ipam, allocated)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_reading_hands_out_what_the_model_of_whereabouts_hands_out(case in case()) {
        let (ipam, allocated) = case.document();
        let text = serde_json::json!({ "ipam": ipam, "allocated": allocated }).to_string();
        let expected = model(&ipam, &allocated, case.in_ip_ranges);
        prop_assert_eq!(core(&text), expected, "{}", text);
    }

    #[test]
    fn the_strict_parser_is_gos_netip_which_std_matches(s in "[0-9a-fA-F.:%]{0,24}") {
        prop_assert_eq!(parse_go_ip(&s, GoParser::Strict), strict_ip(&s), "{:?}", s);
        // The sloppy parser accepts everything the strict one does, with the same value.
        if let Some(a) = strict_ip(&s) {
            prop_assert_eq!(parse_go_ip(&s, GoParser::Sloppy), Some(a));
        }
        prop_assert_eq!(parse_go_ip(&s, GoParser::Sloppy), sloppy_ip(&s).filter(|_| s.contains(['.', ':'])), "{:?}", s);
    }

    #[test]
    fn cidr_parsing_never_panics(s in "[0-9a-f.:/]{0,30}") {
        let _ = parse_go_cidr(&s, GoParser::Sloppy);
        let _ = parse_go_cidr(&s, GoParser::Strict);
    }

    #[test]
    fn reading_never_panics(s in r#"[{}\[\]":,0-9a-zA-Z_./ -]{0,80}"#) {
        let _ = hereabouts_core::config::read_config(&s);
        let _ = read_plan_document(&s);
    }

    #[test]
    fn reading_never_panics_on_structured_nonsense(
        keys in prop::collection::vec(prop_oneof![
            Just("range"), Just("Range"), Just("range_start"), Just("range_end"), Just("exclude"),
            Just("ipRanges"), Just("gateway"), Just("Gateway"), Just("network_name"), Just("sticky"),
        ], 0..6),
        values in prop::collection::vec(prop_oneof![
            Just(r#""10.0.0.0/24""#), Just(r#""::ffff:10.0.0.0/120""#), Just(r#""10.0.0.5-10.0.0.9/24""#),
            Just(r#""fd00::/120""#), Just(r#""::/64""#), Just("null"), Just("[]"), Just(r#"["10.0.0.1", null]"#),
            Just(r#"[{"range": "10.0.0.0/30", "exclude": ["10.0.0.0/31"]}, null]"#), Just("{}"), Just("7"), Just("true"),
            Just(r#""10.0.0.255""#), Just(r#""::ffff:10.0.0.9""#), Just(r#""0.0.0.0/0""#),
        ], 6),
    ) {
        let body: Vec<String> = keys.iter().zip(&values).map(|(k, v)| format!("\"{k}\": {v}")).collect();
        let text = format!("{{{}}}", body.join(", "));
        if let Ok(reading) = hereabouts_core::config::read_config(&text) {
            // Whatever is accepted, the allocator accepts; a config that hands out nothing
            // fails ADD with its allocation error, and still names its pools for DEL.
            use hereabouts_core::network::Network;
            match Network::parse(&reading.network) {
                Ok(_) => {}
                Err(error) => {
                    prop_assert_eq!(Some(error), reading.network.allocation_error.clone());
                    Network::parse_held(&reading.network).unwrap();
                }
            }
        }
    }
}
