//! The controller's Prometheus metrics (`hereabouts controller --metrics-port`), with the
//! `prometheus-client` crate in the OpenMetrics text format:
//! - `hereabouts_pool_capacity`, `hereabouts_pool_allocated`, `hereabouts_pool_free` per IPPool
//!   (labels `pool`, `range`, `network_name`), computed by the allocator component from the
//!   store at each scrape, so they are never stale;
//! - `hereabouts_frees_total{reason}`: addresses the controller (and its reconcile passes) freed;
//! - `hereabouts_errors_total{kind}`: failed frees, `try_again` (CNI 11: the store kept
//!   refusing the commit to other writers, or could not be reached) or `api` (anything else);
//! - `hereabouts_api_errors_total{code}`: Kubernetes API requests of the controller that
//!   failed, by the HTTP status answered (or `timeout`, `transport`), and
//!   `hereabouts_api_conflicts_total`: those that were 409 (a conditional write that lost to
//!   another writer, or a create that found the object there) — counted by the store for the
//!   whole process;
//! - `hereabouts_reconcile_runs_total` and `hereabouts_reconcile_duration_seconds` for the
//!   passes the controller runs itself (`--reconcile-every-seconds`).
//!
//! The endpoint is hyper's HTTP/1.1 server on its own thread (a current-thread tokio runtime):
//! `GET /metrics` answers, any other path is 404. It reads the store with its own client and
//! allocator, on one more thread, one scrape at a time. The port is reachable by anyone who
//! can reach the pod, so the server holds nothing for a client that does not finish its
//! request: at most [`MAX_CONNECTIONS`] at once (a connection beyond them is closed at once),
//! the request head within [`HEADER_TIMEOUT`] and [`MAX_HEAD_BYTES`] (an endless header is
//! answered 431 and closed), the whole connection within [`CONNECTION_TIMEOUT`], no keep-alive.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use hereabouts_host::bindings::PlanRequest;
use hereabouts_host::error::{CniError, Code};
use hereabouts_host::runtime::Allocator;
use hereabouts_stores::kube::KubeStore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    range: String,
    network_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The handles the controller's main loop updates.
#[derive(Clone)]
pub struct Recorder {
    frees: Family<ReasonLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    reconcile_runs: Counter,
    reconcile_seconds: Histogram,
}

