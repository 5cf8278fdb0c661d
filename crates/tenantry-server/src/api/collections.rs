//! `/api/v1/collections`: the tenant's collections, records and statistics.

use super::Problem;
use super::extract::{ApiJson, ApiQuery, Page, PageParams};
use super::path::RecordPath;
use crate::api::scope::TenantScope;
use crate::control::analytics::Stats;
use crate::control::records::query::ListParams;
use crate::control::records::{CollectionBody, IfMatch};
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tenantry::record::{CollectionDef, Record};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_collections))
        .routes(routes!(put_collection))
        .routes(routes!(create_record, list_records))
        .routes(routes!(get_record, put_record, patch_record, delete_record))
        .routes(routes!(stats))
}

/// A record with its `ETag`.
fn record_response(status: StatusCode, collection: &str, record: Record) -> Response {
    let etag = format!("\"{}\"", record.version);
    let location = format!("/api/v1/collections/{collection}/records/{}", record.id);
    let mut res = (status, Json(record)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        res.headers_mut().insert(LOCATION, v);
    }
    res
}

/// `If-Match: "3"`, `W/"3"`, `3` or `*`; anything else can never match.
fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, Error> {
    let Some(raw) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = raw.to_str().map_err(|_| Error::PreconditionFailed)?.trim();
    if text == "*" {
        return Ok(Some(IfMatch::Any));
    }
    let version = text.trim_start_matches("W/").trim_matches('"');
    version
        .parse()
        .map(|v| Some(IfMatch::Version(v)))
        .map_err(|_| Error::PreconditionFailed)
}

/// Parses `filter[f]=v`, `filter[f][op]=v`, `sort`, `limit`, `cursor`.
pub fn list_params(query: Option<&str>) -> Result<ListParams, Error> {
    let mut params = ListParams::default();
    if query.is_some_and(super::extract::has_nul) {
        return Err(Error::invalid(
            "query",
            "must not contain NUL (%00) characters",
        ));
    }
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if let Some(rest) = key.strip_prefix("filter[") {
            let (field, tail) = rest.split_once(']').ok_or_else(|| {
                Error::invalid(key.as_ref(), "expected filter[field] or filter[field][op]")
            })?;
            let op = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix('[')
                        .and_then(|t| t.strip_suffix(']'))
                        .ok_or_else(|| Error::invalid(key.as_ref(), "expected filter[field][op]"))?
                        .to_owned(),
                ),
            };
            params
                .filters
                .push((field.to_owned(), op, value.into_owned()));
        } else {
            match key.as_ref() {
                "sort" => params.sort = Some(value.into_owned()),
                "cursor" => params.cursor = Some(value.into_owned()),
                "limit" => {
                    params.limit = Some(
                        value
                            .parse()
                            .map_err(|_| Error::invalid("limit", "must be a positive integer"))?,
                    )
                }
                _ => {}
            }
        }
    }
    Ok(params)
}

/// The tenant's collections, by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/collections", tag = "data", params(PageParams),
    responses((status = 200, body = Page<CollectionDef>)))]
async fn list_collections(
    State(state): State<AppState>,
    scope: TenantScope,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<CollectionDef>>, Error> {
    let after = page.after_name()?.unwrap_or_default();
    let rows = state
        .services
        .records
        .list_collections(&scope.acting(), &after, page.limit() + 1)
        .await?;
    Ok(Json(Page::keyed(rows, &page, |c| {
        c.name.as_bytes().to_vec()
    })))
}

/// Defines (201) or redefines (200) a collection: JSON Schema, unique and
/// indexed fields, a required plan feature (admin).
#[utoipa::path(put, path = "/api/v1/collections/{name}", tag = "data", request_body = CollectionBody,
    params(("name" = String, Path)),
    responses((status = 201, body = CollectionDef), (status = 200, body = CollectionDef),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn put_collection(
    State(state): State<AppState>,
    scope: TenantScope,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CollectionBody>,
) -> Result<(StatusCode, Json<CollectionDef>), Error> {
    let (def, created) = state
        .services
        .records
        .put_collection(&scope.acting(), &name, body)
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(def),
    ))
}

