//! The REST API under `/v1` (JSON in and out; its OpenAPI description at `/v1/openapi.json`).
//! Handlers are thin: they call the control plane and turn its errors into statuses.
//!
//! Layering: the top of the library beside `cli`; uses `control`.
mod error;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, StringRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
pub use error::ApiError;
use serde_json::json;

use crate::control::{CancelError, JobInfo, Jobs, ModuleStore, StoreModules, SubmitError};
use crate::runtime::checkpoint_stats::CheckpointStats;

/// What the handlers share.
pub struct ApiState {
    /// The jobs this server runs.
    pub jobs: Arc<Jobs>,
    /// The module store; `weir run` has none (its modules come from files).
    pub modules: Option<Arc<ModuleStore>>,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Where relative source and sink paths of submitted jobs start (the server's directory).
    pub base: PathBuf,
}

/// Request bodies larger than this are refused with 413 unless configured otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 64 << 20;

/// The `/v1` routes.
pub fn router(state: Arc<ApiState>, body_limit: usize) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/modules", post(upload_module).get(list_modules))
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/checkpoints", get(job_checkpoints))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let expected = format!("Bearer {token}");
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let message = match given {
                None => "this server needs a token: send `Authorization: Bearer <token>` (weir --token, or WEIR_TOKEN)",
                Some(_) => "the token is wrong",
            };
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json"))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {uri}; see /v1/openapi.json"))
}

fn store(state: &ApiState) -> Result<Arc<ModuleStore>, ApiError> {
    state.modules.clone().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "this is `weir run`'s API for one job; modules are managed by `weir serve`")
    })
}

/// Runs blocking control-plane work (compilation, instantiation, file I/O) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")))
}

async fn upload_module(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let store = store(&state)?;
    let info = blocking(move || store.upload(&body))
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((StatusCode::OK, Json(info)).into_response())
}

async fn list_modules(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "modules": store(&state)?.list() })).into_response())
}

async fn submit_job(
    State(state): State<Arc<ApiState>>,
    body: Result<String, StringRejection>,
) -> Result<Response, ApiError> {
    let text = body?;
    let store = store(&state)?;
    let submitted = blocking(move || state.jobs.submit(&text, &mut StoreModules(&store), &state.base)).await?;
    let info = submitted.map_err(|SubmitError::Job(e)| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": info.id, "state": info.state }))).into_response())
}

/// A job in a listing: everything but the per-subtask counts and the job file.
fn brief(info: &JobInfo) -> serde_json::Value {
    json!({
        "id": info.id,
        "name": info.name,
        "state": info.state,
        "submitted-at": info.submitted_at,
        "ended-at": info.ended_at,
        "failure": info.failure,
    })
}

async fn list_jobs(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(json!({ "jobs": state.jobs.list().iter().map(brief).collect::<Vec<_>>() }))
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no job with id {id}; `weir jobs` lists them"))
}

async fn job_status(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Json<JobInfo>, ApiError> {
    state.jobs.get(&id).map(Json).ok_or_else(|| unknown_job(&id))
}

async fn job_checkpoints(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<CheckpointStats>, ApiError> {
    state.jobs.checkpoints(&id).map(Json).ok_or_else(|| unknown_job(&id))
}

async fn cancel_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.jobs.cancel(&id) {
        Ok(info) => Ok((StatusCode::ACCEPTED, Json(brief(&info))).into_response()),
        Err(CancelError::NotFound(_)) => Err(unknown_job(&id)),
        Err(e @ CancelError::Ended { .. }) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}