impl Recorder {
    pub fn freed(&self, reason: &str) {
        self.frees.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn failed(&self, error: &CniError) {
        let kind = if error.code == Code::TryAgainLater { "try_again" } else { "api" };
        self.errors.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }

    pub fn reconciled(&self, seconds: f64) {
        self.reconcile_runs.inc();
        self.reconcile_seconds.observe(seconds);
    }
}

/// The per-pool gauges, refreshed from the store at each scrape.
struct Pools {
    capacity: Family<PoolLabels, FloatGauge>,
    allocated: Family<PoolLabels, FloatGauge>,
    free: Family<PoolLabels, FloatGauge>,
}

/// The API failure counters, brought up to the store's process-wide counts at each scrape.
struct ApiFailures {
    by_code: Family<CodeLabels, Counter>,
    conflicts: Counter,
}

impl ApiFailures {
    fn refresh(&self) {
        for (code, count) in hereabouts_stores::kube::api_failures() {
            let counter = self.by_code.get_or_create(&CodeLabels { code: code.clone() });
            counter.inc_by(count.saturating_sub(counter.get()));
            if code == "409" {
                self.conflicts.inc_by(count.saturating_sub(self.conflicts.get()));
            }
        }
    }
}

impl Pools {
    fn refresh(&self, store: &KubeStore, allocator: &mut Allocator) -> Result<(), CniError> {
        store.restart_budget();
        let pools = store.list_pool_objects()?;
        let slices = crate::SlicePools::list(store)?;
        // Pools that are gone leave the exposition: the gauges are rebuilt at each scrape.
        for family in [&self.capacity, &self.allocated, &self.free] {
            family.clear();
        }
        for pool in pools {
            let Ok(crate::PoolNetwork { object, network }) =
                crate::pool_network(allocator, &pool, &slices)?
            else {
                continue;
            };
            let held = allocator.list_leases(&network)?;
            let request = PlanRequest {
                network: network.clone(),
                allocated: held.iter().map(|h| h.lease.address.clone()).collect(),
                persistent: Vec::new(),
                preview: 0,
            };
            for report in allocator.plan(&request)? {
                let labels = PoolLabels {
                    pool: object.clone(),
                    range: report.range.clone(),
                    network_name: network.network_name.clone(),
                };
                let count = |text: &str| text.parse::<f64>().unwrap_or(f64::NAN);
                self.capacity.get_or_create(&labels).set(count(&report.capacity));
                self.allocated.get_or_create(&labels).set(held.len() as f64);
                self.free.get_or_create(&labels).set(count(&report.free));
            }
        }
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` (its own thread) and returns the handles to update.
pub fn serve(listener: TcpListener, store: KubeStore) -> Result<Recorder, CniError> {
    let mut registry = Registry::with_prefix("hereabouts");
    let recorder = Recorder {
        frees: Family::default(),
        errors: Family::default(),
        reconcile_runs: Counter::default(),
        reconcile_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
    };
    let pools = Pools {
        capacity: Family::default(),
        allocated: Family::default(),
        free: Family::default(),
    };
    registry.register(
        "pool_capacity",
        "Allocatable addresses of the pool's range",
        pools.capacity.clone(),
    );
    registry.register("pool_allocated", "Addresses allocated in the pool", pools.allocated.clone());
    registry.register("pool_free", "Allocatable addresses not allocated", pools.free.clone());
    let api = ApiFailures { by_code: Family::default(), conflicts: Counter::default() };
    registry.register(
        "api_errors",
        "Kubernetes API requests that failed, by HTTP status (or timeout, transport)",
        api.by_code.clone(),
    );
    registry.register(
        "api_conflicts",
        "Kubernetes API requests answered 409: a write that lost to another writer",
        api.conflicts.clone(),
    );
    registry.register("frees", "Addresses freed, by reason", recorder.frees.clone());
    registry.register("errors", "Frees that failed: try_again or api", recorder.errors.clone());
    registry.register(
        "reconcile_runs",
        "Reconcile passes run by the controller",
        recorder.reconcile_runs.clone(),
    );
    registry.register(
        "reconcile_duration_seconds",
        "How long each reconcile pass took",
        recorder.reconcile_seconds.clone(),
    );
    let mut allocator = Allocator::new(Box::new(store.clone()))?;
    // The scrapes: one thread owns the store's client and the allocator (both blocking).
    let (scrapes, requests) = std::sync::mpsc::channel::<Scrape>();
    std::thread::spawn(move || {
        for reply in requests {
            if let Err(e) = pools.refresh(&store, &mut allocator) {
                eprintln!("hereabouts controller: metrics: reading the pools: {}", e.msg);
            }
            api.refresh();
            let mut body = String::new();
            let body =
                prometheus_client::encoding::text::encode(&mut body, &registry).ok().map(|()| body);
            let _ = reply.send(body);
        }
    });
    listener.set_nonblocking(true).map_err(|e| {
        CniError::new(Code::Io, format!("--metrics-port: cannot use the listener: {e}"))
    })?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            CniError::new(Code::Io, format!("metrics: cannot start the server's runtime: {e}"))
        })?;
    std::thread::spawn(move || runtime.block_on(accept(listener, scrapes)));
    Ok(recorder)
}

/// How many connections the server holds at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection lives, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of a request head (hyper's smallest buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 << 10;

/// One scrape asked of the scraping thread: the exposition text (None: it could not be
/// encoded) comes back on the channel.
type Scrape = tokio::sync::oneshot::Sender<Option<String>>;

async fn accept(listener: TcpListener, scrapes: std::sync::mpsc::Sender<Scrape>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hereabouts controller: metrics: cannot serve: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue }; // dropped: closed
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| respond(request, scrapes.clone()));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

async fn respond(
    request: hyper::Request<hyper::body::Incoming>,
    scrapes: std::sync::mpsc::Sender<Scrape>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let status = |code: u16| {
        let mut response = hyper::Response::new(Body::default());
        *response.status_mut() = hyper::StatusCode::from_u16(code).expect("a valid status");
        Ok(response)
    };
    if request.method() != hyper::Method::GET || request.uri().path() != "/metrics" {
        return status(404);
    }
    let (reply, body) = tokio::sync::oneshot::channel();
    if scrapes.send(reply).is_err() {
        return status(500);
    }
    match body.await {
        Ok(Some(body)) => {
            let mut response = hyper::Response::new(Body::from(body));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            Ok(response)
        }
        _ => status(500),
    }
}
