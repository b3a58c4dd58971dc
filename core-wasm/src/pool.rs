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
        let mut pool = Pool { family, span, blocked: excluded.clone(), excluded, allocated: 0 };
        let mut indices: Vec<u128> = used
            .into_iter()
            .filter_map(|address| to_index(family, address))
            .filter(|&i| span.is_some_and(|(lo, hi)| i >= lo && i <= hi))
            .collect();
        indices.sort_unstable();
        indices.dedup();
        // Insert runs of consecutive indices at once: a packed pool is a handful of runs.
        let mut runs = indices.into_iter().filter(|&i| !pool.excluded.contains(i)).peekable();
        while let Some(start) = runs.next() {
            let mut end = start;
            while runs.peek() == Some(&(end + 1)) {
                end = runs.next().unwrap();
            }
            pool.blocked.insert(start, end);
            pool.allocated += end - start + 1;
        }
        pool
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
