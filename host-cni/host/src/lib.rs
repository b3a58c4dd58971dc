//! Hereabouts' host library: everything a host of the allocator component needs that does no
//! I/O of its own — what kube-rs calls "client-less behaviour".
//!
//! - [`bindings`]: the WIT contract's types, generated from wit/hereabouts.wit;
//! - [`runtime`]: the component (built from `core-wasm`, embedded at build time) in wasmtime,
//!   and [`runtime::Allocator`], the typed calls into it;
//! - [`backend`]: the storage contract the component imports ([`Backend`]), and (feature
//!   `testing`) [`memory::Memory`], the core's in-memory reference store behind it;
//! - (feature `testing`) [`contract`]: vectors/store-contract.json over any backend, the
//!   conformance suite every store's tests run;
//! - [`retry`]: the random wait between the core's attempts, which the pure core cannot draw;
//! - [`config`]: the ipam section of a CNI config, parsed into types;
//! - [`error`]: the CNI error boundary (codes, JSON, panics);
//! - [`files`]: how every file a network config names is opened (no symbolic link, regular
//!   files only, size caps), the only file access besides the cache.
//!
//! Not here: anything that touches a disk, a network or a cluster (`hereabouts-stores`), the
//! Kubernetes controller (`hereabouts-kube`), the linter (`hereabouts-check`), the CNI protocol
//! and the command line (`hereabouts`). Range logic lives in the component only.

pub mod backend;
pub mod bindings;
pub mod config;
#[cfg(feature = "testing")]
pub mod contract;
pub mod error;
pub mod files;
#[cfg(feature = "testing")]
pub mod memory;
pub mod retry;
pub mod runtime;

pub use backend::{Backend, NoStore};
