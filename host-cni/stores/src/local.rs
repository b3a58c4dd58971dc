//! The embedded local store: a directory on the node (default `/var/lib/cni/hereabouts`),
//! shared by every plugin process — the default store, needing no cluster service.
//!
//! Every CNI call is a fresh, short-lived process that may be killed at any instant, so the
//! store's whole job is that each write is atomic and conditional:
//!
//! - one file per pool (`pools/<pool name>.json`, shaped like Whereabouts' IPPool spec) and one
//!   per network for overlapping-range reservations (`reservations/<network>.json`);
//! - every write takes an exclusive `flock` on `<dir>/lock`, re-reads the file, checks the
//!   version the caller read (a counter kept in the file), writes a temporary file, fsyncs it
//!   and renames it over the old one. A process killed at any point leaves the old file or the
//!   new one, never a torn one; the kernel drops its lock with it. The fsync makes the same
//!   hold across a power loss (no empty or half-written file after reboot). The directory is
//!   deliberately not fsynced: that would only make the last rename itself survive a power
//!   loss, which the node's containers do not survive either (their allocations are garbage
//!   after a reboot, freed by GC/DEL), and on a busy disk it doubled ADD's latency.
//! - the fsync is the plugin's main cost, so it is made cheap: the "rename" swaps the two
//!   names (`RENAME_EXCHANGE`), the old version's file becomes the next temporary file, and
//!   files are padded with spaces to whole 4 KiB blocks (valid JSON). A write then overwrites
//!   blocks that already exist in a file whose size does not change, and fsync flushes just
//!   those blocks instead of waiting for a journal commit of a new file.
//! - reads take a shared lock: the file a reader opened may be the next write's temporary.
//!
//! A file that does not parse is reported as corrupt, naming the file; it is never reset,
//! because resetting would hand out addresses that running containers still hold.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hereabouts_host::Backend;
use hereabouts_host::bindings::{Owner, PoolEdit, PoolRef, PoolSnapshot, Slot, StoreError};
pub use hereabouts_host::config::DEFAULT_DATA_DIR;
use serde::{Deserialize, Serialize};

/// Who holds a slot or a reservation, with Whereabouts' JSON keys (`id`, `ifname`, `podref`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    id: String,
    ifname: String,
    #[serde(default)]
    podref: String,
}

impl Holder {
    fn of(owner: &Owner) -> Self {
        Self {
            id: owner.container_id.clone(),
            ifname: owner.ifname.clone(),
            podref: owner.podref.clone(),
        }
    }
    fn owner(&self) -> Owner {
        Owner {
            container_id: self.id.clone(),
            ifname: self.ifname.clone(),
            podref: self.podref.clone(),
        }
    }
    /// Whereabouts keys an allocation by container id and interface name; podref is data.
    fn is(&self, owner: &Owner) -> bool {
        self.id == owner.container_id && self.ifname == owner.ifname
    }
}

/// `pools/<name>.json`: Whereabouts' IPPool spec plus our version counter.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PoolFile {
    version: u64,
    range: String,
    #[serde(default)]
    network_name: String,
    /// Decimal offset from the range's network address → holder.
    allocations: BTreeMap<String, Holder>,
}

/// `reservations/<network>.json`: one entry per address reserved in the network.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ReservationFile {
    version: u64,
    #[serde(default)]
    network_name: String,
    reservations: BTreeMap<String, Holder>,
}

