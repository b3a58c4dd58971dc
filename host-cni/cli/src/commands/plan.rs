//! `hereabouts plan`: what each range of an ipam config offers, computed by the component.
//!
//! Input: `{"ipam": {…}, "allocated": ["10.0.0.1", …]}` on stdin or `--config FILE`.
//! Output: `{"ranges": [{"range", "first", "last", "capacity", "free", "next"}, …],
//! "warnings": [{"rule", "field", "ignored", "reason"}, …]}` (what Whereabouts would silently
//! ignore, and so do we), or `{"code", "msg"}` with a non-zero exit: 6 when the input is not
//! JSON, 7 when it is not a valid config. The document is read by the component
//! (`read-plan-document`), so `host-web/plan.mjs` prints the very same, errors included.

use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;

use hereabouts_host::NoStore;
use hereabouts_host::bindings::{PlanRequest, RangeReport};
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Read the document from this file instead of stdin.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

/// One range in the output, exactly as documented.
#[derive(Debug, Serialize, PartialEq)]
pub struct RangeOut {
    pub range: String,
    pub first: Option<String>,
    pub last: Option<String>,
    pub capacity: String,
    pub free: String,
    pub next: Option<String>,
}

impl From<RangeReport> for RangeOut {
    fn from(report: RangeReport) -> Self {
        Self {
            range: report.range,
            first: report.first,
            last: report.last,
            capacity: report.capacity,
            free: report.free,
            next: report.next.into_iter().next(),
        }
    }
}

/// One ignored value in the output.
#[derive(Debug, Serialize, PartialEq)]
pub struct WarningOut {
    pub rule: String,
    pub field: String,
    pub ignored: String,
    pub reason: String,
}

/// What `plan` prints on success.
#[derive(Debug, Serialize, PartialEq)]
pub struct PlanOut {
    pub ranges: Vec<RangeOut>,
    pub warnings: Vec<WarningOut>,
}

/// Reads a plan document and runs it through the component.
pub fn plan_document(text: &str) -> Result<PlanOut, CniError> {
    let mut allocator = Allocator::new(Box::new(NoStore))?;
    let document = allocator.read_plan_document(text)?;
    let warnings = document
        .reading
        .warnings
        .into_iter()
        .map(|w| WarningOut { rule: w.rule, field: w.field, ignored: w.ignored, reason: w.reason })
        .collect();
    let request = PlanRequest {
        network: document.reading.network,
        allocated: document.allocated,
        preview: 1,
    };
    let ranges = allocator.plan(&request)?.into_iter().map(RangeOut::from).collect();
    Ok(PlanOut { ranges, warnings })
}

pub fn render_text(plan: &PlanOut) -> String {
    let ranges = &plan.ranges;
    let dash = || "-".to_string();
    let rows: Vec<[String; 6]> = ranges
        .iter()
        .map(|r| {
            [
                r.range.clone(),
                r.first.clone().unwrap_or_else(dash),
                r.last.clone().unwrap_or_else(dash),
                r.capacity.clone(),
                r.free.clone(),
                r.next.clone().unwrap_or_else(|| "(exhausted)".into()),
            ]
        })
        .collect();
    let header = ["RANGE", "FIRST", "LAST", "CAPACITY", "FREE", "NEXT"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header.map(String::from));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out.push('\n');
    for w in &plan.warnings {
        out.push_str(&format!(
            "warning: {}: ignored {}: {} [{}]\n",
            w.field, w.ignored, w.reason, w.rule
        ));
    }
    out
}

/// Runs the command; returns the process exit code.
pub fn exec(args: &PlanArgs) -> i32 {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CniError::new(Code::Io, format!("--config {}: {e}", path.display()))),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map(|_| text)
                .map_err(|e| CniError::new(Code::Io, format!("stdin: {e}")))
        }
    };
    match text.and_then(|text| plan_document(&text)) {
        Ok(plan) => {
            match args.format {
                Format::Json => println!("{}", serde_json::json!(plan)),
                Format::Text => print!("{}", render_text(&plan)),
            }
            0
        }
        Err(error) => {
            println!("{}", serde_json::json!({ "code": error.code, "msg": error.msg }));
            1
        }
    }
}
