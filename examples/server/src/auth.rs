//! Subscriber tokens.
//!
//! Two kinds, either or both configured:
//! - signed tokens: JWT compact form with `alg` HS256 (HMAC-SHA256 over
//!   `base64url(header).base64url(claims)` with `--token-secret`). Claims: `exp` (Unix
//!   seconds, required; a fraction is accepted, as PyJWT writes `time.time() + 600`),
//!   optional `nbf` and `iat` (not before / issued at: refused when more than
//!   [`LEEWAY_SECS`] in the future), optional `topics` (array of topic names; absent = every
//!   topic), optional `sub`. Any JWT library can mint them.
//! - static tokens from `--token` / `--tokens-file`: never expire, every topic.
//!
//! The verdict separates *expired* (ask the token provider for a new one) from *invalid*
//! (wrong secret, malformed, unknown) so a client can act on it. Tokens are never logged.
//! Secrets are compared in constant time (SHA-256 digests compared with `subtle`, so not
//! even the length leaks).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid,
    Expired,
    /// Valid, but not for this topic.
    Forbidden,
}

impl AuthError {
    /// The stable error code of PROTOCOL.md §7.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Invalid => "token_invalid",
            AuthError::Expired => "token_expired",
            AuthError::Forbidden => "forbidden",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "a subscriber token is required: pass ?token= or Authorization: Bearer"
            }
            AuthError::Invalid => {
                "the subscriber token is not valid: get a new one, do not retry it"
            }
            AuthError::Expired => {
                "the subscriber token has expired: ask the token provider for a new one"
            }
            AuthError::Forbidden => "the token does not allow this topic",
        }
    }

    /// WebSocket close code (browsers cannot see an HTTP status of a refused upgrade).
    pub fn close_code(self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid => 4401,
            AuthError::Expired => 4402,
            AuthError::Forbidden => 4403,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            AuthError::Forbidden => 403,
            _ => 401,
        }
    }
}

/// Clock difference tolerated between the token issuer and this server (`nbf`, `iat`).
pub const LEEWAY_SECS: f64 = 30.0;

#[derive(Deserialize)]
struct Claims {
    /// Numbers, integer or not (RFC 7519 NumericDate).
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

#[derive(Clone, Default)]
pub struct Auth {
    secret: Option<Vec<u8>>,
    /// SHA-256 of each static token.
    statics: Vec<[u8; 32]>,
}

impl Auth {
    pub fn new(secret: Option<&str>, statics: Vec<String>) -> Auth {
        Auth {
            secret: secret.map(|s| s.as_bytes().to_vec()),
            statics: statics
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| digest(t))
                .collect(),
        }
    }

    /// Whether subscribers must present a token at all.
    pub fn required(&self) -> bool {
        self.secret.is_some() || !self.statics.is_empty()
    }

    pub fn check(&self, token: Option<&str>, topic: &str, now_secs: u64) -> Result<(), AuthError> {
        if !self.required() {
            return Ok(());
        }
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let hashed = digest(token);
        // Every static token is compared, so the time taken does not say which one matched.
        let matched = self
            .statics
            .iter()
            .fold(0u8, |acc, s| acc | s.ct_eq(&hashed).unwrap_u8());
        if matched == 1 {
            return Ok(());
        }
        let secret = self.secret.as_ref().ok_or(AuthError::Invalid)?;
        let claims = verify(secret, token)?;
        let now = now_secs as f64;
        if !claims.exp.is_finite() || claims.exp < 0.0 {
            return Err(AuthError::Invalid);
        }
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        let future = |t: Option<f64>| t.is_some_and(|t| !t.is_finite() || t > now + LEEWAY_SECS);
        if future(claims.nbf) || future(claims.iat) {
            return Err(AuthError::Invalid);
        }
        match claims.topics {
            Some(list) if !list.iter().any(|t| t == topic || t == "*") => Err(AuthError::Forbidden),
            _ => Ok(()),
        }
    }
}

