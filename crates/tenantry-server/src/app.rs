//! Wiring: settings → keys → store → services → router, and serving it.

use crate::api;
use crate::auth::TokenKeys;
use crate::control::Services;
use crate::keys::{self, Keyring};
use crate::settings::Settings;
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use tenantry::Plan;
use tenantry::store::ControlStore;
use tenantry::store::sqlite::SqliteControlStore;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub settings: Arc<Settings>,
    pub metrics: PrometheusHandle,
}

/// The process-wide Prometheus recorder (a recorder can be installed once;
/// tests build many apps in one process and share it).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        let _ = HANDLE.set(handle);
    }
    HANDLE
        .get()
        .cloned()
        .context("metrics recorder unavailable")
}

/// Opens everything `serve` and the CLI need: data dir, keys, control store.
pub async fn open_services(settings: &Settings) -> anyhow::Result<Arc<Services>> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let jwt_secret = keys::load_or_create(&settings.data_dir, keys::JWT_SECRET_FILE, 64)?;
    let master_key = keys::load_or_create(&settings.data_dir, keys::MASTER_KEY_FILE, 32)?;
    let db_path = settings.control_db_path()?;
    let store = SqliteControlStore::open(&db_path)
        .await
        .with_context(|| format!("opening control store {}", db_path.display()))?;
    store.seed_plans(&Plan::builtin()).await?;
    let store: Arc<dyn ControlStore> = Arc::new(store);
    Ok(Arc::new(Services {
        store,
        keyring: Keyring::new(&master_key)?,
        tokens: TokenKeys::new(&jwt_secret),
    }))
}

/// A ready-to-serve application.
pub struct App {
    pub state: AppState,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let services = open_services(&settings).await?;
        if let Some((email, password)) = services
            .bootstrap_super_admin(
                settings.admin_email.as_deref(),
                settings.admin_password.as_deref(),
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
            },
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
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
