//! `/v1/jobs/{id}/shadow`: shadow runs of new modules beside a running job's operators (see
//! [`crate::runtime::shadow`]).
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiState, blocking, savepoint_refused, store, unknown_job, upgrade_refused};
use crate::control::{SHADOW_MEMORY_LIMIT, StoreModules};
use crate::runtime::shadow::ShadowOptions;

/// The body of `POST /v1/jobs/{id}/shadow`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ShadowBody {
    /// Operator uid to the module its shadow runs (`sha256:<hex>` of an uploaded module).
    operators: std::collections::BTreeMap<String, String>,
    /// Top-level fields of JSON output lines the comparison leaves out.
    #[serde(default)]
    ignore: Vec<String>,
    /// Bytes of memory the shadow may cost before it stops.
    memory_limit: Option<u64>,
    /// Conditions that stop it as soon as one holds (`differing>0`, `different-ratio>0.01`).
    #[serde(default)]
    abort_if: Vec<String>,
}

pub(super) async fn start(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: ShadowBody = serde_json::from_slice(&body?).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not {{\"operators\": {{uid: module}}}}: {e}"),
        )
    })?;
    if body.operators.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "name at least one operator to shadow"));
    }
    let memory_limit = body.memory_limit.unwrap_or(SHADOW_MEMORY_LIMIT);
    let store = store(&state)?;
    let replacements: Vec<(String, String)> = body.operators.into_iter().collect();
    let abort_if = body.abort_if.iter().map(|c| c.parse()).collect::<Result<Vec<_>, String>>();
    let abort_if = abort_if.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let options = ShadowOptions { ignore: body.ignore, memory_limit, abort_if };
    let jobs = state.jobs.clone();
    let reports = blocking(move || jobs.shadow(&id, &replacements, &mut StoreModules(&store), &options)).await?;
    Ok(Json(json!({ "shadows": reports.map_err(upgrade_refused)? })))
}

pub(super) async fn status(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let reports = state.jobs.shadow_reports(&id).ok_or_else(|| unknown_job(&id))?;
    Ok(Json(json!({ "shadows": reports })))
}

pub(super) async fn stop(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let reports = state.jobs.stop_shadows(&id).map_err(savepoint_refused)?;
    Ok(Json(json!({ "shadows": reports })))
}
