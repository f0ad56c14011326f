//! The fault configuration: the JSON object a test posts to `/__fault/config`.
//!
//! Contract: a [`Config`] is a rule (fault fields plus an optional `paths` filter) that may
//! hold further `rules`. For one request the proxy computes its [`Effective`] faults field by
//! field: the first rule, in the order top level then `rules` in order, whose `paths` filter
//! matches the request path and which sets the field wins. Unknown fields are rejected so a
//! typo in a test fails loudly instead of silently injecting nothing.

use serde::{Deserialize, Serialize};

/// Upper bound for every millisecond field: large enough for any test, small enough that
/// `Instant + Duration` can never overflow.
const MAX_MS: u64 = 24 * 3600 * 1000;

/// Upper bound for `bufferBytes`: the proxy holds the bytes in memory.
const MAX_BUFFER: u64 = 64 * 1024 * 1024;

/// One rule of faults. The top-level config is a rule whose `rules` may hold more rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Path prefixes (without query) the faults of this rule apply to; absent: every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Answer a WebSocket upgrade request with this status instead of forwarding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_upgrade: Option<u16>,
    /// Forward the upgrade and the 101, then forward nothing either way; keep sockets open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_after_upgrade: Option<bool>,
    /// Remove `Upgrade` and `Connection: upgrade` before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_upgrade: Option<bool>,
    /// Hold the response (head and body) until this many body bytes have arrived or the
    /// upstream ends, then flush and start holding again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_bytes: Option<u64>,
    /// With `bufferBytes`: hold the response head too (default true, as nginx does in
    /// effect, since it postpones a head smaller than `postpone_output`); false sends the head
    /// at once and holds only the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_headers: Option<bool>,
    /// Close a connection that moved no byte either way for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_cut_ms: Option<u64>,
    /// Close every connection this long after it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_every_ms: Option<u64>,
    /// Delay every chunk, each way, by this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Answer every matching request (upgrades included) with this status and a protocol-shaped
    /// JSON error instead of forwarding it, like a rate limiter or a maintenance page in front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond_status: Option<u16>,
    /// With `respondStatus`: the `Retry-After` header, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Accept new TCP connections and close them at once (top level only: no path is known
    /// at accept time). Control requests to `/__fault/` still get through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_connections: Option<bool>,
    /// More rules, each with its own `paths`; they may not nest further.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Config>,
}

/// The faults that apply to one request (or one connection) after merging the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effective {
    pub refuse_upgrade: Option<u16>,
    pub silence_after_upgrade: bool,
    pub strip_upgrade: bool,
    pub buffer_bytes: Option<u64>,
    pub buffer_headers: bool,
    pub idle_cut_ms: Option<u64>,
    pub cut_every_ms: Option<u64>,
    pub latency_ms: u64,
    pub respond_status: Option<u16>,
    pub retry_after_secs: Option<u64>,
}

/// A config that cannot be applied; `code` is stable, `message` says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn bad(message: String) -> ConfigError {
    ConfigError {
        code: "bad_config",
        message,
    }
}

