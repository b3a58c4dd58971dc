//! A range's free space: what the allocator searches.
//!
//! Everything that blocks an address — excludes and allocations — lives in one merged
//! interval set over the range's index space (IPv4 `.0` addresses have no index at all; see
//! `addr`). The lowest free address is then a single lookup, and memory grows with the
//! number of allocation runs and excludes, never with the size of the range. Whereabouts
//! instead walks address by address, converting each to a string: its cost grows with the
//! number of addresses in front of the free one.

use crate::addr::{Family, from_index, to_index};
use crate::intervals::IntervalSet;
use crate::range::Range;
use crate::summary::Summary;

#[derive(Debug, Clone)]
pub struct Pool {
    family: Family,
    /// Allocatable index span before excludes; `None` when the range has no address.
    span: Option<(u128, u128)>,
    /// Excluded indices inside the span.
    excluded: IntervalSet,
    /// Excluded ∪ allocated indices inside the span.
    blocked: IntervalSet,
    /// Allocations inside the span that are not excluded.
    allocated: u128,
}

/// Why an address cannot be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Outside range_start..range_end, the network or broadcast address, or an IPv4 `.0`.
    Reserved,
    Excluded,
    Allocated,
}

impl Pool {
    pub fn new(range: &Range, used: impl IntoIterator<Item = u128>) -> Self {
        Self::from_runs(range, Summary::of_addresses(range, used).runs())
    }

    /// A pool whose used space is given as index runs (a [`Summary`]'s): the config's span and
    /// excludes are applied on top, so the cost is the number of runs, not of allocations.
    pub fn from_runs(range: &Range, used: impl IntoIterator<Item = (u128, u128)>) -> Self {
        let family = range.family;
        let span = range.index_span();
        let mut excluded = IntervalSet::new();
        if let Some((lo, hi)) = span {
            for &(first, last) in &range.excludes {
                if let Some((a, b)) = crate::addr::index_span(family, first, last) {
                    let (a, b) = (a.max(lo), b.min(hi));
                    if a <= b {
                        excluded.insert(a, b);
                    }
                }
            }
        }
        let mut blocked = excluded.clone();
        if let Some((lo, hi)) = span {
            for (start, end) in used {
                let (a, b) = (start.max(lo), end.min(hi));
                if a <= b {
                    blocked.insert(a, b);
                }
            }
        }
        // Allocations inside excludes do not count as allocated: they are excluded anyway.
        let allocated = blocked.count() - excluded.count();
        Pool { family, span, excluded, blocked, allocated }
    }

    /// Number of addresses that can ever be handed out (span minus excludes).
    pub fn capacity(&self) -> u128 {
        match self.span {
            None => 0,
            Some((lo, hi)) => (hi - lo).saturating_add(1) - self.excluded.count(),
        }
    }

    pub fn allocated(&self) -> u128 {
        self.allocated
    }

    pub fn free(&self) -> u128 {
        self.capacity() - self.allocated
    }

    /// The lowest free address.
    pub fn lowest_free(&self) -> Option<u128> {
        let (lo, hi) = self.span?;
        self.blocked.first_gap(lo, hi).map(|i| from_index(self.family, i))
    }

    /// Up to `n` free addresses, lowest first.
    pub fn next_free(&self, n: usize) -> Vec<u128> {
        let mut out = Vec::with_capacity(n.min(64));
        let Some((lo, hi)) = self.span else { return out };
        let mut from = lo;
        while out.len() < n {
            let Some(i) = self.blocked.first_gap(from, hi) else { break };
            out.push(from_index(self.family, i));
            match i.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        out
    }

    /// The lowest free address at or above `address`.
    pub fn free_at_or_above(&self, address: u128) -> Option<u128> {
        let (lo, hi) = self.span?;
        let from = crate::addr::index_span(self.family, address, self.family.max())?.0.max(lo);
        self.blocked.first_gap(from, hi).map(|i| from_index(self.family, i))
    }

    /// The highest free address at or below `address`.
    pub fn free_at_or_below(&self, address: u128) -> Option<u128> {
        let (lo, hi) = self.span?;
        let to = crate::addr::index_span(self.family, 0, address)?.1.min(hi);
        self.blocked.last_gap(lo, to).map(|i| from_index(self.family, i))
    }

    /// Whether `address` could be handed out now, and if not, why.
    pub fn check(&self, address: u128) -> Result<(), Unavailable> {
        let index = to_index(self.family, address).ok_or(Unavailable::Reserved)?;
        let (lo, hi) = self.span.ok_or(Unavailable::Reserved)?;
        if index < lo || index > hi {
            return Err(Unavailable::Reserved);
        }
        if self.excluded.contains(index) {
            return Err(Unavailable::Excluded);
        }
        if self.blocked.contains(index) {
            return Err(Unavailable::Allocated);
        }
        Ok(())
    }

    /// Marks `address` allocated; false if it was not free.
    pub fn claim(&mut self, address: u128) -> bool {
        if self.check(address).is_err() {
            return false;
        }
        let index = to_index(self.family, address).expect("checked");
        self.blocked.insert(index, index);
        self.allocated += 1;
        true
    }

    /// Frees an allocated `address`; false if it was not allocated.
    pub fn release(&mut self, address: u128) -> bool {
        if self.check(address) != Err(Unavailable::Allocated) {
            return false;
        }
        let index = to_index(self.family, address).expect("checked");
        self.blocked.remove_point(index);
        self.allocated -= 1;
        true
    }

    /// Counts in `[first, last]` (addresses): (free, allocated, excluded, reserved).
    pub fn census(&self, first: u128, last: u128) -> (u128, u128, u128, u128) {
        let total = (last - first).saturating_add(1);
        let Some((lo, hi)) = self.span else { return (0, 0, 0, total) };
        let Some((a, b)) = crate::addr::index_span(self.family, first, last) else {
            return (0, 0, 0, total);
        };
        let (a, b) = (a.max(lo), b.min(hi));
        if a > b {
            return (0, 0, 0, total);
        }
        let allocatable = b - a + 1;
        let excluded = self.excluded.count_within(a, b);
        let allocated = self.blocked.count_within(a, b) - excluded;
        (allocatable - excluded - allocated, allocated, excluded, total - allocatable)
    }
}
