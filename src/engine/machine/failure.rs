//! Failure classes: what an HTTP status or a WebSocket close code means, as an
//! [`ErrorCode`], the [`Action`] that follows, and a message that says what to change.

use super::*;

/// Failure class of a non-2xx HTTP status.
pub(super) fn classify_status(
    t: Transport,
    status: u16,
    retry_after: Option<u64>,
    error_code: Option<&str>,
) -> (ErrorCode, Action, String) {
    let s = u64_to_string(status as u64);
    let with_code = |m: &str| -> String {
        match error_code {
            Some(c) => cat(&[m, " (HTTP ", &s, ", ", c, ")"]),
            None => cat(&[m, " (HTTP ", &s, ")"]),
        }
    };
    match status {
        401 => (
            ErrorCode::Unauthorized,
            Action::Auth,
            with_code("the server rejected the token: asking the token provider for a new one"),
        ),
        403 => (
            ErrorCode::Forbidden,
            Action::Auth,
            with_code("the token is not allowed to read this topic"),
        ),
        429 | 503 => {
            let wait = retry_after.unwrap_or(5_000).min(MAX_WAIT_MS);
            (
                ErrorCode::RateLimited,
                Action::RateLimited(wait),
                with_code(&cat(&["the server asks to wait ", &secs(wait), " before retrying"])),
            )
        }
        _ if t == Transport::WebSocket => (
            ErrorCode::UpgradeRefused,
            Action::Fallback,
            with_code("the WebSocket upgrade was refused: enable WebSocket support or Upgrade headers in the proxy"),
        ),
        404 | 405 | 501 => (
            ErrorCode::HttpError,
            Action::Fallback,
            with_code("the endpoint does not exist on this server or proxy"),
        ),
        _ => (
            ErrorCode::HttpError,
            Action::Fallback,
            with_code("the server answered with an error status"),
        ),
    }
}

/// Failure class of a WebSocket close code (1005/1006 are handled by the caller).
pub(super) fn classify_close(code: u16, reason: &str) -> (ErrorCode, Action, String) {
    let c = u64_to_string(code as u64);
    let head = |m: &str| cat(&[m, " (close code ", &c, ")"]);
    match code {
        4401 | 4402 => (
            ErrorCode::Unauthorized,
            Action::Auth,
            head("the server rejected the token: asking the token provider for a new one"),
        ),
        1008 => (
            ErrorCode::ServerError,
            Action::Retry,
            head("the server refused the request as malformed (topic or since)"),
        ),
        1011 => (
            ErrorCode::ServerError,
            Action::Retry,
            head("the server had an internal error (history store unavailable?)"),
        ),
        4403 => (
            ErrorCode::Forbidden,
            Action::Auth,
            head("the token is not allowed to read this topic"),
        ),
        4429 | 1013 => {
            let wait = crate::engine::util::parse_u64(reason.trim())
                .map(|s| s.saturating_mul(1000).min(MAX_WAIT_MS))
                .unwrap_or(5_000);
            (
                ErrorCode::RateLimited,
                Action::RateLimited(wait),
                head(&cat(&["rate limited: waiting ", &secs(wait)])),
            )
        }
        1009 => (
            ErrorCode::FrameTooLarge,
            Action::Retry,
            head("a message was too large for the server (1 MiB limit)"),
        ),
        1001 => (
            ErrorCode::ClosedByPeer,
            Action::Retry,
            head("the server is going away (restart or deploy)"),
        ),
        _ => (
            ErrorCode::ClosedByPeer,
            Action::Retry,
            head("the connection was closed by the server or a proxy"),
        ),
    }
}
