//! The embedded store: one SQLite database on the node (`<data_dir>/store.sqlite`, default
//! data_dir `/var/lib/cni/hereabouts`), shared by every plugin process there. It is the
//! default store and needs no cluster service (`"datastore": "local"`, or no store keys).
//!
//! Every CNI call is a fresh, short-lived process that may be killed at any instant, so the
//! store's whole job is that each `commit` is atomic and conditional. SQLite gives exactly
//! that: one commit is one transaction (`BEGIN IMMEDIATE`) that compares the pool's version,
//! refuses a claimed offset that is taken (`occupied`) and a reservation held by someone else
//! (`reserved`), applies the edits, replaces the core's summary and bumps the version — or
//! does nothing at all. Reads run in a read transaction, so they see one commit or the next,
//! never half of one, and (in WAL mode) never wait for a writer.
//!
//! Durability, deliberately chosen: WAL with `synchronous = NORMAL`.
//! - A process killed at any instant never loses an acknowledged change: a commit returns only
//!   after its pages were written to the WAL file (the kernel's page cache holds them from
//!   then on, whatever becomes of the process), and a transaction cut short by a kill is not
//!   in the WAL's committed part, so the next process rolls it back. The kill test
//!   (host-cni/tests/store_kill.rs) checks this through the real binary.
//! - A power cut never leaves the store unreadable: WAL frames are checksummed and the WAL is
//!   fsynced before each checkpoint copies it into the database, so after a reboot SQLite
//!   replays the whole transactions it finds and drops the rest. What a power cut may lose
//!   are the last commits since the WAL was last synced; the node's containers do not survive
//!   a power cut either, so those allocations belonged to containers that are gone (their
//!   runtime sets them up again with new ADDs). `FULL` would fsync the WAL on every commit to
//!   keep them too; docs/benchmarks.md has what that costs per ADD. For measuring it,
//!   `HEREABOUTS_SQLITE_SYNCHRONOUS=full` in the plugin's environment selects it.
//!
//! Waiting: writers queue on SQLite's write lock with a busy timeout of [`BUSY_TIMEOUT`] (5 s).
//! A transaction holds the lock for one pool read and at most 32 edits (well under 10 ms even
//! with a checkpoint's fsync on a slow disk), so 5 s is hundreds of writers ahead of us; past
//! that the node is overloaded and the plugin answers "try again later" (CNI 11) well inside
//! a runtime's budget for a CNI call (kubelet's CRI calls allow minutes), and as soon as etcd's
//! default request timeout (also 5 s) would. A lost compare is never a wait: the commit
//! answers `stale` with the fresh view and the core decides again.
//!
//! Tables (see [`SCHEMA`]): `pools` (name, range, network_name, version, summary), and
//! `allocations` keyed as Whereabouts keys them (pool, decimal offset) with the owner (container
//! id, ifname, podref, CNI network), indexed by attachment (pool, container id, ifname) and by
//! pod interface (pool, podref, ifname), so `read-pool` returns the query's slots without
//! reading the rest of the pool; `reservations` (network_name, address) → holder; `meta`.
//!
//! A database that is not ours (another `application_id`, or tables without ours), one written
//! by a newer schema, or one SQLite reports corrupt (SQLITE_CORRUPT, SQLITE_NOTADB, at any
//! point) is [`StoreError::Corrupt`] (CNI 5) naming the file. Nothing is ever reset: resetting
//! would hand out addresses that running containers hold. `hereabouts store check` runs
//! SQLite's integrity check on it.
//!
//! A data directory of the earlier file store (`pools/*.json`, `reservations/*.json`) is
//! imported once, in the transaction that creates the database (see [`json_import`]); its
//! files are left in place.

pub mod dump;
pub mod json_import;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    CommitOutcome, Owner, PoolChange, PoolEdit, PoolListing, PoolRef, PoolView, Reown, Reservation,
    ReservationEdit, Slot, StoreError,
};
pub use hereabouts_host::config::DEFAULT_DATA_DIR;
use rusqlite::config::DbConfig;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

/// The database's file name inside the data directory.
pub const DATABASE_FILE: &str = "store.sqlite";

/// `PRAGMA application_id` of a Hereabouts store: "Hrab" (the SQLite file header's bytes
/// 68–71), so `file(1)` and we ourselves can tell our database from any other.
pub const APPLICATION_ID: i32 = 0x4872_6162;

