//! The size floor: Holdfast's engine alone in wasm.
//!
//! Contract: this builds the `holdfast` crate without its `browser` feature (the engine and
//! `JsonValue` for `JsValue`, no web layer, no bindings) behind the narrowest bridge that
//! keeps every part of the engine reachable: every [`Input`] variant is fed from JS, every
//! [`Output`] goes to one imported function, frames are decoded by the engine's own
//! decoders and SSE parser, and the snapshot and diagnostics are read out. Nothing here is
//! used by the package; `cargo xtask size-floor` measures it, so the size of the engine
//! itself can be told apart from the web layer, bindings and wrapper. A lower bound: a real
//! client also needs sockets, fetch, timers and the JS API.
#![cfg(target_arch = "wasm32")]

use holdfast::engine::*;
use js_sys::Array;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// Every output, as a kind number and up to three values.
    fn out(kind: u32, a: JsValue, b: JsValue, c: JsValue);
}

fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}
fn os(v: &Option<String>) -> JsValue {
    v.as_deref().map_or(JsValue::NULL, s)
}
fn err(e: &HoldfastError) -> JsValue {
    let a = Array::new();
    a.push(&s(e.code.as_str()));
    a.push(&s(&e.message));
    a.push(&e.transport.map_or(JsValue::NULL, |t| s(t.as_str())));
    a.into()
}

#[wasm_bindgen]
pub struct Floor {
    engine: Engine<JsValue>,
    sse: SseParser,
}

