//! Tenantry's reusable multi-tenancy core.
//!
//! The types here carry the tenant everywhere: a [`tenant::Tenant`] is only
//! obtained by resolving it through a [`store::ControlStore`], and every
//! per-tenant operation of the store takes that resolved tenant rather than a
//! free-floating id, so a handler cannot mix tenants up by passing the wrong
//! string.

pub mod audit;
pub mod cache;
pub mod clock;
pub mod context;
pub mod ids;
pub mod job;
pub mod page;
pub mod placement;
pub mod plan;
pub mod portable;
pub mod record;
pub mod resolve;
pub mod store;
pub mod tenant;
pub mod timestamp;

pub use context::{Acting, Principal, Role};
pub use ids::{JobId, OrgId, RecordId, TenantId, UserId};
pub use plan::{Limits, Plan};
pub use tenant::{Isolation, Slug, Tenant, TenantStatus};