/// `PRAGMA user_version`: the schema below. A newer one is refused, never downgraded.
pub const SCHEMA_VERSION: i32 = 1;

/// The WAL is copied into the database and truncated (a checkpoint: two fsyncs) by the first
/// commit that finds it holding this many pages, not when a connection closes.
///
/// Why: a CNI process is nearly always the last connection to close, and SQLite's default
/// (checkpoint, then delete the WAL, at the last close) cost every ADD four fsyncs: the new
/// WAL's header and its directory, the WAL and the database. Keeping the WAL has a price too:
/// the first process to open the store after every other closed rebuilds the WAL's index by
/// reading and checksumming the whole WAL, and it cannot know how much of it was copied
/// already, so SQLite's own auto-checkpoint, once the WAL passed its mark, would copy the
/// whole WAL again at every commit and never start it over. Hence a `TRUNCATE` checkpoint of
/// our own: the WAL starts from zero bytes after each, and stays under this many pages for the
/// next process to read. An ADD writes about 3 to 5 pages.
pub const CHECKPOINT_PAGES: u64 = 64;

/// How long the checkpoint after a commit waits for other processes' reads to finish; past
/// it the checkpoint is left to a later commit (the commit itself is done and durable).
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// How long a writer waits for SQLite's write lock (see the module doc).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, created in the first write transaction on a new database.
pub const SCHEMA: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    range TEXT NOT NULL,
    network_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- The core's summary of the used space; NULL until a commit brings one (imported pools).
    summary TEXT
) WITHOUT ROWID;
CREATE TABLE allocations (
    pool TEXT NOT NULL,
    -- Whereabouts' key: the decimal offset from the range's network address (up to 2^128).
    offset TEXT NOT NULL,
    container_id TEXT NOT NULL,
    ifname TEXT NOT NULL,
    podref TEXT NOT NULL,
    cni_network TEXT NOT NULL,
    PRIMARY KEY (pool, offset)
) WITHOUT ROWID;
CREATE INDEX allocations_by_attachment ON allocations (pool, container_id, ifname);
CREATE INDEX allocations_by_pod_interface ON allocations (pool, podref, ifname)
    WHERE podref <> '';
CREATE TABLE reservations (
    network_name TEXT NOT NULL,
    address TEXT NOT NULL,
    container_id TEXT NOT NULL,
    ifname TEXT NOT NULL,
    podref TEXT NOT NULL,
    cni_network TEXT NOT NULL,
    PRIMARY KEY (network_name, address)
) WITHOUT ROWID;
";

/// The query's slots: its attachment's, and (podref not "") the same pod interface's under
/// other container ids. Each half is one search of its index, named with `INDEXED BY`:
/// without statistics SQLite's planner prefers walking the pool's primary-key range (all of
/// the pool) to a non-covering index, and `INDEXED BY` makes that plan an error instead of a
/// slow ADD. The halves are disjoint, so `UNION ALL` needs no merge.
pub const QUERY_SLOTS: &str = "
SELECT offset, container_id, ifname, podref, cni_network
    FROM allocations INDEXED BY allocations_by_attachment
    WHERE pool = ?1 AND container_id = ?2 AND ifname = ?3
UNION ALL
SELECT offset, container_id, ifname, podref, cni_network
    FROM allocations INDEXED BY allocations_by_pod_interface
    WHERE pool = ?1 AND podref = ?4 AND ifname = ?3 AND podref <> '' AND container_id <> ?2";

const ALL_SLOTS: &str =
    "SELECT offset, container_id, ifname, podref, cni_network FROM allocations WHERE pool = ?1";

/// SQLite's `synchronous` level for this store's connections (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// The default: no acknowledged change is lost to a kill; a power cut may lose the last
    /// ones, never the database.
    Normal,
    /// Every commit fsyncs the WAL: acknowledged changes survive a power cut too.
    Full,
}

