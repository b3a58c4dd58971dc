//! `hereabouts controller`: `hereabouts_kube::controller`, watching pods (a Deployment).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Kubeconfig to use (default: in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Wait this long after a pod is deleted before freeing its addresses, so a pod recreated
    /// under the same name (StatefulSet) is found and its sticky address kept.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
}

pub fn exec(args: &ControllerArgs) -> i32 {
    let grace = Duration::from_secs(args.grace_seconds);
    match hereabouts_kube::controller::run(args.kubeconfig.as_deref(), grace) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hereabouts controller: {} (code {})", e.msg, e.code);
            1
        }
    }
}
