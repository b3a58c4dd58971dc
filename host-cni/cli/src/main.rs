//! `hereabouts`: a CNI IPAM plugin when a runtime calls it (CNI_COMMAND is set), a set of
//! tools otherwise.

mod cni;
mod commands;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hereabouts",
    version,
    about = "Cluster-wide IPAM for CNI, Whereabouts-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what each range offers: capacity, free, the next address (through the component).
    Plan(commands::plan::PlanArgs),
    /// Write the embedded allocator component (.wasm) for other hosts.
    Component(commands::component::ComponentArgs),
    /// Run N containers' ADDs in parallel against a throw-away local store, as a runtime would.
    Demo(commands::demo::DemoArgs),
    /// Check NADs and CNI configs for IPAM mistakes before they reach a cluster (for CI).
    Check(commands::check::CheckArgs),
    /// Print Whereabouts' CRDs, or with --ipamclaims the IPAMClaim CRD (kubectl apply -f -).
    Crds(commands::crds::CrdsArgs),
    /// Free the addresses of pods that are gone (Kubernetes store; run as a CronJob).
    Reconcile(commands::reconcile::ReconcileArgs),
    /// Install the plugin on this node (the DaemonSet's job): binaries, flat file, kubeconfig.
    Install(commands::install::InstallArgs),
    /// Switching from Whereabouts: `migrate check` lists what of it still runs or would conflict.
    Migrate(commands::migrate::MigrateArgs),
    /// Watch pods and free a deleted pod's addresses promptly (Kubernetes store; a Deployment).
    Controller(commands::controller::ControllerArgs),
    /// Read the node's embedded store: dump it as Whereabouts objects, or check its integrity.
    Store(commands::store::StoreArgs),
    /// How full each pool of a network is, who holds an address, what does not add up (any store).
    Status(commands::status::StatusArgs),
    /// Node slices on etcd: which node claimed which slice; free the claims of nodes that are gone.
    Slices(commands::slices::SlicesArgs),
}

fn main() {
    // A runtime calls a plugin with CNI_COMMAND set and no arguments: be the CNI plugin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(cni::main());
    }
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Plan(args) => commands::plan::exec(args),
        Command::Demo(args) => commands::demo::exec(args),
        Command::Check(args) => commands::check::exec(args),
        Command::Crds(args) => commands::crds::exec(args),
        Command::Reconcile(args) => commands::reconcile::exec(args),
        Command::Install(args) => commands::install::exec(args),
        Command::Controller(args) => commands::controller::exec(args),
        Command::Migrate(args) => commands::migrate::exec(args),
        Command::Store(args) => commands::store::exec(args),
        Command::Status(args) => commands::status::exec(args),
        Command::Slices(args) => commands::slices::exec(args),
        Command::Component(args) => match commands::component::exec(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("hereabouts component: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
