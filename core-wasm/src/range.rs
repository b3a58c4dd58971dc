//! One range of a network, as the allocator takes it: strict, because what it parses is the
//! normalised config [`crate::config::read_config`] wrote (masked CIDR, honoured bounds only,
//! canonical text), never what a user typed.
//!
//! What users write is read permissively, exactly as Whereabouts reads it, by `config`: there a
//! `range_start` outside the CIDR or an exclude outside the range is ignored with a warning.
//! Here the same mistakes are errors (rules `range-start-outside-range`,
//! `exclude-outside-range`, …): a normalised config never has them, and `validate` reports them
//! under the same rule ids `check` uses for the warnings.
//!
//! Shared with Whereabouts (pkg/config/config.go): host bits in `range` are masked;
//! `a.b.c.d-e.f.g.h/len` sets range_start to the first address and range_end to the address
//! before the slash; an exclude covers its whole network, network and broadcast included.

use crate::addr::{Family, format_address, host_mask, index_span, parse_address, parse_cidr};
use crate::pool::Pool;
use crate::types::{Finding, RangeConfig, Severity};

/// A validated range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// `range` or `ipRanges[N]`: where it came from in the config.
    pub field: String,
    pub family: Family,
    pub network: u128,
    pub broadcast: u128,
    pub prefix: u32,
    /// First and last address the allocator may hand out, before excludes and `.0`
    /// (`first > last` when there is none).
    pub first: u128,
    pub last: u128,
    /// Excluded address intervals, inside the CIDR.
    pub excludes: Vec<(u128, u128)>,
    /// Set when this range is a node's slice of the configured range (see [`crate::slice`]):
    /// the node, and the configured range's prefix length, which pods' addresses carry.
    pub slice_of: Option<(String, u32)>,
}

/// `key` under `base` (`exclude[1]` or `ipRanges[0].exclude[1]`).
pub fn field_path(base: &str, key: &str) -> String {
    if base.is_empty() { key.to_string() } else { format!("{base}.{key}") }
}

pub(crate) fn finding(rule: &str, severity: Severity, field: String, message: String) -> Finding {
    Finding { rule: rule.into(), severity, field, message }
}

fn error(findings: &mut Vec<Finding>, rule: &str, field: String, message: String) {
    findings.push(finding(rule, Severity::Error, field, message));
}

