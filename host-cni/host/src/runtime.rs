//! The allocator component inside wasmtime: loading, caching, and the typed calls.
//!
//! Every CNI call is a fresh process, so start-up is the plugin's latency. Compiling the
//! component with Cranelift takes tens of milliseconds; deserialising a precompiled artifact
//! takes a fraction of one. The first run therefore compiles once into a cache file keyed by
//! the component's bytes, wasmtime's version and the engine settings; every later run maps
//! that file. An unreadable or incompatible cache entry is recompiled, never trusted blindly.
//!
//! The component gets exactly one capability: the `store` import, served by a [`Backend`].
//! It imports nothing else (it is built without WASI), so the linker defines nothing else.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::backend::Backend;
use crate::bindings::hereabouts::ipam as wit;
use crate::bindings::{
    AllocateRequest, CommitOutcome, ConfigError, ConfigReading, Finding, HeldLease, Hereabouts,
    IpamError, Lease, MapBucket, NetworkConfig, Overlap, Owner, PlanDocument, PlanRequest,
    PoolChange, PoolListing, PoolRef, PoolView, RangeReport, Reservation, Slicing, StoreError,
    describe_config_error, describe_ipam_error,
};

/// The allocator component, embedded at build time (see build.rs).
pub static COMPONENT: &[u8] = include_bytes!(env!("HEREABOUTS_COMPONENT"));

/// A failure to run the component at all, as opposed to an allocator answer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("allocator component failed to load: {0}")]
    Load(String),
    /// The component trapped (a bug in the core, or a store import that trapped).
    #[error("allocator component trapped: {0}")]
    Trap(String),
    /// The component needed more linear memory than its cap ([`DEFAULT_MEMORY_LIMIT`]).
    #[error(
        "the allocator needed more than its memory limit of {} MiB: the network config or the \
         store's data is too large", .0 >> 20
    )]
    MemoryLimit(usize),
}

/// An allocator call's failure: either the core's typed answer or a runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Ipam(#[from] IpamErrorDisplay),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Reading a config failed: the core's typed answer, or a runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}", describe_config_error(.0))]
    Config(ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// `IpamError` with a human message (the WIT type carries the parts).
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_ipam_error(.0))]
pub struct IpamErrorDisplay(pub IpamError);

/// The most linear memory the component may use. A pool of 65,534 allocations needs a few
/// MiB; the cap keeps a corrupt or hostile store answer from exhausting the node's memory:
/// past it the guest's allocation fails, which traps (CNI error 102), instead of growing.
pub const DEFAULT_MEMORY_LIMIT: usize = 512 << 20;

/// Host state: the backend the `store` import delegates to, and the memory cap.
struct HostState {
    backend: Box<dyn Backend>,
    limits: MemoryCap,
    /// Commits the component asked the store for, won or lost (logged per CNI call: under
    /// contention on one pool, how many rounds an ADD took).
    commits: u32,
}

/// wasmtime's limits, remembering whether the memory cap was hit: a trap after that is
/// reported as [`RuntimeError::MemoryLimit`], naming the limit, not as a wasm backtrace.
struct MemoryCap {
    inner: wasmtime::StoreLimits,
    limit: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
}

/// What a trap of the component is reported as: the memory cap when it was hit, else the
/// trap's cause in one line (the backtrace goes to the debug log only).
fn trap_error(state: &HostState, trap: wasmtime::Error) -> RuntimeError {
    tracing::debug!("allocator component trapped: {trap:?}");
    if state.limits.hit {
        return RuntimeError::MemoryLimit(state.limits.limit);
    }
    match trap.downcast_ref::<wasmtime::Trap>() {
        Some(code) => RuntimeError::Trap(code.to_string()),
        None => RuntimeError::Trap(trap.root_cause().to_string()),
    }
}

impl wit::types::Host for HostState {}

impl wit::store::Host for HostState {
    fn read_pool(&mut self, pool: PoolRef, query: Owner) -> Result<PoolView, StoreError> {
        self.backend.read_pool(&pool, &query)
    }
    fn list_slots(&mut self, pool: PoolRef) -> Result<PoolListing, StoreError> {
        self.backend.list_slots(&pool)
    }
    fn commit(
        &mut self,
        pool: PoolRef,
        query: Owner,
        change: PoolChange,
    ) -> Result<CommitOutcome, StoreError> {
        self.commits += 1;
        self.backend.commit(&pool, &query, &change)
    }
    fn list_reservations(&mut self, network_name: String) -> Result<Vec<Reservation>, StoreError> {
        self.backend.list_reservations(&network_name)
    }
    fn pause_before_retry(&mut self, attempt: u32, ceiling_us: u32) -> bool {
        self.backend.pause_before_retry(attempt, ceiling_us)
    }
}

