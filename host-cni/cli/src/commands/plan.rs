//! `hereabouts plan`: what each range of an ipam config offers, computed by the component.
//!
//! Input: `{"ipam": {…}, "allocated": ["10.0.0.1", …], "persistent": […]}` on stdin or
//! `--config FILE`; `persistent` lists the addresses kept for an IPAMClaim or StatefulSet member
//! that no pod holds (taken, but counted apart; they may also be in `allocated`).
//! Output: `{"ranges": [{"range", "first", "last", "capacity", "free", "next"}, …],
//! "warnings": [{"rule", "field", "ignored", "reason"}, …]}` (what Whereabouts would silently
//! ignore, and so do we), each range with `"persistent"` (the count) when the document lists
//! persistent addresses, with `"node_slices": {"addresses_per_slice", "count", "range",
//! "slice_size", "slices"}` when the config has `node_slice_size` (the core's `node-slicing`),
//! or `{"code", "msg"}` with a non-zero exit: 6 when the input is not JSON, 7 when it is not a
//! valid config. The document is read by the component
//! (`read-plan-document`), so `host-web/plan.mjs` prints the very same, errors included.

use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;

use hereabouts_host::NoStore;
use hereabouts_host::bindings::{PlanRequest, RangeReport, Slicing};
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

/// One range in the output, exactly as documented. Fields are declared in sorted order and
/// printed as declared, so the output is the same byte for byte whatever features serde_json
/// is built with (host-web's `plan.mjs` prints the same).
#[derive(Debug, Serialize, PartialEq)]
pub struct RangeOut {
    pub capacity: String,
    pub first: Option<String>,
    pub free: String,
    pub last: Option<String>,
    pub next: Option<String>,
    /// Addresses kept for a persistent owner with no pod: only for a document that lists
    /// `persistent` addresses, so every other output is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<String>,
    pub range: String,
}

impl RangeOut {
    /// The range's output; `persistent` shown when the document lists persistent addresses.
    fn new(report: RangeReport, show_persistent: bool) -> Self {
        Self {
            range: report.range,
            first: report.first,
            last: report.last,
            capacity: report.capacity,
            free: report.free,
            next: report.next.into_iter().next(),
            persistent: show_persistent.then_some(report.persistent),
        }
    }
}

/// One ignored value in the output.
#[derive(Debug, Serialize, PartialEq)]
pub struct WarningOut {
    pub field: String,
    pub ignored: String,
    pub reason: String,
    pub rule: String,
}

/// How `node_slice_size` cuts the first range (Whereabouts' NodeSlicePool): present only for a
/// config that has it, so the output of every other config is unchanged.
#[derive(Debug, Serialize, PartialEq)]
pub struct NodeSlicesOut {
    /// Decimal, as the core counts (an IPv6 slice can hold more than 2^64).
    pub addresses_per_slice: String,
    pub count: usize,
    pub range: String,
    /// As written (`"/28"` or `"28"`).
    pub slice_size: String,
    /// Every slice, lowest first: the NodeSlicePool's `status.allocations` order.
    pub slices: Vec<String>,
}

impl From<Slicing> for NodeSlicesOut {
    fn from(slicing: Slicing) -> Self {
        Self {
            addresses_per_slice: slicing.addresses_per_slice,
            count: slicing.slices.len(),
            range: slicing.range,
            slice_size: slicing.slice_size,
            slices: slicing.slices,
        }
    }
}

/// What `plan` prints on success.
#[derive(Debug, Serialize, PartialEq)]
pub struct PlanOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_slices: Option<NodeSlicesOut>,
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
        persistent: document.persistent,
        preview: 1,
    };
    let show_persistent = !request.persistent.is_empty();
    let ranges = allocator
        .plan(&request)?
        .into_iter()
        .map(|report| RangeOut::new(report, show_persistent))
        .collect();
    // A plan document has no CNI `name`, so the slicing's pool name is not shown.
    let node_slices = match request.network.node_slice_size {
        Some(_) => Some(allocator.node_slicing(&request.network, "")?.into()),
        None => None,
    };
    Ok(PlanOut { node_slices, ranges, warnings })
}

/// Slices listed in full up to this many; beyond, the first few and the last.
const TEXT_SLICES: usize = 8;

/// `node slices: 4 of /26 in 10.0.0.0/24, 62 addresses each: 10.0.0.0/26, …`
fn slices_line(slices: &NodeSlicesOut) -> String {
    let listed = if slices.slices.len() <= TEXT_SLICES {
        slices.slices.join(", ")
    } else {
        let head = slices.slices[..TEXT_SLICES - 2].join(", ");
        let last = slices.slices.last().map_or("", String::as_str);
        format!("{head}, ..., {last}")
    };
    format!(
        "node slices: {} of {} in {}, {} addresses each: {listed}\n",
        slices.count, slices.slice_size, slices.range, slices.addresses_per_slice
    )
}

/// `--format text`: the table (with a PERSISTENT column, after FREE, only when a range has
/// persistent addresses), the node slices line, then one line per warning.
pub fn render_text(plan: &PlanOut) -> String {
    let ranges = &plan.ranges;
    let dash = || "-".to_string();
    let show_persistent = ranges.iter().any(|r| r.persistent.as_deref().is_some_and(|p| p != "0"));
    let rows: Vec<Vec<String>> = ranges
        .iter()
        .map(|r| {
            let mut row = vec![
                r.range.clone(),
                r.first.clone().unwrap_or_else(dash),
                r.last.clone().unwrap_or_else(dash),
                r.capacity.clone(),
                r.free.clone(),
            ];
            if show_persistent {
                row.push(r.persistent.clone().unwrap_or_else(dash));
            }
            row.push(r.next.clone().unwrap_or_else(|| "(exhausted)".into()));
            row
        })
        .collect();
    let mut header = vec!["RANGE", "FIRST", "LAST", "CAPACITY", "FREE"];
    if show_persistent {
        header.push("PERSISTENT");
    }
    header.push("NEXT");
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out.push('\n');
    if let Some(slices) = &plan.node_slices {
        out.push_str(&slices_line(slices));
    }
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
                Format::Json => println!("{}", serde_json::to_string(&plan).expect("serialisable")),
                Format::Text => print!("{}", render_text(&plan)),
            }
            0
        }
        Err(error) => {
            #[derive(Serialize)]
            struct ErrorOut<'a> {
                code: u32,
                msg: &'a str,
            }
            let out = ErrorOut { code: error.code.number(), msg: &error.msg };
            println!("{}", serde_json::to_string(&out).expect("serialisable"));
            1
        }
    }
}
