//! The demo generator (`--demo`): a simulated deployment on topic `demo`, repeating forever,
//! shaped like the deployment-tracking seed: `status` events with a stage and progress,
//! `progress` events, and `log` lines.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::hub::{now_ms, Hub};

pub const TOPIC: &str = "demo";

const STAGES: &[(&str, u32, &[&str])] = &[
    (
        "queued",
        0,
        &["deployment accepted", "waiting for a builder"],
    ),
    (
        "installing",
        10,
        &["npm ci", "added 812 packages in 9s", "restored build cache"],
    ),
    (
        "building",
        35,
        &[
            "tsc -p .",
            "esbuild: 214 modules bundled",
            "wasm-opt -Oz: 142 KB -> 67 KB",
        ],
    ),
    (
        "testing",
        65,
        &["running 148 tests", "148 passed", "coverage 91.2%"],
    ),
    (
        "deploying",
        85,
        &[
            "uploading artifacts",
            "switching traffic 10% -> 100%",
            "health checks passing",
        ],
    ),
    ("live", 100, &["deployment is live"]),
];

pub async fn run(hub: Arc<Hub>, interval_ms: u64) {
    let step = Duration::from_millis(interval_ms.max(10));
    let mut n: u64 = 0;
    loop {
        n += 1;
        let id = format!("deploy-{n}");
        for (i, (stage, progress, lines)) in STAGES.iter().enumerate() {
            let next = STAGES.get(i + 1).map(|s| s.1).unwrap_or(100);
            let mut events = vec![(
                "status".to_string(),
                json!({"deploymentId": id, "status": stage, "progress": progress,
                       "stage": i + 1, "stages": STAGES.len(), "timestamp": now_ms()})
                .to_string(),
            )];
            for (j, line) in lines.iter().enumerate() {
                events.push((
                    "log".to_string(),
                    json!({"deploymentId": id, "line": line, "timestamp": now_ms()}).to_string(),
                ));
                let p = progress + (next - progress) * (j as u32 + 1) / (lines.len() as u32 + 1);
                events.push((
                    "progress".to_string(),
                    json!({"deploymentId": id, "percent": p}).to_string(),
                ));
            }
            for e in events {
                if let Err(err) = hub.publish(TOPIC, vec![e]).await {
                    tracing::warn!("demo publish failed: {err}");
                }
                tokio::time::sleep(step).await;
            }
        }
        tokio::time::sleep(step * 8).await;
    }
}