impl Synchronous {
    /// `HEREABOUTS_SQLITE_SYNCHRONOUS` (`normal` or `full`, for measurements), else `Normal`.
    pub fn from_env() -> Self {
        match std::env::var("HEREABOUTS_SQLITE_SYNCHRONOUS") {
            Ok(value) if value.eq_ignore_ascii_case("full") => Synchronous::Full,
            _ => Synchronous::Normal,
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// The embedded store of one data directory.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, at the synchronous level of
    /// [`Synchronous::from_env`]. Importing an earlier JSON store happens here, once.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Synchronous::from_env())
    }

    /// Opens the store in `dir` at the given synchronous level.
    pub fn open_with(dir: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        if !dir.is_absolute() {
            return Err(StoreError::Failed(format!(
                "data_dir: {} is not an absolute path",
                dir.display()
            )));
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                StoreError::Failed(format!("data_dir: cannot create {}: {e}", dir.display()))
            })?;
        }
        let path = dir.join(DATABASE_FILE);
        check_magic(&path, true)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        let mut store = Self { conn, path };
        store.configure(synchronous).map_err(|e| store.error(e))?;
        match store.header().map_err(|e| store.error(e))? {
            (APPLICATION_ID, SCHEMA_VERSION) => {}
            (0, 0) => store.initialise(dir)?,
            header => return Err(not_ours(&store.path, header)),
        }
        Ok(store)
    }

    /// Opens an existing store without creating or importing anything (`hereabouts store`).
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DATABASE_FILE);
        if !path.exists() {
            return Err(StoreError::Failed(format!("{}: no store here", path.display())));
        }
        check_magic(&path, false)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        let store = Self { conn, path };
        store.configure(Synchronous::Normal).map_err(|e| store.error(e))?;
        match store.header().map_err(|e| store.error(e))? {
            (APPLICATION_ID, SCHEMA_VERSION) => Ok(store),
            header => Err(not_ours(&store.path, header)),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the tests' look at query plans.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn configure(&self, synchronous: Synchronous) -> rusqlite::Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        self.conn.pragma_update(None, "synchronous", synchronous.pragma())?;
        // Every process is the last connection when it closes: see [`CHECKPOINT_PAGES`].
        self.conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        // Checkpoints are ours (after a commit, see [`SqliteStore::checkpoint_if_due`]).
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)
    }

    /// (application_id, user_version) from the file header.
    fn header(&self) -> rusqlite::Result<(i32, i32)> {
        let id = self.conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
        let version = self.conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        Ok((id, version))
    }

    /// Creates the schema in the first write transaction, importing a JSON store of `dir`.
    /// Two processes may get here at once: the second finds the schema inside its own
    /// transaction and does nothing.
    fn initialise(&mut self, dir: &Path) -> Result<(), StoreError> {
        let path = self.path.clone();
        // First look without writing: a foreign database must not even get our journal mode.
        // (One read transaction, so a schema another process commits meanwhile is seen whole.)
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        let found = created(&tx).map_err(|e| classify(&path, e))?;
        tx.finish().map_err(|e| classify(&path, e))?;
        match found {
            ((APPLICATION_ID, SCHEMA_VERSION), _) => return Ok(()), // another process won
            ((0, 0), 0) => {}
            (header, _) => return Err(not_ours(&path, header)),
        }
        self.switch_to_wal()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&path, e))?;
        match created(&tx).map_err(|e| classify(&path, e))? {
            ((APPLICATION_ID, SCHEMA_VERSION), _) => return Ok(()), // another process won
            ((0, 0), 0) => {}
            (header, _) => return Err(not_ours(&path, header)),
        }
        tx.execute_batch(SCHEMA).map_err(|e| classify(&path, e))?;
        let imported = json_import::import(&tx, dir).map_err(|e| match e {
            json_import::ImportError::Store(e) => classify(&path, e),
            json_import::ImportError::File(e) => e,
        })?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('created_by', ?1), ('json_import', ?2)",
            params![concat!("hereabouts ", env!("CARGO_PKG_VERSION")), imported.describe()],
        )
        .map_err(|e| classify(&path, e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(|e| classify(&path, e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        if imported.pools + imported.reservations > 0 {
            tracing::info!(db = %path.display(), "{}", imported.describe());
        }
        Ok(())
    }

    /// Puts a new database in WAL mode, a property of the file, set once (and never inside a
    /// transaction). The switch needs the file to itself and SQLite answers "busy" at once,
    /// without its busy handler, while another process merely looks at the new file; so it
    /// is retried here, within the same [`BUSY_TIMEOUT`].
    fn switch_to_wal(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let mode = self.conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                row.get::<_, String>(0)
            });
            match mode {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(mode) => {
                    return Err(StoreError::Failed(format!(
                        "{}: SQLite refused WAL mode (journal_mode is {mode})",
                        self.path.display()
                    )));
                }
                Err(e)
                    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// After a commit: copies the WAL into the database and truncates it once it holds
    /// [`CHECKPOINT_PAGES`]. Never fails the commit before it: a checkpoint that cannot run
    /// now (other processes reading) or fails is left to the next commit.
    fn checkpoint_if_due(&self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        // A page in the WAL is a 24-byte frame header and the page (SQLite's 4 KiB default).
        let due = CHECKPOINT_PAGES * (4096 + 24);
        if std::fs::metadata(&wal).map_or(true, |m| m.len() < due) {
            return;
        }
        let _ = self.conn.busy_timeout(CHECKPOINT_WAIT);
        let done = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        });
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        match done {
            Ok((0, _)) => tracing::debug!(db = %self.path.display(), "WAL checkpointed"),
            Ok((_, pages)) => {
                tracing::debug!(db = %self.path.display(), pages, "WAL checkpoint left for later: readers")
            }
            Err(e) => tracing::warn!(db = %self.path.display(), "WAL checkpoint failed: {e}"),
        }
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path, e)
    }

    /// Runs `f` in a read transaction: one consistent snapshot, never waiting for writers.
    fn reading<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| classify(&path, e))?;
        let value = f(&tx, &path)?;
        tx.finish().map_err(|e| classify(&path, e))?;
        Ok(value)
    }

    /// `meta` as (key, value) pairs: who created the database, what was imported.
    pub fn meta(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        self.reading(|tx, path| {
            let mut stmt = tx
                .prepare("SELECT key, value FROM meta ORDER BY key")
                .map_err(|e| classify(path, e))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(Iterator::collect)
                .map_err(|e| classify(path, e))
        })
    }

    /// SQLite's `PRAGMA integrity_check`: `Ok(())` when it answers "ok", else its findings.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check").map_err(|e| self.error(e))?;
        let findings: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))?;
        if findings == ["ok"] {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "{}: integrity check failed: {}",
                self.path.display(),
                findings.join("; ")
            )))
        }
    }
}

