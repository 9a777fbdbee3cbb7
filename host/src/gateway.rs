//! The running gateway: binds listeners once, serves the live snapshot, reloads on SIGHUP
//! (validate completely, then swap atomically) and drains on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{self, ConfigError, Loaded};
use crate::control::Control;
use crate::policy::PolicyEnv;
use crate::proxy::Shared;
use crate::server::{self, Lifecycle};
use crate::snapshot::Snapshot;
use crate::state::{KvLimits, Store};
use crate::telemetry::AccessLog;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, re-read on SIGHUP.
    File(PathBuf),
    /// The configuration compiled into the binary (`gateway.toml` as shipped).
    Embedded,
}

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("listener {name:?} cannot bind {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The admin API could not start.
    #[error("admin: {0}")]
    Admin(String),
    /// The access log could not be opened.
    #[error("access_log.path: cannot open {path}: {source}")]
    AccessLog {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The signals the gateway acts on (SIGHUP reloads; SIGUSR1 reopens the access-log and
/// analytics files after rotation; SIGTERM and SIGINT drain and stop).
/// Installed first thing, before plugins compile or Redis is waited for, so that a signal
/// arriving during start-up is queued for the running gateway instead of killing the
/// process with the default action.
pub struct Signals {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Self, StartError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                hup: signal(SignalKind::hangup()).map_err(StartError::Signals)?,
                usr1: signal(SignalKind::user_defined1()).map_err(StartError::Signals)?,
                term: signal(SignalKind::terminate()).map_err(StartError::Signals)?,
                int: signal(SignalKind::interrupt()).map_err(StartError::Signals)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }
}

/// Reads and parses the configuration from `source`.
pub fn load_config(source: &Source) -> Result<Loaded, ConfigError> {
    match source {
        Source::File(p) => config::load_file(p),
        Source::Embedded => config::load_str(
            config::EMBEDDED_DEFAULT,
            "<embedded gateway.toml>".into(),
            PathBuf::from("."),
        ),
    }
}

/// What a policy environment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Serving: opens the configured store and connects to Redis.
    Serve,
    /// Checking a configuration (`sluice validate`): an in-memory store, no connections, so
    /// it works next to a running gateway.
    Check,
}

/// Creates the policy environment (kept for the life of the process) for a configuration.
pub fn policy_env(loaded: &Loaded, purpose: Purpose) -> Result<Arc<PolicyEnv>, ConfigError> {
    let c = &loaded.config;
    let at = |path: &[&str], message: String| {
        let key = path
            .iter()
            .fold(config::KeyPath::default(), |k, p| k.key(*p));
        loaded.error(vec![config::Issue::new(key, message)])
    };
    let limits = KvLimits {
        max_key_bytes: c.policy.kv_max_key_bytes,
        max_value_bytes: c.policy.kv_max_value_bytes,
        max_keys: c.policy.kv_max_keys,
    };
    let tls = match c.redis.as_ref().and_then(|r| r.tls_ca.clone()) {
        None => None,
        Some(ca) => {
            let tls = config::UpstreamTls { ca, sni: None };
            let cfg = crate::tls::client_config(&tls, false)
                .map_err(|es| at(&["redis", "tls_ca"], es.into_iter().map(|e| e.1).collect()))?;
            let mut cfg = Arc::unwrap_or_clone(cfg);
            cfg.alpn_protocols.clear();
            Some(cfg)
        }
    };
    let store = match purpose {
        Purpose::Serve => Store::open(&c.state, c.redis.as_ref(), tls, limits),
        Purpose::Check => Store::in_memory(c.redis.as_ref(), tls, limits),
    }
    .map_err(|e| {
        let key = if e.starts_with("redis.url") {
            ["redis", "url"]
        } else {
            ["state", "path"]
        };
        at(&key, e)
    })?;
    PolicyEnv::new(&c.policy, Arc::new(store), Some(c.policy.cache_dir.clone()))
        .map_err(|e| at(&["policy", "analytics_path"], format!("cannot open: {e}")))
}

/// Compiles a parsed configuration, composed with the resources stored through the admin
/// API, into a snapshot (instantiating every policy).
pub async fn build(loaded: &Loaded, env: Arc<PolicyEnv>) -> Result<Snapshot, ConfigError> {
    let (managed, _) = env.store.db.managed().map_err(|e| {
        loaded.error(vec![config::Issue::new(
            config::KeyPath::default().key("state").key("path"),
            e.to_string(),
        )])
    })?;
    let keys = &loaded.config.admin.trusted_keys;
    crate::control::build_composed(loaded, &managed, env, keys)
        .await
        .map_err(|issues| loaded.error(issues))
}

/// What `sluice validate` checks: [`build`], and `[admin]` (its TLS files included), which
/// a running gateway checks once, when the admin API starts, not on every build.
pub async fn validate(loaded: &Loaded, env: Arc<PolicyEnv>) -> Result<Snapshot, ConfigError> {
    let admin = match crate::admin::check_settings(&loaded.config.admin) {
        Ok(_) => Vec::new(),
        Err(problems) => crate::admin::settings_issues(problems),
    };
    match build(loaded, env).await {
        Ok(snapshot) if admin.is_empty() => Ok(snapshot),
        Ok(_) => Err(loaded.error(admin)),
        Err(mut e) => {
            e.diagnostics.extend(loaded.error(admin).diagnostics);
            Err(e)
        }
    }
}

/// Removes expired kv entries from the embedded store, and restored keys from the local
/// rate limiters, every `every`.
fn sweep_expired(env: Arc<PolicyEnv>, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match env.store.local_kv.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired kv entries swept"),
                Err(e) => tracing::warn!(error = %e, "kv sweep failed"),
            }
            let keys = env.sweep_limiters();
            tracing::debug!(keys, "rate-limit keys swept");
        }
    });
}

