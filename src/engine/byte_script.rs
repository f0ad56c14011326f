//! Arbitrary input sequences for the engine, spelled by bytes: shared by the native property
//! test (`proptests.rs`) and the `engine_inputs` fuzz target, so both explore the same space.
//!
//! Contract: [`drive`] reads `data` three bytes at a time (operation, argument, argument) as
//! engine inputs, including for connections the engine never opened and a wall clock that
//! steps back, and panics only when an invariant breaks: the engine panicked, or a deadline
//! at or before `now` was still reported after the `Timeout` that should consume it.

use super::*;

/// Runs the engine on the inputs `data` spells and panics if an invariant breaks.
pub fn drive(data: &[u8]) {
    let mut o = Options::new("/realtime");
    o.use_token = data.first().is_some_and(|b| b & 1 == 1);
    o.outbox_capacity = 4;
    o.diagnostics_capacity = 4;
    let mut e = Engine::<u32>::new(o, PageContext::new("https://h/"), 1, 0).expect("valid");
    let mut now = 0u64;
    let mut last_conn = 0u32;
    for w in data.chunks(3) {
        let (op, a, b) = (w[0], *w.get(1).unwrap_or(&0), *w.get(2).unwrap_or(&0));
        let conn = ConnId(if a & 0x80 != 0 {
            a as u32 & 0x7f
        } else {
            last_conn
        });
        let input = match op % 20 {
            0 => Input::Start,
            1 => Input::Close,
            2 | 3 => {
                now = e.poll_timeout().unwrap_or(now).max(now) + (a as u64) * 7;
                Input::Timeout
            }
            4 => Input::Token(if b & 1 == 0 {
                Ok("t".into())
            } else {
                Err("x".into())
            }),
            5 => Input::Opened { conn },
            6 => Input::HttpStatus {
                conn,
                status: 200 + (b as u16) * 2,
                retry_after_ms: Some(if b == 255 { u64::MAX } else { b as u64 * 100 }),
                error_code: None,
            },
            7 => Input::Activity {
                conn,
                bytes: b as usize,
            },
            8 | 9 => {
                let item = match b % 8 {
                    0 => Item::Hello {
                        cursor: Some((b as u32).to_string()),
                        heartbeat_ms: Some(if a == 255 { u64::MAX } else { a as u64 * 100 }),
                    },
                    1 => Item::Heartbeat,
                    2 => Item::Pong,
                    3 => Item::Reset {
                        reason: "r".into(),
                        oldest: (b & 8 == 0).then(|| "1".into()),
                    },
                    4 => Item::Ack { id: "m".into() },
                    5 => Item::ServerError {
                        code: "token_expired".into(),
                        message: String::new(),
                    },
                    _ => Item::Event {
                        id: (b & 16 == 0).then(|| (a as u32).to_string()),
                        kind: "t".into(),
                        data: a as u32,
                    },
                };
                Input::Items {
                    conn,
                    items: vec![item],
                }
            }
            10 => Input::BadFrame {
                conn,
                error: if b & 1 == 0 {
                    super::FrameError::InvalidJson
                } else {
                    super::FrameError::TooLarge { size: 9, limit: 1 }
                },
            },
            11 => Input::Closed {
                conn,
                code: if b & 1 == 0 {
                    None
                } else {
                    Some(1000 + (a as u16) * 16)
                },
                reason: if b == 255 {
                    u64::MAX.to_string()
                } else {
                    (b / 2).to_string()
                },
            },
            12 => Input::SendResult {
                msg_id: MessageId(String::from("x")),
                result: Err(super::HttpFailure {
                    status: Some(400 + b as u16),
                    ..Default::default()
                }),
            },
            13 => Input::Online,
            14 => Input::Offline,
            15 => Input::Visible,
            16 => Input::Hidden,
            17 => Input::Remembered(Some(RememberedRung {
                transport: Transport::Sse,
                expires_at: b as u64 * 1000,
            })),
            18 => {
                let _ = e.send(b as u32, now);
                Input::Hidden
            }
            _ => {
                // The wall clock may also step back (NTP): nothing may panic.
                if b & 3 == 3 {
                    now = now.saturating_sub((a as u64) * 1000);
                } else {
                    now += (a as u64) * 1000;
                }
                Input::Timeout
            }
        };
        e.handle(input, now);
        while let Some(out) = e.poll_output() {
            if let Output::Command(Command::Open { conn, .. }) = out {
                last_conn = conn.0;
            }
        }
        if let Some(t) = e.poll_timeout() {
            if t <= now {
                e.handle(Input::Timeout, now);
                while e.poll_output().is_some() {}
                assert!(
                    e.poll_timeout().is_none_or(|t2| t2 > now),
                    "deadline {t} not consumed at {now}"
                );
            }
        }
    }
}
