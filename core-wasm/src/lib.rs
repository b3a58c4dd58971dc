//! Hereabouts' allocator core: ranges, excludes and lowest-free allocation.
//!
//! Pure Rust with no I/O, no clock and no randomness. It is built twice: as an rlib, tested
//! natively, and as a WASI Preview 2 component (`wasm32-wasip2`) whose only capability is the
//! `store` interface of wit/hereabouts.wit — the component the CNI plugin, `plan`, `check`,
//! Node and the browser all run.
//!
//! Layout, one noun per module: [`addr`] (addresses and index space), [`intervals`] (the
//! set the search runs on), [`range`] (one configured range), [`pool`] (a range's free
//! space), [`network`] (a whole config), [`slice`] (node slices), [`allocator`] (store transactions), [`plan`] (pure
//! views), [`types`] (the contract's types in plain Rust).

pub mod addr;
pub mod allocator;
pub mod config;
pub mod intervals;
pub mod memory;
pub mod network;
pub mod plan;
pub mod pool;
pub mod range;
pub mod slice;
pub mod summary;
pub mod types;

#[cfg(target_arch = "wasm32")]
mod component;
