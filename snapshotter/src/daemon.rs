//! Daemon lifecycle: open the root, bind the sockets safely (gRPC, admin, and the metrics
//! endpoint's TCP port), serve, notify systemd, stop gracefully.
//!
//! Start-up order matters to containerd and systemd: the metadata store is opened (and leftovers
//! swept) before the socket exists, and `READY=1` is sent only once the socket is listening, so
//! `Before=containerd.service` really means containerd's first call finds a working daemon.
//!
//! The socket is bound under a temporary name, given its mode, then renamed into place, so no
//! one can ever connect to it with looser permissions than configured.
//!
//! With lazy pulling and `[prefetch] enabled`, the prefetcher starts once the layers are
//! mounted again and stops (its threads joined, its models' state saved) before they are
//! unmounted. With `[warm] enabled` too, the warmer hands each warmed image to the prefetcher
//! (`prefetch::warmed::hook`), which queues its likely chunks behind running containers'.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::AdminState;
use crate::config::Config;
use crate::grpc::SnapshotService;
use crate::lazy::{LazyConfig, LazyLayers};
use crate::notify::notify;
use crate::prefetch::{Parts, Prefetcher};
use crate::registry::RegistryConfig;
use crate::snapshotter::Snapshotter;
use crate::trace::{Recorder, TraceSettings};
use crate::warm::Warm;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The snapshot store could not be opened.
    #[error("cannot open snapshotter root {root}")]
    Open {
        /// The root directory.
        root: PathBuf,
        /// Why.
        #[source]
        source: crate::error::Error,
    },
    /// The start-up task died.
    #[error("start-up task failed")]
    Startup(#[source] tokio::task::JoinError),
    /// Another process is serving on the socket path.
    #[error(
        "{0} is in use: another snapshotter is serving there (stop it, or pick another --address)"
    )]
    AddressInUse(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on {path}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
    /// A config value is unusable at start (e.g. `admin.token_file`).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The admin API's TCP listener could not bind.
    #[error("config key `admin.tcp_address` = \"{address}\": cannot listen there")]
    AdminTcp {
        /// The address.
        address: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics endpoint could not listen.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Runs the daemon until `shutdown` resolves, then stops accepting calls, lets in-flight calls
/// finish and removes the socket.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let root = config.root.clone();
    let lazy_cfg = config.remote.enable.then(|| lazy_config(&config));
    let trace_cfg = config.trace.enabled.then(|| config.trace.clone());
    let handle = tokio::runtime::Handle::current();
    let sn = tokio::task::spawn_blocking(move || open(&root, lazy_cfg, trace_cfg, handle))
        .await
        .map_err(DaemonError::Startup)?
        .map_err(|source| DaemonError::Open {
            root: config.root.clone(),
            source,
        })?;
    let listener = bind(&config.address, config.socket_mode)?;
    let admin_listener = match bind(&config.admin_address, 0o600) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&config.address);
            return Err(e);
        }
    };
    let metrics_listener = match config.metrics_address {
        None => None,
        Some(a) => match crate::metrics::server::bind(a).await {
            Ok(l) => Some(l),
            // The default address is a convenience: a node where something else holds it must
            // still start containers. A configured one is a promise to the operator: fail.
            Err(e) if !config.metrics_address_explicit => {
                tracing::warn!(
                    error = %e,
                    "no metrics endpoint: the default metrics.address is taken; set \
                     metrics.address to a free port, or to \"\" to turn the endpoint off"
                );
                None
            }
            Err(e) => {
                let _ = std::fs::remove_file(&config.address);
                let _ = std::fs::remove_file(&config.admin_address);
                return Err(e.into());
            }
        },
    };
    let admin_tcp = match &config.admin_tcp {
        None => None,
        Some(tcp) => match crate::admin::tcp::bind(tcp).await {
            Ok(b) => Some(b),
            Err(e) => {
                let _ = std::fs::remove_file(&config.address);
                let _ = std::fs::remove_file(&config.admin_address);
                return Err(e);
            }
        },
    };
    tracing::info!(
        address = %config.address.display(),
        admin = %config.admin_address.display(),
        metrics = ?config.metrics_address,
        root = %config.root.display(),
        version = env!("CARGO_PKG_VERSION"),
        "augur-snapshotter ready"
    );
    if let Err(e) = notify("READY=1") {
        tracing::warn!(error = %e, "could not notify systemd of readiness");
    }
    let sn = Arc::new(sn);
    let warm = start_warm(&config, &sn).await;
    let prefetcher = start_prefetcher(&config, &sn).await?;
    if let (Some(p), Some(recorder)) = (&prefetcher, sn.recorder()) {
        // Runs and reads reach the models through the trace recorder (start_prefetcher
        // refuses to start without one).
        recorder.add_observer(Arc::new(p.clone()));
        recorder.set_prefetched(Arc::new(p.clone()));
    }
    if let (Some(w), Some(p), Some(lazy)) = (&warm, &prefetcher, sn.lazy()) {
        // A warmed image's likely chunks are prefetched too, after every running container's.
        w.set_chunk_hook(crate::prefetch::warmed::hook(Arc::clone(lazy), p.clone()));
    }
    let cold_starts = sn.recorder().map(|recorder| {
        let table = crate::metrics::coldstart::ColdStarts::new();
        recorder.add_observer(Arc::clone(&table) as Arc<dyn crate::trace::AccessObserver>);
        table
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_state = AdminState {
        lazy: sn.lazy().cloned(),
        trace: sn.recorder().cloned(),
        prefetch: prefetcher.clone(),
        started: std::time::Instant::now(),
    };
    let admin_tcp = admin_tcp.map(|b| {
        tokio::spawn(crate::admin::tcp::serve(
            b,
            admin_state.clone(),
            stop_rx.clone(),
        ))
    });
    let admin = tokio::spawn(serve_admin(admin_listener, admin_state, stop_rx.clone()));
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(crate::metrics::serve(
            l,
            Arc::new(metrics_registry(&sn, prefetcher.as_ref(), cold_starts)),
            stop_rx.clone(),
        ))
    });
    let service = SnapshotService::new(Arc::clone(&sn)).with_warm(warm.clone());
    let mut grpc_stop = stop_rx;
    let served = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            tokio::select! {
                () = shutdown => {}
                _ = grpc_stop.changed() => {}
            }
            let _ = notify("STOPPING=1");
            tracing::info!("shutting down: finishing in-flight calls");
        })
        .await;
    let _ = stop_tx.send(true);
    let _ = admin.await;
    if let Some(t) = admin_tcp {
        let _ = t.await;
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = std::fs::remove_file(&config.address);
    let _ = std::fs::remove_file(&config.admin_address);
    tokio::task::spawn_blocking(move || {
        if let Some(w) = warm {
            w.shutdown();
        }
        // Workers joined (no fetch left running) before the layers go.
        if let Some(p) = prefetcher {
            p.stop();
        }
        sn.shutdown();
    })
    .await
    .map_err(DaemonError::Startup)?;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The metrics the endpoint serves: the daemon's own, and a scrape-time collector per
/// subsystem that keeps counters (register new subsystems' collectors here).
/// The dashboard reads the same subsystems.
fn metrics_registry(
    sn: &Snapshotter,
    prefetcher: Option<&Prefetcher>,
    cold_starts: Option<Arc<crate::metrics::coldstart::ColdStarts>>,
) -> crate::metrics::Metrics {
    let mut metrics = crate::metrics::Metrics::new();
    metrics.set_dashboard(crate::metrics::dashboard::Sources {
        lazy: sn.lazy().cloned(),
        prefetch: prefetcher.cloned(),
        cold_starts,
    });
    if let Some(lazy) = sn.lazy() {
        metrics.register(crate::metrics::collect::LazyCollector(Arc::clone(lazy)));
    }
    if let Some(p) = prefetcher {
        metrics.register(crate::metrics::collect::PrefetchCollector(p.clone()));
    }
    metrics
}

/// Starts warming predicted images if `[warm]` is enabled and lazy pulling is on; a failure
/// to start is logged, not fatal (warming is an optimisation).
async fn start_warm(config: &Config, sn: &Arc<Snapshotter>) -> Option<Arc<Warm>> {
    if !config.warm.enabled {
        return None;
    }
    let Some(lazy) = sn.lazy().cloned() else {
        tracing::warn!("warm.enabled needs remote.enable: not warming");
        return None;
    };
    let (root, settings) = (config.root.clone(), config.warm.clone());
    let handle = tokio::runtime::Handle::current();
    let started =
        tokio::task::spawn_blocking(move || Warm::start(&root, settings, lazy, handle)).await;
    match started {
        Ok(Ok(w)) => {
            tracing::info!(
                idle_ms = config.warm.idle.as_millis() as u64,
                min_probability = config.warm.min_probability,
                "warming predicted images when the network is idle"
            );
            Some(Arc::new(w))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot start the warm thread; not warming");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the warm thread; not warming");
            None
        }
    }
}

