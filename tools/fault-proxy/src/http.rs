//! Just enough HTTP/1.1 for a proxy: read a bounded request or response head, tell an
//! upgrade from a plain request, and re-encode heads with the hop-by-hop headers replaced.
//!
//! Contract: heads are at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers; anything
//! larger or unparsable is a [`HeadError`], never a panic. Bodies are never parsed: the proxy
//! forces `Connection: close`, so a body ends where the connection ends.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request or response head accepted (nginx's default large buffers are 4 × 8 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 128;

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed before sending a single byte.
    Closed,
    /// The peer closed in the middle of the head.
    Truncated,
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers.
    TooLarge,
    /// Not HTTP/1.x.
    Malformed(String),
    Io(std::io::Error),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Closed => write!(f, "closed before sending anything"),
            HeadError::Truncated => write!(f, "closed in the middle of the head"),
            HeadError::TooLarge => write!(f, "head over {MAX_HEAD} bytes or {MAX_HEADERS} headers"),
            HeadError::Malformed(m) => write!(f, "malformed head: {m}"),
            HeadError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

type Headers = Vec<(String, Vec<u8>)>;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Headers,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The comma-separated tokens of every `Connection` header, lower-cased.
fn connection_tokens(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Headers that describe one hop and never travel through a proxy, plus those the
/// `Connection` header names (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str, tokens: &[String]) -> bool {
    const HOP: [&str; 4] = ["connection", "keep-alive", "proxy-connection", "upgrade"];
    let lower = name.to_ascii_lowercase();
    HOP.contains(&lower.as_str()) || tokens.contains(&lower)
}

fn encode_headers(out: &mut Vec<u8>, headers: &Headers, keep: impl Fn(&str) -> bool) {
    for (name, value) in headers {
        if keep(name) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl RequestHead {
    /// The path without query or fragment (absolute-form targets are reduced to their path).
    pub fn path(&self) -> &str {
        let mut t = self.target.as_str();
        if let Some(rest) = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
        {
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
        let end = t.find(['?', '#']).unwrap_or(t.len());
        &t[..end]
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }

    /// An upgrade request: an `Upgrade` header and `upgrade` among the `Connection` tokens.
    pub fn is_upgrade(&self) -> bool {
        self.header("upgrade").is_some()
            && connection_tokens(&self.headers)
                .iter()
                .any(|t| t == "upgrade")
    }

    /// `Content-Length`, if present and valid.
    pub fn content_length(&self) -> Option<usize> {
        std::str::from_utf8(self.header("content-length")?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The head to send upstream. `keep_upgrade` forwards `Upgrade` with `Connection:
    /// Upgrade`; otherwise every hop-by-hop header goes and `Connection: close` is added, so
    /// each connection carries exactly one request.
    pub fn encode_for_upstream(&self, keep_upgrade: bool) -> Vec<u8> {
        let tokens = connection_tokens(&self.headers);
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.target).as_bytes());
        encode_headers(&mut out, &self.headers, |n| !is_hop_by_hop(n, &tokens));
        if keep_upgrade {
            if let Some(v) = self.header("upgrade") {
                out.extend_from_slice(b"Upgrade: ");
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
        } else {
            out.extend_from_slice(b"Connection: close\r\n\r\n");
        }
        out
    }
}

impl ResponseHead {
    /// The head to send to the client with `Connection: close` in place of the upstream's
    /// hop-by-hop headers.
    pub fn encode_close(&self) -> Vec<u8> {
        let tokens = connection_tokens(&self.headers);
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", self.code, self.reason).as_bytes());
        encode_headers(&mut out, &self.headers, |n| !is_hop_by_hop(n, &tokens));
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out
    }
}

fn owned_headers(raw: &[httparse::Header<'_>]) -> Headers {
    raw.iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

enum Parsed<T> {
    Done(T, usize),
    Partial,
}

fn parse_request(buf: &[u8]) -> Result<Parsed<RequestHead>, HeadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Parsed::Done(
            RequestHead {
                method: req.method.unwrap_or("GET").to_string(),
                target: req.path.unwrap_or("/").to_string(),
                headers: owned_headers(req.headers),
            },
            len,
        )),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

fn parse_response(buf: &[u8]) -> Result<Parsed<ResponseHead>, HeadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Parsed::Done(
            ResponseHead {
                code: res.code.unwrap_or(502),
                reason: res.reason.unwrap_or("").to_string(),
                headers: owned_headers(res.headers),
            },
            len,
        )),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

async fn read_head<R, T>(
    r: &mut R,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Result<Parsed<T>, HeadError>,
    mut on_read: impl FnMut(usize),
) -> Result<(T, usize), HeadError>
where
    R: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 8192];
    loop {
        if !buf.is_empty() {
            if let Parsed::Done(head, len) = parse(buf)? {
                return Ok((head, len));
            }
            if buf.len() >= MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
        }
        let n = r.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                HeadError::Closed
            } else {
                HeadError::Truncated
            });
        }
        on_read(n);
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a request head into `buf` (which may already hold bytes); returns the head and its
/// length in `buf`. Bytes after the head stay in `buf`.
pub async fn read_request_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(RequestHead, usize), HeadError> {
    read_head(r, buf, parse_request, |_| {}).await
}

/// Reads a response head into `buf`, calling `on_read` for every chunk read.
pub async fn read_response_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    on_read: impl FnMut(usize),
) -> Result<(ResponseHead, usize), HeadError> {
    read_head(r, buf, parse_response, on_read).await
}

