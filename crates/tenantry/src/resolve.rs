//! Tenant identification: which tenant a request acts in.
//!
//! Indicators are the token's `tid`, `X-Tenant-ID`, `X-Tenant-Slug`, a
//! subdomain of the base domain in `Host`, a tenant's custom domain in
//! `Host`, and `?tenant=`. Every indicator present must name the same tenant
//! — there is no "first wins" — and a token bound to one tenant may not be
//! pointed at another. Lookups are cached; any tenant change must call
//! [`TenantResolver::invalidate`], so a suspension takes effect on the very
//! next request.

use crate::cache::TtlCache;
use crate::context::{Principal, Role};
use crate::ids::TenantId;
use crate::store::{ControlStore, StoreError};
use crate::tenant::{Tenant, TenantStatus};
use axum::extract::{FromRef, FromRequestParts};
use http::HeaderMap;
use http::request::Parts;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The slug of the tenant every request belongs to in single-tenant mode.
pub const DEFAULT_TENANT_SLUG: &str = "default";

#[derive(Clone, Debug, Default)]
pub struct ResolverConfig {
    /// `<slug>.<base_domain>` in `Host` names a tenant.
    pub base_domain: Option<String>,
    /// Peers whose `X-Forwarded-Host` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// `false`: every request is in the `default` tenant.
    pub multi_tenant: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no tenant named")]
    Required,
    #[error("tenant not found")]
    NotFound,
    #[error("the request names different tenants")]
    Mismatch,
    /// A tenant user's token used against another (existing) tenant: a
    /// mismatch, carrying the target so the attempt can be audited there.
    #[error("the token belongs to another tenant")]
    CrossTenant(Box<Tenant>),
    /// An org admin naming a tenant outside its organization: answered as
    /// not found, carrying the target so the attempt can be audited there.
    #[error("tenant not found")]
    OutsideOrganization(Box<Tenant>),
    #[error("tenant suspended")]
    Suspended,
    /// The token's own tenant no longer exists: the token is void.
    #[error("the token's tenant no longer exists")]
    TokenTenantGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one indicator names a tenant by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    Id(TenantId),
    Slug(String),
    Domain(String),
}

/// How a request reached its tenant.
#[derive(Clone, Debug)]
pub struct Resolution {
    pub tenant: Tenant,
    /// Platform staff acting inside a tenant (audited).
    pub cross_tenant: bool,
}

pub struct TenantResolver {
    store: Arc<dyn ControlStore>,
    cache: TtlCache<Lookup, Option<Tenant>>,
    config: ResolverConfig,
}