/// Starts the prefetcher over the lazy layers, if both are enabled (loading the models is
/// blocking work: it runs on the blocking pool).
async fn start_prefetcher(
    config: &Config,
    sn: &Arc<Snapshotter>,
) -> Result<Option<Prefetcher>, DaemonError> {
    let Some(lazy) = sn.lazy().filter(|_| config.prefetch.enabled) else {
        return Ok(None);
    };
    if sn.recorder().is_none() {
        tracing::warn!(
            "prefetching is off: prefetch.enabled needs trace.enabled (the models learn from, and \
             predict on, the reads the trace recorder sees)"
        );
        return Ok(None);
    }
    let parts = Parts {
        cache: Arc::clone(lazy.cache()),
        activity: Arc::clone(lazy.activity()),
        locator: Arc::clone(lazy.locator()),
    };
    let (settings, predictor) = (config.prefetch.clone(), config.predictor.clone());
    let started =
        tokio::task::spawn_blocking(move || Prefetcher::start(&settings, &predictor, &parts))
            .await
            .map_err(DaemonError::Startup)?;
    match started {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            // Lazy pulling works without prefetching: say so, and go on.
            tracing::error!(error = %e, "prefetching is off: the prefetcher could not start");
            Ok(None)
        }
    }
}

/// Serves the admin API until `stop` turns true; a failure is logged, not fatal (containerd's
/// socket matters more than the operator's).
async fn serve_admin(
    listener: UnixListener,
    state: AdminState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = crate::admin::router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin API stopped");
    }
}

