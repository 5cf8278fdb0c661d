//! The listings both engines run, built once: the same conditions, order
//! and page over `sqlx::QueryBuilder`. What differs between the two SQL
//! dialects is in [`Dialect`]; each backend only runs the query and reads
//! its rows.

use super::{PageRequest, TenantFilter, page_limit, substring_pattern};
use crate::ids::OrgId;
use crate::job::JobFilter;
use sqlx::{Encode, QueryBuilder, Type};
use uuid::Uuid;

/// Where the engines' SQL differs in the listings.
pub(crate) trait Dialect: sqlx::Database {
    /// Binds an id as the engine stores it: uuid on PostgreSQL, text on SQLite.
    fn push_id(q: &mut QueryBuilder<'_, Self>, id: Uuid);

    /// `<column>` matching the lower-case `LIKE` pattern bound after it,
    /// whatever the column's case.
    fn folded_like(column: &str) -> String;
}

impl Dialect for sqlx::Postgres {
    fn push_id(q: &mut QueryBuilder<'_, Self>, id: Uuid) {
        q.push_bind(id);
    }

    fn folded_like(column: &str) -> String {
        format!("{column} ILIKE ")
    }
}

impl Dialect for sqlx::Sqlite {
    fn push_id(q: &mut QueryBuilder<'_, Self>, id: Uuid) {
        q.push_bind(id.to_string());
    }

    fn folded_like(column: &str) -> String {
        format!("lower({column}) LIKE ")
    }
}

/// Tenants matching `f` (any status but `deleted` unless one is asked
/// for), by id, a page after `page.after`.
pub(crate) fn tenants<DB>(f: &TenantFilter, page: &PageRequest) -> QueryBuilder<'static, DB>
where
    DB: Dialect,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT * FROM tenants WHERE 1 = 1");
    match f.status {
        Some(status) => {
            q.push(" AND status = ")
                .push_bind(status.as_str().to_owned());
        }
        None => {
            q.push(" AND status <> 'deleted'");
        }
    }
    if let Some(plan) = &f.plan {
        q.push(" AND plan = ").push_bind(plan.clone());
    }
    if let Some(org) = f.organization_id {
        q.push(" AND organization_id = ");
        DB::push_id(&mut q, org.0);
    }
    if let Some(text) = &f.q {
        let pattern = substring_pattern(text);
        q.push(" AND (")
            .push(DB::folded_like("name"))
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR ")
            .push(DB::folded_like("slug"))
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    ascending_page(&mut q, "id", page);
    q
}

/// Jobs matching `f`, newest first, a page before `page.after`.
pub(crate) fn jobs<DB>(f: &JobFilter, page: &PageRequest) -> QueryBuilder<'static, DB>
where
    DB: Dialect,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT jobs.* FROM jobs JOIN tenants ON tenants.id = jobs.tenant_id WHERE 1 = 1",
    );
    if let Some(t) = f.tenant {
        q.push(" AND jobs.tenant_id = ");
        DB::push_id(&mut q, t.0);
    }
    if let Some(org) = f.organization {
        q.push(" AND tenants.organization_id = ");
        DB::push_id(&mut q, org.0);
    }
    if let Some(status) = f.status {
        q.push(" AND jobs.status = ")
            .push_bind(status.as_str().to_owned());
    }
    if let Some(after) = page.after {
        q.push(" AND jobs.id < ");
        DB::push_id(&mut q, after);
    }
    q.push(" ORDER BY jobs.id DESC LIMIT ")
        .push_bind(page_limit(page));
    q
}

/// Organizations (only `only`, when given), by id, a page after `page.after`.
pub(crate) fn orgs<DB>(only: Option<OrgId>, page: &PageRequest) -> QueryBuilder<'static, DB>
where
    DB: Dialect,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("SELECT * FROM organizations WHERE 1 = 1");
    if let Some(only) = only {
        q.push(" AND id = ");
        DB::push_id(&mut q, only.0);
    }
    ascending_page(&mut q, "id", page);
    q
}

/// ` AND <key> > <after> ORDER BY <key> LIMIT <limit>`.
fn ascending_page<DB>(q: &mut QueryBuilder<'static, DB>, key: &str, page: &PageRequest)
where
    DB: Dialect,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    if let Some(after) = page.after {
        q.push(format!(" AND {key} > "));
        DB::push_id(q, after);
    }
    q.push(format!(" ORDER BY {key} LIMIT "))
        .push_bind(page_limit(page));
}
