//! The control store on PostgreSQL.

use super::PgDatabase;

/// The PostgreSQL control store: platform users, plans, organizations,
/// tenants, their config and identity, in the main database.
#[derive(Clone)]
pub struct PgControlStore {
    pub(crate) db: PgDatabase,
}

impl PgControlStore {
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &PgDatabase {
        &self.db
    }
}
