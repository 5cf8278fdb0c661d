//! Per-tenant `/metrics` series, for the busiest tenants only.
//!
//! Every label value is a series Prometheus keeps in memory (and on disk,
//! for the retention period); with thousands of tenants a `tenant_id`
//! label on every metric would multiply the series by thousands. So the
//! per-route and per-plan series carry no tenant, and only the top N
//! tenants by recent traffic (`metrics_top_tenants`) get series of their
//! own. They are rendered from the traffic windows at each scrape rather
//! than kept in the metrics recorder, so a tenant that drops out of the
//! top N loses its series at once instead of leaving a stale one behind.

use super::traffic::{TrafficWindows, WINDOW};
use std::fmt::Write;

/// Prometheus text for the `n` busiest tenants (nothing when `n` is 0).
pub fn render(traffic: &TrafficWindows, n: usize) -> String {
    let top = traffic.top(n);
    if top.is_empty() {
        return String::new();
    }
    let window = WINDOW.as_secs();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP tenant_requests_window Tenant-scoped requests of the last {window} s, for the {n} busiest tenants only."
    );
    let _ = writeln!(out, "# TYPE tenant_requests_window gauge");
    let stats: Vec<_> = top
        .iter()
        .map(|(tenant, _)| (tenant, traffic.stats(*tenant)))
        .collect();
    for (tenant, s) in &stats {
        let _ = writeln!(
            out,
            "tenant_requests_window{{tenant_id=\"{tenant}\"}} {}",
            s.requests
        );
    }
    let _ = writeln!(
        out,
        "# HELP tenant_errors_window 5xx responses of the last {window} s, for the {n} busiest tenants only."
    );
    let _ = writeln!(out, "# TYPE tenant_errors_window gauge");
    for (tenant, s) in &stats {
        let _ = writeln!(
            out,
            "tenant_errors_window{{tenant_id=\"{tenant}\"}} {}",
            s.errors
        );
    }
    out
}