/// Where compiled artifacts are cached: `$HEREABOUTS_CACHE_DIR`, else the caller's choice
/// (the CNI plugin passes its data directory), else `$XDG_CACHE_HOME/hereabouts` or
/// `~/.cache/hereabouts`. Never a shared directory such as /tmp: with none of these, the
/// component is compiled in memory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HEREABOUTS_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("hereabouts"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/hereabouts"))
}

/// Whether `meta` (of a file or directory, from `lstat` or `fstat`) may hold code this
/// process runs: owned by the effective user, not writable by group or others, not a
/// symbolic link. Compiled artifacts are deserialised without verification, so only a place
/// no one else can write qualifies.
fn is_private_meta(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    !meta.file_type().is_symlink()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && meta.mode() & 0o022 == 0
}

fn is_private(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| is_private_meta(&meta))
}

/// Creates the cache directory private to this user if it is missing; true when it exists
/// and is private. Nothing is created inside a directory before this says true.
pub fn private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(dir).is_err() {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    }
    is_private(dir) && std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir())
}

/// The flags of every open in the cache: no symbolic link as the last component, no
/// blocking on a FIFO, not inherited.
fn no_follow() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32
}

/// The most a cache file may hold (the artifact is a few MiB).
const MAX_CACHE_FILE_BYTES: u64 = 256 << 20;

/// The cache file, opened once and checked private on that descriptor (a regular file owned
/// by this user, writable by no one else) — never checked by path and opened again.
fn open_private_file(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(no_follow()).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || !is_private_meta(&meta) || meta.len() > MAX_CACHE_FILE_BYTES {
        return Err(std::io::Error::other(
            "not a regular file private to this user (or too large)",
        ));
    }
    Ok(Some(file))
}

/// Deserialises the checked descriptor's file: memory-mapped through `/proc/self/fd/N`,
/// which names the open file itself (the inode checked, whatever the path now holds) — reading
/// and copying the 0.8 MB cost every ADD 1.7 ms of CPU; without /proc, its bytes are read
/// from the descriptor.
#[allow(unsafe_code)] // see the SAFETY comments of the callers
unsafe fn deserialize_checked(engine: &Engine, file: std::fs::File) -> wasmtime::Result<Component> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if by_fd.exists() {
        // SAFETY: as the caller's.
        return unsafe { Component::deserialize_file(engine, &by_fd) };
    }
    let mut bytes = Vec::new();
    file.take(MAX_CACHE_FILE_BYTES).read_to_end(&mut bytes)?;
    // SAFETY: as the caller's.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// Opens (creating it 0600) the lock file the first compilers queue on, in a cache directory
/// that is private (checked first: nothing is created in one that is not), never through a
/// symbolic link.
pub fn open_compile_lock(dir: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !private_dir(dir) {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(dir.join("compile.lock"))
        .ok()?;
    file.metadata().is_ok_and(|m| m.file_type().is_file()).then_some(file)
}

fn engine() -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config).map_err(|e| RuntimeError::Load(format!("{e:#}")))
}

/// The cache file for this component under this engine.
fn cache_file(engine: &Engine, dir: &Path) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // Hashed once at build time: hashing 200 KB on every start would cost a few % of it.
    env!("HEREABOUTS_COMPONENT_HASH").hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    dir.join(format!("allocator-{:016x}.cwasm", hasher.finish()))
}

