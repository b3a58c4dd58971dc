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
    /// Serve Prometheus metrics on this port (`GET /metrics`; 0: off). deploy/ and the Helm
    /// chart turn it on at 9402; off by default so two controllers on one host never clash.
    #[arg(long, default_value_t = 0)]
    pub metrics_port: u16,
    /// The address the metrics port listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_address: std::net::IpAddr,
    /// Also run a reconcile pass this often, in process (0: off; the CronJob does it).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub reconcile_every_seconds: u64,
}

pub fn exec(args: &ControllerArgs) -> i32 {
    let options = hereabouts_kube::controller::Options {
        grace: Duration::from_secs(args.grace_seconds),
        metrics: (args.metrics_port != 0)
            .then(|| std::net::SocketAddr::new(args.metrics_address, args.metrics_port)),
        reconcile_every: (args.reconcile_every_seconds != 0)
            .then(|| Duration::from_secs(args.reconcile_every_seconds)),
        reconcile: hereabouts_kube::reconcile::Options::default(),
    };
    match hereabouts_kube::controller::run(args.kubeconfig.as_deref(), &options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hereabouts controller: {} (code {})", e.msg, e.code);
            1
        }
    }
}
