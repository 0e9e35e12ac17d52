//! The router's outer layer: limits on a request's URI and head, each answered in JSON, and
//! the rewrite of any error response that is not JSON (an `axum` extractor's plain-text
//! rejection: a body over the limit, a path segment that is not UTF-8, ...) into the API's
//! error shape, so that every error the API sends is `{"error": "..."}`.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The longest URI (path and query) the API reads; a longer one is a 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most headers a request may carry; more is a 431.
pub const MAX_HEADERS: usize = 100;
/// The most bytes all of a request's headers may take (names, values and separators); more
/// is a 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The largest request body the API reads (a DRT report is the largest); more is a 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// How much of a plain-text error body is kept as the JSON error's message.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Middleware: refuse an oversized URI or head, and turn every non-JSON error into JSON.
pub async fn json_errors(request: Request, next: Next) -> Response {
    if let Err(e) = check_head(&request) {
        return e.into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let timed_out = text.contains(crate::listen::BODY_TIMEOUT_MESSAGE);
    let status = if timed_out {
        StatusCode::REQUEST_TIMEOUT
    } else {
        status
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than {MAX_BODY_BYTES} bytes")
        }
        StatusCode::REQUEST_TIMEOUT => {
            let at = text.find(crate::listen::BODY_TIMEOUT_MESSAGE).unwrap_or(0);
            truncate(&text[at..], MAX_MESSAGE_BYTES)
        }
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string(),
        _ => truncate(&text, MAX_MESSAGE_BYTES),
    };
    let json = ApiError::Rejected { status, message }.into_response();
    // Keep the original's other headers (`allow`, `www-authenticate`, ...).
    parts.headers.remove(header::CONTENT_LENGTH);
    let (json_parts, json_body) = json.into_parts();
    parts.status = json_parts.status;
    for (name, value) in json_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, json_body)
}

/// The URI and header limits, as 414 and 431.
fn check_head(request: &Request) -> Result<(), ApiError> {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len())
        + request.uri().authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong(format!(
            "the request's URI is {uri_len} bytes long: at most {MAX_URI_BYTES}"
        )));
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEAD_BYTES {
        return Err(ApiError::HeadTooLarge(format!(
            "the request has {} headers in {bytes} bytes: at most {MAX_HEADERS} headers and \
             {MAX_HEAD_BYTES} bytes",
            headers.len()
        )));
    }
    Ok(())
}

fn is_json(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static("application/json"))
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The whole body of a response, for tests of this module.
#[cfg(test)]
async fn body_text(body: axum::body::Body) -> String {
    String::from_utf8(
        axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_characters_whole() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc…");
        assert_eq!(truncate("aé", 2), "a…");
    }

    #[tokio::test]
    async fn rejected_answers_its_status_in_json() {
        let r = ApiError::Rejected {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "x".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(is_json(&r));
        assert_eq!(body_text(r.into_body()).await, r#"{"error":"x"}"#);
    }
}