/// Refuses a database file that does not start with SQLite's header. SQLite itself reads the
/// pages its WAL holds from the WAL, the first one included, so a file overwritten with
/// anything else would go unnoticed (and be written over by the next checkpoint) as long as
/// its WAL is there. An empty file is a database not written yet.
fn check_magic(path: &Path, create: bool) -> Result<(), StoreError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    // The one open that may create the file: 0600, never through a symbolic link (a dangling
    // one would make root create its target), never blocking on a FIFO; then only a regular
    // file is handed to SQLite (which opens it with SQLITE_OPEN_NOFOLLOW too).
    let guard =
        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC)
            .bits() as i32;
    let open = |new: bool| {
        let mut options = std::fs::OpenOptions::new();
        // A new file: O_CREAT|O_EXCL, which refuses even a dangling link.
        options.read(true).write(new).create_new(new).mode(0o600).custom_flags(guard);
        options.open(path)
    };
    let opened = match open(false) {
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => match open(true) {
            Ok(_) => return Ok(()), // new and empty: SQLite makes it a database
            // Another process created it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open(false),
            Err(e) => Err(e),
        },
        other => other,
    };
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(StoreError::Failed(format!(
                "{}: is a symbolic link; the store is never opened through one",
                path.display()
            )));
        }
        Err(e) => return Err(StoreError::Failed(format!("{}: cannot read: {e}", path.display()))),
    };
    let is_file = file
        .metadata()
        .map_err(|e| StoreError::Failed(format!("{}: cannot read: {e}", path.display())))?
        .file_type()
        .is_file();
    if !is_file {
        return Err(StoreError::Failed(format!("{}: not a regular file", path.display())));
    }
    let mut head = Vec::with_capacity(16);
    file.take(16)
        .read_to_end(&mut head)
        .map_err(|e| StoreError::Failed(format!("{}: cannot read: {e}", path.display())))?;
    if head.is_empty() || head == MAGIC {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "{}: not an SQLite database (it does not start with SQLite's header); left untouched",
        path.display()
    )))
}

/// (application_id, user_version) and the number of schema objects, read in `tx`.
fn created(tx: &Transaction<'_>) -> rusqlite::Result<((i32, i32), i64)> {
    let id = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    Ok(((id, version), objects))
}

