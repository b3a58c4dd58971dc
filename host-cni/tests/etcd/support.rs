//! What the etcd tests share: the environment run.sh sets, configs, the allocator over the etcd
//! store, worker processes, and a raw etcd client to write and inspect keys as a test sees fit
//! (data of the previous layout, damaged values, etcd's own history).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use hereabouts_host::NoStore;
use hereabouts_host::bindings::{AllocateRequest, NetworkConfig, Owner, PoolRef};
use hereabouts_host::config::IpamConfig;
use hereabouts_host::error::CniError;
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::etcd::{EtcdConfig, EtcdStore};
use serde_json::{Value, json};

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An environment variable run.sh sets; a test that needs it fails without it.
pub fn needed(name: &str) -> String {
    env(name).unwrap_or_else(|| {
        panic!("{name} is not set: this test needs an etcd; run host-cni/tests/etcd/run.sh")
    })
}

/// The single-node etcd run.sh started.
pub fn endpoints() -> String {
    needed("HEREABOUTS_ETCD_ENDPOINTS")
}

/// `$HEREABOUTS_CACHE_DIR` (run.sh points it into its temporary directory), else a directory
/// of the build's own.
pub fn cache_dir() -> std::path::PathBuf {
    match env("HEREABOUTS_CACHE_DIR") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-test-cache"),
    }
}

pub fn unique_prefix(test: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("/hereabouts-test/{test}-{}-{nanos}/", std::process::id())
}

/// An ipam section for the etcd store; `prefix` isolates each test's keys.
pub fn ipam_value(endpoints: &str, prefix: &str, range: &str, extra: Value) -> Value {
    let mut value = json!({"type": "hereabouts", "range": range, "etcd_host": endpoints,
        "etcd_prefix": prefix, "etcd_dial_timeout": "1s", "etcd_request_timeout": "3s"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        value[k] = v;
    }
    value
}

pub fn ipam_config(value: &Value) -> IpamConfig {
    IpamConfig::from_value(value).unwrap()
}

pub fn store(value: &Value) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::from_ipam(&ipam_config(value)).unwrap()).unwrap()
}

/// The allocator over the etcd store, opened as the plugin opens it.
pub fn allocator(value: &Value) -> Result<Allocator, CniError> {
    let backend = hereabouts_stores::etcd::open(&ipam_config(value))?;
    Ok(Allocator::with_cache(Box::new(backend), Some(&cache_dir())).unwrap())
}

/// The network config the core reads from the ipam section.
pub fn network_of(value: &Value) -> NetworkConfig {
    let mut reader = Allocator::with_cache(Box::new(NoStore), Some(&cache_dir())).unwrap();
    reader.read_config(&value.to_string()).unwrap().network
}

/// The CNI network every test owner belongs to.
pub const CNI_NETWORK: &str = "etcdnet";

pub fn owner(id: &str) -> Owner {
    Owner {
        container_id: id.to_string(),
        ifname: "eth0".into(),
        podref: format!("default/{id}"),
        cni_network: CNI_NETWORK.into(),
    }
}

/// An owner with a 64-character container id, as runtimes make them.
pub fn large_owner(i: u32) -> Owner {
    Owner {
        container_id: format!("{:064x}", (i as u128) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
        ifname: "eth0".into(),
        podref: format!("team-a/web-{i:05}"),
        cni_network: String::new(),
    }
}

pub fn add(alloc: &mut Allocator, network: &NetworkConfig, id: &str) -> Result<String, CniError> {
    let request = AllocateRequest { owner: owner(id), requested: vec![] };
    match alloc.allocate(network, &request) {
        Ok(leases) => Ok(leases[0].address.clone()),
        Err(e) => Err(CniError::from(e)),
    }
}

pub fn pool_ref(name: &str, range: &str) -> PoolRef {
    PoolRef { name: name.into(), range: range.into(), network_name: String::new() }
}

/// The lowest `n` allocatable addresses of an IPv4 range: from network + 1 upward, never an
/// address ending in .0 (nor the broadcast; the tests stay below it).
pub fn lowest(range: &str, n: usize) -> BTreeSet<String> {
    let (base, _) = range.split_once('/').unwrap();
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    (u32::from(base) + 1..)
        .map(std::net::Ipv4Addr::from)
        .filter(|a| a.octets()[3] != 0)
        .take(n)
        .map(|a| a.to_string())
        .collect()
}

/// Compares address sets without printing thousands of them.
pub fn assert_same(got: &BTreeSet<String>, want: &BTreeSet<String>, what: &str) {
    let extra: Vec<_> = got.difference(want).take(5).collect();
    let missing: Vec<_> = want.difference(got).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: unexpected {extra:?}…, missing {missing:?}…"
    );
}

/// Starts the test binary as a worker (see `worker` in main.rs) with this spec.
pub fn spawn_worker(spec: &Value) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--ignored", "--nocapture", "--test-threads", "1", "--quiet"])
        .env("HEREABOUTS_ETCD_WORKER", spec.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One ADD or DEL in a process of its own: its answer line (`ok ID …` or `err CODE ID MSG`).
pub fn run_one(value: &Value, op: &str, id: &str) -> String {
    let child = spawn_worker(&json!({"ipam": value, "op": op, "id": id}));
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("ok ") || l.starts_with("err "))
        .unwrap_or("no answer")
        .to_string()
}

/// Container id → address.
pub type Successes = BTreeMap<String, String>;
/// (CNI code, container id, message).
pub type Failures = Vec<(u32, String, String)>;

