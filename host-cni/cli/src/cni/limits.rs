//! The caps on one CNI call's process: how much stdin it reads, how long it may take, and how
//! long the names it stores may be. The caps on a config's shape (how many ranges, how many
//! excludes) are the core's, so that every host agrees (`core-wasm/src/config.rs`).
//!
//! Whoever may write a NetworkAttachmentDefinition, or call the plugin, chooses these inputs;
//! without caps a 50 MB stdin took 874 MB of memory, a 5,000-character `CNI_IFNAME` was
//! stored, and a store that never answers held the call for ever. The values (documented in
//! the README's limits table):

use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::env::{CniEnv, Command};
use hereabouts_host::error::{CniError, Code};

/// The most stdin a call reads: a network config is a few KiB; a GC's list of valid
/// attachments for thousands of pods some hundreds.
pub const MAX_STDIN_BYTES: u64 = 1 << 20;

/// `CNI_IFNAME`'s longest: Linux's `IFNAMSIZ` (16) less the terminating NUL.
pub const MAX_IFNAME_BYTES: usize = 15;

/// `CNI_CONTAINERID`'s longest: runtimes use 64 hex digits.
pub const MAX_CONTAINER_ID_BYTES: usize = 256;

/// The whole call's default deadline; `$HEREABOUTS_CALL_DEADLINE_SECONDS` (the node's
/// environment) changes it. Past it the call answers CNI 11 ("try again later") and exits,
/// which the stores survive as they survive a kill (a commit is atomic or absent).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Reads stdin, at most [`MAX_STDIN_BYTES`].
pub fn read_stdin(into: &mut String) -> Result<(), CniError> {
    std::io::stdin().take(MAX_STDIN_BYTES + 1).read_to_string(into).map_err(|e| {
        CniError::new(Code::Decode, format!("stdin: cannot read the network config: {e}"))
    })?;
    if into.len() as u64 > MAX_STDIN_BYTES {
        into.clear();
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "stdin: the network config is larger than the {MAX_STDIN_BYTES} bytes a call reads"
            ),
        ));
    }
    Ok(())
}

/// The names an ADD or CHECK would store or compare. DEL and GC take any (what an earlier
/// version stored must stay deletable).
pub fn check_env(env: &CniEnv) -> Result<(), CniError> {
    if !matches!(env.command, Command::Add | Command::Check) {
        return Ok(());
    }
    let bad = |msg: String| Err(CniError::new(Code::InvalidEnvironment, msg));
    let ifname = &env.ifname;
    if ifname.len() > MAX_IFNAME_BYTES {
        return bad(format!(
            "CNI_IFNAME: {} bytes, longer than the {MAX_IFNAME_BYTES} of a Linux interface name",
            ifname.len()
        ));
    }
    if ifname == "."
        || ifname == ".."
        || ifname.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad(format!(
            "CNI_IFNAME: {ifname:?} is not an interface name (no '/', ':', spaces, \".\" or \"..\")"
        ));
    }
    let id = &env.container_id;
    if id.len() > MAX_CONTAINER_ID_BYTES {
        return bad(format!(
            "CNI_CONTAINERID: {} bytes, longer than the {MAX_CONTAINER_ID_BYTES} accepted",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return bad(format!("CNI_CONTAINERID: {id:?} holds control characters"));
    }
    Ok(())
}

/// Whether the call's one output was printed (by the call, or by the deadline).
static OUTPUT: Mutex<bool> = Mutex::new(false);
/// The `cniVersion` the deadline's error is reported in, once stdin is read.
static VERSION: OnceLock<&'static str> = OnceLock::new();

pub fn set_error_version(version: &'static str) {
    let _ = VERSION.set(version);
}

/// Prints the call's one output (None: nothing to print) unless the deadline printed its
/// own; false when it did.
pub fn print_once(output: Option<&serde_json::Value>) -> bool {
    use std::io::Write;
    let mut printed = OUTPUT.lock().unwrap_or_else(|p| p.into_inner());
    if *printed {
        return false;
    }
    *printed = true;
    if let Some(output) = output {
        let mut stdout = std::io::stdout().lock();
        // If the runtime closed stdout there is nobody left to tell.
        let _ = writeln!(stdout, "{output}").and_then(|()| stdout.flush());
    }
    true
}

/// The deadline in force: `$HEREABOUTS_CALL_DEADLINE_SECONDS` when it is a positive number.
pub fn deadline() -> Duration {
    std::env::var("HEREABOUTS_CALL_DEADLINE_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_DEADLINE)
}

/// Starts the watchdog: past `deadline`, prints CNI error 11 (unless the call printed its
/// output already) and ends the process with status 1. Blocking calls (a FIFO, a store that
/// never answers) cannot hold the runtime for ever.
pub fn arm(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        let error = CniError::new(
            Code::TryAgainLater,
            format!(
                "the call did not finish within its deadline of {} s (HEREABOUTS_CALL_DEADLINE_SECONDS)",
                deadline.as_secs_f64()
            ),
        );
        tracing::error!(code = error.code.number(), "{}", error.msg);
        let version = VERSION.get().copied().unwrap_or(super::version::LATEST);
        if print_once(Some(&error.to_json(version))) {
            std::process::exit(1);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: Command, container_id: &str, ifname: &str) -> CniEnv {
        CniEnv {
            command,
            container_id: container_id.into(),
            netns: "/n".into(),
            ifname: ifname.into(),
            args: Default::default(),
        }
    }

    #[test]
    fn add_refuses_what_linux_or_a_store_should_not_take() {
        assert!(check_env(&env(Command::Add, "c1", "eth0")).is_ok());
        assert!(check_env(&env(Command::Add, "c1", "a23456789012345")).is_ok());
        for (id, ifname, field) in [
            ("c1", "a234567890123456", "CNI_IFNAME"),
            ("c1", "../x", "CNI_IFNAME"),
            ("c1", "eth 0", "CNI_IFNAME"),
            ("c1", "..", "CNI_IFNAME"),
            (&"c".repeat(257), "eth0", "CNI_CONTAINERID"),
            ("c\n1", "eth0", "CNI_CONTAINERID"),
        ] {
            let error = check_env(&env(Command::Add, id, ifname)).unwrap_err();
            assert_eq!(error.code, Code::InvalidEnvironment);
            assert!(error.msg.starts_with(field), "{}", error.msg);
        }
        // What an earlier version stored stays deletable.
        assert!(check_env(&env(Command::Del, &"c".repeat(5000), &"e".repeat(5000))).is_ok());
    }
}
