//! `hereabouts reconcile [--dry-run]`: one pass of `hereabouts_kube::reconcile` (a CronJob).
//!
//! Without `--config` it reconciles the Kubernetes store (the IPPools and reservations of its
//! namespace). With `--config`, the networks that config names keep their allocations in
//! etcd: the pass opens each network's store as the plugin does, and asks the API server
//! which pods still exist.

use std::path::PathBuf;

use hereabouts_host::bindings::Reservation;
use hereabouts_host::config::StoreKind;
use hereabouts_host::error::{CniError, Code};
use hereabouts_kube::reconcile::{Report, StoredNetwork, StoredReservations};
use hereabouts_stores::etcd::EtcdStore;

use crate::cni::Session;

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
    /// Reconcile the networks of this CNI config, conflist or NetworkAttachmentDefinition YAML
    /// (`-`: stdin), whose allocations live in etcd, instead of the Kubernetes store (the Helm
    /// chart's `reconcile.etcdConfigSecret` sets it through the environment).
    #[arg(long, value_name = "FILE", env = "HEREABOUTS_RECONCILE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The etcd store's reservations, for the ones no allocation backs.
struct EtcdReservations(EtcdStore);

impl StoredReservations for EtcdReservations {
    fn list(&mut self, network_name: &str) -> Result<Vec<Reservation>, CniError> {
        Ok(hereabouts_host::Backend::list_reservations(&mut self.0, network_name)?)
    }
    fn delete_if_unchanged(&mut self, reservation: &Reservation) -> Result<bool, CniError> {
        Ok(self.0.delete_reservation_if_unchanged(reservation)?)
    }
}

/// Each network of `config` over its etcd store; a network on another store is an error
/// naming it (the Kubernetes store is reconciled without `--config`; the local store is one
/// node's, where DEL and GC free).
fn stored_networks(config: &std::path::Path) -> Result<Vec<StoredNetwork>, CniError> {
    let mut networks = Vec::new();
    for section in super::status::sections(config)? {
        let conf = &section.conf;
        match conf.ipam.store_kind()? {
            StoreKind::Etcd => {}
            kind => {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    format!(
                        "{}: {} keeps its addresses in the {kind:?} store; `reconcile \
                         --config` reconciles networks on etcd (run `hereabouts reconcile` \
                         without --config for the Kubernetes store)",
                        config.display(),
                        conf.name
                    ),
                ));
            }
        }
        let mut session = Session::read(conf)?;
        // With node slices: every claimed slice's pool, and the whole range's (addresses
        // allocated before the network was sliced).
        let (store, mut configs) = super::status::open_networks(&mut session, &section)?;
        if configs.first() != Some(&session.network) {
            configs.push(session.network.clone());
        }
        session.allocator.set_backend(store);
        networks.push(StoredNetwork {
            label: conf.name.clone(),
            networks: configs,
            allocator: session.allocator,
            reservations: Box::new(EtcdReservations(hereabouts_stores::etcd::open(&conf.ipam)?)),
        });
    }
    Ok(networks)
}

fn run(args: &ReconcileArgs) -> Result<Report, CniError> {
    let options = hereabouts_kube::reconcile::Options {
        dry_run: args.dry_run,
        not_ready_grace: args.not_ready_grace_seconds.map(std::time::Duration::from_secs),
    };
    match &args.config {
        None => hereabouts_kube::reconcile::run(args.kubeconfig.as_deref(), &options),
        Some(config) => {
            let mut networks = stored_networks(config)?;
            let api = hereabouts_kube::reconcile::connect(args.kubeconfig.as_deref())?;
            hereabouts_kube::reconcile::reconcile_stored(&api, &mut networks, &options)
        }
    }
}

pub fn exec(args: &ReconcileArgs) -> i32 {
    let report = match run(args) {
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
