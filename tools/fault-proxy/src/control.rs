//! The control API under `/__fault/`, served on the proxy's own listener and never forwarded.
//!
//! | request | answer |
//! |---|---|
//! | `POST /__fault/config` + JSON [`Config`] | replaces the active faults: `{"ok":true,"config":{...}}`, or 400 `{"error":"bad_config","message":...}` (the old config stays) |
//! | `GET /__fault/config` | the active config |
//! | `POST /__fault/cut` | cuts every open proxied connection now: `{"ok":true,"open":N}` |
//! | `GET /__fault/stats` | the counters ([`crate::Snapshot`]) |
//!
//! Every answer is JSON with `Connection: close` and permissive CORS, so a test page can call
//! it too.

use crate::config::Config;
use crate::conn::{error_json, respond_and_close};
use crate::http::{self, RequestHead};
use crate::stats::inc;
use crate::Shared;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const MAX_BODY: usize = 64 * 1024;
const CORS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "content-type"),
];

pub(crate) async fn handle(
    shared: &Shared,
    mut client: TcpStream,
    head: RequestHead,
    mut body: Vec<u8>,
) {
    inc(&shared.stats.control_requests);
    let (code, json) = match read_body(&mut client, &head, &mut body).await {
        Ok(()) => route(shared, &head.method, head.path(), &body),
        Err((code, json)) => (code, json),
    };
    let response =
        http::simple_response(code, http::reason(code), "application/json", &json, &CORS);
    respond_and_close(client, &response).await;
}

async fn read_body(
    client: &mut TcpStream,
    head: &RequestHead,
    body: &mut Vec<u8>,
) -> Result<(), (u16, Vec<u8>)> {
    if head.header("transfer-encoding").is_some() {
        return Err((
            411,
            error_json(
                "length_required",
                "send the control request with Content-Length",
            ),
        ));
    }
    let len = head.content_length().unwrap_or(0);
    if len > MAX_BODY {
        return Err((
            413,
            error_json(
                "too_large",
                &format!("control bodies are limited to {MAX_BODY} bytes"),
            ),
        ));
    }
    let mut chunk = [0u8; 8192];
    while body.len() < len {
        match timeout(Duration::from_secs(5), client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => {
                return Err((
                    400,
                    error_json("bad_request", "the body ended before Content-Length bytes"),
                ))
            }
        }
    }
    body.truncate(len);
    Ok(())
}

fn route(shared: &Shared, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let known = ["/__fault/config", "/__fault/cut", "/__fault/stats"];
    match (method, path) {
        ("OPTIONS", _) => (200, b"{}".to_vec()),
        ("GET", "/__fault/stats") => (200, json(&shared.stats.snapshot())),
        ("GET", "/__fault/config") => (200, json(&*shared.config())),
        ("POST", "/__fault/config") => match Config::from_json(body) {
            Ok(config) => {
                let answer = serde_json::json!({ "ok": true, "config": &config });
                shared.set_config(config);
                (200, answer.to_string().into_bytes())
            }
            Err(e) => (400, error_json(e.code, &e.message)),
        },
        ("POST", "/__fault/cut") => {
            let open = shared.stats.open.load(Ordering::Relaxed);
            shared.cut_tx.send_modify(|generation| *generation += 1);
            (200, serde_json::json!({ "ok": true, "open": open }).to_string().into_bytes())
        }
        (_, p) if known.contains(&p) => (
            405,
            error_json("method_not_allowed", "use GET for /__fault/stats and /__fault/config, POST for /__fault/config and /__fault/cut"),
        ),
        _ => (
            404,
            error_json("not_found", "control paths: POST /__fault/config, GET /__fault/config, POST /__fault/cut, GET /__fault/stats"),
        ),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| error_json("internal", &e.to_string()))
}