/// A database that is not this store's, by its header (application_id, user_version).
fn not_ours(path: &Path, (id, version): (i32, i32)) -> StoreError {
    if id == APPLICATION_ID {
        StoreError::Corrupt(format!(
            "{}: written by a newer Hereabouts (schema {version}; this one knows \
             {SCHEMA_VERSION}); left untouched",
            path.display()
        ))
    } else {
        StoreError::Corrupt(format!(
            "{}: not a Hereabouts store (SQLite application_id {id:#x}, user_version \
             {version}); left untouched",
            path.display()
        ))
    }
}

/// A SQLite error as the contract's store error, naming the file: busy past the timeout is
/// `unavailable` (CNI 11), a corrupt or foreign file `corrupt`, anything else `failed` (5).
pub fn classify(path: &Path, error: rusqlite::Error) -> StoreError {
    let path = path.display();
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!(
                "{path}: still locked by another writer after {} s: {error}",
                BUSY_TIMEOUT.as_secs()
            ))
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("{path}: {error}; left untouched"))
        }
        _ => StoreError::Failed(format!("{path}: {error}")),
    }
}

/// Whether `owner` may take over a reservation `holder` has (`reserve` in the WIT): the same
/// attachment, or the same non-empty podref and interface (a pod's new sandbox).
fn may_take_over(holder: &Owner, owner: &Owner) -> bool {
    holder.same_attachment(owner)
        || (!owner.podref.is_empty()
            && holder.podref == owner.podref
            && holder.ifname == owner.ifname)
}