#[wasm_bindgen]
impl Floor {
    /// Every option comes from JS (strings in `t`, numbers in `n`, in field order), so the
    /// optimizer cannot fold the defaults into the engine's code.
    #[wasm_bindgen(constructor)]
    pub fn new(
        t: Vec<String>,
        n: &[f64],
        href: &str,
        seed: f64,
        now: f64,
    ) -> Result<Floor, JsValue> {
        let text = |i: usize| t.get(i).cloned().unwrap_or_default();
        let opt_text = |i: usize| t.get(i).filter(|v| !v.is_empty()).cloned();
        let num = |i: usize| n.get(i).copied().unwrap_or(0.0);
        let ms = |i: usize| num(i) as u64;
        let flag = |i: usize| num(i) != 0.0;
        let mut o = Options::new(&text(0));
        o.topic = opt_text(1);
        o.since = opt_text(2);
        o.websocket_url = opt_text(3);
        o.sse_url = opt_text(4);
        o.poll_url = opt_text(5);
        o.send_url = opt_text(6);
        o.params = vec![(text(7), text(8))];
        o.transports = t
            .iter()
            .skip(9)
            .filter_map(|name| Transport::parse(name))
            .collect();
        o.use_token = flag(0);
        o.backoff = BackoffOptions {
            initial_ms: ms(1),
            factor: num(2),
            jitter: num(3),
            max_ms: ms(4),
            spread_ms: ms(5),
            healthy_after_ms: ms(6),
            max_attempts: flag(7).then(|| num(7) as u32),
        };
        o.heartbeat = HeartbeatOptions {
            ping_interval_ms: ms(8),
            pong_timeout_ms: ms(9),
            max_missed: num(10) as u32,
            server_silence_ms: ms(11),
            adaptive: flag(12),
            clock_jump_ms: ms(13),
        };
        o.timeouts = TimeoutOptions {
            open_ms: ms(14),
            race_ms: ms(15),
            first_frame_ms: ms(16),
            sse_first_bytes_ms: ms(17),
        };
        o.probe = ProbeOptions {
            enabled: flag(18),
            initial_ms: ms(19),
            max_ms: ms(20),
        };
        o.memory = MemoryOptions {
            enabled: flag(21),
            ttl_ms: ms(22),
        };
        o.polling = PollingOptions {
            wait_ms: flag(23).then(|| ms(23)),
            interval_ms: ms(24),
            pause_when_hidden: flag(25),
        };
        o.outbox_capacity = ms(26) as usize;
        o.dedup_window = ms(27) as usize;
        o.max_frame_bytes = ms(28) as usize;
        o.diagnostics_capacity = ms(29) as usize;
        let engine =
            Engine::new(o, PageContext::new(href), seed as u64, now as u64).map_err(|e| err(&e))?;
        let max = engine.max_frame_bytes();
        Ok(Floor {
            engine,
            sse: SseParser::new(max),
        })
    }
    /// One input of kind `kind` (the order of [`Input`]'s variants), built from the
    /// arguments that kind needs.
    pub fn handle(&mut self, kind: u32, conn: u32, n: f64, text: String, v: JsValue, now: f64) {
        let conn = ConnId(conn);
        let input = match kind {
            0 => Input::Start,
            1 => Input::Close,
            2 => Input::Timeout,
            3 => Input::Token(if n > 0.0 { Ok(text) } else { Err(text) }),
            4 => Input::Opened { conn },
            5 => Input::HttpStatus {
                conn,
                status: n as u16,
                retry_after_ms: Some(n as u64),
                error_code: Some(text),
            },
            6 => Input::Activity {
                conn,
                bytes: n as usize,
            },
            7 => match decode::decode_frame(&v, self.engine.interop()) {
                Ok(items) => Input::Items { conn, items },
                Err(error) => Input::BadFrame { conn, error },
            },
            8 => match decode::decode_text(
                &text,
                self.engine.interop(),
                self.engine.max_frame_bytes(),
            ) {
                Ok(items) => Input::Items { conn, items },
                Err(error) => Input::BadFrame { conn, error },
            },
            9 => {
                let mut evs = Vec::new();
                self.sse.feed(text.as_bytes(), &mut evs);
                let mut items = Vec::new();
                for e in evs {
                    if let Ok(i) = decode::decode_sse_event::<JsValue>(&e, self.engine.interop()) {
                        items.push(i)
                    }
                }
                Input::Items { conn, items }
            }
            10 => Input::Closed {
                conn,
                code: Some(n as u16),
                reason: text,
            },
            11 => Input::SendResult {
                msg_id: MessageId(text.clone()),
                result: if v.is_null() {
                    Ok(())
                } else {
                    Err(HttpFailure {
                        status: Some(n as u16),
                        retry_after_ms: None,
                        error_code: Some(text),
                    })
                },
            },
            12 => Input::Online,
            13 => Input::Offline,
            14 => Input::Visible,
            15 => Input::Hidden,
            _ => Input::Remembered(RememberedRung::decode(&text)),
        };
        self.engine.handle(input, now as u64);
        self.drain();
    }
    pub fn send(&mut self, data: JsValue, now: f64) -> Result<JsValue, JsValue> {
        let r = self
            .engine
            .send(data, now as u64)
            .map(|m| s(&m.0))
            .map_err(|e| err(&e));
        self.drain();
        r
    }
    pub fn timeout(&self) -> Option<f64> {
        self.engine.poll_timeout().map(|t| t as f64)
    }
    pub fn snapshot(&self) -> Array {
        let sn = self.engine.snapshot();
        let a = Array::new();
        a.push(&s(sn.status.as_str()));
        a.push(&sn.transport.map_or(JsValue::NULL, |t| s(t.as_str())));
        a.push(&os(&sn.cursor));
        a.push(&(sn.attempt as f64).into());
        a.push(
            &sn.next_retry_at
                .map_or(JsValue::NULL, |t| (t as f64).into()),
        );
        a.push(&(sn.outbox_len as f64).into());
        a.push(&sn.last_error.as_ref().map_or(JsValue::NULL, err));
        a.push(&(sn.ping_interval_ms as f64).into());
        a
    }
    pub fn diagnostics(&self) -> Array {
        let d = self.engine.diagnostics();
        let a = Array::new();
        for at in &d.attempts {
            let x = Array::new();
            x.push(&s(at.transport.as_str()));
            x.push(&at.probe.into());
            x.push(&s(&at.url));
            x.push(&(at.started_at as f64).into());
            x.push(&at.opened_at.map_or(JsValue::NULL, |t| (t as f64).into()));
            x.push(
                &at.first_data_at
                    .map_or(JsValue::NULL, |t| (t as f64).into()),
            );
            x.push(&at.ended_at.map_or(JsValue::NULL, |t| (t as f64).into()));
            x.push(&at.failure.as_ref().map_or(JsValue::NULL, err));
            a.push(&x);
        }
        for n in &d.notes {
            a.push(&s(&n.text));
        }
        a.push(&s(self.engine.memory_key()));
        a
    }
    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Command(c) => match c {
                    Command::Open {
                        conn,
                        transport,
                        url,
                        token,
                        last_event_id,
                    } => out(0, (conn.0 as f64).into(), s(transport.as_str()), {
                        let a = Array::new();
                        a.push(&s(&url));
                        a.push(&token.map_or(JsValue::NULL, |t| s(t.expose())));
                        a.push(&os(&last_event_id));
                        a.into()
                    }),
                    Command::CloseConn { conn, code } => out(
                        1,
                        (conn.0 as f64).into(),
                        (code as f64).into(),
                        JsValue::NULL,
                    ),
                    Command::SendPing { conn, text } => {
                        out(2, (conn.0 as f64).into(), s(&text), JsValue::NULL)
                    }
                    Command::SendUpstream { conn, msg_id, data } => {
                        out(3, (conn.0 as f64).into(), s(&msg_id.0), data)
                    }
                    Command::Post {
                        msg_id,
                        url,
                        token,
                        data,
                    } => out(
                        4,
                        s(&msg_id.0),
                        {
                            let a = Array::new();
                            a.push(&s(&url));
                            a.push(&token.map_or(JsValue::NULL, |t| s(t.expose())));
                            a.into()
                        },
                        data,
                    ),
                    Command::RequestToken => out(5, JsValue::NULL, JsValue::NULL, JsValue::NULL),
                    Command::Remember { key, value } => {
                        out(6, s(&key), s(&value.encode()), JsValue::NULL)
                    }
                    Command::Forget { key } => out(7, s(&key), JsValue::NULL, JsValue::NULL),
                },
                Output::Event(e) => match e {
                    AppEvent::Message { id, kind, data } => out(8, os(&id), s(&kind), data),
                    AppEvent::Gap {
                        reason,
                        cursor,
                        oldest,
                    } => out(9, s(&reason), os(&cursor), os(&oldest)),
                    AppEvent::Error(e) => out(10, err(&e), JsValue::NULL, JsValue::NULL),
                    AppEvent::Acked { msg_id } => {
                        out(11, s(&msg_id.0), JsValue::NULL, JsValue::NULL)
                    }
                    AppEvent::SendFailed { msg_id, error } => {
                        out(12, s(&msg_id.0), err(&error), JsValue::NULL)
                    }
                    AppEvent::StateChanged => out(13, JsValue::NULL, JsValue::NULL, JsValue::NULL),
                    AppEvent::CursorMoved => out(14, JsValue::NULL, JsValue::NULL, JsValue::NULL),
                },
            }
        }
    }
}