/// Parses a worker's output lines: what succeeded and what failed.
pub fn parse_worker(output: &str) -> (Successes, Failures) {
    let mut ok = BTreeMap::new();
    let mut errors = Vec::new();
    for line in output.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        match parts.as_slice() {
            ["ok", id, address] => {
                ok.insert(id.to_string(), address.to_string());
            }
            ["err", code, id, msg] => {
                errors.push((code.parse().unwrap(), id.to_string(), msg.to_string()))
            }
            _ => {}
        }
    }
    (ok, errors)
}

/// The holder JSON the previous layout wrote (and this one writes for an owner with no CNI
/// network): Whereabouts' field names, in this order.
pub fn v1_holder(owner: &Owner) -> String {
    json!({"id": owner.container_id, "ifname": owner.ifname, "podref": owner.podref}).to_string()
}

/// Writes a pool as the previous layout did: `spec` and one `alloc/{offset}` per slot.
pub fn write_previous_layout(
    raw: &Raw,
    prefix: &str,
    name: &str,
    range: &str,
    slots: &[(u32, Owner)],
) {
    let dir = format!("{prefix}pools/{name}/");
    let mut puts =
        vec![(format!("{dir}spec"), json!({"range": range, "network_name": ""}).to_string())];
    puts.extend(slots.iter().map(|(offset, o)| (format!("{dir}alloc/{offset}"), v1_holder(o))));
    raw.put_all(&puts);
}

/// What the keys under a prefix occupy.
pub struct Usage {
    pub keys: u64,
    /// Key and value bytes together.
    pub bytes: u64,
}

/// One change in etcd's history: a put (with its value) or a delete.
pub struct Event {
    pub key: String,
    pub value: Option<String>,
}

/// A plain etcd client for the tests' own reads and writes.
pub struct Raw {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Raw {
    pub fn connect(endpoints: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let endpoints: Vec<String> = endpoints.split(',').map(str::to_string).collect();
        let client = runtime.block_on(Client::connect(endpoints, None)).unwrap();
        Self { runtime, client }
    }

    fn run<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), fut).await.expect("etcd answered")
        })
    }

    pub fn revision(&self) -> i64 {
        let mut kv = self.client.kv_client();
        let response = self.run(kv.get("/", None)).unwrap();
        response.header().unwrap().revision()
    }

    pub fn put(&self, key: &str, value: &str) {
        let mut kv = self.client.kv_client();
        self.run(kv.put(key, value, None)).unwrap();
    }

    /// Puts in transactions of 128 (etcd's limit).
    pub fn put_all(&self, puts: &[(String, String)]) {
        for chunk in puts.chunks(128) {
            let ops: Vec<TxnOp> =
                chunk.iter().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)).collect();
            let mut kv = self.client.kv_client();
            self.run(kv.txn(Txn::new().and_then(ops))).unwrap();
        }
    }

    pub fn delete(&self, key: &str) {
        let mut kv = self.client.kv_client();
        self.run(kv.delete(key, None)).unwrap();
    }

    /// A write of the previous layout's kind: `If` the key's `mod_revision` is `revision` (0:
    /// absent) `Then` put `target`. Whether it was applied.
    pub fn txn_if_mod_revision(&self, key: &str, revision: i64, target: &str) -> bool {
        let compare = Compare::mod_revision(key, CompareOp::Equal, revision);
        let txn = Txn::new().when(vec![compare]).and_then(vec![TxnOp::put(target, "{}", None)]);
        let mut kv = self.client.kv_client();
        self.run(kv.txn(txn)).unwrap().succeeded()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let mut kv = self.client.kv_client();
        let response = self.run(kv.get(key, None)).unwrap();
        response.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }

    pub fn mod_revision(&self, key: &str) -> Option<i64> {
        let mut kv = self.client.kv_client();
        let response = self.run(kv.get(key, None)).unwrap();
        response.kvs().first().map(|kv| kv.mod_revision())
    }

    /// Every key and value under `prefix`.
    pub fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let mut kv = self.client.kv_client().max_decoding_message_size(256 << 20);
        let response = self.run(kv.get(prefix, Some(GetOptions::new().with_prefix()))).unwrap();
        response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }

    pub fn keys(&self, prefix: &str) -> BTreeSet<String> {
        self.dump(prefix).into_iter().map(|(k, _)| k).collect()
    }

    pub fn usage(&self, prefix: &str) -> Usage {
        let all = self.dump(prefix);
        Usage {
            keys: all.len() as u64,
            bytes: all.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
        }
    }

    pub fn db_size(&self) -> u64 {
        let mut client = self.client.clone();
        self.run(client.status()).unwrap().db_size() as u64
    }

    /// Every put and delete under `prefix` from revision `from` on, in order, from etcd's own
    /// history (the test etcd is never compacted).
    pub fn history(&self, prefix: &str, from: i64) -> Vec<Event> {
        let sentinel = format!("{prefix}~end-of-history");
        self.put(&sentinel, "");
        let mut client = self.client.clone();
        self.run(async move {
            let options = WatchOptions::new().with_prefix().with_start_revision(from);
            let mut stream = client.watch(prefix, Some(options)).await.unwrap();
            let mut events = Vec::new();
            while let Some(response) = stream.message().await.unwrap() {
                for event in response.events() {
                    let kv = event.kv().unwrap();
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    if key == sentinel {
                        return events;
                    }
                    let value = match event.event_type() {
                        EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                        EventType::Delete => None,
                    };
                    events.push(Event { key, value });
                }
            }
            panic!("the watch ended before the end of the history");
        })
    }
}