/// Loads the component: from the cache when possible, else compiles and fills the cache.
#[allow(unsafe_code)] // deserialising compiled code: see the SAFETY comments
fn load_component(engine: &Engine, cache_dir: Option<&Path>) -> Result<Component, RuntimeError> {
    let compile =
        || Component::new(engine, COMPONENT).map_err(|e| RuntimeError::Load(format!("{e:#}")));
    let Some(dir) = cache_dir else { return compile() };
    if !private_dir(dir) {
        tracing::warn!(dir = %dir.display(),
            "cache directory is not private to this user (owner, or writable by others): compiling in memory");
        return compile();
    }
    let path = cache_file(engine, dir);
    match open_private_file(&path) {
        Ok(Some(file)) => {
            // SAFETY: this descriptor is of a regular file owned by this user and writable by
            // no one else, in a directory owned by this user and writable by no one else, so
            // this user wrote it — by `precompile_component` of this very binary (the name is
            // keyed by the component and engine). wasmtime checks the header's version and
            // engine settings.
            match unsafe { deserialize_checked(engine, file) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cached component unusable, recompiling: {e:#}")
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), "cached component not used ({e}): recompiling")
        }
    }
    let bytes =
        engine.precompile_component(COMPONENT).map_err(|e| RuntimeError::Load(format!("{e:#}")))?;
    if let Err(e) = write_atomically(dir, &path, &bytes) {
        tracing::debug!(dir = %dir.display(), "cannot cache the compiled component: {e}");
    }
    // SAFETY: `bytes` was produced by `precompile_component` on this engine just now.
    unsafe { Component::deserialize(engine, &bytes) }
        .map_err(|e| RuntimeError::Load(format!("{e:#}")))
}

