//! One call through the component in wasmtime against the same call in the native rlib, and
//! what a fresh process pays to get the component ready (from the precompiled cache, and
//! compiling from scratch). Prints criterion's report, then a side-by-side table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hereabouts_core::types as native;
use hereabouts_host::NoStore;
use hereabouts_host::bindings::{NetworkConfig, PlanRequest, RangeConfig};
use hereabouts_host::runtime::Allocator;

fn median_of(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[runs / 2]
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let excludes: Vec<String> = (0..100).map(|i| format!("10.{i}.0.0/24")).collect();
    let allocated: Vec<String> = (1..=200).map(|i| format!("10.0.1.{i}")).collect();

    let wit_request = PlanRequest {
        network: NetworkConfig {
            range: Some(RangeConfig {
                range: "10.0.0.0/8".into(),
                range_start: None,
                range_end: None,
                exclude: excludes.clone(),
            }),
            ip_ranges: vec![],
            gateway: None,
            network_name: String::new(),
            enable_overlapping_ranges: true,
            sticky: true,
            allocation_error: None,
            node_slice_size: None,
            node_slice: None,
        },
        allocated: allocated.clone(),
        persistent: Vec::new(),
        preview: 1,
    };
    let native_request = native::PlanRequest {
        network: native::NetworkConfig {
            range: Some(native::RangeConfig {
                range: "10.0.0.0/8".into(),
                exclude: excludes,
                ..Default::default()
            }),
            enable_overlapping_ranges: true,
            ..Default::default()
        },
        allocated,
        persistent: Vec::new(),
        preview: 1,
    };

    let cache = std::env::temp_dir().join(format!("hereabouts-bench-{}", std::process::id()));
    let mut allocator = Allocator::with_cache(Box::new(NoStore), Some(&cache)).unwrap();
    let through_wasm = allocator.plan(&wit_request).unwrap();
    let natively = hereabouts_core::plan::plan(&native_request).unwrap();
    assert_eq!(through_wasm[0].next, natively[0].next);

    c.bench_function("plan: /8, 100 excludes, 200 allocated / component", |b| {
        b.iter(|| black_box(allocator.plan(&wit_request).unwrap()))
    });
    c.bench_function("plan: /8, 100 excludes, 200 allocated / native", |b| {
        b.iter(|| black_box(hereabouts_core::plan::plan(&native_request).unwrap()))
    });
    let wasm = median_of(|| drop(black_box(allocator.plan(&wit_request).unwrap())), 201);
    let native =
        median_of(|| drop(black_box(hereabouts_core::plan::plan(&native_request).unwrap())), 201);

    let cached =
        median_of(|| drop(Allocator::with_cache(Box::new(NoStore), Some(&cache)).unwrap()), 51);
    let compiled = median_of(|| drop(Allocator::with_cache(Box::new(NoStore), None).unwrap()), 5);
    let _ = std::fs::remove_dir_all(&cache);

    c.final_summary();
    println!();
    println!("{:<58} {:>12}", "case (median)", "time");
    println!("{:<58} {:>12}", "one plan call, native rlib", format!("{native:.1?}"));
    println!(
        "{:<58} {:>12}",
        "one plan call, through the component (warm instance)",
        format!("{wasm:.1?}")
    );
    println!("{:<58} {:>11.2}x", "  component / native", wasm.as_secs_f64() / native.as_secs_f64());
    println!(
        "{:<58} {:>12}",
        "load + instantiate, precompiled artifact from cache",
        format!("{cached:.2?}")
    );
    println!(
        "{:<58} {:>12}",
        "load + instantiate, compiling with Cranelift",
        format!("{compiled:.2?}")
    );
    println!(
        "{:<58} {:>11.0}x",
        "  compile / cached",
        compiled.as_secs_f64() / cached.as_secs_f64()
    );
}
