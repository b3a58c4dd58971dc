//! The etcd store: the component's `store` import over etcd's v3 API, for cluster-wide IPAM.
//!
//! Every node's plugin talks to the same etcd; consistency comes from etcd's transactions alone.
//! A read returns the pool and the revision it was read at; every write is ONE transaction
//! conditioned on that revision (compare-and-swap), and the core retries a lost one. No lock is
//! held between calls and no leader is elected, so a plugin killed at any instant leaves nothing
//! behind to clean up.
//!
//! Layout under the prefix (default `/hereabouts/`; `%` and `/` in names are percent-encoded):
//!
//! ```text
//! {prefix}pools/{pool}/spec             {"range":"10.0.0.0/20","network_name":""}
//! {prefix}pools/{pool}/alloc/{offset}   {"id":"<container id>","ifname":"eth0","podref":"ns/pod"}
//! {prefix}reservations/{network}/{address}   the holder, same shape as an allocation
//! ```
//!
//! `{pool}` is Whereabouts' IPPool name and `{offset}` its allocation key (decimal offset from the
//! range's network address); the values use Whereabouts' field names, so its pools read naturally.
//! The pool's version is the `mod_revision` of its `spec` key, which every write of the pool puts
//! again. One key per allocation keeps each write small whatever the pool's size: a /16 holding
//! 65,534 allocations is 65,534 keys of ~160 bytes (~260 bytes of etcd database each), and no
//! request comes near etcd's 1.5 MiB limit (a whole-pool value would be ~7.8 MiB with real
//! 64-character container ids).
//!
//! A write of more edits than etcd's `--max-txn-ops` (128) allows — only garbage collection of a
//! large pool does that — is a chain of transactions, each conditioned on the revision the
//! previous one produced: nobody can interleave, and a lost link leaves a prefix of the edits
//! (claims first) applied, computed against exactly the state it was meant for; the core re-reads.
//!
//! Bounded time: each call is wrapped in the request timeout, and opening first checks within
//! the dial timeout that some endpoint accepts connections, so a dead etcd answers
//! [`StoreError::Unavailable`] (CNI 11) promptly instead of hanging.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use hereabouts_host::Backend;
use hereabouts_host::bindings::{
    Owner, PoolEdit, PoolRef, PoolSnapshot, Slot, StoreError, describe_store_error,
};
use hereabouts_host::config::{ConfigError, IpamConfig, Step};
use hereabouts_host::error::CniError;
use hereabouts_host::retry::RetryPolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// Keys per range request when reading a pool (~1.4 MiB of response with 64-char ids).
const PAGE: i64 = 8192;
pub const DEFAULT_PREFIX: &str = "/hereabouts/";
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd keys of an ipam section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// Full URLs (`http://…` or `https://…`).
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Always ends with `/`.
    pub prefix: String,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Reads the `etcd_*` keys; an error names the key (`ipam.etcd_host: …`).
    pub fn from_ipam(ipam: &IpamConfig) -> Result<Self, ConfigError> {
        let tls = ipam.etcd_ca_cert_file.is_some() || ipam.etcd_cert_file.is_some();
        let endpoints = parse_endpoints(ipam.etcd_host.as_ref(), tls)?;
        match (&ipam.etcd_cert_file, &ipam.etcd_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::at(
                    "etcd_key_file",
                    "missing: etcd_cert_file is set, and a client certificate needs its key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::at(
                    "etcd_cert_file",
                    "missing: etcd_key_file is set, but not the client certificate it belongs to",
                ));
            }
            _ => {}
        }
        if endpoints.iter().any(|e| e.starts_with("https://")) && ipam.etcd_ca_cert_file.is_none() {
            return Err(ConfigError::at(
                "etcd_ca_cert_file",
                "an https etcd endpoint needs the CA certificate that signed etcd's",
            ));
        }
        if ipam.etcd_password.is_some() && ipam.etcd_username.is_none() {
            return Err(ConfigError::at(
                "etcd_username",
                "etcd_password is set but etcd_username is not",
            ));
        }
        let prefix = match ipam.extra.get("etcd_prefix") {
            None | Some(Value::Null) => DEFAULT_PREFIX.to_string(),
            Some(Value::String(p)) if !p.is_empty() => {
                if p.ends_with('/') {
                    p.clone()
                } else {
                    format!("{p}/")
                }
            }
            Some(other) => {
                return Err(ConfigError::at(
                    "etcd_prefix",
                    format!("expected a non-empty string, found {other}"),
                ));
            }
        };
        Ok(Self {
            endpoints,
            username: ipam.etcd_username.clone().filter(|u| !u.is_empty()),
            password: ipam.etcd_password.clone(),
            ca_cert_file: ipam
                .etcd_ca_cert_file
                .clone()
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            cert_file: ipam.etcd_cert_file.clone().filter(|f| !f.is_empty()).map(PathBuf::from),
            key_file: ipam.etcd_key_file.clone().filter(|f| !f.is_empty()).map(PathBuf::from),
            prefix,
            dial_timeout: parse_duration(
                ipam.extra.get("etcd_dial_timeout"),
                "etcd_dial_timeout",
                DEFAULT_DIAL_TIMEOUT,
            )?,
            request_timeout: parse_duration(
                ipam.extra.get("etcd_request_timeout"),
                "etcd_request_timeout",
                DEFAULT_REQUEST_TIMEOUT,
            )?,
        })
    }
}

