//! Logs, the metrics recorder, and the sidecar's own metric families.
//!
//! The `metrics` facade holds one recorder per process. By default
//! ([`Recorder::InstallPrometheus`]) the first sidecar to bind installs a Prometheus
//! recorder, under a lock so that sidecars starting concurrently cannot race, and every
//! later sidecar of the process shares its handle. Several sidecars in one process
//! therefore share one registry: each `/metrics` shows all the process's series, told
//! apart by the `node` label that every series carries (the limiter's through
//! [`RateLimiterBuilder::metric_label`](tollgate::limiter::RateLimiterBuilder::metric_label),
//! the proxy's own in this crate). A process-wide global label could not do that: it
//! would name whichever sidecar installed the recorder.
//!
//! An application with a recorder of its own picks [`Recorder::Prometheus`] (it
//! installed Prometheus and renders through the handle it passes) or
//! [`Recorder::Application`] (any recorder; `/metrics` then says where metrics go).
//!
//! The installed recorder has no listener of its own: the admin server renders it on
//! `GET /metrics`, and a thread runs its upkeep (histogram rotation) every 5 seconds —
//! a thread rather than a task, so it outlives the async runtime of the sidecar that
//! happened to install it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Responses sent by the proxy, by status.
pub(crate) const PROXY_REQUESTS: &str = "tollgate_proxy_requests_total";
/// Requests being handled.
pub(crate) const PROXY_IN_FLIGHT: &str = "tollgate_proxy_in_flight";
/// Time to an upstream's response head.
pub(crate) const UPSTREAM_DURATION: &str = "tollgate_upstream_duration_seconds";
/// Requests the proxy answered itself because an upstream failed or it was overloaded.
pub(crate) const UPSTREAM_ERRORS: &str = "tollgate_upstream_errors_total";
/// Requests sent once more because the connect to the first endpoint failed.
pub(crate) const UPSTREAM_RETRIES: &str = "tollgate_upstream_retries_total";
/// Configuration reloads, by result.
pub(crate) const CONFIG_RELOADS: &str = "tollgate_config_reloads_total";
/// `ShouldRateLimit` calls answered by the rate limit service, by domain and code.
pub(crate) const RLS_REQUESTS: &str = "tollgate_rls_requests_total";
/// Descriptors decided by the rate limit service, by domain, descriptor and result.
pub(crate) const RLS_DESCRIPTORS: &str = "tollgate_rls_descriptors_total";

/// Where the sidecar's metrics (and its limiter's) are recorded and rendered.
#[derive(Clone, Default)]
pub enum Recorder {
    /// Install a Prometheus recorder once per process (the default) and render it on
    /// `GET /metrics`. Later sidecars of the process share it. Fails with
    /// [`MetricsError::ForeignRecorder`] if something else installed a recorder first.
    #[default]
    InstallPrometheus,
    /// The application installed a Prometheus recorder itself: render this handle on
    /// `GET /metrics`. Running its upkeep (`PrometheusHandle::run_upkeep`) is then the
    /// application's job. (This is `metrics-exporter-prometheus`' type: the one
    /// dependency type in the sidecar's API, as that is what such an application has.)
    Prometheus(PrometheusHandle),
    /// Record into whatever recorder the application installed, which exports them
    /// its own way; `GET /metrics` answers `404` saying so.
    Application,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recorder::InstallPrometheus => "InstallPrometheus",
            Recorder::Prometheus(_) => "Prometheus(..)",
            Recorder::Application => "Application",
        })
    }
}

/// Why the metrics recorder could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Another `metrics` recorder was installed in this process before the sidecar's.
    #[error(
        "another `metrics` recorder is already installed in this process, so the sidecar \
         cannot install its Prometheus recorder: bind with `Recorder::Application` to record \
         into that recorder, or with `Recorder::Prometheus(handle)` if it is a Prometheus \
         recorder you installed"
    )]
    ForeignRecorder,
    /// The Prometheus recorder's settings were refused.
    #[error("cannot configure the Prometheus recorder: {0}")]
    Build(String),
}

/// What `GET /metrics` renders: the Prometheus registry, or nothing when metrics go to
/// the application's recorder. Cheap to clone.
#[derive(Clone)]
pub struct Exposition {
    handle: Option<PrometheusHandle>,
}

impl Exposition {
    /// The Prometheus text of every series in the process, or `None` when the
    /// application's own recorder holds them ([`Recorder::Application`]).
    pub fn render(&self) -> Option<String> {
        self.handle.as_ref().map(PrometheusHandle::render)
    }
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("prometheus", &self.handle.is_some())
            .finish()
    }
}

/// The recorder this process installed, if any. A mutex, not a check-then-install:
/// two sidecars binding at once must not both try to install.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Sets up `recorder` and describes every family the sidecar emits to it.
///
/// # Errors
///
/// [`MetricsError::ForeignRecorder`] when installing Prometheus finds another recorder.
pub fn setup(recorder: Recorder) -> Result<Exposition, MetricsError> {
    let handle = match recorder {
        Recorder::InstallPrometheus => Some(install_prometheus()?),
        Recorder::Prometheus(handle) => Some(handle),
        Recorder::Application => None,
    };
    describe();
    Ok(Exposition { handle })
}

/// Installs the Prometheus recorder (first call in the process) and returns its handle;
/// later calls return the same handle.
///
/// # Errors
///
/// [`MetricsError::ForeignRecorder`] when someone else installed a recorder.
pub fn install_prometheus() -> Result<PrometheusHandle, MetricsError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::ForeignRecorder)?;
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("tollgate-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        });
    if let Err(e) = spawned {
        // Metrics still work; only histogram rotation is skipped.
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Describes (help text and unit) every family the sidecar emits, the limiter's
/// included, to the current recorder, so that `/metrics` has a `# HELP` line for each.
pub fn describe() {
    tollgate::describe_metrics();
    metrics::describe_counter!(
        PROXY_REQUESTS,
        Unit::Count,
        "Responses sent by the proxy, by status (429s and the proxy's own answers included)."
    );
    metrics::describe_gauge!(
        PROXY_IN_FLIGHT,
        Unit::Count,
        "Requests the proxy is handling now."
    );
    metrics::describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from sending a request upstream to its response head."
    );
    metrics::describe_counter!(
        UPSTREAM_ERRORS,
        Unit::Count,
        "Requests the proxy answered itself, by upstream and kind (connect, timeout, other, overloaded)."
    );
    metrics::describe_counter!(
        UPSTREAM_RETRIES,
        Unit::Count,
        "Requests sent once more, to the next endpoint, because the connect to the first failed (nothing had been sent)."
    );
    metrics::describe_counter!(
        CONFIG_RELOADS,
        Unit::Count,
        "Configuration reloads, by result (ok, error)."
    );
    metrics::describe_counter!(
        RLS_REQUESTS,
        Unit::Count,
        "ShouldRateLimit calls of Envoy's rate limit service, by domain and code (ok, over_limit, unavailable, invalid)."
    );
    metrics::describe_counter!(
        RLS_DESCRIPTORS,
        Unit::Count,
        "Descriptors decided by Envoy's rate limit service, by domain, descriptor (the rule's place in its file; the request's values with detailed_metric) and result (ok, over_limit, shadow_over_limit, unlimited, unmatched)."
    );
}

/// The `node` label's value, shared (not copied) into every series that carries it.
pub(crate) fn node_label(node_id: &str) -> SharedString {
    SharedString::from(Arc::<str>::from(node_id))
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes are noise in a file or a
    // container log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
