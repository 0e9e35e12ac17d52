//! `ApiError`: every way an API call fails, and the one place that maps each to an HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use store::StoreError;

use api::wire::ErrorBody;

/// Why an API call failed. [`IntoResponse`] turns each variant into its status and a
/// `{"error": "..."}` body; no handler picks a status itself.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The named cluster, instance or route does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// A query parameter, path parameter or body is malformed: 400. The message names it.
    #[error("{0}")]
    BadRequest(String),
    /// The call needs a token and none (or no `Bearer` one) was sent: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A token was sent but is not accepted, or no tokens are configured: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The route exists but not for this method: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the cluster's state (busy, refused, or an operation that
    /// ended other than succeeded): 409, with the operation's record when there is one.
    #[error("{message}")]
    Conflict {
        message: String,
        operation: Option<serde_json::Value>,
    },
    /// This daemon cannot serve the request now (no engine, not the leader, the store does
    /// not answer): 503.
    #[error("{0}")]
    Unavailable(String),
    /// The request's URI is longer than the API reads: 414.
    #[error("{0}")]
    UriTooLong(String),
    /// The request's headers are too many or too large: 431.
    #[error("{0}")]
    HeadTooLarge(String),
    /// The request was refused before a handler ran (an `axum` extractor's rejection, a body
    /// over the limit): its own status, with the reason in JSON.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// The metadata store failed: 500. The message is logged, never returned.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon failed to build an answer (it could not be serialised): 500. The message
    /// is logged, never returned.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Rejected { status, .. } => *status,
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = match &self {
            Self::Store(e) => {
                // Handled here: the client gets a generic text, the operator the cause.
                tracing::error!(error = %e, "metadata store call failed");
                "internal error: the metadata store failed; see the dbfleet daemon's log".into()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "an API answer failed");
                "internal error; see the dbfleet daemon's log".into()
            }
            other => other.to_string(),
        };
        let operation = match &self {
            Self::Conflict { operation, .. } => operation.clone(),
            _ => None,
        };
        let mut response = (status, Json(ErrorBody { error, operation })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dbfleet\""),
            );
        }
        response
    }
}