/// The local store of one data directory.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    /// `<dir>/lock`, flocked around every read-modify-write.
    lock: File,
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`. Fails with the path and the reason when
    /// the directory cannot be created or written.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for sub in ["pools", "reservations"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| failed("data_dir: cannot create", &path, &e))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| failed("data_dir: cannot open", &lock_path, &e))?;
        Ok(Self { dir: dir.to_path_buf(), lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding a pool.
    pub fn pool_path(&self, pool_name: &str) -> PathBuf {
        self.dir.join("pools").join(format!("{}.json", file_stem(pool_name)))
    }

    /// The file holding a network's reservations.
    pub fn reservations_path(&self, network_name: &str) -> PathBuf {
        self.dir.join("reservations").join(format!("{}.json", file_stem(network_name)))
    }

    /// Runs `f` holding the store's exclusive lock.
    fn locked<T>(
        &mut self,
        f: impl FnOnce(&Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.lock.lock().map_err(|e| failed("cannot lock", &self.dir.join("lock"), &e))?;
        let result = f(self);
        // Closing the descriptor would release it too; unlock now so other processes proceed.
        let _ = self.lock.unlock();
        result
    }

    fn read_pool_file(&self, pool: &PoolRef) -> Result<Option<PoolFile>, StoreError> {
        let path = self.pool_path(&pool.name);
        let Some(file) = read_json::<PoolFile>(&path)? else { return Ok(None) };
        if file.range != pool.range {
            return Err(StoreError::Corrupt(format!(
                "{}: holds range {:?}, expected {:?} for pool {:?}",
                path.display(),
                file.range,
                pool.range,
                pool.name
            )));
        }
        Ok(Some(file))
    }
}

impl Backend for LocalStore {
    fn read_pool(&mut self, pool: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        self.lock.lock_shared().map_err(|e| failed("cannot lock", &self.dir.join("lock"), &e))?;
        let file = self.read_pool_file(pool);
        let _ = self.lock.unlock();
        Ok(match file? {
            None => PoolSnapshot { version: String::new(), slots: Vec::new() },
            Some(file) => PoolSnapshot {
                version: file.version.to_string(),
                slots: file
                    .allocations
                    .into_iter()
                    .map(|(offset, holder)| Slot { offset, owner: holder.owner() })
                    .collect(),
            },
        })
    }

    fn write_pool(
        &mut self,
        pool: &PoolRef,
        version: &str,
        edits: &[PoolEdit],
    ) -> Result<(), StoreError> {
        self.locked(|store| {
            let current = store.read_pool_file(pool)?;
            let current_version =
                current.as_ref().map(|f| f.version.to_string()).unwrap_or_default();
            if current_version != version {
                return Err(StoreError::Conflict);
            }
            let mut file = current.unwrap_or_else(|| PoolFile {
                version: 0,
                range: pool.range.clone(),
                network_name: pool.network_name.clone(),
                allocations: BTreeMap::new(),
            });
            for edit in edits {
                match edit {
                    PoolEdit::Claim(slot) => {
                        file.allocations.insert(slot.offset.clone(), Holder::of(&slot.owner));
                    }
                    PoolEdit::Free(offset) => {
                        file.allocations.remove(offset);
                    }
                }
            }
            file.version += 1;
            write_json(&store.pool_path(&pool.name), &file)
        })
    }

    fn reserve_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        self.locked(|store| {
            let path = store.reservations_path(network_name);
            let mut file = read_json::<ReservationFile>(&path)?.unwrap_or_else(|| {
                ReservationFile { network_name: network_name.to_string(), ..Default::default() }
            });
            match file.reservations.get(address) {
                Some(holder) if !holder.is(owner) => return Ok(Some(holder.owner())),
                Some(holder) if *holder == Holder::of(owner) => return Ok(None),
                _ => {}
            }
            file.reservations.insert(address.to_string(), Holder::of(owner));
            file.version += 1;
            write_json(&path, &file)?;
            Ok(None)
        })
    }

    fn release_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<(), StoreError> {
        self.locked(|store| {
            let path = store.reservations_path(network_name);
            let Some(mut file) = read_json::<ReservationFile>(&path)? else { return Ok(()) };
            if !file.reservations.get(address).is_some_and(|holder| holder.is(owner)) {
                return Ok(());
            }
            file.reservations.remove(address);
            file.version += 1;
            write_json(&path, &file)
        })
    }
}

/// A file name for a pool or network name: names come from configs, so anything outside
/// `[A-Za-z0-9.-]` (and a leading dot) is %-escaped; the empty name (Whereabouts' unnamed
/// network) becomes `_`, which no escaped name can be.
fn file_stem(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(name.len());
    for (i, byte) in name.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || (byte == b'.' && i > 0) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn failed(what: &str, path: &Path, error: &io::Error) -> StoreError {
    StoreError::Failed(format!("{what} {}: {error}", path.display()))
}

/// Reads and parses a store file; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed("cannot read", path, &e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        StoreError::Corrupt(format!(
            "{}: not a valid store file ({e}); left untouched",
            path.display()
        ))
    })
}

/// Files are padded to whole blocks of this size (see the module doc).
const BLOCK: usize = 4096;

/// Replaces `path` atomically: temp file, fsync, rename (see the module doc for why the
/// directory is not fsynced and why the rename is an exchange). The temp name is fixed per
/// target: only the lock holder writes, so a leftover from a killed writer is overwritten.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec(value).expect("store files are plain data");
    bytes.push(b'\n');
    bytes.resize(bytes.len().div_ceil(BLOCK) * BLOCK, b' ');
    let dir = path.parent().expect("store files live in a directory");
    let tmp = dir.join(format!(".{}.tmp", path.file_name().expect("named").to_string_lossy()));
    let write = || -> io::Result<()> {
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&tmp)?;
        file.write_all_at(&bytes, 0)?;
        if file.metadata()?.len() != bytes.len() as u64 {
            file.set_len(bytes.len() as u64)?;
        }
        file.sync_data()?;
        drop(file);
        exchange(&tmp, path)
    };
    write().map_err(|e| failed("cannot write", path, &e))
}

/// Swaps the names `tmp` and `path` atomically (Linux `renameat2(RENAME_EXCHANGE)`), so the
/// old version's file becomes the next temporary one. When `path` does not exist yet, or the
/// filesystem cannot exchange, a plain rename (a new file per write) does the same job.
/// (rustix makes the system call itself, so this works on musl too, which has no wrapper.)
fn exchange(tmp: &Path, path: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT | Errno::INVAL) => fs::rename(tmp, path),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_and_unambiguous() {
        assert_eq!(file_stem("10.0.0.0-24"), "10.0.0.0-24");
        assert_eq!(file_stem("blue-fd00--64"), "blue-fd00--64");
        assert_eq!(file_stem(""), "_");
        assert_eq!(file_stem("_"), "%5F");
        assert_eq!(file_stem("../etc"), "%2E.%2Fetc");
        assert_eq!(file_stem("a/b"), "a%2Fb");
    }
}
