//! Statistics of one tenant's collection, its usage report, and the
//! cross-tenant comparison platform staff see.

use super::Analytics;
use crate::error::{Error, Result, Validator};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use tenantry::Acting;
use tenantry::record::{valid_collection_name, valid_field};
use tenantry::store::{PageRequest, TenantFilter};
use tenantry::{Principal, TenantStatus};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub total: u64,
    /// The largest groups, at most `MAX_GROUPS` of them.
    pub groups: BTreeMap<String, u64>,
    /// Present (true) only when smaller groups were left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Groups a stats answer holds at most: a field with a value per record
/// would otherwise answer one group per record.
pub const MAX_GROUPS: u32 = 1000;

/// One row of `GET /api/v1/analytics/compare`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompareRow {
    pub tenant: TenantRef,
    pub total: u64,
    pub resolved: u64,
    /// Percentage 0–100.
    pub resolution_rate: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantRef {
    pub id: tenantry::TenantId,
    pub slug: String,
    pub name: String,
}

/// `GET /api/v1/tenants/{id}/usage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub users: u64,
    pub records: u64,
    pub storage_bytes: u64,
    /// Counted tenant-scoped requests of the current UTC day.
    pub requests_today: u64,
    /// One entry per UTC day of the range, oldest first.
    pub requests_by_day: Vec<DayCount>,
    pub limits: tenantry::Limits,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub requests: u64,
}

/// How a group key is shown: strings as themselves, anything else as JSON.
fn group_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Analytics {
    pub async fn stats(&self, acting: &Acting, collection: &str, group_by: &str) -> Result<Stats> {
        if !valid_field(group_by) {
            return Err(Error::invalid(
                "group_by",
                "fields are dot-separated identifiers",
            ));
        }
        let data = self.core.tenant_data(&acting.tenant).await?;
        if self
            .core
            .collection(acting, data.as_ref(), collection)
            .await?
            .is_none()
        {
            return Ok(Stats {
                total: 0,
                groups: BTreeMap::new(),
                truncated: false,
            });
        }
        let counts = data.group_counts(collection, group_by, MAX_GROUPS).await?;
        Ok(Stats {
            total: counts.total,
            groups: counts
                .groups
                .iter()
                .map(|(k, n)| (group_label(k), *n))
                .collect(),
            truncated: counts.truncated,
        })
    }

    /// Per-tenant totals and resolution rates over every tenant `actor` may
    /// see (an org admin: its organization's), best rate first, ties by slug.
    pub async fn compare(
        &self,
        actor: &Principal,
        collection: &str,
        group_by: &str,
        resolved: &[String],
    ) -> Result<Vec<CompareRow>> {
        let mut v = Validator::default();
        v.check(
            valid_collection_name(collection),
            "collection",
            "must match [a-z][a-z0-9_]{0,62}",
        );
        v.check(
            valid_field(group_by),
            "group_by",
            "fields are dot-separated identifiers",
        );
        v.finish()?;
        let filter = TenantFilter {
            status: Some(TenantStatus::Active),
            ..TenantFilter::default()
        };
        let mut page = PageRequest {
            after: None,
            limit: 500,
        };
        let mut rows = Vec::new();
        loop {
            let tenants = self.core.list_tenants(actor, filter.clone(), &page).await?;
            for tenant in &tenants {
                let data = self.core.tenant_data(tenant).await?;
                // The resolved values are among the largest groups in any
                // collection worth comparing; past MAX_GROUPS the smallest
                // groups are not counted.
                let counts = data.group_counts(collection, group_by, MAX_GROUPS).await?;
                let total = counts.total;
                let hit: u64 = counts
                    .groups
                    .iter()
                    .filter(|(k, _)| resolved.iter().any(|r| *r == group_label(k)))
                    .map(|(_, n)| n)
                    .sum();
                let rate = if total == 0 {
                    0.0
                } else {
                    hit as f64 * 100.0 / total as f64
                };
                rows.push(CompareRow {
                    tenant: TenantRef {
                        id: tenant.id,
                        slug: tenant.slug.to_string(),
                        name: tenant.name.clone(),
                    },
                    total,
                    resolved: hit,
                    resolution_rate: (rate * 100.0).round() / 100.0,
                });
            }
            match tenants.last() {
                Some(last) if tenants.len() == page.limit as usize => page.after = Some(last.id.0),
                _ => break,
            }
        }
        rows.sort_by(|a, b| {
            b.resolution_rate
                .total_cmp(&a.resolution_rate)
                .then_with(|| a.tenant.slug.cmp(&b.tenant.slug))
        });
        Ok(rows)
    }

    /// Usage over the last `days` UTC days (today included).
    pub async fn usage(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        days: u32,
    ) -> Result<UsageReport> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        self.core.audit_staff_read(actor, &tenant, "usage").await?;
        let usage = self.core.tenant_data(&tenant).await?.usage().await?;
        let today = self.core.clock.now().date_naive();
        let from = today - chrono::Duration::days(i64::from(days.max(1)) - 1);
        let mut by_day: BTreeMap<chrono::NaiveDate, u64> = self
            .core
            .store
            .request_counts(&tenant, from, today)
            .await?
            .into_iter()
            .collect();
        for (day, pending) in self.daily_quota.pending(tenant.id) {
            *by_day.entry(day).or_default() += pending;
        }
        let requests_by_day = from
            .iter_days()
            .take_while(|d| *d <= today)
            .map(|d| DayCount {
                date: d.to_string(),
                requests: by_day.get(&d).copied().unwrap_or(0),
            })
            .collect();
        Ok(UsageReport {
            users: self.core.store.count_users(&tenant).await?,
            records: usage.records,
            storage_bytes: usage.storage_bytes,
            requests_today: by_day.get(&today).copied().unwrap_or(0),
            requests_by_day,
            limits: self.core.plan(&tenant.plan).await?.limits.clone(),
        })
    }
}
