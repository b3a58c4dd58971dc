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
//! The endpoint is a plain HTTP/1.1 responder on its own thread: `GET /metrics` answers, any
//! other path is 404. It reads the store with its own client and allocator.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

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
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // The rest of the request head.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let response = if request_line.starts_with("GET /metrics ") {
                if let Err(e) = pools.refresh(&store, &mut allocator) {
                    eprintln!("hereabouts controller: metrics: reading the pools: {}", e.msg);
                }
                api.refresh();
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    Err(_) => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                }
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(recorder)
}
