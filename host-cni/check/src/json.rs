//! JSON with positions. serde_json decides what is valid and what the values are; a small
//! scanner then walks the (already valid) text once more and records where every value and
//! key starts, so a finding about `ipRanges[0].exclude[1]` can name its line.

use serde_json::Value;

use super::tree::{Kids, PosNode, Spot};

/// Malformed JSON: where, and what serde_json said (without its own "at line …" suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub spot: Spot,
    pub message: String,
}

/// Parses `text` into its value and position tree.
pub fn parse(text: &str) -> Result<(Value, PosNode), JsonError> {
    let value: Value = serde_json::from_str(text).map_err(|e| JsonError {
        spot: Spot::new(e.line(), e.column()),
        message: strip_position(&e.to_string()),
    })?;
    let mut scanner = Scanner { text, at: 0, spot: Spot::new(1, 1) };
    scanner.skip_ws();
    // The text is valid JSON, so the scanner cannot fail; should it ever, positions degrade to
    // the start of the text rather than the check failing.
    let tree = scanner.value().unwrap_or_else(|| PosNode::leaf(Spot::new(1, 1)));
    Ok((value, tree))
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
    spot: Spot,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn bump(&mut self) {
        let Some(byte) = self.peek() else { return };
        self.at += 1;
        if byte == b'\n' {
            self.spot = Spot::new(self.spot.line + 1, 1);
        } else if byte & 0xC0 != 0x80 {
            // Count characters, not bytes: continuation bytes do not move the column.
            self.spot.col += 1;
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.bump())
    }

    fn value(&mut self) -> Option<PosNode> {
        let spot = self.spot;
        match self.peek()? {
            b'{' => {
                self.bump();
                let mut entries = Vec::new();
                self.skip_ws();
                if self.eat(b'}').is_none() {
                    loop {
                        self.skip_ws();
                        let key_spot = self.spot;
                        let key = self.string()?;
                        self.skip_ws();
                        self.eat(b':')?;
                        self.skip_ws();
                        let value = self.value()?;
                        entries.push((key, key_spot, value));
                        self.skip_ws();
                        if self.eat(b',').is_none() {
                            self.eat(b'}')?;
                            break;
                        }
                    }
                }
                Some(PosNode { spot, kids: Kids::Object(entries) })
            }
            b'[' => {
                self.bump();
                let mut items = Vec::new();
                self.skip_ws();
                if self.eat(b']').is_none() {
                    loop {
                        self.skip_ws();
                        items.push(self.value()?);
                        self.skip_ws();
                        if self.eat(b',').is_none() {
                            self.eat(b']')?;
                            break;
                        }
                    }
                }
                Some(PosNode { spot, kids: Kids::Array(items) })
            }
            b'"' => {
                self.string()?;
                Some(PosNode::leaf(spot))
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.bump();
                }
                Some(PosNode::leaf(spot))
            }
        }
    }

    /// A string literal, unescaped.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                b'"' => {
                    self.bump();
                    break;
                }
                _ => self.bump(),
            }
        }
        let raw = self.text.get(start..self.at)?;
        if raw.contains('\\') {
            serde_json::from_str(raw).ok()
        } else {
            Some(raw[1..raw.len() - 1].to_string())
        }
    }
}