/// Creates a record (the body is its data, a JSON object).
#[utoipa::path(post, path = "/api/v1/collections/{name}/records", tag = "data", request_body = Object,
    params(("name" = String, Path)),
    responses((status = 201, body = Record), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn create_record(
    State(state): State<AppState>,
    scope: TenantScope,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, Error> {
    let record = state
        .services
        .records
        .create_record(&scope.acting(), &name, body)
        .await?;
    Ok(record_response(StatusCode::CREATED, &name, record))
}

/// Lists records: `filter[field]=v`, `filter[field][gte|lte|ne|in]=v`,
/// `sort=[-]created_at|updated_at|<indexed field>`, `limit`, `cursor`.
#[utoipa::path(get, path = "/api/v1/collections/{name}/records", tag = "data",
    params(("name" = String, Path), ("sort" = Option<String>, Query), ("limit" = Option<u32>, Query),
           ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Record>), (status = 422, body = Problem)))]
async fn list_records(
    State(state): State<AppState>,
    scope: TenantScope,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<Record>>, Error> {
    let params = list_params(query.as_deref())?;
    let (items, next_cursor) = state
        .services
        .records
        .list_records(&scope.acting(), &name, params)
        .await?;
    Ok(Json(Page { items, next_cursor }))
}

/// One record; another tenant's record id is 404.
#[utoipa::path(get, path = "/api/v1/collections/{name}/records/{id}", tag = "data",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Record), (status = 404, body = Problem)))]
async fn get_record(
    State(state): State<AppState>,
    scope: TenantScope,
    RecordPath { collection, id }: RecordPath,
) -> Result<Response, Error> {
    let record = state
        .services
        .records
        .get_record(&scope.acting(), &collection, id)
        .await?;
    Ok(record_response(StatusCode::OK, &collection, record))
}

/// Replaces the record's data; honours `If-Match` (412 on a stale version).
#[utoipa::path(put, path = "/api/v1/collections/{name}/records/{id}", tag = "data", request_body = Object,
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Record), (status = 404, body = Problem), (status = 412, body = Problem)))]
async fn put_record(
    State(state): State<AppState>,
    scope: TenantScope,
    path: RecordPath,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, Error> {
    write_record(&state, &scope, path, &headers, body, false).await
}

/// Applies a JSON merge patch (RFC 7396); honours `If-Match`.
#[utoipa::path(patch, path = "/api/v1/collections/{name}/records/{id}", tag = "data", request_body = Object,
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Record), (status = 404, body = Problem), (status = 412, body = Problem)))]
async fn patch_record(
    State(state): State<AppState>,
    scope: TenantScope,
    path: RecordPath,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, Error> {
    write_record(&state, &scope, path, &headers, body, true).await
}

async fn write_record(
    state: &AppState,
    scope: &TenantScope,
    RecordPath { collection, id }: RecordPath,
    headers: &HeaderMap,
    body: Value,
    patch: bool,
) -> Result<Response, Error> {
    let record = state
        .services
        .records
        .write_record(
            &scope.acting(),
            &collection,
            id,
            body,
            patch,
            if_match(headers)?,
        )
        .await?;
    Ok(record_response(StatusCode::OK, &collection, record))
}

/// Deletes a record; honours `If-Match`.
#[utoipa::path(delete, path = "/api/v1/collections/{name}/records/{id}", tag = "data",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)))]
async fn delete_record(
    State(state): State<AppState>,
    scope: TenantScope,
    RecordPath { collection, id }: RecordPath,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    state
        .services
        .records
        .delete_record(&scope.acting(), &collection, id, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// The field to count by.
    pub group_by: String,
}

/// Record counts grouped by a field: `{total, groups: {value: count}}`.
#[utoipa::path(get, path = "/api/v1/collections/{name}/stats", tag = "data",
    params(("name" = String, Path), StatsQuery),
    responses((status = 200, body = Stats), (status = 422, body = Problem)))]
async fn stats(
    State(state): State<AppState>,
    scope: TenantScope,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, Error> {
    Ok(Json(
        state
            .services
            .analytics
            .stats(&scope.acting(), &name, &q.group_by)
            .await?,
    ))
}