/// `etcd_host`: one endpoint, a list, or a comma-separated string; a bare `host:port` gets
/// `https://` when TLS is configured, else `http://`.
fn parse_endpoints(value: Option<&Value>, tls: bool) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "etcd_host";
    let none = || ConfigError::at(KEY, "the etcd store needs at least one endpoint");
    let mut raw = Vec::new();
    match value {
        None | Some(Value::Null) => return Err(none()),
        Some(Value::String(s)) => raw.extend(s.split(',').map(str::to_string)),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(ConfigError::new(
                        vec![Step::key(KEY), Step::Index(i)],
                        format!("expected a string, found {item}"),
                    ));
                };
                raw.extend(s.split(',').map(str::to_string));
            }
        }
        Some(other) => {
            return Err(ConfigError::at(
                KEY,
                format!("expected a string or a list of strings, found {other}"),
            ));
        }
    }
    let mut endpoints = Vec::new();
    for endpoint in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let url = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            endpoint.to_string()
        } else if endpoint.contains("://") {
            return Err(ConfigError::at(
                KEY,
                format!("{endpoint:?}: only http:// and https:// endpoints are supported"),
            ));
        } else {
            format!("{}://{endpoint}", if tls { "https" } else { "http" })
        };
        if tls && url.starts_with("http://") {
            return Err(ConfigError::at(
                KEY,
                format!("{endpoint:?} is plain http, but TLS files are configured"),
            ));
        }
        endpoints.push(url);
    }
    if endpoints.is_empty() {
        return Err(none());
    }
    Ok(endpoints)
}

/// A duration key: seconds as a number, or a string with a unit (`500ms`, `2s`, `1m`).
fn parse_duration(
    value: Option<&Value>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let bad = |what: &dyn std::fmt::Display| {
        ConfigError::at(
            key,
            format!("{what}: expected seconds (e.g. 5) or a duration such as \"500ms\", \"5s\""),
        )
    };
    let seconds = match value {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad(n))?,
        Some(Value::String(s)) => {
            let s = s.trim();
            let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60.0)
            } else {
                (s, 1.0)
            };
            number.trim().parse::<f64>().map_err(|_| bad(&format!("{s:?}")))? * scale
        }
        Some(other) => return Err(bad(other)),
    };
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(ConfigError::at(key, format!("{seconds} s is out of bounds (0 < t ≤ 3600 s)")));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Opens the etcd store for a CNI call: config errors are CNI 7, a dead etcd CNI 11.
pub fn open(ipam: &IpamConfig) -> Result<EtcdStore, CniError> {
    let config = EtcdConfig::from_ipam(ipam)?;
    EtcdStore::connect(config).map_err(|e| match e {
        ConnectError::Config(e) => CniError::from(e),
        ConnectError::Store(e) => CniError::from(&e),
    })
}

/// Why [`EtcdStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS file cannot be read or used (names the key).
    #[error(transparent)]
    Config(ConfigError),
    #[error("{}", describe_store_error(.0))]
    Store(StoreError),
}

/// The etcd backend. Owns a current-thread tokio runtime; each call is one `block_on`.
pub struct EtcdStore {
    runtime: tokio::runtime::Runtime,
    client: Client,
    config: EtcdConfig,
    retry: RetryPolicy,
}

