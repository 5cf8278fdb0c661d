//! PostgreSQL implementation of the identity store.
