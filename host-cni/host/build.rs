//! Builds the allocator component and hands its path to the crate, which embeds it:
//! `hereabouts` is one file to install, like every CNI plugin.
//!
//! 1. A nested cargo builds core-wasm for `wasm32-unknown-unknown` — std without WASI, so the
//!    core module imports nothing but the WIT `store` interface it uses — into its own target
//!    directory (`<target>/component`), with the workspace's `component` profile (small, LTO),
//!    whatever profile the host itself is built with: the bytes embedded are always the same.
//! 2. `wit-component` turns that core module into a component, from the WIT world wit-bindgen
//!    recorded in it. (The same crate, with the same features, is already built for wasmtime's
//!    `bindgen!`, so this costs no extra compilation.)

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// std without WASI: the component's only imports are the `hereabouts:ipam` interfaces.
const CORE_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.ancestors().nth(2).expect("host-cni/host is two levels down");
    for watched in ["core-wasm/src", "core-wasm/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { root.join(dir) })
        .unwrap_or_else(|| root.join("target"))
        .join("component");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--package", "hereabouts-core", "--target", CORE_TARGET])
        .args(["--profile", "component", "--target-dir"])
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the wasm build, nor clippy (run
        // as a wrapper of workspace crates) into the core's component build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .status()
        .expect("could not run cargo to build the allocator component");
    if !status.success() {
        panic!(
            "building the allocator core failed; is the target installed? \
             run `rustup target add {CORE_TARGET}`"
        );
    }
    let module_path = target_dir.join(CORE_TARGET).join("component/hereabouts_core.wasm");
    let module = std::fs::read(&module_path)
        .unwrap_or_else(|e| panic!("core module {}: {e}", module_path.display()));
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut encoder| encoder.encode())
        .unwrap_or_else(|e| panic!("making a component of {}: {e:#}", module_path.display()));

    let embedded = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("hereabouts.wasm");
    std::fs::write(&embedded, &component).expect("write the component into OUT_DIR");
    println!("cargo:rustc-env=HEREABOUTS_COMPONENT={}", embedded.display());
    // FNV-1a of the bytes: the compiled-artifact cache key, computed here once instead of at
    // every start of the plugin.
    let hash = component
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    println!("cargo:rustc-env=HEREABOUTS_COMPONENT_HASH={hash:016x}");
}