/// The JSON of an allocation or reservation holder: Whereabouts' `IPAllocation` field names.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Holder {
    id: String,
    ifname: String,
    podref: String,
}

impl Holder {
    fn of(owner: &Owner) -> Self {
        Self {
            id: owner.container_id.clone(),
            ifname: owner.ifname.clone(),
            podref: owner.podref.clone(),
        }
    }
    fn into_owner(self) -> Owner {
        Owner { container_id: self.id, ifname: self.ifname, podref: self.podref }
    }
}

/// The JSON of a pool's `spec` key.
#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    range: String,
    #[serde(default)]
    network_name: String,
}

impl EtcdStore {
    /// Connects (lazily, as gRPC does) after checking that some endpoint accepts connections
    /// within the dial timeout; authenticates when a user is configured.
    pub fn connect(config: EtcdConfig) -> Result<Self, ConnectError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                ConnectError::Store(StoreError::Failed(format!(
                    "cannot start the etcd client runtime: {e}"
                )))
            })?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), config.request_timeout);
        if let Some(user) = &config.username {
            options = options.with_user(user.clone(), config.password.clone().unwrap_or_default());
        }
        if let Some(ca) = &config.ca_cert_file {
            let read = |path: &PathBuf, key: &str| {
                std::fs::read(path).map_err(|e| {
                    ConnectError::Config(ConfigError::at(
                        key,
                        format!("cannot read {}: {e}", path.display()),
                    ))
                })
            };
            let mut tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(ca, "etcd_ca_cert_file")?));
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "etcd_cert_file")?,
                    read(key, "etcd_key_file")?,
                ));
            }
            options = options.with_tls(tls);
        }
        let endpoints = config.endpoints.clone();
        let budget = config.dial_timeout + config.request_timeout;
        let client = runtime.block_on(async {
            let alive = probe_endpoints(&endpoints, config.dial_timeout).await?;
            match tokio::time::timeout(budget, Client::connect(&alive, Some(options))).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(classify(&e, &endpoints, "connecting")),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "etcd at {} did not answer within {:?}",
                    endpoints.join(", "),
                    budget
                ))),
            }
        });
        let client = client.map_err(ConnectError::Store)?;
        Ok(Self { runtime, client, config, retry: RetryPolicy::default() })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Overrides the backoff between lost writes (tests, benchmarks).
    pub fn set_retry_policy(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    fn pool_dir(&self, pool_name: &str) -> String {
        format!("{}pools/{}/", self.config.prefix, encode(pool_name))
    }

    fn reservation_key(&self, network_name: &str, address: &str) -> String {
        format!("{}reservations/{}/{}", self.config.prefix, encode(network_name), encode(address))
    }

    /// Runs one etcd call within the request timeout; a failure is a store error naming `what`.
    fn call<T, F>(&self, what: &str, fut: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_typed(fut).map_err(|failure| self.describe(&failure, what))
    }

    /// Runs one etcd call within the request timeout, keeping the client's typed error.
    fn call_typed<T, F>(&self, fut: F) -> Result<T, Failure>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.config.request_timeout;
        // The timer must be made inside the runtime, hence the async block.
        match self.runtime.block_on(async { tokio::time::timeout(timeout, fut).await }) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Failure::Etcd(e)),
            Err(_) => Err(Failure::Timeout(timeout)),
        }
    }

    fn describe(&self, failure: &Failure, what: &str) -> StoreError {
        match failure {
            Failure::Etcd(e) => classify(e, &self.config.endpoints, what),
            Failure::Timeout(timeout) => StoreError::Unavailable(format!(
                "{what}: etcd at {} did not answer within {timeout:?}",
                self.config.endpoints.join(", ")
            )),
        }
    }

    /// Every key under `dir` at one revision, in pages (a big pool exceeds gRPC's 4 MiB).
    fn read_dir(&self, dir: &str) -> Result<Vec<KeyValue>, StoreError> {
        let end = prefix_end(dir.as_bytes());
        'restart: for _ in 0..3 {
            let mut kvs: Vec<KeyValue> = Vec::new();
            let mut start = dir.as_bytes().to_vec();
            let mut revision = 0;
            loop {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(PAGE)
                    .with_revision(revision);
                let mut kv = self.client.kv_client().max_decoding_message_size(64 << 20);
                let key = start.clone();
                let mut response = match self.call_typed(kv.get(key, Some(options))) {
                    Ok(response) => response,
                    // The revision we paginate at was compacted meanwhile: read again from the top.
                    Err(failure) if failure.is_compaction() => continue 'restart,
                    Err(failure) => return Err(self.describe(&failure, &format!("reading {dir}"))),
                };
                if revision == 0 {
                    revision = response.header().map(|h| h.revision()).unwrap_or(0);
                }
                let more = response.more();
                let page = response.take_kvs();
                if let Some(last) = page.last() {
                    start = last.key().to_vec();
                    start.push(0);
                }
                kvs.extend(page);
                if !more {
                    return Ok(kvs);
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "reading {dir}: etcd compacted the revision being read three times"
        )))
    }

    /// Applies one link of a write chain; returns the revision it produced, None when lost.
    fn apply(
        &self,
        compare: Compare,
        ops: Vec<TxnOp>,
        what: &str,
    ) -> Result<Option<i64>, StoreError> {
        let txn = Txn::new().when(vec![compare]).and_then(ops);
        let mut kv = self.client.kv_client();
        let response = self.call(what, async move { kv.txn(txn).await })?;
        if !response.succeeded() {
            return Ok(None);
        }
        Ok(Some(response.header().map(|h| h.revision()).unwrap_or(0)))
    }
}

