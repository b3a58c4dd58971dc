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
    AllocateRequest, Finding, HeldLease, Hereabouts, IpamError, Lease, MapBucket, NetworkConfig,
    Overlap, Owner, PlanRequest, PoolEdit, PoolRef, PoolSnapshot, RangeReport, StoreError,
    describe_ipam_error,
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
}

/// An allocator call's failure: either the core's typed answer or a runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Ipam(#[from] IpamErrorDisplay),
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
    limits: wasmtime::StoreLimits,
}

impl wit::types::Host for HostState {}

impl wit::store::Host for HostState {
    fn read_pool(&mut self, pool: PoolRef) -> Result<PoolSnapshot, StoreError> {
        self.backend.read_pool(&pool)
    }
    fn write_pool(
        &mut self,
        pool: PoolRef,
        version: String,
        edits: Vec<PoolEdit>,
    ) -> Result<(), StoreError> {
        self.backend.write_pool(&pool, &version, &edits)
    }
    fn reserve_address(
        &mut self,
        network_name: String,
        address: String,
        owner: Owner,
    ) -> Result<Option<Owner>, StoreError> {
        self.backend.reserve_address(&network_name, &address, &owner)
    }
    fn release_address(
        &mut self,
        network_name: String,
        address: String,
        owner: Owner,
    ) -> Result<(), StoreError> {
        self.backend.release_address(&network_name, &address, &owner)
    }
    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        self.backend.pause_before_retry(attempt)
    }
}

/// Where compiled artifacts are cached: `$HEREABOUTS_CACHE_DIR`, else the caller's choice
/// (the CNI plugin passes its data directory), else `$XDG_CACHE_HOME/hereabouts` or
/// `~/.cache/hereabouts`, else the system temp directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEREABOUTS_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("hereabouts");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/hereabouts");
    }
    std::env::temp_dir().join("hereabouts-cache")
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
    let Some(dir) = cache_dir else {
        return Component::new(engine, COMPONENT).map_err(|e| RuntimeError::Load(format!("{e:#}")));
    };
    let path = cache_file(engine, dir);
    if path.exists() {
        // SAFETY: the file was written by `precompile_component` of this very binary (its name
        // is keyed by the component and engine) into a directory only its owner writes;
        // wasmtime checks the header's version and engine settings before using it.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cached component unusable, recompiling: {e:#}")
            }
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

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The loaded allocator, bound to one backend.
pub struct Allocator {
    store: wasmtime::Store<HostState>,
    bindings: Hereabouts,
}

impl Allocator {
    /// Loads the component with the default cache directory.
    pub fn new(backend: Box<dyn Backend>) -> Result<Self, RuntimeError> {
        Self::with_cache(backend, Some(&default_cache_dir()))
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
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .trap_on_grow_failure(true)
            .build();
        let mut store = wasmtime::Store::new(&engine, HostState { backend, limits });
        store.limiter(|state| &mut state.limits);
        let bindings = Hereabouts::instantiate(&mut store, &component, &linker)
            .map_err(|e| RuntimeError::Load(format!("{e:#}")))?;
        Ok(Self { store, bindings })
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
        flatten(result)
    }

    pub fn release(
        &mut self,
        network: &NetworkConfig,
        owner: &Owner,
    ) -> Result<Vec<Lease>, CallError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_release(&mut self.store, network, owner);
        flatten(result)
    }

    pub fn lookup(
        &mut self,
        network: &NetworkConfig,
        owner: &Owner,
    ) -> Result<Vec<Lease>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_leases_of(
            &mut self.store,
            network,
            owner,
        );
        flatten(result)
    }

    pub fn collect_garbage(
        &mut self,
        network: &NetworkConfig,
        keep: &[Owner],
    ) -> Result<Vec<HeldLease>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_collect_garbage(
            &mut self.store,
            network,
            keep,
        );
        flatten(result)
    }

    pub fn list_leases(&mut self, network: &NetworkConfig) -> Result<Vec<HeldLease>, CallError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_list_leases(&mut self.store, network);
        flatten(result)
    }

    pub fn plan(&mut self, request: &PlanRequest) -> Result<Vec<RangeReport>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_plan(&mut self.store, request);
        flatten(result)
    }

    /// Every finding about `network` at once (`validate` has no error of its own: a bad
    /// config is what its findings say).
    pub fn validate(&mut self, network: &NetworkConfig) -> Result<Vec<Finding>, RuntimeError> {
        let result =
            self.bindings.hereabouts_ipam_allocator().call_validate(&mut self.store, network);
        result.map_err(|e| RuntimeError::Trap(format!("{e:#}")))
    }

    pub fn overlaps(
        &mut self,
        a: &NetworkConfig,
        b: &NetworkConfig,
    ) -> Result<Vec<Overlap>, CallError> {
        let result = self.bindings.hereabouts_ipam_allocator().call_overlaps(&mut self.store, a, b);
        flatten(result)
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
        flatten(result)
    }
}

/// A trap poisons the instance; after one, callers must not reuse the `Allocator`.
fn flatten<T>(result: wasmtime::Result<Result<T, IpamError>>) -> Result<T, CallError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CallError::Ipam(IpamErrorDisplay(error))),
        Err(trap) => Err(CallError::Runtime(RuntimeError::Trap(format!("{trap:#}")))),
    }
}
