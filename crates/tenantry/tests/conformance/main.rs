//! The store contract, written once and run on both engines: what the
//! traits of `tenantry::store` promise (lookups, conflicts, versions,
//! quotas, seals, audit chains, claims) holds the same on SQLite and on
//! PostgreSQL, including under concurrent callers. The server's
//! behavioural suites test the same through HTTP; this suite is what a
//! library user (or a third backend) is held to.

mod engine;

mod control;
mod identity;
mod jobs;
mod records;
mod stamps;

/// Each case is an `async fn(Engine)`; this makes one test per engine of it.
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(crate::engine::Engine::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(crate::engine::Engine::postgres().await).await
                }
            )*
        }
    };
}
pub(crate) use on_both_engines;