impl Backend for EtcdStore {
    fn read_pool(&mut self, pool: &PoolRef) -> Result<PoolSnapshot, StoreError> {
        let dir = self.pool_dir(&pool.name);
        let kvs = self.read_dir(&dir)?;
        let mut version = None;
        let mut slots = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let key = String::from_utf8_lossy(kv.key());
            let rest = &kv.key()[dir.len()..];
            if rest == b"spec" {
                let spec: Spec = serde_json::from_slice(kv.value())
                    .map_err(|e| corrupt(&key, kv.value(), &format!("not a pool spec: {e}")))?;
                if spec.range != pool.range {
                    return Err(StoreError::Corrupt(format!(
                        "{key}: holds the pool of range {}, not {} (two ranges share the pool name {:?})",
                        spec.range, pool.range, pool.name
                    )));
                }
                version = Some(kv.mod_revision());
            } else if let Some(offset) = rest.strip_prefix(b"alloc/") {
                let offset = std::str::from_utf8(offset)
                    .ok()
                    .filter(|o| is_canonical_offset(o))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{key}: not an allocation key (the offset must be a decimal number)"
                        ))
                    })?;
                let holder: Holder = serde_json::from_slice(kv.value())
                    .map_err(|e| corrupt(&key, kv.value(), &format!("not an allocation: {e}")))?;
                if holder.id.is_empty() {
                    return Err(corrupt(&key, kv.value(), "allocation without a container id"));
                }
                slots.push(Slot { offset: offset.to_string(), owner: holder.into_owner() });
            } else {
                return Err(StoreError::Corrupt(format!(
                    "{key}: unexpected key inside pool {:?}",
                    pool.name
                )));
            }
        }
        match version {
            Some(version) => Ok(PoolSnapshot { version: version.to_string(), slots }),
            None if slots.is_empty() => Ok(PoolSnapshot { version: String::new(), slots }),
            None => Err(StoreError::Corrupt(format!(
                "{dir}spec: missing, yet the pool holds {} allocations",
                slots.len()
            ))),
        }
    }

    fn write_pool(
        &mut self,
        pool: &PoolRef,
        version: &str,
        edits: &[PoolEdit],
    ) -> Result<(), StoreError> {
        let dir = self.pool_dir(&pool.name);
        let spec_key = format!("{dir}spec");
        let spec = serde_json::to_string(&Spec {
            range: pool.range.clone(),
            network_name: pool.network_name.clone(),
        })
        .expect("serialisable");
        // The last edit of an offset wins; etcd rejects a transaction touching a key twice.
        let mut last: std::collections::BTreeMap<&str, Option<&Owner>> = Default::default();
        for edit in edits {
            let (offset, owner) = match edit {
                PoolEdit::Claim(slot) => (slot.offset.as_str(), Some(&slot.owner)),
                PoolEdit::Free(offset) => (offset.as_str(), None),
            };
            if !is_canonical_offset(offset) {
                return Err(StoreError::Failed(format!(
                    "pool {:?}: {offset:?} is not a decimal offset",
                    pool.name
                )));
            }
            last.insert(offset, owner);
        }
        // Claims first: they must land together with the version check.
        let mut ops: Vec<TxnOp> = Vec::with_capacity(last.len());
        for (offset, owner) in last.iter().filter(|(_, o)| o.is_some()) {
            let value = serde_json::to_string(&Holder::of(owner.unwrap())).expect("serialisable");
            ops.push(TxnOp::put(format!("{dir}alloc/{offset}"), value, None));
        }
        for (offset, _) in last.iter().filter(|(_, o)| o.is_none()) {
            ops.push(TxnOp::delete(format!("{dir}alloc/{offset}"), None));
        }
        let mut compare = if version.is_empty() {
            Compare::create_revision(spec_key.clone(), CompareOp::Equal, 0)
        } else {
            let revision = version.parse::<i64>().map_err(|_| {
                StoreError::Failed(format!(
                    "pool {:?}: version {version:?} is not an etcd revision",
                    pool.name
                ))
            })?;
            Compare::mod_revision(spec_key.clone(), CompareOp::Equal, revision)
        };
        let mut ops = ops.into_iter().peekable();
        let mut first = true;
        loop {
            let mut chunk = vec![TxnOp::put(spec_key.clone(), spec.clone(), None)];
            chunk.extend(ops.by_ref().take(MAX_TXN_OPS - 1));
            let what = format!("writing pool {spec_key}");
            match self.apply(compare, chunk, &what)? {
                None if first => return Err(StoreError::Conflict),
                None => {
                    tracing::warn!(pool = %pool.name, "a chained pool write lost a link; the core re-reads");
                    return Err(StoreError::Conflict);
                }
                Some(revision) => {
                    if ops.peek().is_none() {
                        return Ok(());
                    }
                    compare = Compare::mod_revision(spec_key.clone(), CompareOp::Equal, revision);
                    first = false;
                }
            }
        }
    }

    fn reserve_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<Option<Owner>, StoreError> {
        let key = self.reservation_key(network_name, address);
        let value = serde_json::to_string(&Holder::of(owner)).expect("serialisable");
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key.clone(), value, None)])
            .or_else(vec![TxnOp::get(key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let response = self.call(&format!("reserving {key}"), async move { kv.txn(txn).await })?;
        if response.succeeded() {
            return Ok(None);
        }
        let holder = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let Some(kv) = holder else {
            return Err(StoreError::Conflict);
        };
        let holder = parse_holder(&key, kv.value())?;
        if holder.container_id == owner.container_id && holder.ifname == owner.ifname {
            Ok(None)
        } else {
            Ok(Some(holder))
        }
    }

    fn release_address(
        &mut self,
        network_name: &str,
        address: &str,
        owner: &Owner,
    ) -> Result<(), StoreError> {
        let key = self.reservation_key(network_name, address);
        for _ in 0..5 {
            let mut kv = self.client.kv_client();
            let k = key.clone();
            let mut response =
                self.call(&format!("reading {key}"), async move { kv.get(k, None).await })?;
            let Some(current) = response.take_kvs().into_iter().next() else {
                return Ok(());
            };
            let holder = parse_holder(&key, current.value())?;
            if holder.container_id != owner.container_id || holder.ifname != owner.ifname {
                return Ok(());
            }
            let compare =
                Compare::mod_revision(key.clone(), CompareOp::Equal, current.mod_revision());
            if self
                .apply(
                    compare,
                    vec![TxnOp::delete(key.clone(), None)],
                    &format!("releasing {key}"),
                )?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!("releasing {key}: the reservation kept changing")))
    }

    fn pause_before_retry(&mut self, attempt: u32) -> bool {
        self.retry.pause(attempt)
    }
}

