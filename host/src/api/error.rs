//! The one error type of the API: a status and a message, sent as `{"error": "<message>"}`.
use axum::Json;
use axum::extract::rejection::{BytesRejection, StringRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// Body rejections keep their status (413 for a body over the limit, 400 for bad UTF-8) but get a
/// JSON message like every other error.
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

impl From<StringRejection> for ApiError {
    fn from(r: StringRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body is larger than this server accepts ({text}); raise `weir serve --body-limit`")
    } else {
        format!("cannot read the request body: {text}")
    };
    ApiError::new(status, message)
}
