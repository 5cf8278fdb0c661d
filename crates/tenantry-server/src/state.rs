//! What every request handler is given: the services, the settings, and
//! the observation state. Built once by `app`, read by the HTTP edge.

use crate::control::Services;
use crate::monitor::traffic::TrafficWindows;
use crate::settings::Settings;
use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tenantry::resolve::TenantResolver;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub settings: Arc<Settings>,
    pub metrics: PrometheusHandle,
    /// Each tenant's recent traffic: tenant health and per-tenant series.
    pub traffic: Arc<TrafficWindows>,
}

impl FromRef<AppState> for Arc<TenantResolver> {
    fn from_ref(state: &AppState) -> Self {
        state.services.core.resolver.clone()
    }
}
