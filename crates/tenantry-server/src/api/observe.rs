//! Per-request observation: request id, one JSON access-log line, metrics.

use super::problem::InternalCause;
use crate::enforce::rate_limit::RateSlot;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tenantry::resolve::{SlotTenant, TenantSlot};
use tracing::Instrument;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// An incoming id is echoed only if it is short, visible ASCII: anything else
/// could forge log lines.
fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (1..=128)
        .contains(&s.len())
        .then_some(())
        .filter(|_| s.bytes().all(|b| b.is_ascii_graphic()))
        .map(|_| s.to_owned())
}

pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let slot = TenantSlot::default();
    req.extensions_mut().insert(slot.clone());
    let rate = RateSlot::default();
    req.extensions_mut().insert(rate.clone());

    let span =
        tracing::info_span!("request", request_id = %request_id, tenant_id = tracing::field::Empty);
    // Audit entries made while serving the request carry its id.
    let run = tenantry::audit::with_request_id(request_id.clone(), next.run(req));
    let mut res = run.instrument(span.clone()).await;

    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    // Tenant-scoped requests announce their tenant (filled by the resolver).
    if let Some(tenant) = slot.0.get()
        && let Ok(v) = HeaderValue::from_str(&tenant.id.to_string())
    {
        res.headers_mut().entry(TENANT_ID.clone()).or_insert(v);
    }
    if let Some(info) = rate.0.get() {
        let headers = res.headers_mut();
        for (name, value) in [
            (&RATELIMIT_LIMIT, info.limit),
            (&RATELIMIT_REMAINING, info.remaining),
            (&RATELIMIT_RESET, info.reset_secs),
        ] {
            headers.insert(name.clone(), HeaderValue::from(value));
        }
    }
    let status = res.status().as_u16();
    let latency = start.elapsed();
    let tenant_id = res
        .headers()
        .get(&TENANT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(t) = &tenant_id {
        span.record("tenant_id", t.as_str());
    }
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if let Some(tenant) = slot.0.get() {
        count_tenant_request(&state, tenant, status, latency);
    }
    let _entered = span.enter();
    match res.extensions().get::<InternalCause>() {
        Some(InternalCause(cause)) => tracing::error!(
            target: "tenantry::access",
            request_id = %request_id, method = %method, path, route, status, latency_ms, tenant_id, error = %cause,
            "request failed"
        ),
        None => tracing::info!(
            target: "tenantry::access",
            request_id = %request_id, method = %method, path, route, status, latency_ms, tenant_id,
            "request"
        ),
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(latency.as_secs_f64());
    res
}

/// A tenant-scoped request (its tenant resolved) feeds the tenant's traffic
/// window and the per-plan series. Per plan, not per tenant: plans are few,
/// tenants many (see `monitor::tenant_series`).
fn count_tenant_request(
    state: &AppState,
    tenant: &SlotTenant,
    status: u16,
    latency: std::time::Duration,
) {
    state.traffic.record(tenant.id, status, latency);
    let class = format!("{}xx", status / 100);
    metrics::counter!("tenant_requests_total", "plan" => tenant.plan.clone(), "status_class" => class)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_request_ids_are_echoed() {
        assert_eq!(
            valid_request_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(
            valid_request_id(&HeaderValue::from_static("has space")),
            None
        );
        assert_eq!(
            valid_request_id(&HeaderValue::from_str(&"a".repeat(129)).expect("hv")),
            None
        );
    }
}
