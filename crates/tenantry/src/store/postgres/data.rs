//! The data plane on PostgreSQL.
