//! A set of `u128` points stored as disjoint, non-adjacent inclusive intervals.
//!
//! Adjacent intervals are always merged, so the point after any interval's end is free: the
//! lowest free point at or after `x` is one ordered-map lookup, O(log n) in the number of
//! intervals, whatever the size of the space.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalSet {
    /// start → end (inclusive)
    runs: BTreeMap<u128, u128>,
    /// Points covered, saturating (only the whole u128 space would overflow).
    points: u128,
}

fn width(start: u128, end: u128) -> u128 {
    (end - start).saturating_add(1)
}

impl IntervalSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of points covered.
    pub fn count(&self) -> u128 {
        self.points
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(&s, &e)| (s, e))
    }

    /// The interval covering `point`, if any.
    pub fn covering(&self, point: u128) -> Option<(u128, u128)> {
        let (&start, &end) = self.runs.range(..=point).next_back()?;
        (end >= point).then_some((start, end))
    }

    pub fn contains(&self, point: u128) -> bool {
        self.covering(point).is_some()
    }

    /// Adds `[start, end]`, merging with overlapping and adjacent intervals.
    pub fn insert(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        let (mut start, mut end) = (start, end);
        if let Some((&s, &e)) = self.runs.range(..=start).next_back()
            && e.checked_add(1).is_none_or(|next| next >= start)
        {
            if e >= end && s <= start {
                return; // already covered
            }
            self.runs.remove(&s);
            self.points -= width(s, e);
            start = s;
            end = end.max(e);
        }
        while let Some((&s, &e)) =
            self.runs.range((Excluded(start), Included(end.saturating_add(1)))).next()
        {
            self.runs.remove(&s);
            self.points -= width(s, e);
            end = end.max(e);
        }
        self.runs.insert(start, end);
        self.points = self.points.saturating_add(width(start, end));
    }

    /// Removes one point; returns whether it was covered.
    pub fn remove_point(&mut self, point: u128) -> bool {
        let Some((start, end)) = self.covering(point) else { return false };
        self.runs.remove(&start);
        if start < point {
            self.runs.insert(start, point - 1);
        }
        if point < end {
            self.runs.insert(point + 1, end);
        }
        self.points -= 1;
        true
    }

    /// The lowest point in `[from, last]` not covered, if any.
    pub fn first_gap(&self, from: u128, last: u128) -> Option<u128> {
        if from > last {
            return None;
        }
        match self.covering(from) {
            None => Some(from),
            // Intervals are never adjacent, so the point after this one is free.
            Some((_, end)) => end.checked_add(1).filter(|&next| next <= last),
        }
    }

    /// The highest point in `[first, from]` not covered, if any.
    pub fn last_gap(&self, first: u128, from: u128) -> Option<u128> {
        if first > from {
            return None;
        }
        match self.covering(from) {
            None => Some(from),
            Some((start, _)) => start.checked_sub(1).filter(|&before| before >= first),
        }
    }

    /// How many points of `[first, last]` are covered.
    pub fn count_within(&self, first: u128, last: u128) -> u128 {
        if first > last {
            return 0;
        }
        let mut total: u128 = 0;
        if let Some((start, end)) = self.covering(first) {
            total = width(start.max(first), end.min(last));
        }
        if first < last {
            for (&s, &e) in self.runs.range((Excluded(first), Included(last))) {
                total = total.saturating_add(width(s, e.min(last)));
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(runs: &[(u128, u128)]) -> IntervalSet {
        let mut s = IntervalSet::new();
        for &(a, b) in runs {
            s.insert(a, b);
        }
        s
    }

    #[test]
    fn inserts_merge_overlapping_and_adjacent_runs() {
        let s = set(&[(10, 20), (21, 25), (5, 9), (30, 40), (35, 50)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(5, 25), (30, 50)]);
        assert_eq!(s.count(), 21 + 21);
        let s = set(&[(1, 1), (3, 3), (2, 2)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 3)]);
        let s = set(&[(0, 5), (2, 3)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 5)]);
        let s = set(&[(5, 6), (0, 100)]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 100)]);
        assert_eq!(s.count(), 101);
    }

    #[test]
    fn first_gap_jumps_whole_runs() {
        let s = set(&[(1, 100), (102, 200)]);
        assert_eq!(s.first_gap(1, 300), Some(101));
        assert_eq!(s.first_gap(102, 300), Some(201));
        assert_eq!(s.first_gap(102, 200), None);
        assert_eq!(s.first_gap(0, 300), Some(0));
        assert_eq!(set(&[(0, u128::MAX - 1)]).first_gap(0, u128::MAX), Some(u128::MAX));
        assert_eq!(s.last_gap(0, 150), Some(101));
        assert_eq!(s.last_gap(102, 150), None);
        assert_eq!(s.last_gap(0, 300), Some(300));
        assert_eq!(set(&[(0, 10)]).last_gap(0, 5), None);
    }

    #[test]
    fn remove_point_splits_a_run() {
        let mut s = set(&[(1, 10)]);
        assert!(s.remove_point(5));
        assert!(!s.remove_point(5));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 4), (6, 10)]);
        assert_eq!(s.count(), 9);
        assert_eq!(s.first_gap(1, 10), Some(5));
    }

    #[test]
    fn count_within_clips_to_the_window() {
        let s = set(&[(1, 10), (20, 30)]);
        assert_eq!(s.count_within(5, 25), 6 + 6);
        assert_eq!(s.count_within(11, 19), 0);
        assert_eq!(s.count_within(10, 10), 1);
        assert_eq!(s.count_within(0, 100), 21);
    }
}
