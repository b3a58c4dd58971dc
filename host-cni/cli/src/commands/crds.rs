//! `hereabouts crds`: the CustomResourceDefinitions of Whereabouts' IPPool,
//! OverlappingRangeIPReservation and NodeSlicePool, generated from the Rust types the store
//! reads and writes (`hereabouts crds | kubectl apply -f -`).
//!
//! `--ipamclaims` prints the IPAMClaim CRD (`k8s.cni.cncf.io`) instead: KubeVirt and
//! OVN-Kubernetes install the same CRD, so it is a separate, optional step
//! (deploy/ipamclaims-crd.yaml) for clusters where nothing else has.

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Print the IPAMClaim CRD (persistent IPs for KubeVirt) instead of Whereabouts' CRDs.
    #[arg(long)]
    pub ipamclaims: bool,
}

pub fn exec(args: &CrdsArgs) -> i32 {
    let yaml = if args.ipamclaims {
        hereabouts_stores::kube::crd::ipamclaims_crd_yaml()
    } else {
        hereabouts_stores::kube::crd::crds_yaml()
    };
    print!("{yaml}");
    0
}
