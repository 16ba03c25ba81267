//! Sluice: an HTTP ingestion gateway. Clients POST CloudEvents; each is validated against its
//! JSON Schema and answered 2xx only once it is durable in the sink.
//!
//! # Layout
//! - [`auth`]: JWT (static keys, JWKS) and API keys to a `Principal`; scopes; CORS.
//! - [`config`]: the TOML + `SLUICE_*` environment contract, validated at start.
//! - [`http`]: router, layers, ingest handler, probes and metrics endpoint.
//! - [`event`]: CloudEvents decoding (single, batch, NDJSON, binary) and request limits.
//! - [`registry`]: schema stores and the lock-free cache of compiled validators.
//! - [`pipeline`]: validate, route, build records, publish, per-event outcomes.
//! - [`spool`]: the on-disk write-ahead log for when the sink is down or slow, and its replay.
//! - [`sink`]: the `Sink` trait and its Kafka, Kinesis, file and blackhole implementations.
//! - [`telemetry`]: metric names and logging setup.
//! - [`error`]: the API error shape and [`error::codes`], the one table of error codes.
//! - [`tls`]: rustls listeners, certificate reloads and client identities (used by `http` and `auth`).
//!
//! [`serve`] runs the real server on a listener the caller binds and stops when the caller's
//! future resolves, so `main`, the tests and the benchmarks all run the same code.

pub mod auth;
mod check;
pub mod config;
pub mod error;
pub mod event;
pub mod http;
mod percent;
mod periodic;
pub mod pipeline;
pub mod registry;
pub mod sink;
pub mod spool;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::check::{check, Checked};
use crate::config::Config;
use crate::http::App;
use crate::pipeline::Pipeline;
use crate::registry::{DirStore, SchemaStore, StoreSource, ValidatorCache};

/// Builds the application: checks the config (building its parts once), loads and compiles
/// schemas, connects the sink.
pub async fn build(config: Config) -> anyhow::Result<Arc<App>> {
    let Checked {
        router,
        auth,
        cors,
        tls,
        kafka,
    } = check(&config)?;
    let metrics = telemetry::prometheus();
    let registry = registry::store::open(&config.registry.url)
        .await
        .with_context(|| {
            format!(
                "opening the schema registry (registry.url {})",
                redact_url(&config.registry.url)
            )
        })?;
    let files = DirStore::new(&config.schemas.dir)
        .all_schemas()
        .await
        .context("reading schema files")?;
    let fail = config.registry.on_conflict == config::OnConflict::Fail;
    let schema_work = Arc::new(registry::SchemaWork::new(&config));
    let boot = registry::bootstrap(&*registry, &files, fail, &schema_work)
        .await
        .context("registering schema files")?;
    tracing::info!(
        registered = boot.registered,
        already = boot.already,
        conflicts = boot.conflicts.len(),
        "schema files checked against the registry"
    );
    let validators = ValidatorCache::load(Arc::new(StoreSource(registry.clone())))
        .await
        .context("loading schemas")?;
    let catalog = validators.catalog();
    if catalog.is_empty() {
        tracing::warn!(dir = %config.schemas.dir.display(), "no schemas found: every event will be rejected as unknown_type");
    }
    metrics::gauge!(telemetry::SCHEMAS_LOADED).set(catalog.len() as f64);
    let auth = Arc::new(auth);
    auth.start().await;
    let sink = sink::from_config(&config, kafka).await?;
    let spool = open_spool(&config, &sink)?;
    let validators = Arc::new(validators);
    watch_registry(
        registry.clone(),
        validators.clone(),
        config.registry.poll_interval.0,
    );
    let admission = pipeline::admission::AdmissionControl::new(
        config.limits.max_inflight_events,
        config.limits.max_inflight_bytes.0,
        config.limits.admission_wait.0,
    );
    Ok(Arc::new(App {
        rate_limits: pipeline::ratelimit::RateLimiter::from_config(&config.rate_limits),
        admission,
        registry,
        schema_work,
        auth,
        cors: Arc::new(cors),
        pipeline: Pipeline {
            validators,
            dead_letter_cap: pipeline::RateLimiter::events_per_second(
                config.routes.dead_letter_rate,
            ),
            router,
            sink,
            spool,
            ack_timeout: config.spool.ack_timeout.0,
        },
        metrics,
        tls,
        shutting_down: AtomicBool::new(false),
        config,
    }))
}

