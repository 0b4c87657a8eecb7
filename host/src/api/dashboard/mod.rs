//! The web dashboard at `/`: plain ES modules and one style sheet, compiled into the binary (no
//! build step, no CDN, nothing fetched at run time). It shows and does only what the `/v1` API
//! does, through it, with the token the user gives it; so the page itself is served without
//! one: it holds no data, and a browser cannot send a bearer token when it opens an address.
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiError;

/// Each asset: its name under `/dashboard/`, its content type and its text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("style.css")),
    ("app.js", JS, include_str!("app.js")),
    ("api.js", JS, include_str!("api.js")),
    ("ui.js", JS, include_str!("ui.js")),
    ("jobs.js", JS, include_str!("jobs.js")),
    ("checkpoints.js", JS, include_str!("checkpoints.js")),
    ("savepoints.js", JS, include_str!("savepoints.js")),
    ("upgrades.js", JS, include_str!("upgrades.js")),
    ("modules.js", JS, include_str!("modules.js")),
    ("compare.js", JS, include_str!("compare.js")),
    ("exceptions.js", JS, include_str!("exceptions.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Only the server's own scripts and styles run in the page; it talks to nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// The dashboard's routes.
pub(super) fn router() -> Router {
    Router::new().route("/", get(index)).route("/dashboard/{file}", get(asset))
}

fn page(content_type: &'static str, text: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A new weir binary serves new assets under the same names.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    page("text/html; charset=utf-8", include_str!("index.html"))
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, text)) => page(content_type, text),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("the dashboard has no file {file}")).into_response(),
    }
}
