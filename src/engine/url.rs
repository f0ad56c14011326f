//! URL derivation for each rung from the options and the page's `location.href`.
//!
//! Contract: relative references resolve against the page (RFC 3986 §5.2, enough of it for
//! paths, `//host` and `?query`); the WebSocket rung gets `ws:`/`wss:` from `http:`/`https:`
//! and the HTTP rungs the reverse; the authority (host and port) is copied as written —
//! a port is never added or removed. A `ws:`/`http:` URL from an `https:` page is rejected
//! (browsers block mixed content). Query values are percent-encoded like
//! `encodeURIComponent`.

use super::error::{ErrorCode, HoldfastError};
use super::types::Transport;
use super::util::cat;

/// An absolute URL split into the parts we need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Lower-case scheme without `:`.
    pub scheme: String,
    /// `host[:port]` (with userinfo dropped).
    pub authority: String,
    /// Path starting with `/`.
    pub path: String,
    /// Query without `?` (may be empty).
    pub query: String,
}

fn bad(url: &str, why: &str) -> HoldfastError {
    HoldfastError::new(ErrorCode::InvalidUrl, cat(&["the URL \"", url, "\" ", why]))
}

fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    if !first.is_ascii_alphabetic()
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return None;
    }
    Some((scheme, &s[colon + 1..]))
}

