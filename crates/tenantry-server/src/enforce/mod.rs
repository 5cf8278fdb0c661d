//! Enforcement of plan limits on tenant-scoped requests.

pub mod rate_limit;
