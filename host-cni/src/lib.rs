//! Hereabouts' native host: the CNI plugin, its stores and its command-line tools.
//!
//! The allocator itself lives in the WebAssembly component built from `core-wasm` and is
//! reached only through [`runtime`]; this crate is the set of thin adapters around it: the
//! CNI protocol, config files, and the storage backends the component imports.

pub mod cni;
pub mod commands;
pub mod config;
pub mod error;
pub mod runtime;
pub mod store;
