//! `GET /api/v1/tenants/{id}/health`: can the tenant's data be reached, and
//! how its traffic of the last few minutes went.

use super::traffic::TrafficWindows;
use crate::control::Services;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use tenantry::Tenant;

/// Above this share of 5xx responses a tenant is degraded.
pub const DEGRADED_ERROR_RATE: f64 = 0.05;
/// Above this 99th percentile latency a tenant is degraded.
pub const DEGRADED_P99_MS: f64 = 1000.0;
/// A database that has not answered by then counts as down.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    /// Reachable, but too many 5xx or too slow.
    Degraded,
    /// The tenant's database does not answer.
    Unhealthy,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthChecks {
    /// The tenant's data (shared tier or its own database) answers a read.
    pub database: bool,
}

/// Figures over the last five minutes of the tenant's tenant-scoped requests.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthMetrics {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Share of 5xx responses (4xx, including 429, are not errors); 0 without requests.
    pub error_rate: f64,
    pub requests: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantHealth {
    pub status: HealthStatus,
    pub checks: HealthChecks,
    pub metrics: HealthMetrics,
    pub last_checked: DateTime<Utc>,
}

/// Checks `tenant` now (the caller has already decided it may).
pub async fn check(services: &Services, traffic: &TrafficWindows, tenant: &Tenant) -> TenantHealth {
    let database = database_answers(services, tenant).await;
    let stats = traffic.stats(tenant.id);
    let metrics = HealthMetrics {
        p50_ms: stats.p50_ms,
        p99_ms: stats.p99_ms,
        error_rate: stats.error_rate(),
        requests: stats.requests,
    };
    let status = if !database {
        HealthStatus::Unhealthy
    } else if metrics.error_rate > DEGRADED_ERROR_RATE || metrics.p99_ms > DEGRADED_P99_MS {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    TenantHealth {
        status,
        checks: HealthChecks { database },
        metrics,
        last_checked: services.core.clock.now(),
    }
}

/// Listing the collection definitions is the cheapest read every tenant
/// database answers (usage sums the records and can be slow on a big one).
async fn database_answers(services: &Services, tenant: &Tenant) -> bool {
    let read = async {
        services
            .core
            .tenant_data(tenant)
            .await?
            .collections()
            .await
            .map_err(crate::error::Error::from)
    };
    match tokio::time::timeout(DATABASE_TIMEOUT, read).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(tenant_id = %tenant.id, error = %e, "tenant health: database check failed");
            false
        }
        Err(_) => {
            tracing::warn!(tenant_id = %tenant.id, "tenant health: database check timed out");
            false
        }
    }
}
