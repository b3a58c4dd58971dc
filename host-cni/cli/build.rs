//! Link flags for the `hereabouts` binary (the component itself is built by
//! host-cni/host/build.rs).

fn main() {
    // Every CNI call is a fresh process: a position-independent binary of this size spends
    // about half its start applying ~47k dynamic relocations (ld.so, copy-on-write faults).
    // Linked as a fixed-address executable, like the Go reference plugins, it starts in ~0.8 ms
    // of CPU instead of ~1.3 ms. Only the plugin binary; tests and libraries are unaffected.
    // glibc only: musl's static start-up code crashes in a -no-pie link (the static release
    // image is built for musl, as static-pie).
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bin=hereabouts=-no-pie");
    }
}