fn owner_from(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Owner> {
    Ok(Owner {
        container_id: row.get(first)?,
        ifname: row.get(first + 1)?,
        podref: row.get(first + 2)?,
        cni_network: row.get(first + 3)?,
    })
}

fn slot_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Slot> {
    Ok(Slot { offset: row.get(0)?, owner: owner_from(row, 1)? })
}

/// A pool's row: (version, summary), after checking it holds the range asked for.
fn pool_row(
    tx: &Transaction<'_>,
    path: &Path,
    pool: &PoolRef,
) -> Result<Option<(i64, Option<String>)>, StoreError> {
    let row = tx
        .query_row("SELECT range, version, summary FROM pools WHERE name = ?1", [&pool.name], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(|e| classify(path, e))?;
    match row {
        None => Ok(None),
        Some((range, _, _)) if range != pool.range => Err(StoreError::Corrupt(format!(
            "{}: pool {:?} holds range {range:?}, expected {:?}; left untouched",
            path.display(),
            pool.name,
            pool.range
        ))),
        Some((_, version, summary)) => Ok(Some((version, summary))),
    }
}

fn slots(
    tx: &Transaction<'_>,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Slot>, StoreError> {
    let mut stmt = tx.prepare(sql).map_err(|e| classify(path, e))?;
    stmt.query_map(params, slot_from).and_then(Iterator::collect).map_err(|e| classify(path, e))
}

/// What `read-pool` answers, read in `tx`.
fn view(
    tx: &Transaction<'_>,
    path: &Path,
    pool: &PoolRef,
    query: &Owner,
) -> Result<PoolView, StoreError> {
    let Some((version, summary)) = pool_row(tx, path, pool)? else {
        return Ok(PoolView { version: String::new(), summary: None, slots: Vec::new() });
    };
    let slots = match summary {
        // Without a summary (an imported pool) the core needs every slot to rebuild one.
        None => slots(tx, path, ALL_SLOTS, [&pool.name])?,
        Some(_) => slots(
            tx,
            path,
            QUERY_SLOTS,
            params![pool.name, query.container_id, query.ifname, query.podref],
        )?,
    };
    Ok(PoolView { version: version.to_string(), summary, slots })
}

impl Backend for SqliteStore {
    fn read_pool(&mut self, pool: &PoolRef, query: &Owner) -> Result<PoolView, StoreError> {
        self.reading(|tx, path| view(tx, path, pool, query))
    }

    fn list_slots(&mut self, pool: &PoolRef) -> Result<PoolListing, StoreError> {
        self.reading(|tx, path| {
            let Some((version, _)) = pool_row(tx, path, pool)? else {
                return Ok(PoolListing { version: String::new(), slots: Vec::new() });
            };
            let slots = slots(tx, path, ALL_SLOTS, [&pool.name])?;
            Ok(PoolListing { version: version.to_string(), slots })
        })
    }

    fn commit(
        &mut self,
        pool: &PoolRef,
        query: &Owner,
        change: &PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        let path = self.path.clone();
        let db = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let current = pool_row(&tx, &path, pool)?;
        let current_version = current.as_ref().map(|(v, _)| v.to_string()).unwrap_or_default();
        if current_version != change.version {
            // Dropping `tx` rolls back: nothing was written.
            return Ok(CommitOutcome::Stale(view(&tx, &path, pool, query)?));
        }
        for edit in &change.edits {
            match edit {
                PoolEdit::Claim(slot) => {
                    let o = &slot.owner;
                    let inserted = tx
                        .execute(
                            "INSERT INTO allocations
                                 (pool, offset, container_id, ifname, podref, cni_network)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                            params![
                                pool.name,
                                slot.offset,
                                o.container_id,
                                o.ifname,
                                o.podref,
                                o.cni_network
                            ],
                        )
                        .map_err(db)?;
                    if inserted == 0 {
                        let held = tx
                            .query_row(
                                "SELECT offset, container_id, ifname, podref, cni_network
                                 FROM allocations WHERE pool = ?1 AND offset = ?2",
                                [&pool.name, &slot.offset],
                                slot_from,
                            )
                            .map_err(db)?;
                        return Ok(CommitOutcome::Occupied(held));
                    }
                }
                PoolEdit::Free(slot) => {
                    tx.execute(
                        "DELETE FROM allocations WHERE pool = ?1 AND offset = ?2",
                        [&pool.name, &slot.offset],
                    )
                    .map_err(db)?;
                }
                PoolEdit::Reown(Reown { slot, to }) => {
                    tx.execute(
                        "UPDATE allocations SET container_id = ?3, ifname = ?4, podref = ?5,
                             cni_network = ?6
                         WHERE pool = ?1 AND offset = ?2",
                        params![
                            pool.name,
                            slot.offset,
                            to.container_id,
                            to.ifname,
                            to.podref,
                            to.cni_network
                        ],
                    )
                    .map_err(db)?;
                }
            }
        }
        for edit in &change.reservations {
            match edit {
                ReservationEdit::Reserve(r) => {
                    let holder = tx
                        .query_row(
                            "SELECT container_id, ifname, podref, cni_network FROM reservations
                             WHERE network_name = ?1 AND address = ?2",
                            [&r.network_name, &r.address],
                            |row| owner_from(row, 0),
                        )
                        .optional()
                        .map_err(db)?;
                    if let Some(holder) = holder
                        && !may_take_over(&holder, &r.owner)
                    {
                        return Ok(CommitOutcome::Reserved(Reservation {
                            owner: holder,
                            ..r.clone()
                        }));
                    }
                    let o = &r.owner;
                    tx.execute(
                        "INSERT OR REPLACE INTO reservations
                             (network_name, address, container_id, ifname, podref, cni_network)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            r.network_name,
                            r.address,
                            o.container_id,
                            o.ifname,
                            o.podref,
                            o.cni_network
                        ],
                    )
                    .map_err(db)?;
                }
                ReservationEdit::Release(r) => {
                    tx.execute(
                        "DELETE FROM reservations WHERE network_name = ?1 AND address = ?2
                             AND container_id = ?3 AND ifname = ?4",
                        params![r.network_name, r.address, r.owner.container_id, r.owner.ifname],
                    )
                    .map_err(db)?;
                }
            }
        }
        let version: i64 = tx
            .query_row(
                "INSERT INTO pools (name, range, network_name, version, summary)
                 VALUES (?1, ?2, ?3, 1, ?4)
                 ON CONFLICT (name) DO UPDATE SET version = version + 1, summary = excluded.summary
                 RETURNING version",
                params![pool.name, pool.range, pool.network_name, change.summary],
                |r| r.get(0),
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        self.checkpoint_if_due();
        Ok(CommitOutcome::Committed(version.to_string()))
    }

    fn list_reservations(&mut self, network_name: &str) -> Result<Vec<Reservation>, StoreError> {
        self.reading(|tx, path| {
            let mut stmt = tx
                .prepare(
                    "SELECT address, container_id, ifname, podref, cni_network FROM reservations
                     WHERE network_name = ?1",
                )
                .map_err(|e| classify(path, e))?;
            stmt.query_map([network_name], |r| {
                Ok(Reservation {
                    network_name: network_name.to_string(),
                    address: r.get(0)?,
                    owner: owner_from(r, 1)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| classify(path, e))
        })
    }
}
