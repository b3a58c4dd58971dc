//! One module per subcommand, each a clap `Args` struct and an `exec` that returns the exit
//! status. The work itself lives in the libraries: `check` in hereabouts-check, `reconcile`
//! and `controller` in hereabouts-kube, the stores in hereabouts-stores.

pub mod check;
pub mod component;
pub mod controller;
pub mod crds;
pub mod demo;
pub mod install;
pub mod migrate;
pub mod plan;
pub mod reconcile;
pub mod slices;
pub mod status;
pub mod store;
