//! `hereabouts reconcile [--dry-run]`: one pass of `hereabouts_kube::reconcile` (a CronJob).

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Kubeconfig to use (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Print what would be freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: &ReconcileArgs) -> i32 {
    let report = match hereabouts_kube::reconcile::run(args.kubeconfig.as_deref(), args.dry_run) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("hereabouts reconcile: {} (code {})", e.msg, e.code);
            return 1;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
        return 0;
    }
    let verb = if report.dry_run { "would free" } else { "freed" };
    for freed in &report.freed {
        println!("{verb} {freed}");
    }
    for pool in &report.skipped_pools {
        println!(
            "skipped IPPool {pool}: its name is not [network_name-]<range>, or its spec.range not a range"
        );
    }
    println!(
        "reconcile{}: {} checked, {} kept, {} {verb}",
        if report.dry_run { " (dry run)" } else { "" },
        report.checked,
        report.kept,
        report.freed.len()
    );
    0
}
