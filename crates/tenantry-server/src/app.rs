//! Wiring: settings → keys → store → services → router, and serving it.

use crate::api;
use crate::auth::TokenKeys;
use crate::auth::guard::{Limit, Limits, LoginGuard};
use crate::auth::otp::OtpSender;
use crate::control::records::CompiledSchemas;
use crate::control::{Admission, Analytics, Core, Identity, Records, Services, Tenants};
use crate::enforce::concurrency::TenantGate;
use crate::enforce::daily_quota::DailyQuota;
use crate::enforce::rate_limit::RateLimiter;
use crate::keys::{self, Keyring};
use crate::monitor::traffic::TrafficWindows;
use crate::settings::{Database, Settings, exposed};
use crate::state::AppState;
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use tenantry::Plan;
use tenantry::clock::{Clock, SystemClock};
use tenantry::placement::Server;
use tenantry::resolve::{ResolverConfig, TenantResolver};
use tenantry::store::Store;
use tenantry::store::migrate::MigratePolicy;
use tenantry::store::postgres::{PgControlStore, PgDataPlane, PgDatabase, PgSettings};
use tenantry::store::sqlite::{SqliteControlStore, SqliteDataPlane};
use tenantry::store::{DataPlane, StoreError};
use tokio::net::TcpListener;

/// The process-wide Prometheus recorder (a recorder can be installed once;
/// tests build many apps in one process and share it).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ],
                )
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

/// Opens everything `serve` and the CLI need: data dir, keys, control store.
pub async fn open_services(settings: &Settings) -> anyhow::Result<Arc<Services>> {
    open_services_with_clock(settings, Arc::new(SystemClock)).await
}

pub async fn open_services_with_clock(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<Services>> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let jwt_secret = keys::load_or_create(&settings.data_dir, keys::JWT_SECRET_FILE, 64)?;
    let master_key = keys::load_or_create(&settings.data_dir, keys::MASTER_KEY_FILE, 32)?;
    let (store, data) = open_stores(settings, &clock).await?;
    store.seed_plans(&Plan::builtin()).await?;
    migrate_dedicated(settings, &store, &data).await?;
    let resolver = Arc::new(TenantResolver::new(
        store.clone(),
        ResolverConfig {
            base_domain: settings.base_domain.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            multi_tenant: settings.multi_tenant,
        },
    ));
    let core = Arc::new(Core {
        store: store.clone(),
        resolver,
        data,
        keyring: Keyring::new(&master_key)?,
        clock: clock.clone(),
        caches: Default::default(),
    });
    let daily_quota = Arc::new(DailyQuota::new(store, clock.clone()));
    let services = Arc::new(Services {
        identity: Identity {
            core: core.clone(),
            tokens: TokenKeys::new(&jwt_secret, clock.clone()),
            login_guard: LoginGuard::new(attempt_limits(settings), exposed(&settings.redis_url))?,
            otp_sender: OtpSender::from_settings(
                &settings.otp_sender,
                exposed(&settings.otp_webhook_url),
            )?,
            otp_key: Sha256::digest([b"otp:".as_slice(), jwt_secret.as_slice()].concat()).to_vec(),
            multi_tenant: settings.multi_tenant,
        },
        records: Records {
            core: core.clone(),
            schemas: CompiledSchemas::new(10_000),
        },
        analytics: Analytics {
            core: core.clone(),
            daily_quota: daily_quota.clone(),
        },
        tenants: Tenants {
            core: core.clone(),
            jobs: crate::control::tenants::queue::JobQueue {
                node: crate::control::tenants::queue::node_id(&settings.data_dir)?,
                lease: std::time::Duration::from_secs(settings.job_lease_secs.max(1)),
                wake: tokio::sync::Notify::new(),
                dir: settings.data_dir.clone(),
                import_max_bytes: settings.import_max_bytes,
                source_grace: std::time::Duration::from_millis(settings.move_source_grace_ms),
            },
        },
        admission: Admission {
            core: core.clone(),
            daily_quota,
            tenant_gate: TenantGate::new(
                settings.max_concurrent_per_tenant,
                std::time::Duration::from_millis(settings.tenant_queue_wait_ms),
            ),
            rate_limiter: if settings.rate_limits {
                Some(RateLimiter::new(
                    clock.clone(),
                    exposed(&settings.redis_url),
                )?)
            } else {
                None
            },
        },
        core,
    });
    if !settings.multi_tenant {
        services.tenants.ensure_default_tenant().await?;
    }
    Ok(services)
}

