//! `hereabouts check PATH…`: policy tests for IPAM configurations, for CI.
//!
//! Walks files and directories (Kubernetes YAML with NetworkAttachmentDefinitions, CNI
//! `.conf`/`.conflist`/`.json` files), finds every ipam section of type `hereabouts` or
//! `whereabouts`, and reports what would go wrong at allocation time — with the same
//! allocator component that allocates in production, so `check` and the plugin cannot
//! disagree about a range. See docs/check.md for the rules, the rules file and CI snippets.
//!
//! Exit status: 0 clean, 1 an error (or, with `--strict`, a warning), 2 could not run.

mod analyze;
mod json;
mod report;
pub mod rules;
mod sources;
mod tree;
mod yaml;

use std::path::PathBuf;

pub use analyze::{Finding, Related, did_you_mean};
pub use rules::{Level, Settings};
pub use tree::Spot;

use crate::runtime::Allocator;
use crate::store::NoStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Files and directories to check (directories: *.yaml, *.yml, *.json, *.conf, *.conflist);
    /// `-` reads standard input (`helm template … | hereabouts check -`).
    #[arg(required_unless_present = "list_rules")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Free addresses every range must offer (a NAD's `hereabouts.io/min-free` overrides it).
    #[arg(long, value_name = "N")]
    pub min_free: Option<u128>,
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

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub networks: usize,
    /// Sorted by file, line, column, rule; levels as settled by the settings, `off` dropped.
    pub findings: Vec<Finding>,
}

impl Report {
    /// (errors, warnings).
    pub fn counts(&self) -> (usize, usize) {
        let errors = self.findings.iter().filter(|f| f.level == Level::Error).count();
        (errors, self.findings.len() - errors)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => report::text(self),
            Format::Json => report::json(self),
            Format::Sarif => report::sarif(self),
        }
    }

    pub fn exit_code(&self, strict: bool) -> i32 {
        match self.counts() {
            (0, 0) => 0,
            (0, _) if !strict => 0,
            _ => 1,
        }
    }
}

/// Checks `paths`; `Err` when it could not run (a path that does not exist, the component).
pub fn run(
    paths: &[PathBuf],
    settings: &Settings,
    allocator: &mut Allocator,
) -> Result<Report, String> {
    let files = sources::collect_files(paths)?;
    let loaded = sources::load(&files)?;
    let mut findings = loaded.findings;
    findings.extend(analyze::analyze(&loaded.sites, settings, allocator)?);
    let mut findings: Vec<Finding> = findings
        .into_iter()
        .filter_map(|mut f| {
            f.level = settings.level(&f.rule, f.level);
            (f.level != Level::Off).then_some(f)
        })
        .collect();
    findings.sort_by(|a, b| {
        (&a.file, a.spot, &a.rule, &a.message).cmp(&(&b.file, b.spot, &b.rule, &b.message))
    });
    Ok(Report { files: loaded.files, networks: loaded.sites.len(), findings })
}

/// Runs the command; returns the process exit code.
pub fn exec(args: &CheckArgs) -> i32 {
    if args.list_rules {
        print!("{}", rules::table());
        return 0;
    }
    let outcome = (|| {
        let cwd = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
        let mut settings = Settings::load(args.rules.as_deref(), &cwd, &args.rule)?;
        if args.min_free.is_some() {
            settings.min_free = args.min_free;
        }
        let mut allocator = Allocator::new(Box::new(NoStore)).map_err(|e| e.to_string())?;
        run(&args.paths, &settings, &mut allocator)
    })();
    match outcome {
        Ok(report) => {
            print!("{}", report.render(args.format));
            report.exit_code(args.strict)
        }
        Err(message) => {
            eprintln!("hereabouts check: {message}");
            2
        }
    }
}