/// Splits `//authority/path?query#frag` (after the scheme).
fn parse_hier(scheme: &str, rest: &str, original: &str) -> Result<Url, HoldfastError> {
    let rest = rest.split('#').next().unwrap_or("");
    let Some(after) = rest.strip_prefix("//") else {
        return Err(bad(original, "has no host (expected scheme://host/path)"));
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let mut authority = &after[..end];
    if let Some(at) = authority.rfind('@') {
        authority = &authority[at + 1..];
    }
    if authority.is_empty() {
        return Err(bad(original, "has an empty host"));
    }
    let tail = &after[end..];
    let (path, query) = match tail.find('?') {
        Some(q) => (&tail[..q], &tail[q + 1..]),
        None => (tail, ""),
    };
    Ok(Url {
        scheme: scheme.to_ascii_lowercase(),
        authority: authority.into(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        query: query.into(),
    })
}

/// Parses an absolute URL.
pub fn parse_absolute(s: &str) -> Result<Url, HoldfastError> {
    let s = s.trim();
    match split_scheme(s) {
        Some((scheme, rest)) => parse_hier(scheme, rest, s),
        None => Err(bad(s, "is not absolute")),
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').collect();
    let n = segs.len();
    for (i, seg) in segs.iter().enumerate() {
        match *seg {
            "." => {
                if i == n - 1 {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == n - 1 {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut joined = super::util::join(&out, "/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    joined
}

/// Resolves `reference` against the page `base` (`location.href`; may be empty when there
/// is no page, then `reference` must be absolute).
pub fn resolve(base: &str, reference: &str) -> Result<Url, HoldfastError> {
    let r = reference.trim();
    if split_scheme(r).is_some() {
        return parse_absolute(r);
    }
    if base.trim().is_empty() {
        return Err(bad(
            r,
            "is relative but there is no page to resolve it against: give an absolute URL",
        ));
    }
    let b = parse_absolute(base)?;
    let r = r.split('#').next().unwrap_or("");
    if let Some(rest) = r.strip_prefix("//") {
        let _ = rest;
        let joined = cat(&[&b.scheme, ":", r]);
        return parse_absolute(&joined);
    }
    let (rpath, rquery) = match r.find('?') {
        Some(q) => (&r[..q], Some(&r[q + 1..])),
        None => (r, None),
    };
    let path = if rpath.is_empty() {
        b.path.clone()
    } else if rpath.starts_with('/') {
        remove_dot_segments(rpath)
    } else {
        let dir = match b.path.rfind('/') {
            Some(i) => &b.path[..=i],
            None => "/",
        };
        remove_dot_segments(&cat(&[dir, rpath]))
    };
    let query = match rquery {
        Some(q) => q.into(),
        None if rpath.is_empty() => b.query.clone(),
        None => String::new(),
    };
    Ok(Url {
        scheme: b.scheme,
        authority: b.authority,
        path,
        query,
    })
}

impl Url {
    /// The URL with its scheme mapped for `transport` (`http(s)` ↔ `ws(s)`).
    pub fn for_transport(
        &self,
        transport: Transport,
        original: &str,
    ) -> Result<Url, HoldfastError> {
        let scheme = match (transport, self.scheme.as_str()) {
            (Transport::WebSocket, "http") | (Transport::WebSocket, "ws") => "ws",
            (Transport::WebSocket, "https") | (Transport::WebSocket, "wss") => "wss",
            (_, "http") | (_, "ws") => "http",
            (_, "https") | (_, "wss") => "https",
            _ => {
                return Err(bad(
                    original,
                    "must use http:, https:, ws: or wss: (or be a path on this page's server)",
                ))
            }
        };
        let mut u = self.clone();
        u.scheme = scheme.into();
        Ok(u)
    }

    /// Appends `/suffix` to the path (no doubled slash).
    pub fn join_path(&self, suffix: &str) -> Url {
        let mut u = self.clone();
        if !u.path.ends_with('/') {
            u.path.push('/');
        }
        u.path.push_str(suffix.trim_start_matches('/'));
        u
    }

    /// Whether the scheme is a secure one.
    pub fn is_secure(&self) -> bool {
        self.scheme == "https" || self.scheme == "wss"
    }

    /// Serializes with extra query parameters appended (values percent-encoded).
    pub fn to_string_with(&self, params: &[(&str, &str)]) -> String {
        let mut s = String::with_capacity(
            self.scheme.len() + self.authority.len() + self.path.len() + self.query.len() + 64,
        );
        s.push_str(&self.scheme);
        s.push_str("://");
        s.push_str(&self.authority);
        s.push_str(&self.path);
        let mut first = true;
        if !self.query.is_empty() {
            s.push('?');
            s.push_str(&self.query);
            first = false;
        }
        for (k, v) in params {
            s.push(if first { '?' } else { '&' });
            first = false;
            encode_component(k, &mut s);
            s.push('=');
            encode_component(v, &mut s);
        }
        s
    }
}

/// Percent-encodes like `encodeURIComponent`.
pub fn encode_component(v: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in v.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The fixed part of every rung's URL, resolved once when the engine is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub websocket: Option<Url>,
    pub sse: Option<Url>,
    pub polling: Option<Url>,
    pub send: Option<Url>,
    /// Key under which the working rung is remembered (`holdfast.rung <base url>`).
    pub memory_key: String,
}

impl Endpoints {
    /// Resolves every URL the options need against the page `href`.
    pub fn derive(options: &super::Options, href: &str) -> Result<Endpoints, HoldfastError> {
        let page_secure = parse_absolute(href).map(|u| u.is_secure()).unwrap_or(false);
        let base = if options.url.trim().is_empty() {
            None
        } else {
            Some(resolve(href, &options.url)?)
        };
        let rung = |t: Transport, suffix: &str, over: Option<&str>| -> Result<Url, HoldfastError> {
            let (u, original) = match over {
                Some(o) => (resolve(href, o)?, o),
                None => match &base {
                    Some(b) => (b.join_path(suffix), options.url.as_str()),
                    None => return Err(bad("", "is empty: set option `url`")),
                },
            };
            let u = u.for_transport(t, original)?;
            if page_secure && !u.is_secure() {
                return Err(bad(
                    original,
                    "is not secure but the page is served over https: browsers block it (mixed content); use https:/wss:",
                ));
            }
            Ok(u)
        };
        let has = |t| options.transports.contains(&t);
        let websocket = if has(Transport::WebSocket) {
            Some(rung(
                Transport::WebSocket,
                "ws",
                options.websocket_url.as_deref(),
            )?)
        } else {
            None
        };
        let sse = if has(Transport::Sse) {
            Some(rung(Transport::Sse, "sse", options.sse_url.as_deref())?)
        } else {
            None
        };
        let polling = if has(Transport::Polling) {
            Some(rung(
                Transport::Polling,
                "poll",
                options.poll_url.as_deref(),
            )?)
        } else {
            None
        };
        let send = if has(Transport::Sse) || has(Transport::Polling) || options.send_url.is_some() {
            Some(rung(
                Transport::Polling,
                "send",
                options.send_url.as_deref(),
            )?)
        } else {
            None
        };
        let key_base = match &base {
            Some(b) => b
                .for_transport(Transport::Sse, &options.url)?
                .to_string_with(&[]),
            None => websocket
                .as_ref()
                .or(sse.as_ref())
                .or(polling.as_ref())
                .map(|u| u.to_string_with(&[]))
                .unwrap_or_default(),
        };
        // Per endpoint, not per topic: which rung gets through is a property of the path
        // (proxies, firewalls), the same for every topic behind it.
        let mut memory_key = String::from("holdfast.rung ");
        memory_key.push_str(&key_base);
        Ok(Endpoints {
            websocket,
            sse,
            polling,
            send,
            memory_key,
        })
    }

    pub fn get(&self, t: Transport) -> Option<&Url> {
        match t {
            Transport::WebSocket => self.websocket.as_ref(),
            Transport::Sse => self.sse.as_ref(),
            Transport::Polling => self.polling.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Options;

    fn ws(href: &str, url: &str) -> String {
        let o = Options::new(url);
        Endpoints::derive(&o, href)
            .unwrap()
            .websocket
            .unwrap()
            .to_string_with(&[])
    }

    #[test]
    fn https_pages_get_wss_without_adding_a_port() {
        assert_eq!(
            ws("https://app.example.com/dash/x", "/realtime"),
            "wss://app.example.com/realtime/ws"
        );
        assert_eq!(
            ws("http://localhost:8080/", "/realtime"),
            "ws://localhost:8080/realtime/ws"
        );
        assert_eq!(
            ws("https://a.b:8443/p", "/realtime"),
            "wss://a.b:8443/realtime/ws"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_page_directory() {
        assert_eq!(
            ws("https://h/app/index.html", "realtime"),
            "wss://h/app/realtime/ws"
        );
        assert_eq!(ws("https://h/app/sub/", "../rt"), "wss://h/app/rt/ws");
        assert_eq!(
            ws("https://h/app/", "//other:9000/rt"),
            "wss://other:9000/rt/ws"
        );
    }

    #[test]
    fn absolute_urls_keep_their_host_and_map_the_scheme_per_rung() {
        let o = Options::new("wss://api.example.com/rt");
        let e = Endpoints::derive(&o, "").unwrap();
        assert_eq!(
            e.websocket.unwrap().to_string_with(&[]),
            "wss://api.example.com/rt/ws"
        );
        assert_eq!(
            e.sse.unwrap().to_string_with(&[]),
            "https://api.example.com/rt/sse"
        );
        assert_eq!(
            e.send.unwrap().to_string_with(&[]),
            "https://api.example.com/rt/send"
        );
    }

    #[test]
    fn per_rung_overrides_are_used_as_given() {
        let mut o = Options::new("/realtime");
        o.websocket_url = Some("/cv/ws/live".into());
        o.poll_url = Some("https://legacy.example.com/api/poll?x=1".into());
        let e = Endpoints::derive(&o, "https://h/").unwrap();
        assert_eq!(
            e.websocket.unwrap().to_string_with(&[("since", "5")]),
            "wss://h/cv/ws/live?since=5"
        );
        assert_eq!(
            e.polling.unwrap().to_string_with(&[("since", "a b")]),
            "https://legacy.example.com/api/poll?x=1&since=a%20b"
        );
    }

    #[test]
    fn insecure_urls_from_secure_pages_are_rejected_as_mixed_content() {
        let e = Endpoints::derive(&Options::new("ws://h/rt"), "https://h/").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidUrl);
        assert!(e.message.contains("mixed content"));
    }

    #[test]
    fn relative_urls_without_a_page_and_odd_schemes_are_errors() {
        assert_eq!(
            Endpoints::derive(&Options::new("/rt"), "")
                .unwrap_err()
                .code,
            ErrorCode::InvalidUrl
        );
        assert_eq!(
            Endpoints::derive(&Options::new("ftp://h/rt"), "")
                .unwrap_err()
                .code,
            ErrorCode::InvalidUrl
        );
        assert_eq!(
            Endpoints::derive(&Options::new("http:///x"), "")
                .unwrap_err()
                .code,
            ErrorCode::InvalidUrl
        );
    }
}