fn attempt_limits(settings: &Settings) -> Limits {
    let window = chrono::Duration::seconds(
        i64::try_from(settings.login_window_secs).unwrap_or(i64::MAX / 1000),
    );
    let hour = chrono::Duration::hours(1);
    Limits {
        account: Limit {
            max: settings.login_max_failures,
            window,
        },
        address: Limit {
            max: settings.login_max_failures_per_address,
            window,
        },
        otp_address: Limit {
            max: settings.otp_sends_per_address_per_hour,
            window: hour,
        },
        otp_tenant: Limit {
            max: settings.otp_sends_per_tenant_per_hour,
            window: hour,
        },
    }
}

/// Dedicated tenants' databases must be at the binary's schema before
/// requests reach them: migrated here when allowed, a refusal otherwise.
async fn migrate_dedicated(
    settings: &Settings,
    store: &Arc<dyn Store>,
    data: &Arc<dyn DataPlane>,
) -> anyhow::Result<()> {
    if settings.migrate {
        let migrated = crate::migrate::dedicated_tenants(
            store.clone(),
            data.clone(),
            settings.migrate_parallelism,
        )
        .await?
        .into_result()?;
        if migrated > 0 {
            tracing::info!(migrated, "dedicated tenant databases migrated");
        }
        return Ok(());
    }
    let behind = crate::migrate::behind(store.as_ref(), data.as_ref()).await?;
    if !behind.is_empty() {
        anyhow::bail!(
            "{} dedicated tenant database(s) are behind this binary's schema (first: {}); run `tenantry migrate`, or start with `tenantry serve --migrate`",
            behind.len(),
            behind[0].slug
        );
    }
    Ok(())
}

/// How far opening a store may change its schema: a fresh database is
/// always set up; one that is behind is migrated only when told to.
fn migrate_policy(settings: &Settings) -> MigratePolicy {
    if settings.migrate {
        MigratePolicy::Apply
    } else {
        MigratePolicy::InitializeOnly
    }
}

/// The control store and the data plane on the configured engine.
async fn open_stores(
    settings: &Settings,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn DataPlane>)> {
    match settings.database()? {
        Database::Sqlite(path) => {
            anyhow::ensure!(
                settings.placement.servers.is_empty(),
                "[[placement.servers]] places tenants across PostgreSQL servers: set TENANTRY_DATABASE_URL=postgres://… too"
            );
            let store = SqliteControlStore::open(&path, migrate_policy(settings))
                .await
                .map_err(pending_hint)
                .with_context(|| format!("opening control store {}", path.display()))?;
            let data = SqliteDataPlane::open(
                &settings.data_dir,
                settings.max_open_tenant_databases,
                migrate_policy(settings),
            )
            .await
            .map_err(pending_hint)
            .context("opening tenant data stores")?;
            Ok((
                Arc::new(store.with_clock(clock.clone())),
                Arc::new(data.with_clock(clock.clone())),
            ))
        }
        Database::Postgres(url) => {
            let server = |url: String| PgSettings {
                url,
                runtime_role: settings.database_runtime_role.clone(),
                runtime_password: exposed(&settings.database_runtime_password).map(str::to_owned),
                max_connections: settings.database_max_connections,
                acquire_timeout: std::time::Duration::from_millis(
                    settings.database_acquire_timeout_ms,
                ),
                statement_timeout: std::time::Duration::from_millis(
                    settings.database_statement_timeout_ms,
                ),
            };
            let policy = migrate_policy(settings);
            let db = PgDatabase::open(&server(url), policy)
                .await
                .map_err(pending_hint)
                .context("opening PostgreSQL")?;
            let mut placed = Vec::new();
            for s in &settings.placement.servers {
                anyhow::ensure!(
                    s.weight > 0.0 && !placed.iter().any(|(p, _): &(Server, _)| p.name == s.name),
                    "[[placement.servers]]: names must be unique and weights positive ({:?})",
                    s.name
                );
                let opened = PgDatabase::open_placement(&server(s.url.clone()), policy)
                    .await
                    .map_err(pending_hint)
                    .with_context(|| format!("opening placement server {:?}", s.name))?;
                placed.push((s.clone(), opened));
            }
            let data = PgDataPlane::open(&db, placed, settings.dedicated_max_connections)
                .await
                .context("opening the dedicated tier on PostgreSQL")?;
            Ok((
                Arc::new(PgControlStore::new(db).with_clock(clock.clone())),
                Arc::new(data.with_clock(clock.clone())),
            ))
        }
    }
}

