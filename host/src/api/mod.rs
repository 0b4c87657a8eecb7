//! The REST API under `/v1` (JSON in and out; its OpenAPI description at `/v1/openapi.json`).
//! Handlers are thin: they call the control plane and turn its errors into statuses.
//!
//! Layering: the top of the library beside `cli`; uses `control`.
pub mod connections;
mod dashboard;
mod error;
mod metrics;
mod same_origin;
mod shadow;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, StringRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
pub use error::ApiError;
use serde_json::json;

use crate::checkpoint::savepoint::SavepointFormat;
use crate::control::compare::{Comparison, compare_outputs, fork_point, output_dir};
use crate::control::{
    CanaryStep, CancelError, DisposeError, JobInfo, Jobs, ModuleStore, SavepointError, SavepointStatus, StartFrom,
    StoreModules, UpgradeError, UpgradeStatus,
};
use crate::runtime::VertexKind;
use crate::runtime::checkpoint_stats::CheckpointStats;

/// What the handlers share.
pub struct ApiState {
    /// The jobs this server runs.
    pub jobs: Arc<Jobs>,
    /// The module store: modules uploaded to submit jobs (`weir serve`) or to upgrade them.
    pub modules: Option<Arc<ModuleStore>>,
    /// `weir run`'s API: it runs one job, and takes no others.
    pub single_job: bool,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Where relative source and sink paths of submitted jobs start (the server's directory).
    pub base: PathBuf,
    /// Host names the server answers for besides IP addresses and `localhost` (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
}

/// Request bodies larger than this are refused with 413 unless configured otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 64 << 20;

/// The `/v1` routes, `/metrics`, and the dashboard at `/`.
pub fn router(state: Arc<ApiState>, body_limit: usize) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/modules", post(upload_module).get(list_modules))
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/checkpoints", get(job_checkpoints))
        .route("/v1/jobs/{id}/savepoints", post(trigger_savepoint))
        .route("/v1/jobs/{id}/savepoints/{trigger}", get(savepoint_status))
        .route("/v1/jobs/{id}/stop", post(stop_job))
        .route("/v1/jobs/{id}/upgrade", post(upgrade_job))
        .route("/v1/jobs/{id}/rollback", post(rollback_job))
        .route("/v1/jobs/{id}/upgrades/{request}", get(upgrade_status))
        .route("/v1/jobs/{id}/shadow", post(shadow::start).get(shadow::status).delete(shadow::stop))
        .route("/v1/savepoints", get(list_savepoints).delete(dispose_savepoint))
        .route("/v1/compare", get(compare_jobs))
        .route("/metrics", get(prometheus_metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(same_origin::same_site))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        .merge(dashboard::router())
        .layer(middleware::from_fn_with_state(state, same_origin::known_host))
}

async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let expected = format!("Bearer {token}");
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !given.is_some_and(|given| same_secret(given, &expected)) {
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

/// Compares two secrets in time that does not depend on where they differ (nor on their lengths:
/// their digests are compared), so that a client cannot find the token byte by byte.
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// Every error the API sends is JSON, `{"error": "…"}`: also those axum sends itself (a query
/// string or path it cannot parse, a method a route does not take).
async fn json_errors(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            let allowed = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
            format!("{path} does not take {method} (it takes {allowed}); see /v1/openapi.json")
        }
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let mut json = ApiError::new(status, message).into_response();
    for (name, value) in
        parts.headers.iter().filter(|(name, _)| *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH)
    {
        json.headers_mut().insert(name, value.clone());
    }
    json
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json"))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {uri}; see /v1/openapi.json"))
}

fn store(state: &ApiState) -> Result<Arc<ModuleStore>, ApiError> {
    state.modules.clone().ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "this API keeps no modules"))
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

