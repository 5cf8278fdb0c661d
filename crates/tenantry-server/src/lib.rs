//! The `tenantry` server: HTTP edge (`api`), services (`control`, `auth`),
//! configuration and the CLI. The multi-tenancy core lives in the `tenantry`
//! library crate.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod control;
pub mod enforce;
pub mod error;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod monitor;
pub mod settings;
pub mod shared_redis;
pub mod state;

pub use app::App;
pub use settings::Settings;
pub use state::AppState;
