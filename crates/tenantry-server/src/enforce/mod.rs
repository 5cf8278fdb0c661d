//! Enforcement of plan limits on tenant-scoped requests.

pub mod bucket;
pub mod concurrency;
pub mod daily_quota;
pub mod rate_limit;
pub mod shared_bucket;
