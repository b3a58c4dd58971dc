//! One module per subcommand, each a clap `Args` struct and an `exec`.

pub mod check;
pub mod component;
pub mod controller;
pub mod crds;
pub mod demo;
pub mod install;
pub mod plan;
pub mod reconcile;