impl TenantResolver {
    pub fn new(store: Arc<dyn ControlStore>, config: ResolverConfig) -> Self {
        Self {
            store,
            // Bounded; the TTL only limits staleness after changes made by
            // another process (the CLI), which cannot call `invalidate`.
            cache: TtlCache::new(10_000, Duration::from_secs(5)),
            config,
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Forgets every cached tenant. Called on every tenant change.
    pub fn invalidate(&self) {
        self.cache.invalidate_all();
    }

    async fn lookup(&self, key: Lookup) -> Result<Option<Tenant>, StoreError> {
        self.cache
            .get_or_try_insert_with(&key, async {
                match &key {
                    Lookup::Id(id) => self.store.tenant_by_id(*id).await,
                    Lookup::Slug(s) => self.store.tenant_by_slug(s).await,
                    Lookup::Domain(d) => self.store.tenant_by_domain(d).await,
                }
            })
            .await
    }

    /// A live tenant by id or slug (cached).
    pub async fn find(&self, id_or_slug: &str) -> Result<Option<Tenant>, StoreError> {
        self.lookup(parse_ref(id_or_slug)).await
    }

    /// The single-tenant mode's tenant.
    pub async fn default_tenant(&self) -> Result<Option<Tenant>, StoreError> {
        self.lookup(Lookup::Slug(DEFAULT_TENANT_SLUG.to_owned()))
            .await
    }

    /// Resolves the tenant of a request from its parts and its authenticated principal.
    pub async fn resolve(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: Option<IpAddr>,
        principal: Option<&Principal>,
    ) -> Result<Resolution, ResolveError> {
        if !self.config.multi_tenant {
            let tenant = self.default_tenant().await?.ok_or(ResolveError::NotFound)?;
            if principal
                .and_then(|p| p.tenant_id)
                .is_some_and(|t| t != tenant.id)
            {
                return Err(ResolveError::Mismatch);
            }
            return finish(tenant, principal.is_some_and(|p| p.role.is_platform()));
        }

        let mut named: Option<Tenant> = None;
        for key in self.config.indicators(headers, query, peer) {
            let (key, optional) = key;
            let found = self.lookup(key).await?;
            let tenant = match found {
                Some(t) => t,
                // A Host that is not a tenant's custom domain is just a host.
                None if optional => continue,
                None => return Err(ResolveError::NotFound),
            };
            match &named {
                Some(first) if first.id != tenant.id => return Err(ResolveError::Mismatch),
                _ => named = Some(tenant),
            }
        }

        match principal {
            // A token bound to a tenant: indicators may only repeat it.
            Some(Principal {
                tenant_id: Some(tid),
                ..
            }) => {
                let tid = *tid;
                if let Some(other) = named.as_ref().filter(|t| t.id != tid) {
                    return Err(ResolveError::CrossTenant(Box::new(other.clone())));
                }
                let tenant = match named {
                    Some(t) => t,
                    None => self
                        .lookup(Lookup::Id(tid))
                        .await?
                        .ok_or(ResolveError::TokenTenantGone)?,
                };
                finish(tenant, false)
            }
            Some(p) if p.role.is_platform() => {
                let tenant = named.ok_or(ResolveError::Required)?;
                let allowed = p.role == Role::SuperAdmin
                    || (p.org_id.is_some() && tenant.organization_id == p.org_id);
                if !allowed {
                    return Err(ResolveError::OutsideOrganization(Box::new(tenant)));
                }
                finish(tenant, true)
            }
            _ => finish(named.ok_or(ResolveError::Required)?, false),
        }
    }
}

impl ResolverConfig {
    /// The lookups the request asks for, each flagged whether a miss is
    /// harmless (only a custom-domain `Host`).
    pub fn indicators(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Vec<(Lookup, bool)> {
        let mut out = Vec::new();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        // Every copy of a repeated header counts: two values must agree too.
        let all = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().map(|s| s.trim().to_owned()).unwrap_or_default())
                .collect()
        };
        for id in all("x-tenant-id") {
            // Not a UUID: it names no tenant that exists.
            let lookup = id
                .parse()
                .map(Lookup::Id)
                .unwrap_or(Lookup::Slug(String::new()));
            out.push((lookup, false));
        }
        for slug in all("x-tenant-slug") {
            out.push((Lookup::Slug(slug.to_ascii_lowercase()), false));
        }
        let forwarded = peer
            .filter(|p| self.trusted_proxies.contains(p))
            .and_then(|_| header("x-forwarded-host"))
            .and_then(|v| v.split(',').next())
            .map(str::trim);
        if let Some(found) = forwarded
            .or_else(|| header("host"))
            .map(normalize_host)
            .and_then(|host| self.host_indicator(&host))
        {
            out.push(found);
        }
        for t in query.map(tenant_query_params).unwrap_or_default() {
            out.push((parse_ref(&t), false));
        }
        out
    }

    /// What `host` (normalized) names: a subdomain of the base domain, or
    /// possibly a custom domain (a miss is harmless).
    pub fn host_indicator(&self, host: &str) -> Option<(Lookup, bool)> {
        if let Some(base) = self
            .base_domain
            .as_deref()
            .map(|b| b.trim_end_matches('.').to_ascii_lowercase())
        {
            if host == base {
                return None;
            }
            if let Some(sub) = host.strip_suffix(&base).and_then(|s| s.strip_suffix('.')) {
                // The platform's own hosts (www, api, admin, app…) name no tenant.
                if sub.contains('.') || crate::tenant::RESERVED_SLUGS.contains(&sub) {
                    return None;
                }
                return Some((Lookup::Slug(sub.to_owned()), false));
            }
        }
        let is_name = host.contains('.') && host.parse::<IpAddr>().is_err();
        is_name.then(|| (Lookup::Domain(host.to_owned()), true))
    }
}

fn finish(tenant: Tenant, cross_tenant: bool) -> Result<Resolution, ResolveError> {
    match tenant.status {
        TenantStatus::Active => Ok(Resolution {
            tenant,
            cross_tenant,
        }),
        TenantStatus::Suspended => Err(ResolveError::Suspended),
        TenantStatus::Deleting | TenantStatus::Deleted => Err(ResolveError::NotFound),
    }
}

fn parse_ref(id_or_slug: &str) -> Lookup {
    match id_or_slug.parse() {
        Ok(id) => Lookup::Id(id),
        Err(_) => Lookup::Slug(id_or_slug.to_ascii_lowercase()),
    }
}

/// `Host` without port, lowercased, without a trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn tenant_query_params(query: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "tenant")
        .map(|(_, v)| v.into_owned())
        .collect()
}

