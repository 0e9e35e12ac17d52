//! `ApiError`: every way an API call fails, and the one place that maps each to an HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use store::StoreError;

use crate::wire::ErrorBody;

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
    /// The metadata store failed: 500. The message is logged, never returned.
    #[error(transparent)]
    Store(#[from] StoreError),
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
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dbfleet\""),
            );
        }
        response
    }
}