/// Each stored module, with the jobs running it.
async fn list_modules(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let mut users = state.jobs.module_users();
    let modules: Vec<serde_json::Value> = store(&state)?
        .list()
        .into_iter()
        .map(|module| {
            let jobs = users.remove(&module.sha256).unwrap_or_default();
            let mut value = serde_json::to_value(module).unwrap_or_default();
            value["jobs"] = json!(jobs);
            value
        })
        .collect();
    Ok(Json(json!({ "modules": modules })).into_response())
}

/// Query parameters of `POST /v1/jobs`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SubmitQuery {
    /// Start from this savepoint (a path on the server, or a URL).
    from_savepoint: Option<String>,
    /// Start even if some of the savepoint's state has nowhere to go.
    #[serde(default)]
    allow_non_restored_state: bool,
    /// With from-savepoint: the job is a fork, a new job beside the savepoint's.
    #[serde(default)]
    fork: bool,
}

async fn submit_job(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<SubmitQuery>,
    body: Result<String, StringRejection>,
) -> Result<Response, ApiError> {
    let text = body?;
    if state.single_job {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this is `weir run`'s API for one job; submit jobs to `weir serve`",
        ));
    }
    let store = store(&state)?;
    let submitted = blocking(move || {
        let from = query.from_savepoint.map(|savepoint| StartFrom {
            savepoint,
            allow_non_restored_state: query.allow_non_restored_state,
            fork: query.fork,
        });
        state.jobs.submit(&text, &mut StoreModules(&store), &state.base, from.as_ref())
    })
    .await?;
    let info = submitted.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": info.id, "state": info.state }))).into_response())
}

/// A job in a listing: its state, failure and lineage, not its per-subtask counts, history or
/// job file; instead, the events its sinks have written.
fn brief(info: &JobInfo) -> serde_json::Value {
    let sinks = info.vertices.iter().filter(|v| v.kind == VertexKind::Sink);
    json!({
        // Over all the job's runs, as the dashboard's list shows it.
        "events-written": sinks.map(|v| v.total_events_out).sum::<u64>(),
        "id": info.id,
        "name": info.name,
        "state": info.state,
        "submitted-at": info.submitted_at,
        "ended-at": info.ended_at,
        "failure": info.failure,
        "lineage": info.lineage,
    })
}

/// `GET /metrics`: see [`metrics`].
async fn prometheus_metrics(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let text = metrics::render(&state)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}")))?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
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

/// The body of `POST /v1/jobs/{id}/savepoints` and `/stop`, all optional.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SavepointBody {
    /// Where the savepoint goes (else the job's savepoint directory).
    target_directory: Option<String>,
    /// `canonical` (the default) or `native` (Flink's `formatType`).
    #[serde(default)]
    format: SavepointFormat,
    /// Stop only: advance event time to its end first, so that every event-time timer fires and
    /// every window is emitted before the savepoint (Flink's `--drain`).
    #[serde(default)]
    drain: bool,
}

async fn savepoint_request(state: Arc<ApiState>, id: String, body: Bytes, stop: bool) -> Result<Response, ApiError> {
    let body: SavepointBody = if body.is_empty() {
        SavepointBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the request body is not valid: {e}")))?
    };
    let jobs = state.jobs.clone();
    let SavepointBody { target_directory, format, drain } = body;
    accepted(blocking(move || jobs.savepoint(&id, target_directory.as_deref(), format, stop, drain)).await?)
}

/// The answer to a savepoint request.
fn accepted(request: Result<String, SavepointError>) -> Result<Response, ApiError> {
    let request = request.map_err(savepoint_refused)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": request }))).into_response())
}

