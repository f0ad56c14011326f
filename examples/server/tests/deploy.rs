//! The deployment configurations of `examples/deploy/`: every nginx template passes
//! `nginx -t` and behaves as it says with the real nginx binary in front of the real server
//! (the recommended one carries all three rungs; the broken ones break exactly the rung they
//! claim to); the IIS web.config is well-formed XML with the rules it documents; the
//! Kubernetes manifests parse and carry the ingress annotations.
//!
//! Fails naming the apt package when nginx is missing, unless HOLDFAST_SKIP_NGINX=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const NGINX_TEMPLATES: [&str; 3] = [
    "holdfast.conf.template",
    "broken-no-upgrade.conf.template",
    "broken-sse-buffered.conf.template",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn nginx_bin() -> Option<&'static str> {
    if std::env::var("HOLDFAST_SKIP_NGINX").as_deref() == Ok("1") {
        eprintln!("HOLDFAST_SKIP_NGINX=1: skipping an nginx test");
        return None;
    }
    Some(
        ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "nginx not found: install it with `apt-get install -y nginx` \
                     (or set HOLDFAST_SKIP_NGINX=1 to skip the nginx tests)"
                )
            }),
    )
}

/// Renders a template into `prefix/nginx.conf`.
fn render(template: &str, prefix: &Path, listen: u16, upstream: u16) -> PathBuf {
    let text = std::fs::read_to_string(deploy_dir().join("nginx").join(template)).unwrap();
    let text = text
        .replace("@@PREFIX@@", prefix.to_str().unwrap())
        .replace("@@LISTEN@@", &format!("127.0.0.1:{listen}"))
        .replace("@@UPSTREAM@@", &format!("127.0.0.1:{upstream}"))
        .replace("@@BASE@@", "/realtime");
    assert!(!text.contains("@@"), "unreplaced placeholder in {template}");
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, text).unwrap();
    conf
}

struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(bin: &str, template: &str, upstream: u16, dir: &TempDir) -> Nginx {
        for _ in 0..5 {
            let port = free_port();
            let conf = render(template, &dir.0, port, upstream);
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn nginx");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { child, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            stop(&mut child);
        }
        panic!("nginx did not start with {template}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/realtime{path}", self.port)
    }
}

