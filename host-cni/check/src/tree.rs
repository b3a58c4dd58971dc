//! Positions in a config file, and the paths that lead to them.
//!
//! Findings name a field the way users write it (`ipRanges[1].exclude[2]`); a [`PosNode`] tree,
//! built beside the parsed value, turns that path back into the line and column it came from.

use std::fmt;

/// A place in a file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Spot {
    pub line: usize,
    pub col: usize,
}

impl Spot {
    pub fn new(line: usize, col: usize) -> Self {
        Self { line: line.max(1), col: col.max(1) }
    }
}

/// One step of a path into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Parses a field path as the core writes it: `range`, `ipRanges[1].exclude[2]`.
pub fn parse_path(field: &str) -> Vec<Seg> {
    let mut path = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            path.push(Seg::Key(key.to_string()));
        }
        while let (true, Some(close)) = (rest.starts_with('['), rest.find(']')) {
            match rest[1..close].parse() {
                Ok(index) => path.push(Seg::Index(index)),
                Err(_) => path.push(Seg::Key(rest[1..close].to_string())),
            }
            rest = &rest[close + 1..];
        }
    }
    path
}

/// Writes a path back in the users' notation.
pub struct PathDisplay<'a>(pub &'a [Seg]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => write!(f, "{key}")?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where a value starts, and where its children start.
#[derive(Debug, Clone)]
pub struct PosNode {
    pub spot: Spot,
    pub kids: Kids,
}

#[derive(Debug, Clone)]
pub enum Kids {
    Leaf,
    Array(Vec<PosNode>),
    /// Key, where the key starts, the value. Source order; duplicates kept (the last wins,
    /// as in serde_json).
    Object(Vec<(String, Spot, PosNode)>),
}

impl PosNode {
    pub fn leaf(spot: Spot) -> Self {
        Self { spot, kids: Kids::Leaf }
    }

    pub fn child(&self, seg: &Seg) -> Option<&PosNode> {
        match (&self.kids, seg) {
            (Kids::Object(entries), Seg::Key(key)) => {
                entries.iter().rev().find(|(k, _, _)| k == key).map(|(_, _, v)| v)
            }
            (Kids::Array(items), Seg::Index(index)) => items.get(*index),
            _ => None,
        }
    }

    /// The node at `path`, or the deepest one on the way there when the path leaves the tree
    /// (a finding about a missing key points at the object that lacks it).
    pub fn deepest(&self, path: &[Seg]) -> &PosNode {
        let mut node = self;
        for seg in path {
            match node.child(seg) {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    pub fn get(&self, path: &[Seg]) -> Option<&PosNode> {
        path.iter().try_fold(self, |node, seg| node.child(seg))
    }
}

/// The value at `path` in a JSON value, if there is one.
pub fn value_at<'a>(value: &'a serde_json::Value, path: &[Seg]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(value, |value, seg| match seg {
        Seg::Key(key) => value.get(key.as_str()),
        Seg::Index(index) => value.get(*index),
    })
}