/// Why a request needing a running job was refused.
fn savepoint_refused(e: SavepointError) -> ApiError {
    match e {
        SavepointError::NotFound(id) => unknown_job(&id),
        e @ (SavepointError::NotRunning { .. } | SavepointError::Ending { .. }) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        e @ SavepointError::Target(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The answer to an upgrade or rollback request.
fn upgrade_accepted(request: Result<String, UpgradeError>) -> Result<Response, ApiError> {
    accepted(Ok(request.map_err(upgrade_refused)?))
}

/// Why an upgrade, a rollback or a shadow run was refused.
fn upgrade_refused(e: UpgradeError) -> ApiError {
    match e {
        UpgradeError::Job(e) => savepoint_refused(e),
        UpgradeError::Refused(cause) => ApiError::new(StatusCode::BAD_REQUEST, cause),
        UpgradeError::Conflict(cause) => ApiError::new(StatusCode::CONFLICT, cause),
    }
}

async fn trigger_savepoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    savepoint_request(state, id, body?, false).await
}

async fn stop_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    savepoint_request(state, id, body?, true).await
}

/// The body of `POST /v1/jobs/{id}/upgrade`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct UpgradeBody {
    /// Operator uid to the module it runs from now on (`sha256:<hex>` of an uploaded module); with
    /// `canary`, the module of its canary.
    #[serde(default)]
    operators: std::collections::BTreeMap<String, String>,
    /// Run the modules as canaries serving this share of each operator's key groups ("10%"), or,
    /// with no operators named, give the job's canaries this share.
    canary: Option<String>,
    /// Promote the job's canaries: their modules serve every key group.
    #[serde(default)]
    promote: bool,
    /// Abort the job's canaries: `hand-back` (their key groups go back to the operators' modules
    /// with their state) or `rollback` (the job goes back to the savepoint taken at their start).
    abort: Option<crate::control::CanaryAbort>,
    /// With `canary`: conditions that abort it by themselves (`errors>0`, `out-ratio<0.5`).
    #[serde(default)]
    abort_if: Vec<String>,
    /// With `canary`: how it aborts when one holds (default `hand-back`).
    abort_by: Option<crate::control::CanaryAbort>,
    /// Only try the new modules on a sample of the state, and report (200), changing nothing.
    #[serde(default)]
    trial: bool,
    /// Upgrade without trying the new modules first.
    #[serde(default)]
    no_trial: bool,
    /// Key groups a trial takes per operator subtask.
    sample: Option<u32>,
}

async fn upgrade_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: UpgradeBody = serde_json::from_slice(&body?).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not {{\"operators\": {{uid: module}}}}: {e}"),
        )
    })?;
    let bad = |message: &str| -> Result<Response, ApiError> {
        Err(ApiError::new(StatusCode::BAD_REQUEST, message.to_string()))
    };
    if body.canary.is_none() && (!body.abort_if.is_empty() || body.abort_by.is_some()) {
        return bad("`abort-if` and `abort-by` go with `canary`");
    }
    let step = match (body.canary, body.promote, body.abort) {
        (None, false, None) => None,
        (Some(share), false, None) => {
            let (abort_if, abort_by) = (body.abort_if, body.abort_by);
            Some(CanaryStep::Share(crate::job::CanarySettings { share, abort_if, abort_by }))
        }
        (None, true, None) => Some(CanaryStep::Promote),
        (None, false, Some(abort)) => Some(CanaryStep::Abort(abort)),
        _ => return bad("`canary`, `promote` and `abort` exclude each other"),
    };
    match &step {
        None if body.operators.is_empty() => return bad("name at least one operator to upgrade"),
        Some(CanaryStep::Promote | CanaryStep::Abort(_)) if !body.operators.is_empty() => {
            return bad("`promote` and `abort` apply to every canary of the job: name no operators");
        }
        _ => {}
    }
    if body.trial && body.no_trial {
        return bad("`trial` and `no-trial` exclude each other");
    }
    let store = store(&state)?;
    let replacements: Vec<(String, String)> = body.operators.into_iter().collect();
    let jobs = state.jobs.clone();
    // New modules are tried first: those of an upgrade or of a canary's start.
    let (trial, only_trial, sample) = (
        !body.no_trial && !replacements.is_empty(),
        body.trial,
        body.sample.unwrap_or(crate::control::TRIAL_SAMPLE).max(1),
    );
    let upgraded = blocking(move || {
        let mut modules = StoreModules(&store);
        let tried = trial.then(|| jobs.trial(&id, &replacements, &mut modules, sample)).transpose()?;
        match tried {
            Some(report) if only_trial => Ok(Err(report)),
            Some(report) if !report.passed => Err(UpgradeError::Refused(format!(
                "the new modules failed their trial: {report} (upgrade with `no-trial` to skip it)"
            ))),
            _ => match step {
                Some(step) => jobs.canary(&id, &step, &replacements, &mut modules).map(Ok),
                None => jobs.upgrade(&id, &replacements, &mut modules).map(Ok),
            },
        }
    })
    .await?;
    match upgraded {
        Ok(Err(report)) => Ok(Json(report).into_response()),
        Ok(Ok(request)) => upgrade_accepted(Ok(request)),
        Err(e) => upgrade_accepted(Err(e)),
    }
}