/// The endpoints that accept a TCP connection now: fails fast when none does within the dial
/// timeout (gRPC would keep the first request pending until the request timeout), and leaves
/// out dead members, to which tonic's balancer would otherwise send some requests (a failed
/// connect is returned, not retried elsewhere). Once one endpoint answered, the others get a
/// short grace; a slow one left out only means this process does not use it.
async fn probe_endpoints(endpoints: &[String], dial: Duration) -> Result<Vec<String>, StoreError> {
    use futures_util::StreamExt;
    const GRACE: Duration = Duration::from_millis(50);
    let mut probes: futures_util::stream::FuturesUnordered<_> = endpoints
        .iter()
        .map(|url| async move {
            let authority = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
            let result =
                match tokio::time::timeout(dial, tokio::net::TcpStream::connect(authority)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("{authority}: {e}")),
                    Err(_) => Err(format!("{authority}: no connection within {dial:?}")),
                };
            (url.clone(), result)
        })
        .collect();
    let mut alive = Vec::new();
    let mut errors = Vec::new();
    let mut deadline = tokio::time::Instant::now() + dial;
    while let Ok(Some((url, result))) = tokio::time::timeout_at(deadline, probes.next()).await {
        match result {
            Ok(()) => {
                if alive.is_empty() {
                    deadline = deadline.min(tokio::time::Instant::now() + GRACE);
                }
                alive.push(url);
            }
            Err(e) => errors.push(e),
        }
    }
    if alive.is_empty() {
        if errors.is_empty() {
            errors.push(format!("no connection within {dial:?}"));
        }
        return Err(StoreError::Unavailable(format!(
            "cannot connect to any etcd endpoint ({})",
            errors.join("; ")
        )));
    }
    if !errors.is_empty() {
        tracing::debug!("etcd endpoints left out: {}", errors.join("; "));
    }
    // Keep the configured order (the balancer does not care, messages do).
    alive.sort_by_key(|url| endpoints.iter().position(|e| e == url));
    Ok(alive)
}

