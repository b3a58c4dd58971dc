//! Logging for CNI calls: Whereabouts' `log_file` and `log_level`, through `tracing`.
//!
//! stdout belongs to the CNI result, so logs go to `log_file` (appended) or else stderr, which
//! runtimes keep in their own logs. Whereabouts' levels are `debug`, `verbose`, `error` and
//! `panic`; tracing's names are accepted too. Without a level only warnings and errors show.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

use hereabouts_host::config::IpamConfig;

/// Installs the process's subscriber for this call's config. Never fails the call: a log file
/// that cannot be opened is reported on stderr and logging falls back to stderr.
pub fn init(ipam: &IpamConfig) {
    let (level, unknown) = match ipam.log_level.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => (LevelFilter::WARN, None),
        Some("debug") => (LevelFilter::DEBUG, None),
        Some("trace") => (LevelFilter::TRACE, None),
        Some("verbose" | "info") => (LevelFilter::INFO, None),
        Some("warn" | "warning") => (LevelFilter::WARN, None),
        Some("error" | "panic") => (LevelFilter::ERROR, None),
        Some(other) => (LevelFilter::WARN, Some(other.to_string())),
    };
    let builder =
        tracing_subscriber::fmt().with_max_level(level).with_ansi(false).with_target(false);
    let file = ipam
        .log_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|path| (path, OpenOptions::new().create(true).append(true).open(path)));
    match file {
        Some((_, Ok(file))) => {
            let _ = builder.with_writer(Mutex::new(file)).try_init();
        }
        Some((path, Err(error))) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            tracing::warn!("log_file {path}: cannot open ({error}); logging to stderr");
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
    if let Some(level) = unknown {
        tracing::warn!(
            "log_level {level:?} is unknown (use debug, verbose, error or panic); using warn"
        );
    }
}
