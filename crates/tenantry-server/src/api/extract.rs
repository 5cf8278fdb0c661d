//! Extractors whose rejections speak problem+json: bodies, queries, paging.

use crate::error::{Error, FieldError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A JSON body: malformed JSON → 400 `invalid_json`; well-formed JSON of the
/// wrong shape → 422 naming the field; too large → 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge
            } else {
                Error::InvalidJson(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a body, telling syntax errors (400) from shape errors (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // First as untyped JSON: anything failing here is not JSON at all.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidJson(e.to_string()))?;
    if let Some(path) = nul_at(&value, "") {
        return Err(Error::invalid(
            if path.is_empty() { "body" } else { &path },
            "text must not contain NUL (\\u0000) characters",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        Error::Validation(vec![FieldError::new(field, e.into_inner().to_string())])
    })
}

/// Where a NUL character hides in a JSON value (a string or a key), if
/// anywhere. PostgreSQL stores neither in text nor in jsonb, so both engines
/// refuse it at the edge alike rather than one of them failing deep inside.
fn nul_at(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_at(v, &here)
            }
        }),
        _ => None,
    }
}

/// Query parameters; a malformed one is a 422 rather than axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(has_nul) {
            return Err(Error::invalid(
                "query",
                "must not contain NUL (%00) characters",
            ));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| Error::invalid("query", e.body_text()))
    }
}

/// Whether a raw query string decodes to text with a NUL in it.
pub fn has_nul(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k.contains('\0') || v.contains('\0'))
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page: default 50, values above 500 are clamped to 500.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295.0)]
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> u32 {
        tenantry::page::limit(self.limit)
    }

    /// The id after which the page starts.
    pub fn after(&self) -> Result<Option<Uuid>, Error> {
        self.decoded(|b| Uuid::from_slice(&b).ok())
    }

    /// The collection name after which a page of collections starts.
    pub fn after_name(&self) -> Result<Option<String>, Error> {
        self.decoded(|b| {
            String::from_utf8(b)
                .ok()
                .filter(|n| tenantry::record::valid_collection_name(n))
        })
    }

    fn decoded<K>(&self, key: impl FnOnce(Vec<u8>) -> Option<K>) -> Result<Option<K>, Error> {
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        tenantry::page::decode_cursor(cursor)
            .and_then(key)
            .map(Some)
            .ok_or_else(|| Error::invalid("cursor", "not a cursor this server issued"))
    }

    /// The store request: one item more than asked, to learn whether a next page exists.
    pub fn request(&self) -> Result<tenantry::store::PageRequest, Error> {
        Ok(tenantry::store::PageRequest {
            after: self.after()?,
            limit: self.limit() + 1,
        })
    }
}

/// `{items, next_cursor}` of every list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows ordered by `id_of`.
    pub fn from_rows(rows: Vec<T>, params: &PageParams, id_of: impl Fn(&T) -> Uuid) -> Self {
        Self::keyed(rows, params, |t| id_of(t).as_bytes().to_vec())
    }

    /// `from_rows` for rows ordered by another key (its bytes in the cursor).
    pub fn keyed(mut rows: Vec<T>, params: &PageParams, key_of: impl Fn(&T) -> Vec<u8>) -> Self {
        let limit = params.limit() as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|last| tenantry::page::encode_cursor(&key_of(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}
