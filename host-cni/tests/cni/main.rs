//! The CNI plugin as a runtime sees it: the built `hereabouts` binary, called with the CNI
//! environment and a network config on stdin, one fresh process per call.

mod chaos;
mod errors;
mod protocol;
mod switch;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_hereabouts");

/// A directory under cargo's per-test scratch space, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cni-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One compiled-component cache for the whole test run (compiling is the slow part).
pub fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cni-test-cache")
}

/// A network whose local store lives in a fresh directory.
pub struct Net {
    pub dir: TempDir,
}

impl Net {
    pub fn new(tag: &str) -> Self {
        Net { dir: TempDir::new(tag) }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A network config: `ipam` (merged over type + data_dir) at `version`.
    pub fn conf(&self, version: &str, ipam: Value) -> Value {
        let mut full = json!({"type": "hereabouts", "data_dir": self.data_dir()});
        full.as_object_mut().unwrap().extend(ipam.as_object().unwrap().clone());
        json!({"cniVersion": version, "name": "testnet", "type": "bridge", "ipam": full})
    }

    /// The store as `hereabouts store dump` shows it (Whereabouts' objects), by kind and
    /// name: what a runtime's calls changed, read through the product's own tool.
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        let out = Command::new(BIN)
            .args(["store", "dump", "--data-dir"])
            .arg(self.data_dir())
            .env("HEREABOUTS_CACHE_DIR", shared_cache())
            .output()
            .unwrap();
        assert!(out.status.success(), "store dump: {}", String::from_utf8_lossy(&out.stderr));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let key = format!(
                    "{}/{}",
                    item["kind"].as_str().unwrap(),
                    item["metadata"]["name"].as_str().unwrap()
                );
                (key, item["spec"].clone())
            })
            .collect()
    }

    /// The `spec` of pool `name` (Whereabouts' IPPool: `range`, `allocations`).
    pub fn pool(&self, name: &str) -> Value {
        self.snapshot()
            .remove(&format!("IPPool/{name}"))
            .unwrap_or_else(|| panic!("no pool {name}"))
    }

    /// `offset → container id` of a pool (empty when the pool does not exist).
    pub fn allocations(&self, name: &str) -> BTreeMap<String, String> {
        let Some(pool) = self.snapshot().remove(&format!("IPPool/{name}")) else {
            return BTreeMap::new();
        };
        pool["allocations"]
            .as_object()
            .map(|a| {
                a.iter()
                    .map(|(offset, holder)| {
                        (offset.clone(), holder["id"].as_str().unwrap().to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One plugin call being prepared.
pub struct Cni {
    command: Command,
}

impl Cni {
    /// `CNI_COMMAND=verb`, container `c1`, `eth0`, a netns path, the shared component cache.
    pub fn new(verb: &str) -> Self {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HEREABOUTS_CACHE_DIR", shared_cache())
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_NETNS", "/var/run/netns/test")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin");
        Cni { command }
    }

    pub fn container(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn run(self, stdin: &Value) -> Out {
        self.run_text(&stdin.to_string())
    }

    pub fn run_text(mut self, stdin: &str) -> Out {
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hereabouts");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            status: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Out {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns the JSON printed (Null when nothing was printed).
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, Some(0), "expected success: {self:?}");
        if self.stdout.trim().is_empty() { Value::Null } else { self.json() }
    }

    /// Asserts a CNI error with `code` and returns its message. The stdout must be exactly one
    /// JSON error object, without panic text; the exit status non-zero.
    pub fn err(&self, code: u64) -> String {
        assert_ne!(self.status, Some(0), "expected failure: {self:?}");
        assert!(self.status.is_some(), "killed by a signal: {self:?}");
        assert!(!self.stdout.contains("panicked"), "panic text on stdout: {self:?}");
        let error = self.json();
        assert_eq!(error["code"], code, "{self:?}");
        assert!(error["cniVersion"].is_string(), "{self:?}");
        error["msg"].as_str().expect("msg").to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// The address of a result's `ips[i]` without its prefix.
pub fn address(result: &Value, i: usize) -> String {
    let cidr =
        result["ips"][i]["address"].as_str().unwrap_or_else(|| panic!("no ips[{i}] in {result}"));
    cidr.split('/').next().unwrap().to_string()
}

/// ADD for `container` and its bare address.
pub fn add(conf: &Value, container: &str) -> String {
    address(&Cni::new("ADD").container(container).run(conf).ok(), 0)
}