/// Opens the spool when enabled and starts replaying what an earlier run left in it.
fn open_spool(
    config: &Config,
    sink: &Arc<dyn sink::Sink>,
) -> anyhow::Result<Option<Arc<spool::Spool>>> {
    let c = &config.spool;
    if !c.enabled {
        return Ok(None);
    }
    let (spool, found) = spool::Spool::open(&c.dir, c.max_bytes.0, c.segment_bytes.0)
        .with_context(|| format!("opening the spool (spool.dir {})", c.dir.display()))?;
    if found.backlog_bytes > 0 {
        tracing::warn!(
            segments = found.segments,
            backlog_bytes = found.backlog_bytes,
            dir = %c.dir.display(),
            "spool holds records from an earlier run; replaying them"
        );
    } else {
        tracing::info!(dir = %c.dir.display(), max_bytes = c.max_bytes.0, "spool enabled");
    }
    let spool = Arc::new(spool);
    spool::replay::spawn(&spool, sink, c.replay_batch);
    Ok(Some(spool))
}

/// Reloads the validators when the registry's epoch moves (a change through any replica),
/// for as long as the cache is in use.
fn watch_registry(
    store: Arc<dyn registry::store::RegistryStore>,
    validators: Arc<ValidatorCache>,
    every: Duration,
) {
    let validators = Arc::downgrade(&validators);
    tokio::spawn(async move {
        let mut seen = store.epoch().await.ok();
        let mut changes = store.changes();
        loop {
            // A notification (PostgreSQL) wakes us at once; the poll is the safety net.
            match changes.as_mut() {
                Some(rx) => {
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { changes = None },
                        _ = tokio::time::sleep(every) => {}
                    }
                }
                None => tokio::time::sleep(every).await,
            }
            let Some(cache) = validators.upgrade() else {
                break;
            };
            match store.epoch().await {
                Ok(e) if Some(e) != seen => match cache.reload().await {
                    Ok(n) => {
                        seen = Some(e);
                        metrics::gauge!(telemetry::SCHEMAS_LOADED).set(n as f64);
                        tracing::info!(
                            epoch = e,
                            schemas = n,
                            "registry changed: validators reloaded"
                        );
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "registry changed but reloading failed; keeping the old validators")
                    }
                },
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "cannot read the registry epoch"),
            }
        }
    });
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Runs Sluice on `listener` until `shutdown` resolves, then drains:
/// readiness turns 503 at once, the listener stays open for `server.drain_delay` (load
/// balancers deregister), in-flight requests finish, the sink flushes, and the whole sequence
/// ends within `server.shutdown_grace`.
pub async fn serve(
    config: Config,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = build(config).await?;
    run(app, listeners, shutdown).await
}

/// The sockets Sluice serves on, bound by the caller (main binds the configured addresses,
/// tests port 0), so that nobody has to find a free port first and then race for it.
pub struct Listeners {
    pub main: TcpListener,
    /// For `server.admin_listen`: probes and metrics on a port of their own.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.listen` and, when set, `server.admin_listen`.
    pub async fn bind(server: &config::ServerConfig) -> anyhow::Result<Listeners> {
        let main = TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", server.listen))?;
        let admin = match server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding server.admin_listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { main, admin })
    }
}

/// The main listener only: admin routes are served on it.
impl From<TcpListener> for Listeners {
    fn from(main: TcpListener) -> Listeners {
        Listeners { main, admin: None }
    }
}

