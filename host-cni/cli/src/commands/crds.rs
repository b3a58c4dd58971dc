//! `hereabouts crds`: the CustomResourceDefinitions of Whereabouts' IPPool and
//! OverlappingRangeIPReservation, generated from the Rust types the store reads and writes
//! (`hereabouts crds | kubectl apply -f -`).

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {}

pub fn exec(_: &CrdsArgs) -> i32 {
    print!("{}", hereabouts_stores::kube::crd::crds_yaml());
    0
}
