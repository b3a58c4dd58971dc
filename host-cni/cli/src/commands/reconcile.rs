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
    /// Also free the addresses of pods being deleted on a node that has not been Ready for
    /// this many seconds (a dead node's kubelet never sends their DEL). Off by default: a
    /// node that comes back after the grace period finds those pods' addresses handed out.
    #[arg(long, value_name = "SECONDS")]
    pub not_ready_grace_seconds: Option<u64>,
    /// Print the result as one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: &ReconcileArgs) -> i32 {
    let report = match hereabouts_kube::reconcile::run(
        args.kubeconfig.as_deref(),
        &hereabouts_kube::reconcile::Options {
            dry_run: args.dry_run,
            not_ready_grace: args.not_ready_grace_seconds.map(std::time::Duration::from_secs),
        },
    ) {
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