/// A complete response written by the proxy itself (errors, refusals, the control API).
pub fn simple_response(
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The reason phrase for the statuses the proxy writes itself.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> RequestHead {
        match parse_request(raw.as_bytes()) {
            Ok(Parsed::Done(h, _)) => h,
            _ => panic!("not a complete head: {raw:?}"),
        }
    }

    #[test]
    fn an_upgrade_needs_both_the_upgrade_header_and_the_connection_token() {
        assert!(req(
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"
        )
        .is_upgrade());
        assert!(!req("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").is_upgrade());
        assert!(!req("GET /ws HTTP/1.1\r\nConnection: upgrade\r\n\r\n").is_upgrade());
    }

    #[test]
    fn a_forwarded_plain_request_carries_connection_close_and_no_hop_by_hop_headers() {
        let h = req("GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nUpgrade: websocket\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\n");
        let out = String::from_utf8(h.encode_for_upstream(false)).unwrap();
        assert_eq!(
            out,
            "GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(h.path(), "/a");
    }

    #[test]
    fn a_forwarded_upgrade_keeps_the_upgrade_header() {
        let h = req("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n");
        let out = String::from_utf8(h.encode_for_upstream(true)).unwrap();
        assert_eq!(out, "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: k\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    }

    #[test]
    fn absolute_form_targets_are_matched_by_their_path() {
        assert_eq!(
            req("GET http://h:1/realtime/sse?x HTTP/1.1\r\n\r\n").path(),
            "/realtime/sse"
        );
        assert_eq!(req("GET http://h:1 HTTP/1.1\r\n\r\n").path(), "/");
    }

    #[tokio::test]
    async fn random_bytes_never_panic_the_head_readers() {
        // A fixed-seed xorshift: the same 2,000 inputs on every run.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"GET POST HTTP/1.1 \r\n:;,Upgrade Connection 0123456789\x00\xff";
        for _ in 0..2000 {
            let len = (next() % 300) as usize;
            let mut input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 2 == 0 {
                input.splice(0..0, b"HTTP/1.1 200 OK\r\n".iter().copied());
            }
            let mut buf = Vec::new();
            if let Ok((head, len)) = read_request_head(&mut input.as_slice(), &mut buf).await {
                assert!(len <= buf.len());
                let _ = (
                    head.path(),
                    head.is_upgrade(),
                    head.content_length(),
                    head.encode_for_upstream(true),
                );
            }
            buf.clear();
            if let Ok((head, len)) =
                read_response_head(&mut input.as_slice(), &mut buf, |_| {}).await
            {
                assert!(len <= buf.len());
                let _ = head.encode_close();
            }
        }
    }

    #[tokio::test]
    async fn garbage_and_oversized_heads_are_errors_not_panics() {
        let mut buf = Vec::new();
        let mut garbage: &[u8] = b"\x00\x01\x02 nonsense\r\n\r\n";
        assert!(matches!(
            read_request_head(&mut garbage, &mut buf).await,
            Err(HeadError::Malformed(_))
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let mut r = big.as_bytes();
        buf.clear();
        assert!(matches!(
            read_request_head(&mut r, &mut buf).await,
            Err(HeadError::TooLarge)
        ));
        let mut empty: &[u8] = b"";
        buf.clear();
        assert!(matches!(
            read_request_head(&mut empty, &mut buf).await,
            Err(HeadError::Closed)
        ));
        let mut half: &[u8] = b"GET / HTTP/1.1\r\nHo";
        buf.clear();
        assert!(matches!(
            read_request_head(&mut half, &mut buf).await,
            Err(HeadError::Truncated)
        ));
    }
}
