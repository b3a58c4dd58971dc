//! The hostile suite (issue 21): the built `hereabouts` binary attacked the way whoever may
//! write a NetworkAttachmentDefinition, or reach the controller's metrics port, would attack
//! it — symbolic links, FIFOs, `/dev/zero`, oversized inputs, a listener collecting
//! credentials, connections that never finish their request. Each case failed on the main of
//! 2026-12 and must keep failing to get through.
//!
//! Every attack stays inside what the test made: files in its own temporary directories under
//! cargo's target tmp, listeners on 127.0.0.1 only. Run by `./test.sh hostile` (the tests are
//! `#[ignore]`d for the plain `cargo test` of the `rust` suite, so they run once).

mod caps;
mod files;
#[path = "../kube_api/mod.rs"]
mod kube_api;
mod metrics;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary attacked: this build's, or `$HEREABOUTS_HOSTILE_BIN` (to show that an older
/// build falls to the attacks).
pub fn bin() -> std::ffi::OsString {
    std::env::var_os("HEREABOUTS_HOSTILE_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_hereabouts").into())
}

/// A directory of this test's own, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hostile-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One compiled-component cache for the whole run.
pub fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-cache")
}

/// A network config on the local store in `dir`, with `ipam` merged over the defaults.
pub fn conf(dir: &TempDir, ipam: Value) -> Value {
    let mut full = json!({"type": "hereabouts", "range": "10.77.0.0/24",
        "data_dir": dir.join("store")});
    full.as_object_mut().unwrap().extend(ipam.as_object().unwrap().clone());
    json!({"cniVersion": "1.0.0", "name": "hostile", "type": "bridge", "ipam": full})
}

/// What one call did.
#[derive(Debug)]
pub struct Out {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The most resident memory seen while it ran, in KiB.
    pub peak_rss_kib: u64,
}

impl Out {
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, Some(0), "expected success: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout).unwrap()
        }
    }

    /// Asserts one CNI error JSON with `code`; returns its message.
    pub fn err(&self, code: u64) -> String {
        assert!(self.status.is_some_and(|s| s != 0), "expected a CNI error: {self:?}");
        let error: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self:?}"));
        assert_eq!(error["code"], code, "{self:?}");
        error["msg"].as_str().unwrap().to_string()
    }
}

/// One plugin call being prepared: `CNI_COMMAND=verb`, container `c1`, `eth0`.
pub struct Cni {
    command: Command,
    /// Killed past this (a call that hangs is a failure, not a hung test).
    pub limit: Duration,
}

impl Cni {
    pub fn new(verb: &str) -> Self {
        let mut command = Command::new(bin());
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HEREABOUTS_CACHE_DIR", shared_cache())
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_NETNS", "/var/run/netns/hostile")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin");
        Cni { command, limit: Duration::from_secs(30) }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn run(self, stdin: &Value) -> Out {
        self.run_bytes(stdin.to_string().into_bytes())
    }

    /// Runs with `stdin`, killing the process past [`Cni::limit`] or past 1 GiB of memory
    /// (what an unbounded read of `/dev/zero` would take on the way to the node's all).
    pub fn run_bytes(mut self, stdin: Vec<u8>) -> Out {
        let started = Instant::now();
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hereabouts");
        let mut input = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin); // EPIPE once the plugin stops reading
        });
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let readers = [read_all(stdout), read_all(stderr)];
        let mut peak = 0;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            peak = peak.max(rss_kib(&child));
            assert!(
                started.elapsed() < self.limit && peak < 1 << 20,
                "{}",
                kill(
                    &mut child,
                    format!("still running after {:?} at {peak} KiB", started.elapsed())
                )
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = writer.join();
        let [stdout, stderr] = readers.map(|r| r.join().unwrap());
        Out { status, stdout, stderr, elapsed: started.elapsed(), peak_rss_kib: peak }
    }
}

fn read_all(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn kill(child: &mut Child, why: String) -> String {
    let _ = child.kill();
    let _ = child.wait();
    why
}

/// The resident memory of a running process, in KiB (0 once it is gone).
pub fn rss_kib(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The permission bits of a path (not following a final link).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

/// A FIFO at `path` (mkfifo(1): the test makes it in its own directory).
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}