/// A schema that is behind gets the command that fixes it.
fn pending_hint(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Pending(what) => anyhow::anyhow!(
            "the database schema is behind this binary ({what}); run `tenantry migrate`, or start with `tenantry serve --migrate`"
        ),
        other => other.into(),
    }
}

/// A ready-to-serve application.
pub struct App {
    pub state: AppState,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let services = open_services_with_clock(&settings, clock.clone()).await?;
        if let Some((email, password)) = services
            .identity
            .bootstrap_super_admin(
                settings.admin_email.as_deref(),
                exposed(&settings.admin_password),
            )
            .await?
        {
            // Shown once, on stderr, so the JSON log on stdout stays machine-readable.
            eprintln!("created platform super-admin {email} with generated password: {password}");
        }
        Ok(Self {
            state: AppState {
                services,
                settings: Arc::new(settings),
                metrics: metrics_handle()?,
                traffic: Arc::new(TrafficWindows::new(clock)),
            },
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    /// Owns every background task of the server: the job workers and the
    /// request-count flusher start here and stop here, and the counts are
    /// flushed one last time after the last request.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = self.router();
        self.serve_router(router, listener, shutdown).await
    }

    /// `serve` with a router built over this app's state (tests add routes).
    pub async fn serve_router(
        self,
        router: axum::Router,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let services = self.state.services.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = crate::jobs::spawn_workers(
            services.clone(),
            self.state.settings.job_workers,
            stopped.clone(),
        );
        let flusher = spawn_count_flusher(services.clone(), stopped);
        let header_timeout =
            std::time::Duration::from_millis(self.state.settings.header_read_timeout_ms.max(1));
        let served = serve_connections(listener, router, header_timeout, shutdown).await;
        let _ = stop.send(true);
        // Running jobs go back to the queue; the next start resumes them.
        let _ = workers.await;
        let _ = flusher.await;
        if let Err(e) = services.admission.daily_quota.flush().await {
            tracing::warn!(error = %e, "the last flush of request counts failed");
        }
        served?;
        Ok(())
    }
}

/// Accepts connections until `shutdown`, then lets the requests in flight
/// finish. hyper directly rather than `axum::serve`, for the header-read
/// timeout: a client that never finishes its headers (slowloris) is cut off
/// instead of holding its connection for ever.
async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: pause, don't spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Responses go out as they are written (no Nagle: a response
        // written in two pieces would wait for the client's delayed ACK).
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (mut req, unread) = crate::api::unread_body::watch(req);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let mut res = router.oneshot(req).await?;
                    unread.settle(&mut res);
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client gone or too slow: nothing to report.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Writes request counts every few seconds until `stop`: counters survive a
/// crash with at most that much loss, without a database write per request.
fn spawn_count_flusher(
    services: Arc<Services>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = services.admission.daily_quota.flush().await {
                tracing::warn!(error = %e, "flushing request counts failed; will retry");
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining requests");
}
