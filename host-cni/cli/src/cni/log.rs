//! Logging for CNI calls: Whereabouts' `log_file` and `log_level`, through `tracing`.
//!
//! stdout belongs to the CNI result, so logs go to `log_file` (appended) or else stderr, which
//! runtimes keep in their own logs. `log_file` is opened as every file a config names is
//! (`hereabouts_host::files`: absolute, no final symbolic link, a regular file, created 0600);
//! from the network config it must lie in [`ALLOWED_LOG_DIRS`]. Whereabouts' levels are `debug`, `verbose`, `error` and
//! `panic`; tracing's names are accepted too. Without a level only warnings and errors show.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

use super::netconf::NetConf;

/// Where a network config (as opposed to the flat file) may put `log_file`: directly inside
/// one of these directories, or inside `$HEREABOUTS_LOG_DIR` (the node's environment, which
/// a NAD cannot set). Whoever may write a NAD must not choose which file root appends to.
pub const ALLOWED_LOG_DIRS: &[&str] = &["/var/log/hereabouts", "/var/log/whereabouts"];

/// Installs the process's subscriber for this call's config. Never fails the call: a log file
/// that cannot be opened (or is not allowed) is reported on stderr and logging falls back to
/// stderr. Every event is written through [`Escaping`]: no field can start a new line.
pub fn init(conf: &NetConf) {
    init_for(&conf.ipam, conf.log_file_from_flat_file);
}

/// [`init`] for an ipam section (`log_file_from_flat_file`: whether its `log_file` came from
/// the node's flat file).
pub fn init_for(ipam: &hereabouts_host::config::IpamConfig, log_file_from_flat_file: bool) {
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
    let file = ipam.log_file.as_deref().filter(|f| !f.is_empty()).map(|path| {
        let opened = allowed(path, log_file_from_flat_file).and_then(|()| {
            hereabouts_host::files::open_append("log_file", path).map_err(|e| e.to_string())
        });
        (path, opened)
    });
    match file {
        Some((_, Ok(file))) => {
            let _ = builder.with_writer(Mutex::new(Escaping(file))).try_init();
        }
        Some((_, Err(error))) => {
            let _ = builder.with_writer(|| Escaping(std::io::stderr())).try_init();
            tracing::warn!("{error}; logging to stderr");
        }
        None => {
            let _ = builder.with_writer(|| Escaping(std::io::stderr())).try_init();
        }
    }
    if let Some(level) = unknown {
        tracing::warn!(
            "log_level {level:?} is unknown (use debug, verbose, error or panic); using warn"
        );
    }
}

/// Whether `path` may be the log file: any absolute path from the flat file; from the network
/// config only a file directly inside an allowed directory.
fn allowed(path: &str, from_flat_file: bool) -> Result<(), String> {
    let file = hereabouts_host::files::absolute("log_file", path).map_err(|e| e.to_string())?;
    if from_flat_file {
        return Ok(());
    }
    let env = std::env::var("HEREABOUTS_LOG_DIR").ok().filter(|d| !d.is_empty());
    let dirs = ALLOWED_LOG_DIRS.iter().copied().chain(env.as_deref());
    if dirs.clone().any(|dir| file.parent() == Some(Path::new(dir))) {
        return Ok(());
    }
    let dirs: Vec<&str> = dirs.collect();
    Err(format!(
        "log_file {:?}: a network config may only log inside {} (or $HEREABOUTS_LOG_DIR); \
         set log_file in the flat configuration file for any other place",
        path,
        dirs.join(", ")
    ))
}

/// A writer that escapes every control character (and the Unicode line and paragraph
/// separators) of what it is given, but the final newline: one event stays one line, whatever
/// a network name, container id or error message holds.
pub struct Escaping<W>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(escape(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `buf` as text with control characters escaped as Rust does (`\n`, `\u{1b}`), a final
/// newline kept.
pub fn escape(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let (body, newline) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (&*text, ""),
    };
    let mut out = String::with_capacity(text.len());
    for c in body.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push_str(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_but_the_final_newline() {
        let text = escape(b"network=n\nhacker::0:0::/root:/bin/sh\n\x1b[2J\r\xe2\x80\xa8 done\n");
        assert_eq!(text, "network=n\\nhacker::0:0::/root:/bin/sh\\n\\u{1b}[2J\\r\\u{2028} done\n");
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn a_network_config_logs_only_inside_the_allowed_directories() {
        assert!(allowed("/var/log/hereabouts/n.log", false).is_ok());
        assert!(allowed("/var/log/whereabouts/whereabouts.log", false).is_ok());
        for path in [
            "/etc/passwd",
            "/var/log/hereabouts/../../../etc/passwd",
            "/var/log/hereabouts/sub/x.log",
            "/tmp/whereabouts.log",
            "x.log",
        ] {
            assert!(allowed(path, false).is_err(), "{path}");
        }
        assert!(allowed("/tmp/whereabouts.log", true).is_ok());
        assert!(allowed("relative.log", true).is_err());
    }
}