/// An etcd call that failed: the client's own error, or no answer in time.
enum Failure {
    Etcd(etcd_client::Error),
    Timeout(Duration),
}

impl Failure {
    /// etcd answers a read at a compacted revision with gRPC OUT_OF_RANGE.
    fn is_compaction(&self) -> bool {
        matches!(self, Failure::Etcd(etcd_client::Error::GRpcStatus(status))
            if status.code() as i32 == grpc::OUT_OF_RANGE)
    }
}

/// gRPC status codes (tonic's `Code`, which etcd-client does not re-export).
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Sorts an etcd client error into the store's kinds, with a message for the person reading it.
fn classify(error: &etcd_client::Error, endpoints: &[String], what: &str) -> StoreError {
    // etcd-client's error has no `source`; the TLS or connection detail sits in tonic's.
    let mut text = match error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::TransportError(e) => std::error::Error::source(e),
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        _ => None,
    };
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = e.source();
    }
    let at = endpoints.join(", ");
    let lower = text.to_lowercase();
    if lower.contains("certificate")
        || lower.contains("handshake")
        || lower.contains("unknownissuer")
        || lower.contains("tls")
    {
        return StoreError::Failed(format!(
            "{what}: TLS with etcd at {at} failed (check etcd_ca_cert_file, etcd_cert_file, etcd_key_file): {text}"
        ));
    }
    if let etcd_client::Error::GRpcStatus(status) = error {
        use grpc::*;
        let msg = status.message();
        return match status.code() as i32 {
            UNAUTHENTICATED | PERMISSION_DENIED => StoreError::Failed(format!(
                "{what}: etcd at {at} refused the credentials (etcd_username/etcd_password): {msg}"
            )),
            INVALID_ARGUMENT
                if msg.contains("authentication failed") || msg.contains("user name") =>
            {
                StoreError::Failed(format!(
                    "{what}: etcd at {at} refused the credentials (etcd_username/etcd_password): {msg}"
                ))
            }
            UNAVAILABLE | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | CANCELLED
            | UNKNOWN => StoreError::Unavailable(format!("{what}: etcd at {at}: {msg}")),
            OUT_OF_RANGE => {
                StoreError::Unavailable(format!("{what}: etcd at {at}: {msg} (compacted)"))
            }
            _ => StoreError::Failed(format!("{what}: etcd at {at}: {:?}: {msg}", status.code())),
        };
    }
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            StoreError::Unavailable(format!("{what}: etcd at {at}: {text}"))
        }
        _ => StoreError::Failed(format!("{what}: etcd at {at}: {text}")),
    }
}

