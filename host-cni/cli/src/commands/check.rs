//! `hereabouts check PATH…`: the linter (crate `hereabouts-check`) on the command line.
//!
//! Exit status: 0 clean, 1 an error (or, with `--strict`, a warning), 2 could not run.

use std::path::PathBuf;

use hereabouts_check::{CheckError, Format, NodeFlatFile, Settings, rules};
use hereabouts_host::NoStore;
use hereabouts_host::runtime::Allocator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    Sarif,
}

impl From<FormatArg> for Format {
    fn from(format: FormatArg) -> Self {
        match format {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
            FormatArg::Sarif => Format::Sarif,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files and directories to check (directories: *.yaml, *.yml, *.json, *.conf, *.conflist);
    /// `-` reads standard input (`helm template … | hereabouts check -`).
    #[arg(required_unless_present = "list_rules")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Free addresses every range must offer (a NAD's `hereabouts.io/min-free` overrides it).
    #[arg(long, value_name = "N")]
    pub min_free: Option<u128>,
    /// Nodes that attach to every network with `node_slice_size`: warn
    /// (`node-slices-fewer-than-nodes`) when it has fewer slices (a NAD's `hereabouts.io/nodes`
    /// overrides it).
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,
    /// The flat file your nodes have (`none`: no flat file), merged into each network as the
    /// plugin merges it: `store-unchosen` then flags a NAD whose ADD would fail for want of a
    /// store. Without it that rule does not run.
    #[arg(long, value_name = "PATH|none")]
    pub flat_file: Option<String>,
    /// Rules file (default: `.hereabouts-check.json` in the working directory, if present).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Re-level or disable a rule; repeatable, wins over the rules file.
    #[arg(long = "rule", value_name = "ID=off|warning|error")]
    pub rule: Vec<String>,
    /// Print the rule catalogue (a Markdown table) and exit.
    #[arg(long)]
    pub list_rules: bool,
}

/// Why `check` could not run at all (exit status 2).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("working directory: {0}")]
    WorkingDirectory(std::io::Error),
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// Runs the command; returns the process exit code.
pub fn exec(args: &CheckArgs) -> i32 {
    if args.list_rules {
        print!("{}", rules::table());
        return 0;
    }
    let outcome = (|| -> Result<_, Failure> {
        let cwd = std::env::current_dir().map_err(Failure::WorkingDirectory)?;
        let mut settings =
            Settings::load(args.rules.as_deref(), &cwd, &args.rule).map_err(CheckError::from)?;
        if args.min_free.is_some() {
            settings.min_free = args.min_free;
        }
        if args.nodes.is_some() {
            settings.nodes = args.nodes;
        }
        settings.node_flat_file = args.flat_file.as_deref().map(NodeFlatFile::parse);
        let mut allocator = Allocator::new(Box::new(NoStore)).map_err(CheckError::from)?;
        Ok(hereabouts_check::run(&args.paths, &settings, &mut allocator)?)
    })();
    match outcome {
        Ok(report) => {
            print!("{}", report.render(args.format.into()));
            report.exit_code(args.strict)
        }
        Err(error) => {
            eprintln!("hereabouts check: {error}");
            2
        }
    }
}
