//! What operators watch per tenant: a sliding window of each tenant's
//! recent traffic (fed by the observation middleware), the tenant health
//! report built on it, and the bounded per-tenant `/metrics` series.

pub mod health;
pub mod tenant_series;
pub mod traffic;
