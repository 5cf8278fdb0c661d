//! The admin console (`/admin`): static pages embedded in the binary at
//! build time, served offline. The console is a client of the public API
//! like any other; nothing here reads a store or decides who may see what.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::state::AppState;

const INDEX: &str = include_str!("../../admin/index.html");
const SCRIPT: &str = include_str!("../../admin/app.js");
const STYLE: &str = include_str!("../../admin/app.css");

/// Only this origin's own files, no inline code, no framing: a console
/// that holds a super-admin's token is worth hijacking.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(console))
        .routes(routes!(asset))
}

/// The admin console's page.
#[utoipa::path(get, path = "/admin", tag = "operations", security(()),
    responses((status = 200, content_type = "text/html", description = "the console")))]
async fn console() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// The console's script and stylesheet.
#[utoipa::path(get, path = "/admin/{file}", tag = "operations", security(()),
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses((status = 200, description = "the file"), (status = 404, body = crate::api::problem::Problem)))]
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Result<Response, Error> {
    match file.as_str() {
        "app.js" => Ok(serve("text/javascript; charset=utf-8", SCRIPT)),
        "app.css" => Ok(serve("text/css; charset=utf-8", STYLE)),
        _ => Err(Error::NotFound("console file".into())),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A new build's console is picked up at the next load.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