impl Config {
    /// Parses and validates a JSON config body.
    pub fn from_json(body: &[u8]) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the config is not a valid fault object: {e}")))?;
        config.validate(true)?;
        Ok(config)
    }

    fn validate(&self, top: bool) -> Result<(), ConfigError> {
        if let Some(paths) = &self.paths {
            if paths.is_empty() {
                return Err(bad(
                    "`paths` must list at least one prefix such as \"/realtime/sse\", or be omitted to match every path".into(),
                ));
            }
            if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
                return Err(bad(format!("path prefix {p:?} must start with '/'")));
            }
        }
        if let Some(code) = self.refuse_upgrade {
            if !(200..=599).contains(&code) {
                return Err(bad(format!(
                    "`refuseUpgrade` must be an HTTP status from 200 to 599, got {code}"
                )));
            }
        }
        for (name, value) in [
            ("bufferBytes", self.buffer_bytes),
            ("idleCutMs", self.idle_cut_ms),
            ("cutEveryMs", self.cut_every_ms),
        ] {
            if value == Some(0) {
                return Err(bad(format!(
                    "`{name}` must be at least 1 (omit it to turn the fault off)"
                )));
            }
        }
        if let Some(code) = self.respond_status {
            if !(200..=599).contains(&code) {
                return Err(bad(format!(
                    "`respondStatus` must be an HTTP status from 200 to 599, got {code}"
                )));
            }
        }
        if self.retry_after_secs.is_some_and(|s| s > 86_400) {
            return Err(bad("`retryAfterSecs` must be at most 86400".into()));
        }
        if self.buffer_bytes.is_some_and(|b| b > MAX_BUFFER) {
            return Err(bad(format!(
                "`bufferBytes` must be at most {MAX_BUFFER} (the proxy holds it in memory)"
            )));
        }
        for (name, value) in [
            ("idleCutMs", self.idle_cut_ms),
            ("cutEveryMs", self.cut_every_ms),
            ("latencyMs", self.latency_ms),
        ] {
            if value.is_some_and(|v| v > MAX_MS) {
                return Err(bad(format!("`{name}` must be at most {MAX_MS} ms")));
            }
        }
        if !top {
            if !self.rules.is_empty() {
                return Err(bad(
                    "`rules` inside a rule are not allowed: list every rule at the top level"
                        .into(),
                ));
            }
            if self.refuse_connections.is_some() {
                return Err(bad(
                    "`refuseConnections` is only allowed at the top level: no path is known when a connection is accepted".into(),
                ));
            }
        }
        for rule in &self.rules {
            rule.validate(false)?;
        }
        Ok(())
    }

    /// Whether new connections are refused.
    pub fn refuses_connections(&self) -> bool {
        self.refuse_connections == Some(true)
    }

    fn matches(&self, path: &str) -> bool {
        match &self.paths {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| path.starts_with(p.as_str())),
        }
    }

    /// The faults that apply to a request for `path` (the path without its query).
    pub fn effective(&self, path: &str) -> Effective {
        let mut e = Effective::default();
        let mut silence = None;
        let mut strip = None;
        let mut latency = None;
        let mut buffer_headers = None;
        for rule in std::iter::once(self).chain(self.rules.iter()) {
            if !rule.matches(path) {
                continue;
            }
            e.refuse_upgrade = e.refuse_upgrade.or(rule.refuse_upgrade);
            silence = silence.or(rule.silence_after_upgrade);
            strip = strip.or(rule.strip_upgrade);
            e.buffer_bytes = e.buffer_bytes.or(rule.buffer_bytes);
            buffer_headers = buffer_headers.or(rule.buffer_headers);
            e.idle_cut_ms = e.idle_cut_ms.or(rule.idle_cut_ms);
            e.cut_every_ms = e.cut_every_ms.or(rule.cut_every_ms);
            e.respond_status = e.respond_status.or(rule.respond_status);
            e.retry_after_secs = e.retry_after_secs.or(rule.retry_after_secs);
            latency = latency.or(rule.latency_ms);
        }
        e.silence_after_upgrade = silence.unwrap_or(false);
        e.strip_upgrade = strip.unwrap_or(false);
        e.latency_ms = latency.unwrap_or(0);
        e.buffer_headers = buffer_headers.unwrap_or(true);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_object_injects_no_fault() {
        let c = Config::from_json(b"{}").unwrap();
        assert_eq!(
            c.effective("/anything"),
            Effective {
                buffer_headers: true,
                ..Effective::default()
            }
        );
        assert!(!c.refuses_connections());
    }

    #[test]
    fn a_paths_filter_limits_faults_to_matching_prefixes() {
        let c = Config::from_json(br#"{"bufferBytes":1024,"paths":["/realtime/sse"]}"#).unwrap();
        assert_eq!(c.effective("/realtime/sse").buffer_bytes, Some(1024));
        assert_eq!(c.effective("/realtime/poll").buffer_bytes, None);
    }

    #[test]
    fn the_first_matching_rule_that_sets_a_field_wins() {
        let c = Config::from_json(
            br#"{"latencyMs":5,"rules":[{"paths":["/ws"],"refuseUpgrade":404,"latencyMs":50},{"refuseUpgrade":400}]}"#,
        )
        .unwrap();
        let ws = c.effective("/ws");
        assert_eq!((ws.refuse_upgrade, ws.latency_ms), (Some(404), 5));
        assert_eq!(c.effective("/other").refuse_upgrade, Some(400));
    }

    #[test]
    fn unknown_fields_and_out_of_range_values_are_rejected_with_a_stable_code() {
        for body in [
            &br#"{"bufferByte":10}"#[..],
            br#"{"refuseUpgrade":101}"#,
            br#"{"idleCutMs":0}"#,
            br#"{"respondStatus":99}"#,
            br#"{"bufferBytes":1000000000}"#,
            br#"{"paths":[]}"#,
            br#"{"paths":["realtime"]}"#,
            br#"{"rules":[{"refuseConnections":true}]}"#,
            br#"{"rules":[{"rules":[{}]}]}"#,
            br#"[1,2]"#,
            b"\xff\x00garbage",
        ] {
            let err = Config::from_json(body).unwrap_err();
            assert_eq!(err.code, "bad_config", "{err}");
        }
    }
}