impl Range {
    /// The normalised range: masked CIDR, e.g. `10.0.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", format_address(self.family, self.network), self.prefix)
    }

    /// Whereabouts' IPPool name: `:` and `/` become `-` (an IPv6 range ending in `:` gets a
    /// `0` first), prefixed by `network_name-` when the network is named.
    pub fn pool_name(&self, network_name: &str) -> String {
        if let Some((node, _)) = &self.slice_of {
            return crate::slice::pool_name(network_name, node, &self.cidr());
        }
        let mut cidr = self.cidr();
        if cidr.ends_with(':') {
            cidr.push('0');
        }
        let normalized = cidr.replace([':', '/'], "-");
        if network_name.is_empty() { normalized } else { format!("{network_name}-{normalized}") }
    }

    /// The prefix length of the addresses handed out: the configured range's, also in a slice.
    pub fn result_prefix(&self) -> u32 {
        self.slice_of.as_ref().map_or(self.prefix, |(_, prefix)| *prefix)
    }

    /// This range's slice at `network`/`size` for `node`: the slice's CIDR and pool, its
    /// first to last usable address, and the excludes that fall into it.
    pub fn sliced(&self, node: &str, network: u128, size: u32) -> Range {
        let broadcast = network | host_mask(self.family, size);
        let excludes = self
            .excludes
            .iter()
            .filter(|(first, last)| *last >= network && *first <= broadcast)
            .map(|(first, last)| ((*first).max(network), (*last).min(broadcast)))
            .collect();
        Range {
            field: self.field.clone(),
            family: self.family,
            network,
            broadcast,
            prefix: size,
            first: network + 1,
            last: broadcast - 1,
            excludes,
            slice_of: Some((node.to_string(), self.prefix)),
        }
    }

    pub fn contains(&self, family: Family, address: u128) -> bool {
        family == self.family && address >= self.network && address <= self.broadcast
    }

    pub fn format(&self, address: u128) -> String {
        format_address(self.family, address)
    }

    /// Whereabouts' allocation key: the decimal offset from the network address.
    pub fn offset_of(&self, address: u128) -> String {
        (address - self.network).to_string()
    }

    /// The address an allocation key stands for; `None` if the key is not a decimal offset
    /// inside the CIDR.
    pub fn address_of(&self, offset: &str) -> Option<u128> {
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let offset: u128 = offset.parse().ok()?;
        (offset <= self.broadcast - self.network).then(|| self.network + offset)
    }

    /// Allocatable index span (before excludes), `None` if empty.
    pub fn index_span(&self) -> Option<(u128, u128)> {
        index_span(self.family, self.first, self.last)
    }

    /// A pool over this range with the given addresses in use (others are ignored).
    pub fn pool(&self, used: impl IntoIterator<Item = u128>) -> Pool {
        Pool::new(self, used)
    }

    /// Parses one range config; problems go to `findings`. `base` is "" for the top-level
    /// keys or `ipRanges[N]`.
    pub fn parse(config: &RangeConfig, base: &str, findings: &mut Vec<Finding>) -> Option<Range> {
        Self::parse_keeping_empty(config, base, findings, false)
    }

    /// [`Range::parse`]; with `keep_empty`, a range with no address to hand out is returned
    /// too (its `range-empty` error still reported), so that its pool can be read.
    pub fn parse_keeping_empty(
        config: &RangeConfig,
        base: &str,
        findings: &mut Vec<Finding>,
        keep_empty: bool,
    ) -> Option<Range> {
        let errors_before = findings.iter().filter(|f| f.severity == Severity::Error).count();
        let range_field = field_path(base, "range");
        let text = config.range.trim();
        if text.is_empty() {
            error(
                findings,
                "range-invalid",
                range_field,
                "is empty: expected a CIDR such as 10.0.0.0/24".into(),
            );
            return None;
        }
        // Range-end syntax: `first-last/prefix`.
        let (syntax_start, cidr_text) = match text.split_once('-') {
            Some((start, cidr)) => (Some(start.trim()), cidr.trim()),
            None => (None, text),
        };
        let Some((family, value, prefix)) = parse_cidr(cidr_text) else {
            let hint = if syntax_start.is_some() {
                "first-last/prefix, e.g. 10.0.0.5-10.0.0.25/24"
            } else {
                "a CIDR such as 10.0.0.0/24"
            };
            error(
                findings,
                "range-invalid",
                range_field,
                format!("{text} is not a valid range: expected {hint}"),
            );
            return None;
        };
        let mask = host_mask(family, prefix);
        let network = value & !mask;
        let broadcast = network | mask;
        let mut range = Range {
            field: if base.is_empty() { "range".into() } else { base.to_string() },
            family,
            network,
            broadcast,
            prefix,
            first: 0,
            last: 0,
            excludes: Vec::new(),
            slice_of: None,
        };
        let cidr = range.cidr();

        // Start and end: from the range-end syntax, or the keys (both must agree).
        let parse_bound = |key: &str,
                           text: &str,
                           rule_invalid: &str,
                           rule_outside: &str,
                           findings: &mut Vec<Finding>| {
            let field = field_path(base, key);
            match parse_address(text) {
                None => {
                    error(findings, rule_invalid, field, format!("{text} is not an IP address"));
                    None
                }
                Some((f, _)) if f != family => {
                    error(
                        findings,
                        rule_invalid,
                        field,
                        format!("{text} is {} but range {cidr} is {}", f.name(), family.name()),
                    );
                    None
                }
                Some((_, a)) if !range.contains(family, a) => {
                    error(findings, rule_outside, field, format!("{text} is outside range {cidr}"));
                    None
                }
                Some((_, a)) => Some(a),
            }
        };
        let mut start =
            config.range_start.as_deref().filter(|s| !s.trim().is_empty()).and_then(|s| {
                parse_bound(
                    "range_start",
                    s,
                    "range-start-invalid",
                    "range-start-outside-range",
                    findings,
                )
            });
        let mut end = config.range_end.as_deref().filter(|s| !s.trim().is_empty()).and_then(|s| {
            parse_bound("range_end", s, "range-end-invalid", "range-end-outside-range", findings)
        });
        if let Some(syntax_start) = syntax_start {
            let from_syntax = parse_bound(
                "range",
                syntax_start,
                "range-invalid",
                "range-start-outside-range",
                findings,
            );
            if let (Some(a), Some(b)) = (from_syntax, start)
                && a != b
            {
                error(
                    findings,
                    "range-start-invalid",
                    field_path(base, "range_start"),
                    format!(
                        "{} conflicts with the start {syntax_start} given in range {text}",
                        format_address(family, b)
                    ),
                );
            }
            start = from_syntax.or(start);
            let syntax_end = value;
            if let Some(b) = end
                && b != syntax_end
            {
                error(
                    findings,
                    "range-end-invalid",
                    field_path(base, "range_end"),
                    format!(
                        "{} conflicts with the end {} given in range {text}",
                        format_address(family, b),
                        format_address(family, syntax_end)
                    ),
                );
            }
            end = Some(syntax_end);
        }
        if let (Some(a), Some(b)) = (start, end)
            && a > b
        {
            let field = if syntax_start.is_some() {
                range_field.clone()
            } else {
                field_path(base, "range_start")
            };
            error(
                findings,
                "range-start-after-end",
                field,
                format!(
                    "start {} is after end {}",
                    format_address(family, a),
                    format_address(family, b)
                ),
            );
        }
        // Never the network address nor the broadcast (the last address, for IPv6 too).
        if broadcast - network >= 2 {
            range.first = start.unwrap_or(network).max(network + 1);
            range.last = end.unwrap_or(broadcast).min(broadcast - 1);
        } else {
            range.first = 1;
            range.last = 0;
        }

        for (i, exclude) in config.exclude.iter().enumerate() {
            let field = field_path(base, &format!("exclude[{i}]"));
            let text = exclude.trim();
            let parsed =
                parse_cidr(text).or_else(|| parse_address(text).map(|(f, a)| (f, a, f.bits())));
            let Some((f, a, p)) = parsed else {
                error(
                    findings,
                    "exclude-invalid",
                    field,
                    format!("{text} is not a CIDR or an IP address"),
                );
                continue;
            };
            if f != family {
                error(
                    findings,
                    "exclude-invalid",
                    field,
                    format!("{text} is {} but range {cidr} is {}", f.name(), family.name()),
                );
                continue;
            }
            let m = host_mask(f, p);
            let (first, last) = (a & !m, (a & !m) | m);
            if last < network || first > broadcast {
                error(
                    findings,
                    "exclude-outside-range",
                    field,
                    format!("{text} is outside range {cidr}"),
                );
            } else if first < network || last > broadcast {
                error(
                    findings,
                    "exclude-partly-outside-range",
                    field,
                    format!("{text} extends outside range {cidr}"),
                );
            } else {
                range.excludes.push((first, last));
            }
        }

        let errors_after = findings.iter().filter(|f| f.severity == Severity::Error).count();
        if errors_after > errors_before {
            return None;
        }
        if range.pool(std::iter::empty()).capacity() == 0 {
            error(
                findings,
                "range-empty",
                range_field,
                format!(
                    "{text} leaves no address to hand out (network, broadcast, .0, range_start/range_end and excludes remove them all)"
                ),
            );
            return keep_empty.then_some(range);
        }
        Some(range)
    }
}
