//! Builds the allocator component (core-wasm) for `wasm32-wasip2` and hands its path to the
//! crate, which embeds it: `hereabouts` is one file to install, like every CNI plugin.
//!
//! The component is built by a nested cargo into its own target directory
//! (`<target>/component`), with the workspace's `component` profile (small, LTO), whatever
//! profile the host itself is built with — the bytes embedded are always the same.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["core-wasm/src", "core-wasm/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    // Every CNI call is a fresh process: a position-independent binary of this size spends
    // about half its start applying ~47k dynamic relocations (ld.so, copy-on-write faults).
    // Linked as a fixed-address executable, like the Go reference plugins, it starts in ~0.8 ms
    // of CPU instead of ~1.3 ms. Only the plugin binary; tests and libraries are unaffected.
    // glibc only: musl's static start-up code crashes in a -no-pie link (the static release
    // image is built for musl, as static-pie).
    if env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bin=hereabouts=-no-pie");
    }

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { root.join(dir) })
        .unwrap_or_else(|| root.join("target"))
        .join("component");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--package", "hereabouts-core", "--target", "wasm32-wasip2"])
        .args(["--profile", "component", "--target-dir"])
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("could not run cargo to build the allocator component");
    if !status.success() {
        panic!(
            "building the allocator component failed; is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/component/hereabouts_core.wasm");
    assert!(wasm.exists(), "component not found at {}", wasm.display());
    let embedded = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("hereabouts.wasm");
    std::fs::copy(&wasm, &embedded).expect("copy component into OUT_DIR");
    println!("cargo:rustc-env=HEREABOUTS_COMPONENT={}", embedded.display());
    // FNV-1a of the bytes: the compiled-artifact cache key, computed here once instead of at
    // every start of the plugin.
    let bytes = std::fs::read(&embedded).expect("read component");
    let hash = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    println!("cargo:rustc-env=HEREABOUTS_COMPONENT_HASH={hash:016x}");
}
