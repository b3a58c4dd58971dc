//! The one-time import of the earlier file store, so a node keeps its allocations when the
//! plugin is upgraded.
//!
//! That store kept one JSON file per pool, `pools/<name>.json`:
//! `{"version": 7, "range": "10.0.0.0/24", "network_name": "", "allocations": {"1": {"id":
//! "<container id>", "ifname": "eth0", "podref": "ns/pod"}}}`, and one per network,
//! `reservations/<network>.json`: `{"version": 3, "network_name": "blue", "reservations":
//! {"10.0.0.5": {…the same holder…}}}`. File names are the pool or network name with bytes
//! outside `[A-Za-z0-9.-]` (and a leading dot) %-escaped, `_` for the empty name. Files were
//! padded with spaces to whole 4 KiB blocks, and `.<name>.json.tmp` beside them is a previous
//! version (never read).
//!
//! The import runs inside the transaction that creates the database, so of two processes
//! starting at once exactly one imports, and a process killed halfway leaves no database
//! behind that the next one would take as complete. Imported pools get no summary (NULL): the
//! next read returns the whole pool and the core writes a summary with its next commit.
//! Owners get no CNI network ("": unknown, as for Whereabouts' allocations). The JSON files
//! are kept as they are. A file that does not parse stops the import and with it the store
//! (CNI 5, naming the file): nothing is imported partly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hereabouts_host::bindings::StoreError;
use rusqlite::{Transaction, params};
use serde::Deserialize;

/// A holder in the earlier files: Whereabouts' JSON keys.
#[derive(Debug, Deserialize)]
struct Holder {
    id: String,
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    podref: String,
}

#[derive(Debug, Deserialize)]
struct PoolFile {
    version: u64,
    range: String,
    #[serde(default)]
    network_name: String,
    allocations: BTreeMap<String, Holder>,
}

#[derive(Debug, Deserialize)]
struct ReservationFile {
    reservations: BTreeMap<String, Holder>,
}

/// What was imported (recorded in the `meta` table as [`Imported::describe`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub pools: usize,
    pub allocations: usize,
    pub reservations: usize,
}

impl Imported {
    pub fn describe(&self) -> String {
        if *self == Imported::default() {
            return "nothing to import".into();
        }
        format!(
            "imported {} pools ({} allocations) and {} reservations from JSON files (kept)",
            self.pools, self.allocations, self.reservations
        )
    }
}

#[derive(Debug)]
pub enum ImportError {
    /// SQLite failed while inserting.
    Store(rusqlite::Error),
    /// A file could not be read or parsed, named in the error.
    File(StoreError),
}

impl From<rusqlite::Error> for ImportError {
    fn from(e: rusqlite::Error) -> Self {
        ImportError::Store(e)
    }
}

/// Imports `dir/pools/*.json` and `dir/reservations/*.json` in `tx`.
pub fn import(tx: &Transaction<'_>, dir: &Path) -> Result<Imported, ImportError> {
    let mut imported = Imported::default();
    for (path, name) in json_files(&dir.join("pools"))? {
        let file: PoolFile = parse(&path)?;
        tx.execute(
            "INSERT INTO pools (name, range, network_name, version, summary)
             VALUES (?1, ?2, ?3, ?4, NULL)",
            params![name, file.range, file.network_name, file.version as i64],
        )?;
        let mut insert = tx.prepare(
            "INSERT INTO allocations (pool, offset, container_id, ifname, podref, cni_network)
             VALUES (?1, ?2, ?3, ?4, ?5, '')",
        )?;
        for (offset, h) in &file.allocations {
            insert.execute(params![name, offset, h.id, h.ifname, h.podref])?;
        }
        imported.pools += 1;
        imported.allocations += file.allocations.len();
    }
    for (path, network) in json_files(&dir.join("reservations"))? {
        let file: ReservationFile = parse(&path)?;
        let mut insert = tx.prepare(
            "INSERT INTO reservations
                 (network_name, address, container_id, ifname, podref, cni_network)
             VALUES (?1, ?2, ?3, ?4, ?5, '')",
        )?;
        for (address, h) in &file.reservations {
            insert.execute(params![network, address, h.id, h.ifname, h.podref])?;
        }
        imported.reservations += file.reservations.len();
    }
    Ok(imported)
}

/// The `*.json` files of `dir` (none when it does not exist), sorted, each with the name it
/// stands for. Dot files are a killed writer's leftovers or a previous version: skipped.
fn json_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, ImportError> {
    let cannot = |e: std::io::Error| {
        ImportError::File(StoreError::Failed(format!(
            "{}: cannot read the earlier JSON store: {e}",
            dir.display()
        )))
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(cannot(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(cannot)?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = file_name.strip_suffix(".json") else { continue };
        if file_name.starts_with('.') {
            continue;
        }
        let name = decode_stem(stem).ok_or_else(|| {
            ImportError::File(StoreError::Corrupt(format!(
                "{}: not a file name of the earlier JSON store; nothing imported, left untouched",
                path.display()
            )))
        })?;
        files.push((path, name));
    }
    files.sort();
    Ok(files)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ImportError::File(StoreError::Failed(format!("{}: cannot read: {e}", path.display())))
    })?;
    // serde_json takes the space padding after the value as the whitespace it is.
    serde_json::from_slice(&bytes).map_err(|e| {
        ImportError::File(StoreError::Corrupt(format!(
            "{}: not a valid file of the earlier JSON store ({e}); nothing imported, left \
             untouched",
            path.display()
        )))
    })
}

/// The name a file stem stands for (the earlier store's escaping undone); None when the stem
/// is not one that store wrote.
pub fn decode_stem(stem: &str) -> Option<String> {
    if stem == "_" {
        return Some(String::new());
    }
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            byte if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.' => {
                out.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::decode_stem;

    #[test]
    fn file_stems_decode_to_the_names_the_earlier_store_escaped() {
        assert_eq!(decode_stem("10.0.0.0-24").as_deref(), Some("10.0.0.0-24"));
        assert_eq!(decode_stem("blue-fd00--64").as_deref(), Some("blue-fd00--64"));
        assert_eq!(decode_stem("_").as_deref(), Some(""));
        assert_eq!(decode_stem("%5F").as_deref(), Some("_"));
        assert_eq!(decode_stem("%2E.%2Fetc").as_deref(), Some("../etc"));
        assert_eq!(decode_stem("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(decode_stem("a b"), None);
        assert_eq!(decode_stem("a%2"), None);
    }
}