impl ResolveError {
    /// HTTP status and API error code of this failure.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self {
            ResolveError::Required => (S::BAD_REQUEST, "tenant_required"),
            ResolveError::NotFound | ResolveError::OutsideOrganization(_) => {
                (S::NOT_FOUND, "tenant_not_found")
            }
            ResolveError::Mismatch | ResolveError::CrossTenant(_) => {
                (S::FORBIDDEN, "tenant_mismatch")
            }
            ResolveError::Suspended => (S::FORBIDDEN, "tenant_suspended"),
            ResolveError::TokenTenantGone => (S::UNAUTHORIZED, "unauthorized"),
            ResolveError::Store(StoreError::Unavailable(_)) => {
                (S::SERVICE_UNAVAILABLE, "unavailable")
            }
            ResolveError::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// For apps using the extractor directly: a minimal problem+json answer.
/// (Tenantry's own server maps `ResolveError` through its error type instead.)
impl axum::response::IntoResponse for ResolveError {
    fn into_response(self) -> axum::response::Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "type": format!("https://tenantry.dev/problems/{code}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": if status.is_server_error() { "server error".to_owned() } else { self.to_string() },
            "code": code,
        });
        (
            status,
            [(http::header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Where the resolved tenant is announced for the response: the observation
/// middleware puts an empty slot in the request, the extractor fills it, and
/// the middleware then sets `X-Tenant-ID`, logs the tenant and counts the
/// request for its plan.
#[derive(Clone, Default)]
pub struct TenantSlot(pub Arc<OnceLock<SlotTenant>>);

/// What the response side needs of the resolved tenant.
#[derive(Clone, Debug)]
pub struct SlotTenant {
    pub id: TenantId,
    pub plan: String,
}

/// An axum extractor for any app whose state provides an
/// `Arc<TenantResolver>`: the tenant of the request, resolved from the
/// principal an auth layer put in the request extensions (if any).
pub struct ResolvedTenant(pub Resolution);

impl<S> FromRequestParts<S> for ResolvedTenant
where
    S: Send + Sync,
    Arc<TenantResolver>: FromRef<S>,
{
    type Rejection = ResolveError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let resolver = Arc::<TenantResolver>::from_ref(state);
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let principal = parts.extensions.get::<Principal>();
        let resolution = resolver
            .resolve(&parts.headers, parts.uri.query(), peer, principal)
            .await?;
        if let Some(slot) = parts.extensions.get::<TenantSlot>() {
            let _ = slot.0.set(SlotTenant {
                id: resolution.tenant.id,
                plan: resolution.tenant.plan.clone(),
            });
        }
        Ok(ResolvedTenant(resolution))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Acme.Example.com:8080"), "acme.example.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn tenant_query_parameter_is_found_and_decoded() {
        assert_eq!(tenant_query_params("a=1&tenant=acme"), ["acme"]);
        assert_eq!(tenant_query_params("tenant=ac%6De"), ["acme"]);
        assert!(tenant_query_params("tenants=x").is_empty());
        assert_eq!(tenant_query_params("tenant=a&tenant=b"), ["a", "b"]);
    }
}
