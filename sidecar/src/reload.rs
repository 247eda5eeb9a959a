//! Hot reload: on SIGHUP, and when the config file changes.
//!
//! The file's contents are polled every second rather than watched with inotify:
//! polling works the same on bind mounts, ConfigMaps replaced by symlink swaps and
//! network filesystems, and reading a small file once a second costs nothing. Contents,
//! not modification times: two writes of equal size within one tick of the kernel's
//! coarse file clock (a few milliseconds) carry the same mtime and size.
//!
//! A reload asks the [`ConfigSource`] built at start for the configuration again — it
//! re-reads the file and re-applies the same flags — then builds a new [`Runtime`] and
//! swaps it in; reload never sees the command line, only that source. If any step
//! fails, the error is logged with its field,
//! `tollgate_config_reloads_total{result="error"}` counts it, and the old configuration
//! keeps serving untouched. Addresses, `node_id` and `workers` cannot change without a restart: a
//! reload that changes them is refused, naming the field. Everything else applies:
//! `proxy.header_read_timeout_ms` to connections accepted after the reload,
//! `proxy.shutdown_grace_ms` to the next drain, a limit's `consistency` and `[lease]`
//! to the new limiter — the replaced one gives its unused leased units back at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigSource;
use crate::runtime::{Runtime, Shared, Stores};
use crate::telemetry::{self, CONFIG_RELOADS};

/// Reloads once from `source`. Returns whether the new configuration is now serving.
pub fn reload(source: &ConfigSource, state: &Shared, stores: &Stores) -> bool {
    let node = telemetry::node_label(&state.load().config.node_id);
    let result = source.load().map_err(|e| e.to_string()).and_then(|config| {
        let old = state.load();
        let rls_listen = |c: &crate::config::Config| c.rls.as_ref().map(|r| r.listen);
        if config.listen != old.config.listen
            || config.admin_listen != old.config.admin_listen
            || rls_listen(&config) != rls_listen(&old.config)
        {
            return Err(
                "listen addresses (rls.listen included) cannot change on reload; restart to move them"
                    .into(),
            );
        }
        if config.proxy_enabled != old.config.proxy_enabled {
            return Err("the proxy cannot be switched on or off on reload (upstreams added or all removed); restart".into());
        }
        if config.workers != old.config.workers {
            // The runtime's threads are made once, before anything binds.
            return Err(format!(
                "workers cannot change on reload ({} → {}); restart to change it",
                old.config.workers, config.workers
            ));
        }
        if config.node_id != old.config.node_id {
            // The `node` label is fixed when the metrics are registered.
            return Err(format!(
                "node_id cannot change on reload ({:?} → {:?}); restart to rename the node",
                old.config.node_id, config.node_id
            ));
        }
        Runtime::build(config, stores).map_err(|e| e.to_string())
    });
    match result {
        Ok(runtime) => {
            let old = state.swap(Arc::new(runtime));
            // The replaced limiter serves no new request: what it leased goes back, so
            // a consistency or lease change (or any reload) strands nothing until
            // `max_age`. Requests still running on it may lease again; their leases
            // end within `max_age` like any other.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { old.return_leases().await });
            }
            metrics::counter!(CONFIG_RELOADS, "node" => node, "result" => "ok").increment(1);
            tracing::info!(source = %source.origin(), "configuration reloaded");
            true
        }
        Err(e) => {
            metrics::counter!(CONFIG_RELOADS, "node" => node, "result" => "error").increment(1);
            tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
            false
        }
    }
}

/// What identifies a version of the file: a hash of its bytes.
fn stamp(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    Some(hash(&bytes))
}

fn hash(value: &impl std::hash::Hash) -> u64 {
    std::hash::BuildHasher::hash_one(
        &std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(),
        value,
    )
}

/// What identifies a version of the configuration: the TOML file and the rate limit
/// service's YAML (a directory's listing included, so an added file is seen).
fn stamps(path: Option<&Path>, state: &Shared) -> (Option<u64>, Option<u64>) {
    let rls = state.load().config.rls.as_ref().map(|r| r.path.clone());
    let rls = rls.and_then(|p| {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&p)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let contents: Vec<_> = entries
                .iter()
                .map(|e| (e.clone(), std::fs::read(e).ok()))
                .collect();
            Some(hash(&contents))
        } else {
            stamp(&p)
        }
    });
    (path.and_then(stamp), rls)
}

/// Reloads from `source` on SIGHUP and whenever its file changes, forever.
pub async fn watch(source: ConfigSource, state: Shared, stores: Arc<Stores>) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload on file change only");
            None
        }
    };
    let path = source.path();
    let mut last = stamps(path, &state);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            () = hup => {
                tracing::info!("SIGHUP: reloading");
                reload(&source, &state, &stores);
                last = stamps(path, &state);
            }
            _ = tick.tick() => {
                let now = stamps(path, &state);
                // A file that cannot be read (mid-write, deleted) is not a change yet.
                let changed = (now.0.is_some() && now.0 != last.0)
                    || (now.1.is_some() && now.1 != last.1);
                if changed {
                    tracing::info!(source = %source.origin(), "configuration files changed: reloading");
                    reload(&source, &state, &stores);
                    // The reload may have pointed rls.config elsewhere.
                    last = stamps(path, &state);
                }
            }
        }
    }
}
