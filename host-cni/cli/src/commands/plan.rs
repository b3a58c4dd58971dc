//! `hereabouts plan`: what each range of an ipam config offers, computed by the component.
//!
//! Input: `{"ipam": {…}, "allocated": ["10.0.0.1", …]}` on stdin or `--config FILE`.
//! Output: `{"ranges": [{"range", "first", "last", "capacity", "free", "next"}, …]}`, or
//! `{"code", "msg"}` with a non-zero exit: 6 when the input is not JSON, 7 when it is not a
//! valid config. The shapes are shared with `host-web/plan.mjs`, which must print the same.

use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use hereabouts_host::NoStore;
use hereabouts_host::bindings::{PlanRequest, RangeReport};
use hereabouts_host::config::IpamConfig;
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

/// Parses a plan document and runs it through the component.
pub fn plan_document(text: &str) -> Result<Vec<RangeOut>, CniError> {
    let document: Value = serde_json::from_str(text)
        .map_err(|e| CniError::new(Code::Decode, format!("input is not valid JSON: {e}")))?;
    let Some(object) = document.as_object() else {
        return Err(CniError::new(
            Code::InvalidConfig,
            "input: expected an object with \"ipam\" and \"allocated\"",
        ));
    };
    let ipam = object.get("ipam").ok_or_else(|| {
        CniError::new(Code::InvalidConfig, "ipam: missing (the ipam section of a CNI config)")
    })?;
    let config = IpamConfig::from_value(ipam)?;
    let allocated = match object.get("allocated") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_string).ok_or_else(|| {
                    CniError::new(
                        Code::InvalidConfig,
                        format!("allocated[{i}]: must be an address string"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(CniError::new(
                Code::InvalidConfig,
                "allocated: must be a list of addresses",
            ));
        }
    };
    let mut allocator = Allocator::new(Box::new(NoStore))?;
    let request = PlanRequest { network: config.network_config(), allocated, preview: 1 };
    Ok(allocator.plan(&request)?.into_iter().map(RangeOut::from).collect())
}

pub fn render_text(ranges: &[RangeOut]) -> String {
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
        Ok(ranges) => {
            match args.format {
                Format::Json => println!("{}", serde_json::json!({ "ranges": ranges })),
                Format::Text => print!("{}", render_text(&ranges)),
            }
            0
        }
        Err(error) => {
            println!("{}", serde_json::json!({ "code": error.code, "msg": error.msg }));
            1
        }
    }
}