/// Opens the store and, if enabled, mounts every remote layer it records again (blocking), so
/// that containerd's first call after a restart finds them. Traces are recorded when both lazy
/// pulling and `[trace]` are enabled (only lazy layers are traced).
fn open(
    root: &Path,
    lazy_cfg: Option<LazyConfig>,
    trace_cfg: Option<TraceSettings>,
    handle: tokio::runtime::Handle,
) -> Result<Snapshotter, crate::error::Error> {
    let mut sn = Snapshotter::open(root)?;
    if let Some(cfg) = lazy_cfg {
        let mut lazy = LazyLayers::new(root, cfg, handle)
            .map_err(|e| crate::error::Error::Lazy(e.to_string()))?;
        if let Some(trace) = trace_cfg {
            let recorder = Recorder::start(&root.join(TRACES_DIR), &trace)
                .map_err(|e| crate::error::Error::Lazy(e.to_string()))?;
            lazy = lazy.with_recorder(Arc::clone(&recorder));
            sn.enable_trace(recorder);
        }
        sn.enable_lazy(Arc::new(lazy))?;
    }
    Ok(sn)
}

/// Where finished runs' traces are written, under the root.
pub const TRACES_DIR: &str = "traces";

/// The lazy-pulling settings from the validated config.
fn lazy_config(config: &Config) -> LazyConfig {
    let (r, g) = (&config.remote, &config.registry);
    LazyConfig {
        fuse_threads: r.fuse_threads,
        read_deadline: r.read_timeout,
        background_fetch: r.background_fetch,
        fetch_span: r.fetch_span,
        background_idle: r.background_idle,
        require_toc_digest: r.require_toc_digest,
        registry: RegistryConfig {
            hosts_dir: g.config_path.clone(),
            docker_config: g.docker_config.clone(),
            insecure_hosts: g.insecure_hosts.clone(),
            connect_timeout: g.connect_timeout,
            request_timeout: g.request_timeout,
            retries: g.retries,
            ..RegistryConfig::default()
        },
        cache: config.cache.clone(),
        warmed_toc_bytes: if config.warm.enabled {
            config.warm.max_toc_cache_bytes
        } else {
            0
        },
    }
}

/// Binds `path` with `mode`, refusing to steal a socket another process is serving.
fn bind(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    let listen_err = |source| DaemonError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(listen_err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AddressInUse(path.to_path_buf()));
        }
        // A stale socket from a daemon that was killed: nobody is listening on it.
        std::fs::remove_file(path).map_err(listen_err)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(listen_err)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(listen_err(e));
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_SOCKET_PATH_BYTES;

    /// The longest address the config accepts must bind, temporary name included.
    #[tokio::test]
    async fn the_longest_accepted_address_binds() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let name = "s".repeat(MAX_SOCKET_PATH_BYTES - base.len() - 1);
        let path = dir.path().join(name);
        assert_eq!(path.as_os_str().len(), MAX_SOCKET_PATH_BYTES);
        let _listener = bind(&path, 0o600).unwrap();
        assert!(path.exists());
    }

    #[tokio::test]
    async fn a_live_socket_is_never_stolen_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = bind(&path, 0o660).unwrap();
        assert!(matches!(
            bind(&path, 0o660),
            Err(DaemonError::AddressInUse(_))
        ));
        drop(live);
        // The file is still there but nobody listens: a crashed daemon's socket.
        assert!(path.exists());
        bind(&path, 0o660).unwrap();
    }
}