/// Runs the gateway until SIGTERM/SIGINT and the drain complete.
pub async fn run(
    source: Source,
    loaded: Loaded,
    snap: Snapshot,
    signals: Signals,
) -> Result<(), StartError> {
    let mut listeners = Vec::new();
    for l in &snap.listeners {
        let tcp = server::bind(l.bind).map_err(|source| StartError::Bind {
            name: l.name.clone(),
            addr: l.bind,
            source,
        })?;
        let local = tcp.local_addr().map_err(|source| StartError::Bind {
            name: l.name.clone(),
            addr: l.bind,
            source,
        })?;
        tracing::info!(listener = %l.name, addr = %local, tls = l.tls.is_some(), "listening");
        listeners.push(tcp);
    }
    let access_log = if snap.config.access_log.enabled {
        let path = snap.config.access_log.path.clone();
        AccessLog::start(&path).map_err(|source| StartError::AccessLog { path, source })?
    } else {
        AccessLog::disabled()
    };
    let limits = snap.config.limits.clone();
    sweep_expired(
        snap.policy_env.clone(),
        snap.config.state.sweep_interval.get(),
    );
    if let (Some(redis), Some(r)) = (&snap.policy_env.store.redis, &snap.config.redis)
        && !redis.wait_connected(r.connect_timeout.get()).await
    {
        tracing::warn!(redis = %r.url_for_logs(), "redis is unreachable; starting degraded (each policy's on_backend_error applies until it connects)");
    }
    snap.activate(None);
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snap),
        access_log,
    });

    let control = Control::new(source, shared.clone(), loaded);
    crate::admin::start(control.clone())
        .await
        .map_err(StartError::Admin)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let life = Lifecycle {
        shutdown: shutdown_rx,
        open: open_tx,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
    };
    let mut accept_loops = Vec::new();
    for (i, tcp) in listeners.into_iter().enumerate() {
        accept_loops.push(tokio::spawn(server::accept_loop(
            i,
            tcp,
            shared.clone(),
            life.clone(),
        )));
    }
    tracing::info!("ready");

    wait_for_stop(&control, &shared, signals).await;
    let _ = shutdown_tx.send(true);
    // Once every accept loop has returned, its listener is closed: new connections are
    // refused from here on, while open ones finish.
    for l in accept_loops {
        let _ = l.await;
    }
    // The configuration serving at the stop (reloads may have changed it).
    let drain_timeout = shared.snapshot.load().config.gateway.drain_timeout.get();
    tracing::info!(timeout = ?drain_timeout, "draining");
    drop(life);
    match tokio::time::timeout(drain_timeout, open_rx.recv()).await {
        Ok(_) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    // The access-log and analytics lines of the last requests are written before exit.
    let (log, analytics) = {
        let snap = shared.snapshot.load();
        (shared.access_log.clone(), snap.policy_env.analytics.clone())
    };
    let flushed = tokio::task::spawn_blocking(move || {
        let limit = std::time::Duration::from_secs(2);
        log.flush(limit) & analytics.flush(limit)
    })
    .await;
    if !matches!(flushed, Ok(true)) {
        tracing::warn!("access-log or analytics lines still queued at exit were lost");
    }
    Ok(())
}

/// Serves SIGHUPs and SIGUSR1s until SIGTERM or SIGINT. A reload runs in its own task
/// (reloads are serialised by the control plane), so a stop signal during a slow reload is
/// not delayed.
#[cfg(unix)]
async fn wait_for_stop(control: &Arc<Control>, shared: &Shared, mut s: Signals) {
    loop {
        tokio::select! {
            _ = s.hup.recv() => {
                let control = control.clone();
                tokio::spawn(async move { control.reload_file().await });
            }
            _ = s.usr1.recv() => {
                tracing::info!("reopening the access-log and analytics files");
                shared.access_log.reopen();
                shared.snapshot.load().policy_env.analytics.reopen();
            }
            _ = s.term.recv() => return,
            _ = s.int.recv() => return,
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_stop(_control: &Arc<Control>, _shared: &Shared, _s: Signals) {
    let _ = tokio::signal::ctrl_c().await;
}
