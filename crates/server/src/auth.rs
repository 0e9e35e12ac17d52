//! Bearer-token auth: who may read and who may change, as two `axum` middleware functions.
//!
//! Tokens are compared by [`config::ApiTokens::accepts`] and never logged, echoed or put in
//! an error.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use config::{ApiConfig, ApiTokens, ConfigError};

use crate::error::ApiError;
use crate::AppState;

/// Who may call the API: the accepted tokens, and whether reads need one too.
///
/// Mutating calls always need a token; with no tokens configured they are refused.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// The accepted tokens (`api.tokens_file`).
    pub tokens: ApiTokens,
    /// Whether read-only calls need a token too (`api.require_token_for_reads`).
    pub require_token_for_reads: bool,
}

impl Auth {
    /// Auth from its parts.
    pub fn new(tokens: ApiTokens, require_token_for_reads: bool) -> Self {
        Self {
            tokens,
            require_token_for_reads,
        }
    }

    /// Auth as `[api]` configures it; reads the tokens file now.
    pub fn from_config(api: &ApiConfig) -> Result<Self, ConfigError> {
        Ok(Self::new(api.load_tokens()?, api.require_token_for_reads))
    }

    /// Whether the request carries an accepted `Authorization: Bearer <token>` header.
    ///
    /// No tokens configured is 403 whatever was sent; no header or another scheme is 401; a
    /// token that is not accepted is 403.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.tokens.is_empty() {
            return Err(ApiError::Forbidden(
                "this call needs an API token, but the daemon has none configured: set \
                 api.tokens_file in dbfleet.toml to a file of tokens and restart it"
                    .into(),
            ));
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "this call needs an API token: send the header `Authorization: Bearer <token>`"
                    .into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            return Err(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        };
        if !self.tokens.accepts(token) {
            if let Some(suppressed) = REFUSALS.note(Instant::now()) {
                tracing::warn!(
                    suppressed,
                    "API call refused: the bearer token is not accepted (at most one such \
                     line every {}s; `suppressed` counts the refusals not logged since the last)",
                    REFUSAL_LOG_EVERY.as_secs()
                );
            }
            return Err(ApiError::Forbidden("the API token is not accepted".into()));
        }
        Ok(())
    }
}

/// How often at most a refused token is logged: a client (or an attacker) sending bad
/// tokens in a loop must not flood the log.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// The refused tokens of this process.
static REFUSALS: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);

/// A rate limit on one kind of log line: at most one per interval, each saying how many
/// were left out since the one before.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    /// When the last line was logged, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// A limit of one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// One more event at `now`: `Some(left_out)` when a line is due (with how many events
    /// were not logged since the last line), `None` when this one is left out.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, left_out) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.every => {
                *left_out += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(left_out))
            }
        }
    }
}

/// Middleware for read-only routes: passes every request, unless `require_token_for_reads`
/// asks for a token.
pub async fn read_access(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.auth.require_token_for_reads {
        state.auth.check(request.headers())?;
    }
    Ok(next.run(request).await)
}

/// Middleware for mutating routes: passes only requests with an accepted token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.auth.check(request.headers())?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_left_out() {
        let log = LogThrottle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.note(t0), Some(0), "the first is logged");
        for i in 1..=9 {
            assert_eq!(log.note(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.note(t0 + Duration::from_secs(60)), Some(9));
        assert_eq!(log.note(t0 + Duration::from_secs(61)), None);
        assert_eq!(log.note(t0 + Duration::from_secs(200)), Some(1));
    }
}
