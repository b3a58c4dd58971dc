//! `hereabouts component`: writes the embedded allocator component, byte for byte, so other
//! hosts (Node, the browser playground) run exactly what the plugin runs.

use std::io::Write;
use std::path::PathBuf;

use hereabouts_host::runtime::COMPONENT;

#[derive(Debug, clap::Args)]
pub struct ComponentArgs {
    /// Write the component here instead of to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn exec(args: &ComponentArgs) -> std::io::Result<()> {
    match &args.out {
        Some(path) => std::fs::write(path, COMPONENT),
        None => std::io::stdout().lock().write_all(COMPONENT),
    }
}
