//! A pool's used space in a few bytes: what lets an ADD read and write an amount of data that
//! does not grow with the number of allocations.
//!
//! Stores that can (SQLite, etcd) keep this summary beside the pool and replace it in the same
//! commit as the allocation it describes, so the two never disagree; the store treats it as an
//! opaque string. It is the set of used addresses as runs over the pool's *index space* (the
//! CIDR without IPv4 `.0` addresses, see [`crate::addr`]), so a packed pool — the common case,
//! since we always hand out the lowest free address — is one run whatever its size: a /16 with
//! 60,000 allocations is `1:0-59999`.
//!
//! The summary records every allocation in the CIDR, whatever the config's bounds and excludes:
//! two network configs may share a pool (same range and `network_name`) with different
//! `range_start` or `exclude`, and each applies its own on top (see [`Pool::from_runs`]).
//! Allocations at IPv4 `.0` (Whereabouts can hand those out) have no index and are left out;
//! we never hand them out, so they never matter to the search.
//!
//! Text form, version 1: `1:` then comma-separated runs `a-b` or `a` (a single index), in
//! increasing order, decimal, relative to the index of the CIDR's first indexable address.
//!
//! [`Pool::from_runs`]: crate::pool::Pool::from_runs

use crate::addr::{Family, index_span, to_index};
use crate::intervals::IntervalSet;
use crate::range::Range;

const VERSION_PREFIX: &str = "1:";

/// The used indices of one pool, absolute (not relative to the CIDR).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    used: IntervalSet,
}

/// A summary that does not decode: the store's copy was damaged or written by something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable(pub String);

/// The index of the first indexable address of `range`'s CIDR: summaries are relative to it,
/// so they stay small numbers and do not depend on the config's bounds.
fn base(range: &Range) -> Option<u128> {
    index_span(range.family, range.network, range.broadcast).map(|(lo, _)| lo)
}

impl Summary {
    /// The summary of these allocated addresses (addresses outside the CIDR or at IPv4 `.0`
    /// are ignored).
    pub fn of_addresses(range: &Range, addresses: impl IntoIterator<Item = u128>) -> Self {
        let mut indices: Vec<u128> = addresses
            .into_iter()
            .filter(|a| range.contains(range.family, *a))
            .filter_map(|a| to_index(range.family, a))
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let mut used = IntervalSet::new();
        let mut i = 0;
        while i < indices.len() {
            let start = indices[i];
            let mut end = start;
            while i + 1 < indices.len() && indices[i + 1] == end + 1 {
                i += 1;
                end = indices[i];
            }
            used.insert(start, end);
            i += 1;
        }
        Self { used }
    }

    /// Reads a stored summary of a pool over `range`.
    pub fn decode(range: &Range, text: &str) -> Result<Self, Undecodable> {
        let bad = |why: &str| Undecodable(format!("pool summary {text:?}: {why}"));
        let body = text.strip_prefix(VERSION_PREFIX).ok_or_else(|| bad("unknown format"))?;
        let Some(base) = base(range) else {
            return if body.is_empty() { Ok(Self::default()) } else { Err(bad("range is empty")) };
        };
        let last = index_span(range.family, range.network, range.broadcast).map(|(_, hi)| hi);
        let mut used = IntervalSet::new();
        let mut previous_end: Option<u128> = None;
        for run in body.split(',').filter(|r| !r.is_empty()) {
            let number = |t: &str| -> Result<u128, Undecodable> {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("not a number"));
                }
                t.parse::<u128>()
                    .ok()
                    .and_then(|n| n.checked_add(base))
                    .ok_or_else(|| bad("number too large"))
            };
            let (start, end) = match run.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let a = number(run)?;
                    (a, a)
                }
            };
            if start > end || previous_end.is_some_and(|p| start <= p.saturating_add(1)) {
                return Err(bad("runs out of order"));
            }
            if last.is_some_and(|hi| end > hi) {
                return Err(bad("run beyond the range"));
            }
            used.insert(start, end);
            previous_end = Some(end);
        }
        Ok(Self { used })
    }

    pub fn encode(&self, range: &Range) -> String {
        let mut out = String::from(VERSION_PREFIX);
        let base = base(range).unwrap_or(0);
        for (i, (start, end)) in self.used.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let (start, end) = (start - base, end - base);
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
        }
        out
    }

    /// Records `address` as used (no-op for IPv4 `.0`).
    pub fn insert(&mut self, family: Family, address: u128) {
        if let Some(index) = to_index(family, address) {
            self.used.insert(index, index);
        }
    }

    /// Records `address` as free.
    pub fn remove(&mut self, family: Family, address: u128) {
        if let Some(index) = to_index(family, address) {
            self.used.remove_point(index);
        }
    }

    pub fn contains(&self, family: Family, address: u128) -> bool {
        to_index(family, address).is_some_and(|i| self.used.contains(i))
    }

    /// The used index runs, lowest first.
    pub fn runs(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.used.iter()
    }

    /// How many used addresses the summary records.
    pub fn count(&self) -> u128 {
        self.used.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RangeConfig;

    fn range(text: &str) -> Range {
        let config = RangeConfig { range: text.into(), ..Default::default() };
        Range::parse(&config, "", &mut Vec::new()).unwrap()
    }

    fn v4(text: &str) -> u128 {
        u128::from(u32::from(text.parse::<std::net::Ipv4Addr>().unwrap()))
    }

    #[test]
    fn a_packed_pool_is_one_run_across_dot_zero_boundaries() {
        let r = range("10.0.0.0/16");
        let used =
            (1..=600u128).map(|i| crate::addr::from_index(r.family, base(&r).unwrap() + i - 1));
        let summary = Summary::of_addresses(&r, used);
        assert_eq!(summary.encode(&r), "1:0-599");
        assert_eq!(summary.count(), 600);
        assert!(summary.contains(r.family, v4("10.0.2.90")));
        assert_eq!(Summary::decode(&r, "1:0-599").unwrap(), summary);
    }

    #[test]
    fn round_trips_single_points_and_gaps() {
        let r = range("10.0.0.0/24");
        let mut s = Summary::of_addresses(&r, [v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.9")]);
        assert_eq!(s.encode(&r), "1:0-1,8");
        s.remove(r.family, v4("10.0.0.1"));
        s.insert(r.family, v4("10.0.0.10"));
        assert_eq!(s.encode(&r), "1:1,8-9");
        assert_eq!(Summary::decode(&r, &s.encode(&r)).unwrap(), s);
        // `.0` and addresses outside the CIDR are not recorded.
        let s = Summary::of_addresses(&r, [v4("10.0.0.0"), v4("10.0.1.5")]);
        assert_eq!(s.encode(&r), "1:");
    }

    #[test]
    fn ipv6_offsets_are_relative_to_the_network() {
        let r = range("fd00::/64");
        let a = u128::from("fd00::5".parse::<std::net::Ipv6Addr>().unwrap());
        let s = Summary::of_addresses(&r, [a, a + 1]);
        assert_eq!(s.encode(&r), "1:5-6");
    }

    #[test]
    fn damaged_text_is_reported_not_guessed() {
        let r = range("10.0.0.0/24");
        for text in ["", "2:0-1", "1:x", "1:5-2", "1:3,1", "1:1-2,3", "1:0-300", "1:-", "1:1-"] {
            assert!(Summary::decode(&r, text).is_err(), "{text:?} should not decode");
        }
        assert_eq!(Summary::decode(&r, "1:").unwrap().count(), 0);
    }
}