/// Writes the artifact to a temporary file and renames it into place; on any failure the
/// temporary file is removed (a full disk must not stay full of them).
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp); // left by a killed process with our pid
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(&tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The loaded allocator, bound to one backend.
pub struct Allocator {
    store: wasmtime::Store<HostState>,
    bindings: Hereabouts,
}

impl Allocator {
    /// Loads the component with the default cache directory.
    pub fn new(backend: Box<dyn Backend>) -> Result<Self, RuntimeError> {
        Self::with_cache(backend, default_cache_dir().as_deref())
    }

    /// Loads the component, caching the compiled artifact in `cache_dir` (None: no cache).
    pub fn with_cache(
        backend: Box<dyn Backend>,
        cache_dir: Option<&Path>,
    ) -> Result<Self, RuntimeError> {
        Self::with_limits(backend, cache_dir, DEFAULT_MEMORY_LIMIT)
    }

    /// As [`Allocator::with_cache`], with a cap on the component's memory in bytes.
    pub fn with_limits(
        backend: Box<dyn Backend>,
        cache_dir: Option<&Path>,
        memory_limit: usize,
    ) -> Result<Self, RuntimeError> {
        let engine = engine()?;
        let component = load_component(&engine, cache_dir)?;
        let mut linker = Linker::<HostState>::new(&engine);
        Hereabouts::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| RuntimeError::Load(format!("{e:#}")))?;
        let limits = MemoryCap {
            inner: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            limit: memory_limit,
            hit: false,
        };
        let mut store = wasmtime::Store::new(&engine, HostState { backend, limits, commits: 0 });
        store.limiter(|state| &mut state.limits);
        let bindings = Hereabouts::instantiate(&mut store, &component, &linker)
            .map_err(|e| RuntimeError::Load(format!("{e:#}")))?;
        Ok(Self { store, bindings })
    }

    /// Serves the component's `store` import from `backend` from now on (a config is read
    /// before any store is opened: the allocator starts on [`crate::NoStore`]).
    pub fn set_backend(&mut self, backend: Box<dyn Backend>) {
        self.store.data_mut().backend = backend;
    }

    /// Commits attempted through this allocator so far, won or lost.
    pub fn commits_attempted(&self) -> u32 {
        self.store.data().commits
    }

    /// Reads an ipam section (JSON text) as Whereabouts does: the normalised network config
    /// every other call takes, and what was ignored.
    pub fn read_config(&mut self, ipam: &str) -> Result<ConfigReading, ReadError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_read_config(&mut self.store, ipam);
        flatten_read(result, self.store.data())
    }

    /// Every problem of an ipam section at once, strictly (what `read_config` only warns
    /// about is an error here): what `check` reports.
    pub fn review_config(&mut self, ipam: &str) -> Result<Vec<Finding>, RuntimeError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_review_config(&mut self.store, ipam);
        result.map_err(|e| trap_error(self.store.data(), e))
    }

    /// Reads `hereabouts plan`'s input document.
    pub fn read_plan_document(&mut self, text: &str) -> Result<PlanDocument, ReadError> {
        let result = self
            .bindings
            .hereabouts_ipam_allocator()
            .call_read_plan_document(&mut self.store, text);
        flatten_read(result, self.store.data())
    }

    pub fn allocate(
        &mut self,
        network: &NetworkConfig,
        request: &AllocateRequest,
    ) -> Result<Vec<Lease>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_allocate(
            &mut self.store,
            network,
            request,
        );
        flatten(result, self.store.data())
    }

    pub fn release(
        &mut self,
        network: &NetworkConfig,
        owner: &Owner,
    ) -> Result<Vec<Lease>, CallError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_release(&mut self.store, network, owner);
        flatten(result, self.store.data())
    }

    pub fn leases_of(
        &mut self,
        network: &NetworkConfig,
        owner: &Owner,
    ) -> Result<Vec<Lease>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_leases_of(
            &mut self.store,
            network,
            owner,
        );
        flatten(result, self.store.data())
    }

    /// Frees the allocations of CNI network `cni_network` (or of none recorded) not in `keep`.
    pub fn collect_garbage(
        &mut self,
        network: &NetworkConfig,
        cni_network: &str,
        keep: &[Owner],
    ) -> Result<Vec<HeldLease>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_collect_garbage(
            &mut self.store,
            network,
            cni_network,
            keep,
        );
        flatten(result, self.store.data())
    }

    pub fn list_leases(&mut self, network: &NetworkConfig) -> Result<Vec<HeldLease>, CallError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_list_leases(&mut self.store, network);
        flatten(result, self.store.data())
    }

    /// How a network with `node_slice_size` is cut (the NodeSlicePool's name, range, slices).
    pub fn node_slicing(
        &mut self,
        network: &NetworkConfig,
        cni_network: &str,
    ) -> Result<Slicing, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_node_slicing(
            &mut self.store,
            network,
            cni_network,
        );
        flatten(result, self.store.data())
    }

    /// Whether `nodes` nodes each get a slice: none, or the core's
    /// `node-slices-fewer-than-nodes` warning with what would fit them.
    pub fn fit_nodes(
        &mut self,
        network: &NetworkConfig,
        nodes: u32,
    ) -> Result<Option<Finding>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_fit_nodes(
            &mut self.store,
            network,
            nodes,
        );
        flatten(result, self.store.data())
    }

    /// The network narrowed to `node`'s slice: later calls work on the node's slice pool.
    pub fn on_node_slice(
        &mut self,
        network: &NetworkConfig,
        node: &str,
        slice: &str,
    ) -> Result<NetworkConfig, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_on_node_slice(
            &mut self.store,
            network,
            node,
            slice,
        );
        flatten(result, self.store.data())
    }

    pub fn plan(&mut self, request: &PlanRequest) -> Result<Vec<RangeReport>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_plan(&mut self.store, request);
        flatten(result, self.store.data())
    }

    /// Every finding about `network` at once (`validate` has no error of its own: a bad
    /// config is what its findings say).
    pub fn validate(&mut self, network: &NetworkConfig) -> Result<Vec<Finding>, RuntimeError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_validate(&mut self.store, network);
        result.map_err(|e| trap_error(self.store.data(), e))
    }

    pub fn overlaps(
        &mut self,
        a: &NetworkConfig,
        b: &NetworkConfig,
    ) -> Result<Vec<Overlap>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_overlaps(&mut self.store, a, b);
        flatten(result, self.store.data())
    }

    pub fn range_map(
        &mut self,
        request: &PlanRequest,
        range_index: u32,
        from: Option<&str>,
        to: Option<&str>,
        buckets: u32,
    ) -> Result<Vec<MapBucket>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_range_map(
            &mut self.store,
            request,
            range_index,
            from,
            to,
            buckets,
        );
        flatten(result, self.store.data())
    }
}

fn flatten_read<T>(
    result: wasmtime::Result<Result<T, ConfigError>>,
    state: &HostState,
) -> Result<T, ReadError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ReadError::Config(error)),
        Err(trap) => Err(ReadError::Runtime(trap_error(state, trap))),
    }
}

/// A trap poisons the instance; after one, callers must not reuse the `Allocator`.
fn flatten<T>(
    result: wasmtime::Result<Result<T, IpamError>>,
    state: &HostState,
) -> Result<T, CallError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CallError::Ipam(IpamErrorDisplay(error))),
        Err(trap) => Err(CallError::Runtime(trap_error(state, trap))),
    }
}