fn stop(child: &mut Child) {
    // SIGTERM: the master stops its workers (SIGKILL would orphan them).
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[test]
fn every_nginx_template_passes_nginx_t() {
    let Some(bin) = nginx_bin() else { return };
    for t in NGINX_TEMPLATES {
        let dir = TempDir::new("nginx-t");
        let conf = render(t, &dir.0, free_port(), free_port());
        let out = Command::new(bin)
            .arg("-t")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx -t failed for {t}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn the_recommended_nginx_config_carries_all_three_rungs() {
    let Some(bin) = nginx_bin() else { return };
    let s = Server::start(&["--trust-proxy"]);
    let dir = TempDir::new("nginx-ok");
    let n = Nginx::start(bin, "holdfast.conf.template", s.port, &dir);

    let mut ws = ws_connect(&format!("ws://127.0.0.1:{}/realtime/ws?topic=n", n.port)).await;
    assert!(matches!(ws_next(&mut ws).await, Frame::One(v) if v["type"] == "hello"));
    let mut sse = Sse::open(&n.url("/sse?topic=n"), None).await;
    // The hello arrives before any event is published: nothing is buffered.
    assert_eq!(sse.next().await.unwrap().event, "hello");

    publish_n(&s, "n", 0, 3).await;
    let (events, _) = ws_events(&mut ws, 3, &mut vec![]).await;
    assert_eq!(ns(&events), vec![0, 1, 2]);
    assert_eq!(sse.events(3, &mut vec![]).await.len(), 3);

    let first = events[0]["id"].as_str().unwrap();
    let v: Value = http()
        .get(n.url(&format!("/poll?topic=n&since={first}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ns(v["events"].as_array().unwrap()), vec![1, 2]);
}

#[tokio::test]
async fn the_no_upgrade_nginx_config_refuses_the_websocket_and_keeps_sse() {
    let Some(bin) = nginx_bin() else { return };
    let s = Server::start(&[]);
    let dir = TempDir::new("nginx-noup");
    let n = Nginx::start(bin, "broken-no-upgrade.conf.template", s.port, &dir);
    let url = format!("ws://127.0.0.1:{}/realtime/ws?topic=n", n.port);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 426, "the server names the missing upgrade");
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade must not pass a proxy without Upgrade headers"),
    }
    let mut sse = Sse::open(&n.url("/sse?topic=n"), None).await;
    assert_eq!(sse.next().await.unwrap().event, "hello");
}

#[tokio::test]
async fn the_buffering_nginx_config_holds_sse_bytes_back() {
    let Some(bin) = nginx_bin() else { return };
    let s = Server::start(&[]);
    let dir = TempDir::new("nginx-buf");
    let n = Nginx::start(bin, "broken-sse-buffered.conf.template", s.port, &dir);
    // Browsers always accept gzip.
    let mut resp = tokio::time::timeout(
        STEP,
        http()
            .get(n.url("/sse?topic=b"))
            .header("Accept-Encoding", "gzip")
            .send(),
    )
    .await
    .expect("response headers pass the proxy")
    .unwrap();
    // Headers arrive ...
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // ... but not the first bytes, which the server sent at once.
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), resp.chunk()).await;
    assert!(
        early.is_err(),
        "SSE bytes passed a buffering proxy: {early:?}"
    );
    // Once more than the proxy's buffer is pending, the stream arrives in a lump.
    // Incompressible filler, so the compressor's buffers really fill.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut filler = || {
        (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect::<String>()
    };
    let events: Vec<(&str, Value)> = (0..200)
        .map(|_| ("fill", Value::String(filler())))
        .collect();
    publish(&s, "b", &events).await;
    let chunk = tokio::time::timeout(STEP, resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!chunk.is_empty());
}

#[test]
fn the_iis_web_config_is_well_formed_and_proxies_every_rung() {
    let text = std::fs::read_to_string(deploy_dir().join("iis/web.config")).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("web.config is well-formed XML");
    let ws = doc
        .descendants()
        .find(|n| n.has_tag_name("webSocket"))
        .expect("<webSocket>");
    assert_eq!(ws.attribute("enabled"), Some("true"));
    let rules: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rule"))
        .collect();
    assert_eq!(rules.len(), 2);
    let upgrade_rule = &rules[0];
    assert!(upgrade_rule
        .descendants()
        .any(|n| n.has_tag_name("add") && n.attribute("input") == Some("{HTTP:Upgrade}")));
    assert!(upgrade_rule
        .descendants()
        .any(|n| n.has_tag_name("set")
            && n.attribute("name") == Some("HTTP_SEC_WEBSOCKET_EXTENSIONS")));
    for r in &rules {
        let action = r.descendants().find(|n| n.has_tag_name("action")).unwrap();
        assert_eq!(action.attribute("type"), Some("Rewrite"));
        assert!(action
            .attribute("url")
            .unwrap()
            .starts_with("http://localhost:8080/realtime/"));
    }
}

#[test]
fn the_kubernetes_manifests_parse_and_carry_the_ingress_annotations() {
    let text = std::fs::read_to_string(deploy_dir().join("kubernetes/holdfast.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, vec!["Secret", "Deployment", "Service", "Ingress"]);
    for d in &docs {
        assert!(d["apiVersion"].as_str().is_some());
        assert_eq!(d["metadata"]["name"].as_str(), Some("holdfast"));
    }
    let ingress = &docs[3];
    let ann = &ingress["metadata"]["annotations"];
    for (k, v) in [
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
        ("nginx.ingress.kubernetes.io/proxy-send-timeout", "3600"),
        ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
    ] {
        assert_eq!(ann[k].as_str(), Some(v), "{k}");
    }
    let deployment = &docs[1];
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--redis=")));
    // The arguments are real flags of this server.
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for a in args {
        let flag = a.split('=').next().unwrap();
        assert!(help.contains(flag), "{flag} is not a holdfast-server flag");
    }
}

#[tokio::test]
async fn behind_the_recommended_nginx_config_client_headers_do_not_pass_the_cap_or_reach_the_log() {
    let Some(bin) = nginx_bin() else { return };
    let s = Server::start(&[
        "--trust-proxy",
        "--conns-per-ip",
        "2",
        "--token",
        "t0ken-in-query",
    ]);
    let dir = TempDir::new("nginx-xff");
    let n = Nginx::start(bin, "holdfast.conf.template", s.port, &dir);
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for i in 0..4 {
        let res = http()
            .get(n.url("/sse?topic=x&token=t0ken-in-query"))
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .header("X-Real-IP", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        held.push(res);
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "headers written by the client were believed"
    );
    // Publishing through the proxy needs the key even though nginx connects from loopback.
    let res = http()
        .post(n.url("/publish?topic=x"))
        .json(&serde_json::json!({"type": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    drop(held);
    drop(n);
    let log = std::fs::read_to_string(dir.0.join("access.log")).unwrap();
    assert!(log.contains("/realtime/sse"), "{log}");
    assert!(
        !log.contains("t0ken-in-query"),
        "the token reached the access log"
    );
}