async fn rollback_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let jobs = state.jobs.clone();
    upgrade_accepted(blocking(move || jobs.rollback(&id)).await?)
}

async fn upgrade_status(
    State(state): State<Arc<ApiState>>,
    Path((id, request)): Path<(String, String)>,
) -> Result<Json<UpgradeStatus>, ApiError> {
    state
        .jobs
        .upgrade_status(&id, &request)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("job {id} has no upgrade request {request}")))
}

async fn savepoint_status(
    State(state): State<Arc<ApiState>>,
    Path((id, trigger)): Path<(String, String)>,
) -> Result<Json<SavepointStatus>, ApiError> {
    state
        .jobs
        .savepoint_status(&id, &trigger)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("job {id} has no savepoint request {trigger}")))
}

async fn list_savepoints(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(json!({ "savepoints": state.jobs.savepoints() }))
}

async fn cancel_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.jobs.cancel(&id) {
        Ok(info) => Ok((StatusCode::ACCEPTED, Json(brief(&info))).into_response()),
        Err(CancelError::NotFound(_)) => Err(unknown_job(&id)),
        Err(e @ CancelError::Ended { .. }) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}

/// Query parameters of `DELETE /v1/savepoints`.
#[derive(serde::Deserialize)]
struct DisposeQuery {
    /// The savepoint's location, as the library lists it.
    location: String,
}

async fn dispose_savepoint(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<DisposeQuery>,
) -> Result<Response, ApiError> {
    let jobs = state.jobs.clone();
    let location = query.location.clone();
    match blocking(move || jobs.dispose_savepoint(&location)).await? {
        Ok(()) => Ok(Json(json!({ "disposed": query.location })).into_response()),
        Err(e @ DisposeError::NotFound(_)) => Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ DisposeError::InUse(_)) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(e @ DisposeError::Failed(_)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Query parameters of `GET /v1/compare`.
#[derive(serde::Deserialize)]
struct CompareQuery {
    /// A job id.
    a: String,
    /// Another job id.
    b: String,
    /// The file sink compared, by uid (default: each job's first file sink).
    sink: Option<String>,
}

/// `GET /v1/compare?a=ID&b=ID[&sink=UID]`: where the committed outputs of two jobs' file sinks
/// diverge, key by key (what `weir compare` prints).
async fn compare_jobs(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<CompareQuery>,
) -> Result<Json<Comparison>, ApiError> {
    let job = |id: &str| state.jobs.get(id).ok_or_else(|| unknown_job(id));
    let (a, b) = (job(&query.a)?, job(&query.b)?);
    let dir = |job: &JobInfo| {
        output_dir(&job.job, &state.base, query.sink.as_deref()).map_err(|cause| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("job {} cannot be compared: {cause}", job.id))
        })
    };
    let (a_dir, b_dir) = (dir(&a)?, dir(&b)?);
    let (base, sink) = (state.base.clone(), query.sink.clone());
    let compared = blocking(move || {
        let since = fork_point(&a, &b, &base, sink.as_deref()).map_err(anyhow::Error::msg)?;
        compare_outputs(&a_dir, &b_dir, since.as_ref())
    })
    .await?;
    compared.map(Json).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e:#}")))
}