fn parse_holder(key: &str, value: &[u8]) -> Result<Owner, StoreError> {
    let holder: Holder = serde_json::from_slice(value)
        .map_err(|e| corrupt(key, value, &format!("not a reservation: {e}")))?;
    Ok(holder.into_owner())
}

fn corrupt(key: &str, value: &[u8], why: &str) -> StoreError {
    let shown: String = String::from_utf8_lossy(value).chars().take(80).collect();
    StoreError::Corrupt(format!(
        "{key}: {why} (value {shown:?}, {} bytes); nothing was changed",
        value.len()
    ))
}

/// Offsets as the core writes them: decimal, no sign, no leading zeros.
fn is_canonical_offset(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
}

/// Percent-encodes `%` and `/` so a name is exactly one key segment.
fn encode(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ipam(value: Value) -> IpamConfig {
        IpamConfig::from_value(&value).unwrap()
    }

    #[test]
    fn endpoints_as_string_list_or_comma_separated() {
        let one = EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "127.0.0.1:2379"}))).unwrap();
        assert_eq!(one.endpoints, vec!["http://127.0.0.1:2379"]);
        let comma =
            EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "a:1, http://b:2 ,"}))).unwrap();
        assert_eq!(comma.endpoints, vec!["http://a:1", "http://b:2"]);
        let list = EtcdConfig::from_ipam(&ipam(
            json!({"etcd_host": ["a:1", "b:2,c:3"], "etcd_ca_cert_file": "/ca"}),
        ))
        .unwrap();
        assert_eq!(list.endpoints, vec!["https://a:1", "https://b:2", "https://c:3"]);
        assert_eq!(list.prefix, "/hereabouts/");
    }

    #[test]
    fn bad_etcd_keys_name_the_key() {
        let path = |v| EtcdConfig::from_ipam(&ipam(v)).unwrap_err().path;
        let key = |k: &str| vec![Step::key(k)];
        let cases = [
            (json!({}), key("etcd_host")),
            (json!({"etcd_host": ""}), key("etcd_host")),
            (json!({"etcd_host": ["a:1", 7]}), vec![Step::key("etcd_host"), Step::Index(1)]),
            (json!({"etcd_host": "ftp://a:1"}), key("etcd_host")),
            (json!({"etcd_host": "https://a:1"}), key("etcd_ca_cert_file")),
            (json!({"etcd_host": "a:1", "etcd_cert_file": "/c"}), key("etcd_key_file")),
            (json!({"etcd_host": "a:1", "etcd_key_file": "/k"}), key("etcd_cert_file")),
            (json!({"etcd_host": "a:1", "etcd_password": "p"}), key("etcd_username")),
            (json!({"etcd_host": "a:1", "etcd_prefix": 5}), key("etcd_prefix")),
            (
                json!({"etcd_host": "a:1", "etcd_request_timeout": "soon"}),
                key("etcd_request_timeout"),
            ),
            (json!({"etcd_host": "a:1", "etcd_dial_timeout": 0}), key("etcd_dial_timeout")),
        ];
        for (value, want) in cases {
            assert_eq!(path(value.clone()), want, "{value}");
        }
        let error = EtcdConfig::from_ipam(&ipam(json!({"etcd_host": ["a:1", 7]}))).unwrap_err();
        assert_eq!(error.to_string(), "ipam.etcd_host[1]: expected a string, found 7");
    }

    #[test]
    fn timeouts_and_prefix() {
        let c =
            EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "a:1", "etcd_dial_timeout": "250ms",
            "etcd_request_timeout": 3, "etcd_prefix": "/x"})))
            .unwrap();
        assert_eq!(c.dial_timeout, Duration::from_millis(250));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.prefix, "/x/");
        let d = EtcdConfig::from_ipam(&ipam(json!({"etcd_host": "a:1"}))).unwrap();
        assert_eq!(
            (d.dial_timeout, d.request_timeout),
            (DEFAULT_DIAL_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
        );
    }

    #[test]
    fn keys_and_offsets() {
        assert_eq!(encode("blue/10.0.0.0-24"), "blue%2F10.0.0.0-24");
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert!(is_canonical_offset("0") && is_canonical_offset("65534"));
        assert!(
            !is_canonical_offset("01") && !is_canonical_offset("-1") && !is_canonical_offset("")
        );
    }
}