/// [`serve`] for an application already built.
pub async fn run(
    app: Arc<App>,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = app.config.server.shutdown_grace.0;
    // The last tenth of the grace (at most 1 s) is kept for flushing and exiting, so that the
    // process is gone within the grace however long requests hang.
    let reserve = (grace / 10).min(Duration::from_secs(1));
    let drain_delay = app.config.server.drain_delay.0;
    let Listeners {
        main: listener,
        admin,
    } = listeners.into();
    if admin.is_none() && app.config.server.admin_listen.is_some() {
        anyhow::bail!("server.admin_listen is set but no admin listener was passed to run");
    }
    let tls = app.tls.clone();
    if let Some(t) = &tls {
        t.spawn_reloader();
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = ?admin.as_ref().and_then(|l| l.local_addr().ok()),
        tls = tls.is_some(),
        sink = app.pipeline.sink.kind(),
        schemas = app.pipeline.validators.catalog().len(),
        "sluice serving"
    );

    // `signalled` flips when shutdown starts (the grace clock starts then); `stop` flips when
    // the listeners should close.
    let (signalled_tx, mut signalled) = watch::channel(None::<Instant>);
    let (stop_tx, stop) = watch::channel(false);
    {
        let app = app.clone();
        tokio::spawn(async move {
            shutdown.await;
            app.shutting_down.store(true, Ordering::Relaxed);
            metrics::gauge!(telemetry::READY).set(0.0);
            tracing::info!(?drain_delay, ?grace, "shutdown: readiness is 503, draining");
            let _ = signalled_tx.send(Some(Instant::now()));
            tokio::time::sleep(drain_delay).await;
            tracing::info!("shutdown: closing listeners, finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
    }
    {
        let handle = app.metrics.clone();
        let app = Arc::downgrade(&app);
        tokio::spawn(async move {
            // Histograms accumulate samples until upkeep folds them; do it even if nobody
            // scrapes. The demand gauges are refreshed every second for autoscalers.
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(app) = app.upgrade() else { break };
                app.admission.report_metrics();
                if let Some(s) = &app.pipeline.spool {
                    s.report_metrics();
                }
                tick += 1;
                if tick.is_multiple_of(5) {
                    handle.run_upkeep();
                }
            }
        });
    }

    let limits = http::serve::ConnectionLimits::from_config(&app.config, grace);
    let main = http::serve::serve(
        tls::Listener::new(listener, tls.clone())?,
        http::router(app.clone(), admin.is_none()),
        stop.clone(),
        limits,
    );
    let main = async move {
        main.await;
        anyhow::Ok(())
    };
    let admin_tls = tls.filter(|_| app.config.tls.admin);
    let admin_server = async {
        if let Some(l) = admin {
            // Probes and scrapes: no lifetime limit needed.
            let limits = http::serve::ConnectionLimits {
                max_age: None,
                ..limits
            };
            let router = http::admin_router(app.clone());
            http::serve::serve(
                tls::Listener::new(l, admin_tls)?,
                router,
                stop.clone(),
                limits,
            )
            .await;
        }
        anyhow::Ok(())
    };
    let servers = async { tokio::try_join!(main, admin_server) };
    let grace_expired = async {
        let started = *signalled
            .wait_for(Option::is_some)
            .await
            .expect("sender lives in the task")
            .as_ref()
            .expect("is_some");
        tokio::time::sleep_until((started + grace - reserve).into()).await;
        started
    };
    let started = tokio::select! {
        res = servers => {
            res.context("serving HTTP")?;
            signalled.borrow().unwrap_or_else(Instant::now)
        }
        started = grace_expired => {
            tracing::warn!("shutdown grace period over with requests still in flight; exiting anyway");
            started
        }
    };
    let done_by = started + grace - reserve / 2;
    let left = done_by.saturating_duration_since(Instant::now());
    match app
        .pipeline
        .sink
        .flush(left.max(Duration::from_millis(10)))
        .await
    {
        Ok(()) => tracing::info!("shutdown: sink flushed"),
        Err(e) => tracing::warn!(error = %e, "shutdown: sink flush incomplete"),
    }
    if let Some(spool) = &app.pipeline.spool {
        // Replay goes on until the grace period ends; what is left stays on disk for the
        // next start.
        while spool.has_backlog() && Instant::now() < done_by {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = spool.backlog_bytes();
        if left > 0 {
            tracing::warn!(
                backlog_bytes = left,
                "shutdown: spooled records not replayed yet stay in the spool for the next start"
            );
        }
    }
    Ok(())
}
