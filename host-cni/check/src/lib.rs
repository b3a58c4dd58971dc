//! `hereabouts check PATH…`: policy tests for IPAM configurations, for CI — as a library;
//! the command line (flags, exit status) is the `hereabouts` binary's.
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
use hereabouts_host::runtime::{Allocator, RuntimeError};
pub use rules::{Level, NodeFlatFile, Settings, SettingsError};
pub use sources::STDIN;
pub use tree::Spot;

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `file:line:col: level[rule] …` for people.
    Text,
    /// One JSON object, for scripts.
    Json,
    /// SARIF 2.1.0, for code-scanning UIs.
    Sarif,
}

/// Why a run could not finish (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A path named on the command line, or found under one, cannot be read.
    #[error("{path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("stdin: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The allocator component could not run.
    #[error(transparent)]
    Component(#[from] RuntimeError),
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

/// One ipam section found in CNI configs, conflists or NAD YAML, as `check` finds them.
#[derive(Debug, Clone)]
pub struct IpamSection {
    /// Who declares it: `NAD namespace/name` or `network NAME`.
    pub label: String,
    /// The CNI config's (or conflist's) `name`, as a runtime passes it; "" when it has none.
    pub cni_name: String,
    /// The ipam object, as written.
    pub ipam: serde_json::Value,
}

/// The ipam sections of type `hereabouts`/`whereabouts` in `paths` (`-`: stdin), and what
/// made a file unreadable as a config (parse errors, as `check` reports them).
pub fn ipam_sections(paths: &[PathBuf]) -> Result<(Vec<IpamSection>, Vec<String>), CheckError> {
    let files = sources::collect_files(paths)?;
    let loaded = sources::load(&files)?;
    let problems = loaded.findings.iter().map(|f| format!("{}: {}", f.file, f.message)).collect();
    let sections = loaded
        .sites
        .into_iter()
        .map(|site| IpamSection { label: site.label, cni_name: site.cni_name, ipam: site.ipam })
        .collect();
    Ok((sections, problems))
}

/// Checks `paths`; `Err` when it could not run (a path that does not exist, the component).
pub fn run(
    paths: &[PathBuf],
    settings: &Settings,
    allocator: &mut Allocator,
) -> Result<Report, CheckError> {
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