fn verify(secret: &[u8], token: &str) -> Result<Claims, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid);
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Invalid)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(AuthError::Invalid);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Invalid)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| AuthError::Invalid)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(c.as_bytes());
    mac.verify_slice(&sig).map_err(|_| AuthError::Invalid)?;
    URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError::Invalid)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Whether `given` is `expected`, in time independent of where (or whether) they differ.
pub fn secret_eq(given: &str, expected: &str) -> bool {
    bool::from(digest(given).ct_eq(&digest(expected)))
}

/// Mints a signed token (for tests, the demo, and backends written in Rust).
pub fn mint(secret: &str, exp_unix_secs: u64, topics: Option<&[&str]>) -> String {
    let mut claims = serde_json::json!({ "exp": exp_unix_secs });
    if let Some(t) = topics {
        claims["topics"] = serde_json::json!(t);
    }
    mint_claims(secret, &claims)
}

/// Mints a signed token with any claims.
pub fn mint_claims(secret: &str, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{claims}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_signed_token_is_accepted_for_its_topics_only() {
        let auth = Auth::new(Some("s3cret"), vec![]);
        let t = mint("s3cret", 2_000, Some(&["a"]));
        assert_eq!(auth.check(Some(&t), "a", 1_000), Ok(()));
        assert_eq!(auth.check(Some(&t), "b", 1_000), Err(AuthError::Forbidden));
    }

    #[test]
    fn expired_and_invalid_tokens_are_told_apart() {
        let auth = Auth::new(Some("s3cret"), vec![]);
        let t = mint("s3cret", 2_000, None);
        assert_eq!(auth.check(Some(&t), "a", 2_000), Err(AuthError::Expired));
        let wrong = mint("other", 2_000, None);
        assert_eq!(
            auth.check(Some(&wrong), "a", 1_000),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(Some("x.y.z"), "a", 1_000),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(Some("garbage"), "a", 1_000),
            Err(AuthError::Invalid)
        );
        assert_eq!(auth.check(None, "a", 1_000), Err(AuthError::Missing));
    }

    #[test]
    fn a_fractional_exp_is_accepted_and_nbf_iat_in_the_future_are_not() {
        let auth = Auth::new(Some("s"), vec![]);
        let t = |c: serde_json::Value| mint_claims("s", &c);
        // PyJWT: jwt.encode({"exp": time.time() + 600}, ...)
        let pyjwt = t(serde_json::json!({"exp": 1600.25, "iat": 1000.5}));
        assert_eq!(auth.check(Some(&pyjwt), "a", 1_000), Ok(()));
        assert_eq!(
            auth.check(Some(&pyjwt), "a", 1_601),
            Err(AuthError::Expired)
        );
        let later = t(serde_json::json!({"exp": 5000, "nbf": 2000}));
        assert_eq!(
            auth.check(Some(&later), "a", 1_000),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(Some(&later), "a", 1_980),
            Ok(()),
            "within the leeway"
        );
        let issued_later = t(serde_json::json!({"exp": 5000, "iat": 1100}));
        assert_eq!(
            auth.check(Some(&issued_later), "a", 1_000),
            Err(AuthError::Invalid)
        );
        let bad = t(serde_json::json!({"exp": "soon"}));
        assert_eq!(auth.check(Some(&bad), "a", 1_000), Err(AuthError::Invalid));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(secret_eq("k3y", "k3y"));
        assert!(!secret_eq("k3y", "k3z") && !secret_eq("k3", "k3y") && !secret_eq("", "k3y"));
    }

    #[test]
    fn static_tokens_are_accepted_and_no_config_means_open() {
        let auth = Auth::new(None, vec!["abc".into()]);
        assert_eq!(auth.check(Some("abc"), "a", 0), Ok(()));
        assert_eq!(auth.check(Some("abd"), "a", 0), Err(AuthError::Invalid));
        assert_eq!(Auth::new(None, vec![]).check(None, "a", 0), Ok(()));
    }
}
