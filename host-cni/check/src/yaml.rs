//! YAML with positions, for Kubernetes manifests: a small tree built from the events of
//! `granit-parser` — a YAML 1.2 parser in safe Rust that reports a span for every event, is
//! fuzzed and panic-free, and is already in our tree (serde-saphyr is built on it), so `check`
//! adds no YAML stack of its own.
//!
//! Only what `check` needs: scalars as strings, sequences, mappings with scalar keys, and
//! where each node starts. Aliases are not expanded (a NAD has no use for them, and not
//! expanding them keeps a hostile file from growing without bound).

use granit_parser::{Event, Parser, ScalarStyle};

use super::tree::Spot;

#[derive(Debug, Clone)]
pub struct YNode {
    pub spot: Spot,
    pub value: YValue,
}

#[derive(Debug, Clone)]
pub enum YValue {
    Scalar(String, ScalarStyle),
    Seq(Vec<YNode>),
    Map(Vec<(YNode, YNode)>),
    Alias,
}

impl YNode {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&YNode> {
        match &self.value {
            YValue::Map(entries) => {
                entries.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            YValue::Scalar(text, _) => Some(text),
            _ => None,
        }
    }

    pub fn items(&self) -> &[YNode] {
        match &self.value {
            YValue::Seq(items) => items,
            _ => &[],
        }
    }
}

/// Malformed YAML: where the parser stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub spot: Spot,
    pub message: String,
}

enum Frame {
    Seq(Spot, Vec<YNode>),
    Map(Spot, Vec<(YNode, YNode)>, Option<YNode>),
}

/// Every document of a stream. On malformed input, the documents completed before the error
/// and the error itself.
pub fn parse_documents(text: &str) -> (Vec<YNode>, Option<YamlError>) {
    let mut parser = Parser::new_from_str(text);
    let mut documents = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            Ok(pair) => pair,
            Err(e) => {
                let mark = e.marker();
                let error =
                    YamlError { spot: Spot::new(mark.line(), mark.col() + 1), message: e.info() };
                return (documents, Some(error));
            }
        };
        let spot = Spot::new(span.start.line(), span.start.col() + 1);
        let done = match event {
            Event::Scalar(text, style, _, _) => {
                YNode { spot, value: YValue::Scalar(text.into_owned(), style) }
            }
            Event::Alias(_) => YNode { spot, value: YValue::Alias },
            Event::SequenceStart(..) => {
                stack.push(Frame::Seq(spot, Vec::new()));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Frame::Map(spot, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(spot, items)) => YNode { spot, value: YValue::Seq(items) },
                Some(Frame::Map(spot, entries, _)) => YNode { spot, value: YValue::Map(entries) },
                None => continue,
            },
            _ => continue,
        };
        match stack.last_mut() {
            None => documents.push(done),
            Some(Frame::Seq(_, items)) => items.push(done),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => *pending = Some(done),
                Some(key) => entries.push((key, done)),
            },
        }
    }
    (documents, None)
}
