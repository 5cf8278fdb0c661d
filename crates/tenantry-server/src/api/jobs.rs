//! `/api/v1/jobs` and the tenant routes that start them: export, import,
//! move (deletion and plan changes start theirs in `tenants.rs`).

use super::extract::{ApiJson, ApiQuery, Page, PageParams};
use super::path::IdPath;
use super::{Problem, with_tenant};
use crate::api::scope::Authenticated;
use crate::control::tenants::jobs::{
    ExportFormat, ExportRequest, JobAccepted, JobQuery, JobView, MoveRequest,
};
use crate::error::{Error, Validator};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use tenantry::JobId;
use tenantry::job::{JobKind, JobStatus};
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(job_result))
        .routes(routes!(export_tenant))
        .routes(routes!(import_tenant))
        .routes(routes!(move_tenant))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Tenant id or slug.
    pub tenant: Option<String>,
    /// `queued`, `running`, `succeeded` or `failed`.
    #[param(pattern = "^(queued|running|succeeded|failed)$")]
    pub status: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295.0)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A job accepted: `202 {job_id}` with `Location` naming it.
pub(super) fn accepted(job: &tenantry::job::Job) -> Response {
    let mut res = (StatusCode::ACCEPTED, Json(JobAccepted { job_id: job.id })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    with_tenant(job.tenant_id, res)
}

/// Jobs newest first: super-admins all, org admins their organization's
/// tenants', tenant admins their own tenant's.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobListQuery),
    responses((status = 200, body = Page<JobView>), (status = 403, body = Problem)))]
async fn list_jobs(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> Result<Json<Page<JobView>>, Error> {
    let mut v = Validator::default();
    let status = q.status.as_deref().and_then(|s| {
        let parsed = JobStatus::parse(s);
        v.check(
            parsed.is_some(),
            "status",
            "must be queued, running, succeeded or failed",
        );
        parsed
    });
    v.finish()?;
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let query = JobQuery {
        tenant: q.tenant,
        status,
    };
    let rows = state
        .services
        .tenants
        .list_jobs(&actor, query, &page.request()?)
        .await?;
    let rows = rows.into_iter().map(JobView::from).collect();
    Ok(Json(Page::from_rows(rows, &page, |j: &JobView| j.id.0)))
}

/// One job: status, progress (0 to 1), `result_url` once an export is ready.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = Problem)))]
async fn get_job(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    IdPath(id): IdPath<JobId>,
) -> Result<Response, Error> {
    let job = state.services.tenants.visible_job(&actor, id).await?;
    Ok(with_tenant(job.tenant_id, Json(JobView::from(job))))
}

/// Downloads a finished export (for the callers who may see the job).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "the export file (NDJSON or JSON)"), (status = 404, body = Problem)))]
async fn job_result(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    IdPath(id): IdPath<JobId>,
) -> Result<Response, Error> {
    let s = &state.services;
    let job = s.tenants.visible_job(&actor, id).await?;
    if job.kind != JobKind::Export || job.status != JobStatus::Succeeded {
        return Err(Error::NotFound("job result".into()));
    }
    let format: ExportFormat = job
        .params
        .get("format")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_default();
    let path = s
        .tenants
        .jobs
        .export_path(job.tenant_id, job.id, format.extension());
    // Another node's data dir holds it, or the tenant was deleted since.
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| Error::NotFound("export file".into()))?;
    if let Some(tenant) = s.core.store.tenant_by_id(job.tenant_id).await? {
        s.core
            .audit(
                Some(&tenant),
                &actor,
                "tenant.export_download",
                &format!("jobs/{}", job.id),
            )
            .await?;
    }
    let mut res = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"tenant-{}-{}.{}\"",
        job.tenant_id,
        job.id,
        format.extension()
    )) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(with_tenant(job.tenant_id, res))
}

/// Starts an export of everything the tenant owns (`data_types` to choose);
/// the job's `result_url` downloads it.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/export", tag = "jobs", request_body = ExportRequest,
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 202, body = JobAccepted), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn export_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Error> {
    // The body may be left out: everything, as NDJSON.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ExportRequest::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let job = state
        .services
        .tenants
        .start_export(&actor, &id, request)
        .await?;
    Ok(accepted(&job))
}

/// Restores an export file into this (empty) tenant: the raw file as the
/// body (`application/x-ndjson` or `application/json`), or a
/// `multipart/form-data` upload whose first file part is it. Checked line
/// by line before anything is written; a bad line fails the job, naming it.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/import", tag = "jobs",
    request_body(content = String, content_type = "application/x-ndjson", description = "an export file"),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 202, body = JobAccepted), (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem)))]
async fn import_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let s = &state.services;
    // Who may, before a byte is stored.
    let tenant = s.core.administered_tenant(&actor, &id).await?;
    let path = s
        .tenants
        .jobs
        .upload_path(tenant.id, tenantry::JobId::new());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let limit = s.tenants.jobs.import_max_bytes;
    let stored = match multer::parse_boundary(content_type) {
        Ok(boundary) => {
            let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
            let mut stored = Err(Error::invalid("file", "the form has no file part"));
            while let Some(field) = form
                .next_field()
                .await
                .map_err(|e| Error::invalid("file", e.to_string()))?
            {
                if field.file_name().is_some() || field.name() == Some("file") {
                    stored = save(field.map_err(std::io::Error::other), &path, limit).await;
                    break;
                }
            }
            stored
        }
        Err(_) => {
            save(
                body.into_data_stream().map_err(std::io::Error::other),
                &path,
                limit,
            )
            .await
        }
    };
    if let Err(e) = stored {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    match s
        .tenants
        .start_import(&actor, &tenant, path.clone(), true)
        .await
    {
        Ok(job) => Ok(accepted(&job)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

/// Streams an upload to `path`, refusing it (413) past `limit` bytes.
async fn save(
    stream: impl Stream<Item = std::io::Result<axum::body::Bytes>>,
    path: &std::path::Path,
    limit: u64,
) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Internal(format!("storing an upload: {e}"));
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(io)?);
    let mut stream = std::pin::pin!(stream);
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidJson(format!("reading the upload: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(Error::PayloadTooLarge);
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.into_inner().sync_all().await.map_err(io)?;
    if written == 0 {
        return Err(Error::invalid("body", "the import file is empty"));
    }
    Ok(())
}

/// Moves the tenant's data to another tier (`isolation`) or database server
/// (`server`, super-admins) online: its writes pause for the short freeze
/// at the end, none is lost, other tenants never pause.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/move", tag = "jobs", request_body = MoveRequest,
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 202, body = JobAccepted), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn move_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MoveRequest>,
) -> Result<Response, Error> {
    let job = state.services.tenants.start_move(&actor, &id, body).await?;
    Ok(accepted(&job))
}
