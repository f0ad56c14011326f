//! Behaviour tests, one or more per item of the engine's contract, through the harness.

use serde_json::json;

use super::harness::{opts, H};
use super::*;

#[test]
fn the_first_connection_is_a_websocket_derived_from_the_page() {
    let h = H::started(opts());
    let (_, t, url) = h.last_conn();
    assert_eq!(t, Transport::WebSocket);
    assert_eq!(url, "wss://app.example.com/realtime/ws");
    assert_eq!(h.status(), Status::Connecting);
}

#[test]
fn a_working_websocket_delivers_events_in_order() {
    let mut h = H::started(opts());
    let c = h.connect_last();
    assert_eq!(h.status(), Status::Connected);
    assert_eq!(h.e.snapshot().transport, Some(Transport::WebSocket));
    h.events_on(c, &["1-0", "1-1", "2-0"]);
    assert_eq!(h.delivered(), ["1-0", "1-1", "2-0"]);
    assert_eq!(h.e.snapshot().cursor.as_deref(), Some("2-0"));
}

#[test]
fn a_closed_connection_reconnects_after_backoff_with_the_cursor_as_since() {
    let mut h = H::started(opts());
    let c = h.connect_last();
    h.events_on(c, &["5-0", "5-1"]);
    h.closed(c, Some(1001));
    assert_eq!(h.status(), Status::Reconnecting);
    assert!(h.open.is_empty());
    let at = h.e.snapshot().next_retry_at.expect("a retry is scheduled");
    assert!(
        at <= h.now + 5_000,
        "the first retry is within the spread window"
    );
    h.advance(5_000);
    let (c2, t, url) = h.last_conn();
    assert_ne!(c2, c);
    assert_eq!(t, Transport::WebSocket);
    assert_eq!(url, "wss://app.example.com/realtime/ws?since=5-1");
    h.opened(c2);
    h.events_on(c2, &["5-1", "5-2"]);
    assert_eq!(h.delivered(), ["5-0", "5-1", "5-2"]);
}

// ----- 1. ladder and URLs ---------------------------------------------------------------

#[test]
fn falls_back_to_sse_when_the_websocket_upgrade_is_refused() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.closed(ws, Some(1006));
    let (sse, t, url) = h.last_conn();
    assert_eq!(t, Transport::Sse);
    assert_eq!(url, "https://app.example.com/realtime/sse");
    assert_eq!(h.errors(), [ErrorCode::UpgradeRefused]);
    assert!(
        h.error_messages()[0].contains("trying sse"),
        "{:?}",
        h.error_messages()
    );
    h.opened(sse);
    h.input(Input::Activity {
        conn: sse,
        bytes: 5,
    });
    assert_eq!(h.status(), Status::Connected);
    assert_eq!(h.e.snapshot().transport, Some(Transport::Sse));
}

#[test]
fn an_http_status_on_the_websocket_rung_is_an_upgrade_refusal_naming_the_status() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.input(Input::HttpStatus {
        conn: ws,
        status: 426,
        retry_after_ms: None,
        error_code: None,
    });
    assert_eq!(h.errors(), [ErrorCode::UpgradeRefused]);
    assert!(h.error_messages()[0].contains("HTTP 426"));
    assert_eq!(h.last_conn().1, Transport::Sse);
}

#[test]
fn falls_back_to_polling_when_sse_is_missing_too() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.closed(ws, None);
    let (sse, _, _) = h.last_conn();
    h.input(Input::HttpStatus {
        conn: sse,
        status: 404,
        retry_after_ms: None,
        error_code: None,
    });
    let (p, t, url) = h.last_conn();
    assert_eq!(t, Transport::Polling);
    assert_eq!(
        url, "https://app.example.com/realtime/poll?wait=0",
        "the first poll proves the rung at once"
    );
    h.opened(p);
    assert_eq!(h.status(), Status::Connected);
    h.events_on(p, &["1", "2"]);
    h.closed(p, None);
    let (p2, _, url2) = h.last_conn();
    assert_ne!(p2, p);
    assert_eq!(
        url2,
        "https://app.example.com/realtime/poll?since=2&wait=25000"
    );
    assert_eq!(h.delivered(), ["1", "2"]);
}

#[test]
fn the_ladder_can_be_reordered_or_cut() {
    let mut o = opts();
    o.transports = vec![Transport::Polling, Transport::Sse];
    let h = H::started(o);
    assert_eq!(h.last_conn().1, Transport::Polling);
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    let (c, _, _) = h.last_conn();
    h.closed(c, None);
    assert!(h.open.is_empty(), "no other rung to try");
    assert!(h.e.snapshot().next_retry_at.is_some());
}

#[test]
fn per_rung_urls_topic_and_params_are_used() {
    let mut o = opts();
    o.websocket_url = Some("wss://ws.example.com/live".into());
    o.topic = Some("deploy 7".into());
    o.params = vec![("tenant".into(), "a&b".into())];
    let h = H::started(o);
    assert_eq!(
        h.last_conn().2,
        "wss://ws.example.com/live?topic=deploy%207&tenant=a%26b"
    );
}

#[test]
fn an_empty_poll_waits_the_interval_before_asking_again() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    o.polling.wait_ms = None;
    o.polling.interval_ms = 2_000;
    let mut h = H::started(o);
    let (p, _, url) = h.last_conn();
    assert_eq!(url, "https://app.example.com/realtime/poll");
    h.opened(p);
    h.items(p, vec![]);
    h.closed(p, None);
    assert!(h.open.is_empty());
    h.advance(1_999);
    assert!(h.open.is_empty());
    h.advance(1);
    assert_eq!(h.open.len(), 1);
}

// ----- 2. failure classes ---------------------------------------------------------------

#[test]
fn a_peer_close_of_a_working_connection_retries_the_same_rung() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.closed(ws, Some(1000));
    assert_eq!(h.errors(), [ErrorCode::ClosedByPeer]);
    h.advance(5_000);
    assert_eq!(h.last_conn().1, Transport::WebSocket);
}

#[test]
fn unauthorized_asks_for_a_new_token_and_does_not_fall_back() {
    let mut o = opts();
    o.use_token = true;
    let mut h = H::started(o);
    assert!(h.open.is_empty());
    assert_eq!(h.count_cmd(|c| matches!(c, Command::RequestToken)), 1);
    h.input(Input::Token(Ok("secret-1".into())));
    let (ws, _, url) = h.last_conn();
    assert_eq!(url, "wss://app.example.com/realtime/ws?token=secret-1");
    h.opened(ws);
    h.hello(ws, None);
    h.input(Input::Closed {
        conn: ws,
        code: Some(4401),
        reason: "expired".into(),
    });
    assert!(
        h.errors().is_empty(),
        "a token that worked expired: refreshed quietly"
    );
    assert_eq!(h.count_cmd(|c| matches!(c, Command::RequestToken)), 2);
    h.input(Input::Token(Ok("secret-2".into())));
    let (ws2, t, url) = h.last_conn();
    assert_eq!(t, Transport::WebSocket, "at once, on the same rung");
    assert!(url.ends_with("token=secret-2"));
    // The fresh token is refused before any data: that is an error, and no fallback.
    h.opened(ws2);
    h.input(Input::Closed {
        conn: ws2,
        code: Some(4401),
        reason: "invalid".into(),
    });
    assert_eq!(h.errors(), [ErrorCode::Unauthorized]);
    assert_eq!(h.count_cmd(|c| matches!(c, Command::RequestToken)), 3);
    h.input(Input::Token(Ok("secret-3".into())));
    h.advance(2_000);
    let (_, t, url) = h.last_conn();
    assert_eq!(
        t,
        Transport::WebSocket,
        "auth failures never step down the ladder"
    );
    assert!(url.ends_with("token=secret-3"));
}

#[test]
fn sse_and_polling_send_the_token_as_a_header_not_in_the_url() {
    let mut o = opts();
    o.use_token = true;
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    h.input(Input::Token(Ok("tok".into())));
    match h.cmds.last().unwrap() {
        Command::Open { url, token, .. } => {
            assert!(!url.contains("tok"));
            assert_eq!(token.as_ref().unwrap().expose(), "tok");
            assert_eq!(format!("{:?}", token), "Some(Secret(***))");
        }
        c => panic!("{c:?}"),
    }
}

#[test]
fn a_failing_token_provider_is_reported_and_retried_with_backoff() {
    let mut o = opts();
    o.use_token = true;
    let mut h = H::started(o);
    h.input(Input::Token(Err("login expired".into())));
    assert_eq!(h.errors(), [ErrorCode::TokenProvider]);
    assert!(h.error_messages()[0].contains("login expired"));
    h.advance(1_000);
    assert_eq!(h.count_cmd(|c| matches!(c, Command::RequestToken)), 2);
}

#[test]
fn rate_limiting_waits_at_least_retry_after() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    let (c, _, _) = h.last_conn();
    h.input(Input::HttpStatus {
        conn: c,
        status: 429,
        retry_after_ms: Some(20_000),
        error_code: Some("rate_limited".into()),
    });
    assert_eq!(h.errors(), [ErrorCode::RateLimited]);
    let at = h.e.snapshot().next_retry_at.unwrap();
    assert!(at >= h.now + 20_000);
    h.advance(19_999);
    assert!(h.open.is_empty());
    h.advance(2_001);
    assert_eq!(h.open.len(), 1);
}

#[test]
fn a_websocket_rate_limit_close_reads_the_seconds_from_the_reason() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.input(Input::Closed {
        conn: ws,
        code: Some(4429),
        reason: "12".into(),
    });
    assert_eq!(h.errors(), [ErrorCode::RateLimited]);
    assert!(h.e.snapshot().next_retry_at.unwrap() >= h.now + 12_000);
}

#[test]
fn a_bad_frame_is_reported_and_skipped_without_losing_the_stream() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.input(Input::BadFrame {
        conn: ws,
        error: FrameError::InvalidJson,
    });
    assert_eq!(h.errors(), [ErrorCode::BadFrame]);
    assert!(h.is_open(ws));
    h.events_on(ws, &["1"]);
    assert_eq!(h.delivered(), ["1"]);
}

#[test]
fn an_oversized_sse_event_is_reported_and_skipped_and_the_stream_stays_open() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    let c = h.connect_last();
    h.events_on(c, &["1"]);
    h.input(Input::BadFrame {
        conn: c,
        error: FrameError::TooLarge {
            size: 2 << 20,
            limit: 1 << 20,
        },
    });
    assert_eq!(h.errors(), [ErrorCode::FrameTooLarge]);
    assert!(h.error_messages()[0].contains("maxFrameBytes"));
    assert!(
        h.is_open(c),
        "the parser skipped the event; reconnecting would fetch it again"
    );
    h.events_on(c, &["3"]);
    assert_eq!(h.delivered(), ["1", "3"]);
}

#[test]
fn a_server_reset_becomes_one_gap_event() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.events_on(ws, &["100"]);
    h.items(
        ws,
        vec![Item::Reset {
            reason: "history trimmed".into(),
            oldest: Some("5".into()),
        }],
    );
    h.items(
        ws,
        vec![Item::Reset {
            reason: "history trimmed".into(),
            oldest: Some("5".into()),
        }],
    );
    assert_eq!(h.gaps(), 1);
    match h
        .events
        .iter()
        .find(|e| matches!(e, AppEvent::Gap { .. }))
        .unwrap()
    {
        AppEvent::Gap { cursor, oldest, .. } => {
            assert_eq!(cursor.as_deref(), Some("100"));
            assert_eq!(oldest.as_deref(), Some("5"));
        }
        _ => unreachable!(),
    }
    // Delivery continues from the oldest event the server holds, even below the old cursor.
    h.events_on(ws, &["5", "6"]);
    assert_eq!(h.delivered(), ["100", "5", "6"]);
    assert_eq!(
        h.e.snapshot().last_error.as_ref().unwrap().code,
        ErrorCode::ServerReset
    );
}

#[test]
fn a_server_error_frame_is_reported_and_the_stream_continues() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.items(
        ws,
        vec![Item::ServerError {
            code: "forbidden".into(),
            message: "no access".into(),
        }],
    );
    assert_eq!(h.errors(), [ErrorCode::ServerError]);
    assert!(h.error_messages()[0].contains("no access"));
    assert!(h.is_open(ws));
}

#[test]
fn a_connection_that_never_opens_times_out() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket];
    let mut h = H::started(o);
    h.advance(10_000);
    assert_eq!(h.errors(), [ErrorCode::OpenTimeout]);
}

// ----- 2b. liveness without a server preamble ------------------------------------------------

/// A poll body's `cursor` (decoded as a trailing hello).
fn poll_cursor(c: &str) -> Item<serde_json::Value> {
    Item::Hello {
        cursor: Some(c.into()),
        heartbeat_ms: None,
    }
}

#[test]
fn a_websocket_that_opens_is_open_although_the_server_sends_nothing() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    assert_eq!(h.status(), Status::Connected);
    assert_eq!(h.e.snapshot().transport, Some(Transport::WebSocket));
    assert_eq!(
        h.pings.len(),
        1,
        "a ping at once: a pong would prove the path"
    );
    assert_eq!(h.open.len(), 1, "no rung is raced beside an open one");
    assert!(h.errors().is_empty());
}

#[test]
fn an_sse_response_is_open_on_its_headers_although_no_byte_follows() {
    let mut o = opts();
    o.transports = vec![Transport::Sse, Transport::Polling];
    let mut h = H::started(o);
    let (sse, _, _) = h.last_conn();
    h.opened(sse);
    assert_eq!(h.status(), Status::Connected);
    assert_eq!(h.e.snapshot().transport, Some(Transport::Sse));
    assert!(h.errors().is_empty());
}

#[test]
fn a_quiet_stream_is_cross_checked_and_an_empty_answer_proves_it_idle() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.advance(40);
    h.opened(ws); // a 40 ms handshake
    h.advance(39);
    assert!(!h.has_check_open());
    h.advance(1);
    // No cursor yet: one handshake after opening, the server's position is asked.
    let url = h.answer_check(vec![H::ev("6"), H::ev("7"), poll_cursor("7")]);
    assert_eq!(url, "https://app.example.com/realtime/poll?wait=0");
    assert_eq!(
        h.e.snapshot().cursor.as_deref(),
        Some("7"),
        "the baseline is adopted like a hello's cursor"
    );
    assert!(
        h.delivered().is_empty(),
        "a check's events are evidence, not deliveries"
    );
    // Then 5 s (timeouts.firstFrameMs) of silence later, with the cursor.
    h.advance(4_999);
    assert!(!h.has_check_open());
    h.advance(1);
    let url = h.answer_check(vec![poll_cursor("7")]);
    assert_eq!(url, "https://app.example.com/realtime/poll?since=7&wait=0");
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("websocket stream is idle, not blocked")));
    // An idle verdict doubles the wait: 10 s, then 20 s.
    h.advance(9_999);
    assert!(!h.has_check_open());
    h.advance(1);
    h.answer_check(vec![]);
    h.advance(19_999);
    assert!(!h.has_check_open());
    h.advance(1);
    assert!(h.has_check_open());
    assert!(h.is_open(ws));
    assert_eq!(h.status(), Status::Connected);
    assert!(h.errors().is_empty(), "{:?}", h.error_messages());
}

#[test]
fn a_stream_that_delivers_is_not_checked_until_it_falls_silent() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.events_on(ws, &["1"]);
    for i in 2..20 {
        h.advance(4_000);
        h.events_on(ws, &[&i.to_string()]);
        assert!(!h.has_check_open(), "busy streams need no check");
    }
    h.advance(5_000);
    assert!(h.has_check_open());
    assert!(h.open.last().unwrap().2.contains("since=19"));
}

#[test]
fn a_black_holed_websocket_is_proven_blocked_by_a_poll_and_the_client_steps_down_without_loss() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws); // HTTP 101, then nothing passes
    h.answer_check(vec![poll_cursor("7")]);
    h.advance(5_000);
    h.answer_check(vec![H::ev("8"), H::ev("9"), poll_cursor("9")]);
    assert!(h.is_open(ws), "suspect only: it may just be behind");
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("found 2 events up to 9 that websocket has not delivered")));
    h.advance(999);
    assert!(h.is_open(ws));
    h.advance(1);
    assert!(!h.is_open(ws));
    assert_eq!(h.errors(), [ErrorCode::SilentAfterOpen]);
    let m = &h.error_messages()[0];
    assert!(
        m.contains("a poll with the same cursor returned 2 events"),
        "{m}"
    );
    assert!(m.contains("passes the upgrade but not the data"), "{m}");
    // One rung lower at once, from the adopted baseline: 8 and 9 are not lost.
    let (sse, t, url) = h.last_conn();
    assert_eq!(t, Transport::Sse);
    assert!(url.ends_with("sse?since=7"), "{url}");
    h.opened(sse);
    h.events_on(sse, &["8", "9"]);
    assert_eq!(h.delivered(), ["8", "9"]);
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("stepping down from websocket to sse")));
}

#[test]
fn a_suspect_stream_that_catches_up_within_the_grace_was_only_behind() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.answer_check(vec![poll_cursor("7")]);
    h.advance(5_000);
    h.answer_check(vec![H::ev("8"), H::ev("9")]);
    h.advance(500);
    h.events_on(ws, &["8", "9"]);
    h.advance(10_000);
    assert!(h.is_open(ws));
    assert!(h.errors().is_empty());
    assert_eq!(h.delivered(), ["8", "9"]);
}

#[test]
fn a_buffering_proxy_that_holds_the_tail_of_an_sse_stream_is_found_after_the_burst() {
    let mut o = opts();
    o.transports = vec![Transport::Sse, Transport::Polling];
    let mut h = H::started(o);
    let (sse, _, _) = h.last_conn();
    h.opened(sse);
    h.answer_check(vec![poll_cursor("0")]);
    // A 4 KiB burst arrives, then the rest stays in the proxy's buffer.
    h.advance(1_000);
    h.input(Input::Activity {
        conn: sse,
        bytes: 4096,
    });
    h.events_on(sse, &["1", "2", "3"]);
    h.advance(5_000);
    let url = h.answer_check(vec![H::ev("4"), H::ev("5")]);
    assert!(url.contains("since=3"), "{url}");
    h.advance(1_000);
    assert_eq!(h.errors(), [ErrorCode::SseBuffered]);
    assert!(h.error_messages()[0].contains("buffering"));
    let (p, t, url) = h.last_conn();
    assert_eq!(t, Transport::Polling);
    assert!(url.contains("since=3"), "{url}");
    h.opened(p);
    h.events_on(p, &["4", "5"]);
    assert_eq!(h.delivered(), ["1", "2", "3", "4", "5"]);
}

#[test]
fn a_server_that_says_hello_is_judged_by_its_heartbeats_not_by_checks() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    for _ in 0..6 {
        h.advance(20_000);
        h.items(ws, vec![Item::Heartbeat]);
        assert!(!h.has_check_open());
    }
    assert!(h.is_open(ws));
}

#[test]
fn a_pong_proves_a_quiet_websocket_and_stops_the_checks() {
    let mut o = opts();
    o.interop.ping_text = "ping".into();
    let mut h = H::started(o);
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.items(ws, vec![Item::Pong]);
    for _ in 0..4 {
        h.advance(30_000); // the next ping
        h.items(ws, vec![Item::Pong]);
        assert!(!h.has_check_open());
    }
    assert!(h.is_open(ws));
    assert!(h.errors().is_empty());
}

#[test]
fn without_a_polling_rung_an_opened_websocket_is_simply_open() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket];
    let mut h = H::started(o);
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.advance(20_000);
    assert_eq!(h.open.len(), 1);
    assert_eq!(h.status(), Status::Connected);
}

#[test]
fn a_server_that_answers_no_ping_is_kept_and_judged_by_its_own_heartbeats() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket];
    let mut h = H::started(o);
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    // The seed's server: `{"type":"heartbeat"}` after 30 s of silence, pings ignored.
    for _ in 0..6 {
        h.advance(40_000); // our ping at 30 s delays its heartbeat
        h.items(ws, vec![Item::Heartbeat]);
    }
    assert!(h.is_open(ws), "unanswered pings are not a death sentence");
    assert!(h.errors().is_empty(), "{:?}", h.error_messages());
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("does not answer the ping")));
    // Its silence still counts: no frame for heartbeat.serverSilenceMs (65 s) is dead.
    h.advance(65_000);
    assert!(!h.is_open(ws));
    assert_eq!(h.errors(), [ErrorCode::HeartbeatTimeout]);
}

#[test]
fn a_rung_whose_server_spoke_first_before_and_is_silent_now_steps_down_without_a_check() {
    let mut h = H::started(opts());
    let ws = h.connect_last(); // hello: this server speaks first
    h.closed(ws, Some(1001));
    h.advance(5_000);
    let (ws2, t, _) = h.last_conn();
    assert_eq!(t, Transport::WebSocket);
    h.opened(ws2); // and now nothing passes
    h.advance(4_999);
    assert!(h.is_open(ws2));
    h.advance(1);
    assert!(!h.is_open(ws2));
    assert_eq!(h.errors().last(), Some(&ErrorCode::SilentAfterOpen));
    assert!(h
        .error_messages()
        .last()
        .unwrap()
        .contains("earlier connections"));
    assert_eq!(h.last_conn().1, Transport::Sse);
}

#[test]
fn a_failed_check_proves_nothing_and_waits_longer() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.answer_check(vec![poll_cursor("1")]);
    h.advance(5_000);
    let (c, _, _) = h.last_conn();
    h.input(Input::HttpStatus {
        conn: c,
        status: 502,
        retry_after_ms: None,
        error_code: None,
    });
    assert!(h.is_open(ws));
    assert!(
        h.errors().is_empty(),
        "a check's failure is a note, not an app error"
    );
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("cross-check poll failed")));
    h.advance(9_999);
    assert!(!h.has_check_open());
    h.advance(1);
    assert!(h.has_check_open());
}

#[test]
fn a_quiet_probe_takes_over_when_the_session_was_quiet_too_and_fails_when_the_session_delivered() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket, Transport::Polling];
    let mut h = H::started(o);
    let (ws, _, _) = h.last_conn();
    h.closed(ws, None); // refused: polling
    let p = h.connect_last();
    h.events_on(p, &["1"]);
    h.closed(p, None);
    // Answers every poll with nothing until a WebSocket probe is open.
    fn next_probe(h: &mut H) -> ConnId {
        for _ in 0..2_000 {
            h.advance(100);
            for (c, t, _) in h.open.clone() {
                match t {
                    Transport::Polling => {
                        h.opened(c);
                        h.closed(c, None);
                    }
                    Transport::WebSocket => return c,
                    _ => {}
                }
            }
        }
        panic!("no probe of the WebSocket within 200 s");
    }
    // The first probe opens and stays quiet while the poll session delivers: blocked.
    let probe = next_probe(&mut h);
    h.opened(probe);
    h.advance(1_000);
    let poll = h.conn_of(Transport::Polling);
    h.opened(poll);
    h.events_on(poll, &["2"]);
    h.closed(poll, None);
    h.advance(4_000);
    assert!(
        !h.is_open(probe),
        "the session delivered 2, the probe nothing"
    );
    assert_eq!(h.e.snapshot().transport, Some(Transport::Polling));
    assert!(h.e.diagnostics().notes.iter().any(|n| n
        .text
        .contains("probe of websocket failed: silent_after_open")));
    // The next probe opens while nothing is published: both quiet, it takes over.
    let probe2 = next_probe(&mut h);
    h.opened(probe2);
    h.advance(5_000);
    assert_eq!(h.e.snapshot().transport, Some(Transport::WebSocket));
    assert!(h.is_open(probe2));
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("moving up; cross-checks watch it")));
    h.events_on(probe2, &["3"]);
    assert_eq!(h.delivered(), ["1", "2", "3"]);
}

#[test]
fn a_websocket_that_opens_and_is_cut_at_once_before_any_data_steps_down() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    assert_eq!(h.status(), Status::Connected);
    h.advance(200);
    h.closed(ws, Some(1006));
    assert_eq!(h.errors(), [ErrorCode::ClosedByPeer]);
    assert!(h.error_messages()[0].contains("before any data"));
    assert_eq!(h.last_conn().1, Transport::Sse, "one rung lower, at once");

    // A quiet stream cut after a minute of silence is a closed session: same rung, backoff.
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.advance(60_000);
    h.open.retain(|c| c.1 == Transport::WebSocket);
    h.closed(ws, Some(1006));
    let at = h.e.snapshot().next_retry_at.expect("a retry");
    h.advance(at - h.now);
    assert_eq!(h.last_conn().1, Transport::WebSocket);
}

#[test]
fn a_probes_stale_reset_naming_an_opaque_event_the_app_already_has_is_no_gap() {
    let mut o = opts();
    o.transports = vec![Transport::Sse, Transport::Polling];
    let mut h = H::started(o);
    let (sse, _, _) = h.last_conn();
    h.closed(sse, None); // SSE fails: polling
    let p = h.connect_last();
    h.events_on(p, &["e-a"]);
    h.closed(p, None);
    // The server trims; the poll session reports the one real gap and delivers on.
    let (p2, _, _) = h.last_conn();
    h.opened(p2);
    h.items(
        p2,
        vec![
            Item::Reset {
                reason: "history_trimmed".into(),
                oldest: Some("e-c".into()),
            },
            H::ev("e-c"),
            H::ev("e-d"),
        ],
    );
    assert_eq!(h.gaps(), 1);
    // A probe that subscribed with the older cursor gets the same reset when it takes over.
    let mut probe = None;
    for _ in 0..100 {
        h.advance(1_000);
        if let Some((c, _, _)) = h.open.iter().find(|c| c.1 == Transport::Sse) {
            probe = Some(*c);
            break;
        }
    }
    let probe = probe.expect("a probe of SSE");
    h.opened(probe);
    h.input(Input::Activity {
        conn: probe,
        bytes: 4,
    });
    h.items(
        probe,
        vec![Item::Reset {
            reason: "history_trimmed".into(),
            oldest: Some("e-c".into()),
        }],
    );
    assert_eq!(h.gaps(), 1, "e-c was delivered: nothing was lost");
}

#[test]
fn http_410_on_a_poll_is_a_reset_then_polls_start_over_without_a_cursor() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    let mut h = H::started(o);
    let p = h.connect_last();
    h.events_on(p, &["5"]);
    h.closed(p, None);
    let (p2, _, url) = h.last_conn();
    assert!(url.contains("since=5"));
    h.input(Input::HttpStatus {
        conn: p2,
        status: 410,
        retry_after_ms: None,
        error_code: None,
    });
    assert_eq!(h.gaps(), 1);
    assert!(h.errors().is_empty(), "a gap, not an error");
    assert_eq!(h.status(), Status::Connected);
    let (p3, _, url) = h.last_conn();
    assert!(!url.contains("since="), "{url}");
    h.opened(p3);
    h.events_on(p3, &["1", "2"]);
    assert_eq!(h.delivered(), ["5", "1", "2"]);
}

#[test]
fn an_expired_token_on_a_poll_is_refreshed_at_once_without_an_error_or_a_reconnect() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    o.use_token = true;
    let mut h = H::started(o);
    h.input(Input::Token(Ok("t1".into())));
    let p = h.connect_last();
    h.events_on(p, &["1"]);
    h.closed(p, None);
    let (p2, _, _) = h.last_conn();
    h.input(Input::HttpStatus {
        conn: p2,
        status: 401,
        retry_after_ms: None,
        error_code: Some("token_expired".into()),
    });
    assert_eq!(h.status(), Status::Connected, "the poll session stays open");
    assert!(h.errors().is_empty(), "{:?}", h.error_messages());
    assert_eq!(
        h.count_cmd(|c| matches!(c, Command::RequestToken)),
        2,
        "a fresh token is asked for"
    );
    h.input(Input::Token(Ok("t2".into())));
    let (p3, t, _) = h.last_conn();
    assert_eq!(t, Transport::Polling);
    assert_ne!(p3, p2, "polled again at once with the fresh token");
    // The fresh token fails too: now it is an error, with a backoff.
    h.input(Input::HttpStatus {
        conn: p3,
        status: 401,
        retry_after_ms: None,
        error_code: Some("token_invalid".into()),
    });
    assert_eq!(h.errors(), [ErrorCode::Unauthorized]);
    assert_eq!(h.status(), Status::Reconnecting);
}

#[test]
fn an_expired_token_on_a_websocket_reconnects_with_a_fresh_one_at_once() {
    let mut o = opts();
    o.use_token = true;
    let mut h = H::started(o);
    h.input(Input::Token(Ok("t1".into())));
    let ws = h.connect_last();
    h.events_on(ws, &["1"]);
    h.input(Input::Closed {
        conn: ws,
        code: Some(4402),
        reason: "token_expired".into(),
    });
    assert!(h.errors().is_empty(), "{:?}", h.error_messages());
    h.input(Input::Token(Ok("t2".into())));
    let (_, t, url) = h.last_conn();
    assert_eq!(t, Transport::WebSocket);
    assert!(url.contains("token=t2") && url.contains("since=1"), "{url}");
}

// ----- 3. early race --------------------------------------------------------------------

#[test]
fn a_slow_rung_gets_the_next_one_raced_beside_it_and_the_first_to_deliver_wins() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.advance(2_999);
    assert_eq!(h.open.len(), 1);
    h.advance(1);
    let sse = h.conn_of(Transport::Sse);
    assert_eq!(h.open.len(), 2);
    h.opened(sse);
    h.input(Input::Activity {
        conn: sse,
        bytes: 4,
    });
    assert!(!h.is_open(ws), "the loser is closed");
    assert_eq!(h.e.snapshot().transport, Some(Transport::Sse));
    // A late frame on the loser is ignored.
    h.events_on(ws, &["9"]);
    assert!(h.delivered().is_empty());
}

#[test]
fn the_websocket_still_wins_when_it_delivers_first_during_the_race() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.advance(3_000);
    let sse = h.conn_of(Transport::Sse);
    h.opened(ws);
    h.hello(ws, None);
    assert!(!h.is_open(sse));
    assert_eq!(h.e.snapshot().transport, Some(Transport::WebSocket));
    assert!(h
        .e
        .diagnostics()
        .notes
        .iter()
        .any(|n| n.text.contains("starting sse beside")));
}

// ----- 4. moving back up ------------------------------------------------------------------

#[test]
fn a_probe_moves_back_up_to_websocket_without_loss_or_repeat() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.closed(ws, None);
    let sse = h.connect_last();
    h.events_on(sse, &["1", "2"]);
    h.advance(30_000 - 1);
    assert_eq!(h.open.len(), 1);
    // Keep SSE alive with heartbeats, and find the probe.
    h.input(Input::Activity {
        conn: sse,
        bytes: 10,
    });
    h.advance(1);
    let probe = h.conn_of(Transport::WebSocket);
    assert!(h.open.last().unwrap().2.ends_with("since=2"));
    h.events_on(sse, &["3"]);
    h.opened(probe);
    assert!(
        h.is_open(sse),
        "SSE keeps delivering until the probe proves itself"
    );
    h.items(
        probe,
        vec![
            Item::Hello {
                cursor: Some("3".into()),
                heartbeat_ms: None,
            },
            H::ev("3"),
            H::ev("4"),
        ],
    );
    assert!(
        h.is_open(sse),
        "a WebSocket probe must answer a ping before it takes over"
    );
    assert_eq!(h.delivered(), ["1", "2", "3"]);
    h.items(probe, vec![Item::Pong]);
    assert!(!h.is_open(sse));
    assert_eq!(h.e.snapshot().transport, Some(Transport::WebSocket));
    h.events_on(probe, &["5"]);
    assert_eq!(h.delivered(), ["1", "2", "3", "4", "5"]);
    assert!(h
        .e
        .diagnostics()
        .notes
        .iter()
        .any(|n| n.text.contains("moved up from sse to websocket")));
}

#[test]
fn failed_probes_back_off() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket, Transport::Polling];
    let mut h = H::started(o);
    let (ws, _, _) = h.last_conn();
    h.closed(ws, None);
    let p = h.connect_last();
    let _ = p;
    let mut probe_times = Vec::new();
    for _ in 0..4 {
        // Answer polls at once with nothing; refuse every probe.
        for _ in 0..2000 {
            let before = h.opens.len();
            h.advance(1_000);
            for (c, t, _) in h.open.clone() {
                match t {
                    Transport::Polling => {
                        h.opened(c);
                        h.closed(c, None);
                    }
                    Transport::WebSocket => {
                        probe_times.push(h.now);
                        h.closed(c, None);
                    }
                    _ => {}
                }
            }
            if probe_times.len() > 0
                && h.opens.len() > before
                && h.opens.last().unwrap().2 == Transport::WebSocket
            {
                break;
            }
        }
    }
    assert!(probe_times.len() >= 3, "{probe_times:?}");
    let gaps: Vec<u64> = probe_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]) && gaps[1] > gaps[0],
        "probe gaps grow: {gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g <= 600_000), "up to probe.maxMs");
    assert_eq!(h.e.snapshot().transport, Some(Transport::Polling));
    assert!(
        h.errors().len() == 1,
        "probe failures are diagnostics, not app errors"
    );
}

// ----- 5. rung memory -------------------------------------------------------------------

#[test]
fn the_working_rung_is_remembered_and_skips_the_broken_one_next_time() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.closed(ws, None);
    h.connect_last();
    let (key, value) = h
        .cmds
        .iter()
        .find_map(|c| match c {
            Command::Remember { key, value } => Some((key.clone(), *value)),
            _ => None,
        })
        .expect("remembered");
    assert_eq!(key, h.e.memory_key());
    assert_eq!(value.transport, Transport::Sse);
    let stored = value.encode();

    let mut page = PageContext::new("https://app.example.com/dash/");
    page.remembered = RememberedRung::decode(&stored);
    let mut h2 = H::with_page(opts(), page);
    h2.input(Input::Start);
    assert_eq!(h2.last_conn().1, Transport::Sse);
}

#[test]
fn an_expired_memory_is_forgotten_and_the_ladder_starts_at_the_top() {
    let mut h = H::new(opts());
    h.input(Input::Remembered(Some(RememberedRung {
        transport: Transport::Polling,
        expires_at: 500,
    })));
    h.input(Input::Start);
    assert_eq!(h.last_conn().1, Transport::WebSocket);
    assert_eq!(h.count_cmd(|c| matches!(c, Command::Forget { .. })), 1);
}

#[test]
fn reaching_websocket_again_forgets_the_fallback() {
    let mut h = H::new(opts());
    h.input(Input::Remembered(Some(RememberedRung {
        transport: Transport::Sse,
        expires_at: u64::MAX,
    })));
    h.input(Input::Start);
    let sse = h.connect_last();
    let _ = sse;
    h.advance(30_000);
    let probe = h.conn_of(Transport::WebSocket);
    h.opened(probe);
    h.hello(probe, None);
    h.items(probe, vec![Item::Pong]);
    assert_eq!(h.count_cmd(|c| matches!(c, Command::Forget { .. })), 1);
}

// ----- 6. backoff ---------------------------------------------------------------------

fn round_gaps(mut h: H, rounds: usize) -> Vec<u64> {
    let mut starts = Vec::new();
    for _ in 0..rounds {
        let (c, _, _) = h.last_conn();
        starts.push(h.now);
        h.closed(c, None);
        let at = h.e.snapshot().next_retry_at.expect("retry scheduled");
        h.advance(at - h.now);
    }
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn retries_back_off_exponentially_with_jitter_up_to_thirty_seconds() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket];
    let gaps = round_gaps(H::started(o), 14);
    for (n, g) in gaps.iter().enumerate() {
        let cap = (500u64 << n).min(30_000);
        assert!(
            *g >= cap / 2 && *g <= cap,
            "attempt {n}: {g} not in [{}, {cap}]",
            cap / 2
        );
    }
    assert!(gaps.iter().rev().take(3).all(|g| *g >= 15_000));
}

#[test]
fn a_healthy_connection_resets_the_backoff() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket];
    let mut h = H::started(o);
    for _ in 0..5 {
        let (c, _, _) = h.last_conn();
        h.closed(c, None);
        let at = h.e.snapshot().next_retry_at.unwrap();
        h.advance(at - h.now);
    }
    assert_eq!(h.e.snapshot().attempt, 5);
    let c = h.connect_last();
    h.advance(9_999);
    h.events_on(c, &["1"]);
    assert_eq!(h.e.snapshot().attempt, 5);
    h.advance(1);
    assert_eq!(h.e.snapshot().attempt, 0);
}

#[test]
fn the_client_gives_up_only_when_a_maximum_is_configured() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    o.backoff.max_attempts = Some(3);
    let mut h = H::started(o);
    for _ in 0..3 {
        h.advance_until_open();
        let (c, _, _) = h.last_conn();
        h.closed(c, None);
    }
    assert_eq!(h.status(), Status::Closed);
    assert_eq!(*h.errors().last().unwrap(), ErrorCode::GaveUp);

    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    for _ in 0..50 {
        h.advance_until_open();
        let (c, _, _) = h.last_conn();
        h.closed(c, None);
    }
    h.advance_until_open();
    assert_eq!(h.status(), Status::Connecting);
    assert_eq!(h.open.len(), 1, "still trying after 50 failures");
}

#[test]
fn a_thousand_clients_cut_at_once_spread_their_first_retries() {
    // Three seed families: consecutive seeds, multiplied ones, and a seeded stream (as
    // from crypto.getRandomValues). Each: no 100 ms window holds more than 5 %.
    let mut stream = super::util::Rng::new(2026);
    let families: [Box<dyn Fn(u64) -> u64>; 3] = [
        Box::new(|s| s),
        Box::new(|s| s.wrapping_mul(0x9E37_79B9) ^ 0xABCD),
        Box::new(move |_| 0),
    ];
    for (f, family) in families.iter().enumerate() {
        let mut firsts = Vec::new();
        for i in 0..1_000u64 {
            let seed = if f == 2 { stream.next_u64() } else { family(i) };
            let mut h = H::seeded(opts(), PageContext::new("https://app.example.com/"), seed);
            h.input(Input::Start);
            let c = h.connect_last();
            h.closed(c, Some(1001));
            firsts.push(h.e.snapshot().next_retry_at.unwrap() - h.now);
        }
        firsts.sort_unstable();
        // Sliding window over the sorted delays.
        let mut worst = 0;
        let mut lo = 0;
        for hi in 0..firsts.len() {
            while firsts[hi] - firsts[lo] >= 100 {
                lo += 1;
            }
            worst = worst.max(hi - lo + 1);
        }
        println!("seed family {f}: busiest 100 ms window holds {worst} of 1000 first retries");
        assert!(
            worst <= 50,
            "family {f}: a 100 ms window holds {worst} of 1000 first retries"
        );
        assert!(*firsts.last().unwrap() <= 5_000, "all within the spread");
    }
}

// ----- 7. heartbeats --------------------------------------------------------------------

#[test]
fn a_silent_websocket_is_pinged_after_thirty_seconds_and_dropped_after_three_missed_pongs() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    let pings0 = h.pings.len();
    h.advance(29_999);
    assert_eq!(h.pings.len(), pings0);
    h.advance(1);
    assert_eq!(h.pings.len(), pings0 + 1);
    assert_eq!(h.pings.last().unwrap().2, "{\"type\":\"ping\"}");
    h.advance(5_000);
    h.advance(5_000);
    assert!(h.is_open(ws));
    h.advance(5_000);
    assert!(!h.is_open(ws));
    assert_eq!(h.errors(), [ErrorCode::HeartbeatTimeout]);
}

#[test]
fn any_frame_counts_as_life() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    let pings0 = h.pings.len();
    for i in 0..10 {
        h.advance(20_000);
        h.events_on(ws, &[&i.to_string()]);
    }
    assert_eq!(h.pings.len(), pings0);
    h.advance(30_000);
    h.items(ws, vec![Item::Pong]);
    h.advance(20_000);
    assert!(h.is_open(ws));
    assert!(h.errors().is_empty());
}

#[test]
fn sse_relies_on_server_heartbeats_and_reconnects_after_silence() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    let (c, _, _) = h.last_conn();
    h.opened(c);
    h.items(
        c,
        vec![Item::Hello {
            cursor: None,
            heartbeat_ms: Some(25_000),
        }],
    );
    for _ in 0..4 {
        h.advance(25_000);
        h.input(Input::Activity { conn: c, bytes: 13 });
    }
    assert!(h.is_open(c));
    h.advance(55_000);
    assert!(!h.is_open(c));
    assert_eq!(h.errors(), [ErrorCode::HeartbeatTimeout]);
}

#[test]
fn connections_dying_after_the_same_idle_time_shorten_the_ping_interval() {
    let mut o = opts();
    o.transports = vec![Transport::WebSocket];
    let mut h = H::started(o);
    for _ in 0..2 {
        h.cut_after_idle(20_000, Some(1006));
    }
    assert_eq!(h.errors(), [ErrorCode::ClosedByPeer, ErrorCode::IdleCutoff]);
    let interval = h.e.snapshot().ping_interval_ms;
    assert!(interval < 20_000, "{interval}");
    assert!(h
        .e
        .diagnostics()
        .notes
        .iter()
        .any(|n| n.text.contains("adaptive heartbeat")));
    // The next connection is pinged before the cut-off.
    let ws = h.connect_last();
    let pings0 = h.pings.len();
    h.advance(interval);
    assert_eq!(h.pings.len(), pings0 + 1);
    assert!(h.is_open(ws));
}

// ----- 8. page environment ----------------------------------------------------------------

#[test]
fn offline_pauses_and_online_reconnects_at_once() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.events_on(ws, &["1"]);
    h.input(Input::Offline);
    assert_eq!(h.status(), Status::Offline);
    assert!(!h.is_open(ws));
    assert_eq!(h.errors(), [ErrorCode::Offline]);
    h.advance(600_000);
    assert!(h.open.is_empty(), "nothing is tried while offline");
    assert_eq!(h.e.poll_timeout(), None);
    h.input(Input::Online);
    let (_, t, url) = h.last_conn();
    assert_eq!(t, Transport::WebSocket);
    assert!(url.ends_with("since=1"));
}

#[test]
fn starting_offline_waits_for_the_network() {
    let mut page = PageContext::new("https://h/");
    page.online = false;
    let mut h = H::with_page(opts(), page);
    h.input(Input::Start);
    assert_eq!(h.status(), Status::Offline);
    assert!(h.open.is_empty());
    h.input(Input::Online);
    assert_eq!(h.open.len(), 1);
}

#[test]
fn coming_back_visible_checks_liveness_at_once() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.input(Input::Hidden);
    h.advance(10_000);
    h.events_on(ws, &["1"]);
    let pings0 = h.pings.len();
    h.input(Input::Visible);
    assert_eq!(h.pings.len(), pings0 + 1, "pinged at once");
    h.advance(5_000);
    assert!(
        !h.is_open(ws),
        "one missed answer is enough after returning"
    );
}

#[test]
fn a_clock_jump_marks_the_connection_suspect_and_verifies_it() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    let pings0 = h.pings.len();
    h.sleep_then_wake(10 * 60_000);
    assert!(h
        .e
        .diagnostics()
        .notes
        .iter()
        .any(|n| n.text.contains("slept")));
    assert_eq!(h.pings.len(), pings0 + 1);
    assert!(h.is_open(ws));
    h.items(ws, vec![Item::Pong]);
    h.advance(5_000);
    assert!(h.is_open(ws), "it answered: still good");
    assert!(h.errors().is_empty());
}

#[test]
fn a_clock_jump_reconnects_sse_at_once() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    let c = h.connect_last();
    h.events_on(c, &["4"]);
    h.sleep_then_wake(10 * 60_000);
    assert!(!h.is_open(c));
    let (_, _, url) = h.last_conn();
    assert!(url.ends_with("since=4"));
    assert_eq!(
        h.opens.last().unwrap().4.as_deref(),
        Some("4"),
        "Last-Event-ID too"
    );
}

// ----- 9. delivery ----------------------------------------------------------------------

#[test]
fn repeats_after_a_reconnect_are_dropped() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.events_on(ws, &["1700-1", "1700-2"]);
    h.closed(ws, None);
    h.advance(6_000);
    let ws2 = h.connect_last();
    h.events_on(ws2, &["1700-1", "1700-2", "1700-3", "1700-3"]);
    assert_eq!(h.delivered(), ["1700-1", "1700-2", "1700-3"]);
}

#[test]
fn opaque_ids_are_deduplicated_and_events_without_ids_always_delivered() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.events_on(ws, &["abc", "def", "abc"]);
    h.items(
        ws,
        vec![
            Item::Event {
                id: None,
                kind: "x".into(),
                data: json!(1)
            };
            2
        ],
    );
    let n = h
        .events
        .iter()
        .filter(|e| matches!(e, AppEvent::Message { .. }))
        .count();
    assert_eq!(n, 4);
    assert_eq!(h.delivered(), ["abc", "def"]);
}

#[test]
fn the_hello_cursor_lets_the_first_reconnect_resume_before_any_event() {
    let mut h = H::started(opts());
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.hello(ws, Some("1700-9"));
    h.closed(ws, None);
    h.advance(6_000);
    assert!(h.last_conn().2.ends_with("since=1700-9"));
}

// ----- 10. upstream ---------------------------------------------------------------------

#[test]
fn messages_wait_while_disconnected_and_go_out_in_order_once_connected() {
    let mut h = H::started(opts());
    let a = h.e.send(json!("a"), h.now).unwrap();
    let b = h.e.send(json!("b"), h.now).unwrap();
    h.drain();
    assert_ne!(a, b);
    assert!(h.upstream.is_empty());
    assert_eq!(h.e.snapshot().outbox_len, 2);
    let ws = h.connect_last();
    assert_eq!(h.upstream, [(ws, a.0.clone()), (ws, b.0.clone())]);
    h.items(ws, vec![Item::Ack { id: a.0.clone() }]);
    assert_eq!(h.acked(), [a.0.clone()]);
    // Unacknowledged b goes again after a reconnect.
    h.closed(ws, None);
    h.advance(6_000);
    let ws2 = h.connect_last();
    assert_eq!(h.upstream.last().unwrap(), &(ws2, b.0.clone()));
    h.items(ws2, vec![Item::Ack { id: b.0.clone() }]);
    assert_eq!(h.e.snapshot().outbox_len, 0);
}

#[test]
fn on_sse_messages_are_posted_one_at_a_time_and_retried_until_acknowledged() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    h.connect_last();
    let a = h.e.send(json!(1), h.now).unwrap();
    let b = h.e.send(json!(2), h.now).unwrap();
    h.drain();
    assert_eq!(h.posts, [a.0.clone()]);
    match h
        .cmds
        .iter()
        .rev()
        .find(|c| matches!(c, Command::Post { .. }))
        .unwrap()
    {
        Command::Post { url, .. } => assert_eq!(url, "https://app.example.com/realtime/send"),
        _ => unreachable!(),
    }
    h.input(Input::SendResult {
        msg_id: a.clone(),
        result: Err(HttpFailure {
            status: None,
            ..Default::default()
        }),
    });
    assert_eq!(h.posts.len(), 1);
    h.advance(1_000);
    assert_eq!(h.posts, [a.0.clone(), a.0.clone()]);
    h.input(Input::SendResult {
        msg_id: a.clone(),
        result: Ok(()),
    });
    assert_eq!(h.posts, [a.0.clone(), a.0.clone(), b.0.clone()]);
    h.input(Input::SendResult {
        msg_id: b.clone(),
        result: Ok(()),
    });
    assert_eq!(h.acked(), [a.0, b.0]);
}

#[test]
fn a_message_the_server_refuses_is_reported_and_the_next_one_goes() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    let mut h = H::started(o);
    h.connect_last();
    let a = h.e.send(json!(1), h.now).unwrap();
    let b = h.e.send(json!(2), h.now).unwrap();
    h.drain();
    h.input(Input::SendResult {
        msg_id: a.clone(),
        result: Err(HttpFailure {
            status: Some(413),
            retry_after_ms: None,
            error_code: Some("too_large".into()),
        }),
    });
    assert!(h.events.iter().any(|e| matches!(e, AppEvent::SendFailed { msg_id, error } if *msg_id == a && error.message.contains("413"))));
    assert_eq!(h.posts.last().unwrap(), &b.0);
}

#[test]
fn a_full_outbox_refuses_with_a_clear_error() {
    let mut o = opts();
    o.outbox_capacity = 2;
    let mut h = H::started(o);
    h.e.send(json!(1), h.now).unwrap();
    h.e.send(json!(2), h.now).unwrap();
    let e = h.e.send(json!(3), h.now).unwrap_err();
    assert_eq!(e.code, ErrorCode::OutboxFull);
    assert!(e.message.contains("outboxLimit"));
}

#[test]
fn closing_the_client_fails_pending_messages_and_stops_everything() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    let a = h.e.send(json!(1), h.now).unwrap();
    h.input(Input::Close);
    assert!(!h.is_open(ws));
    assert_eq!(h.status(), Status::Closed);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, AppEvent::SendFailed { msg_id, error }
            if *msg_id == a && error.code == ErrorCode::Closed)));
    assert_eq!(h.e.poll_timeout(), None);
    // A pending message fails as `closed` (the lifecycle); a send after close() is the
    // app's mistake: `already_closed`.
    assert_eq!(
        h.e.send(json!(2), h.now).unwrap_err().code,
        ErrorCode::AlreadyClosed
    );
    h.input(Input::Start);
    assert!(h.open.is_empty());
}

// ----- 11. interop ------------------------------------------------------------------------

#[test]
fn seed_style_backends_work_with_interop_options() {
    let mut o = opts();
    o.interop.since_param = "after".into();
    o.interop.ping_text = "ping".into();
    let mut h = H::started(o);
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    assert_eq!(h.pings.last().unwrap().2, "ping");
    let items =
        decode::decode_text::<serde_json::Value>("pong", h.e.interop(), h.e.max_frame_bytes())
            .unwrap();
    h.items(ws, items);
    assert_eq!(h.status(), Status::Connected);
    let items = decode::decode_text::<serde_json::Value>(
        r#"[{"id":41,"type":"log","msg":"x"},{"id":42,"type":"log","msg":"y"}]"#,
        h.e.interop(),
        1 << 20,
    )
    .unwrap();
    h.items(ws, items);
    h.closed(ws, None);
    h.advance(6_000);
    assert!(h.last_conn().2.ends_with("after=42"));
}

// ----- 12. diagnostics --------------------------------------------------------------------

#[test]
fn diagnostics_are_bounded_and_never_hold_the_token() {
    let mut o = opts();
    o.use_token = true;
    o.diagnostics_capacity = 4;
    o.transports = vec![Transport::WebSocket];
    let mut h = H::started(o);
    h.input(Input::Token(Ok("s3cr3t-token".into())));
    for _ in 0..10 {
        h.advance_until_open();
        let (c, _, url) = h.last_conn();
        assert!(url.contains("s3cr3t-token"), "the command needs it");
        h.closed(c, None);
    }
    let d = h.e.diagnostics();
    assert_eq!(d.attempts.len(), 4);
    let dump = format!("{:?} {:?}", d, h.events);
    assert!(!dump.contains("s3cr3t"), "token leaked: {dump}");
    assert!(d
        .attempts
        .iter()
        .all(|a| a.failure.as_ref().map(|f| f.code) == Some(ErrorCode::UpgradeRefused)));
    assert_eq!(
        d.last_failure(Transport::WebSocket).unwrap().transport,
        Some(Transport::WebSocket)
    );
}

#[test]
fn the_snapshot_changes_only_when_something_changed() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    let n = h
        .events
        .iter()
        .filter(|e| matches!(e, AppEvent::StateChanged))
        .count();
    h.items(ws, vec![Item::Heartbeat]);
    let n2 = h
        .events
        .iter()
        .filter(|e| matches!(e, AppEvent::StateChanged))
        .count();
    assert_eq!(n, n2);
    h.events_on(ws, &["1"]);
    let n3 = h
        .events
        .iter()
        .filter(|e| matches!(e, AppEvent::StateChanged))
        .count();
    assert_eq!(n3, n2, "only the cursor moved: no full state change");
    assert!(
        matches!(h.events.last(), Some(AppEvent::CursorMoved)),
        "the cursor move is announced on its own"
    );
    assert_eq!(h.e.snapshot().cursor.as_deref(), Some("1"));
    h.events_on(ws, &["2", "3"]);
    assert_eq!(h.e.snapshot().cursor.as_deref(), Some("3"));
}

#[test]
fn bad_options_and_urls_are_typed_errors() {
    let mut o = opts();
    o.heartbeat.max_missed = 0;
    let e = Engine::<serde_json::Value>::new(o, PageContext::new("https://h/"), 1, 0)
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    let e = Engine::<serde_json::Value>::new(opts(), PageContext::default(), 1, 0)
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::InvalidUrl);
}

// ----- errors and options -----------------------------------------------------------------

#[test]
fn every_error_code_has_a_stable_unique_snake_case_name() {
    use ErrorCode::*;
    let all = [
        UpgradeRefused,
        SilentAfterOpen,
        ClosedByPeer,
        IdleCutoff,
        SseBuffered,
        Unauthorized,
        Forbidden,
        TokenProvider,
        RateLimited,
        Offline,
        BadFrame,
        FrameTooLarge,
        ServerReset,
        HeartbeatTimeout,
        OpenTimeout,
        NetworkError,
        HttpError,
        ServerError,
        OutboxFull,
        SendFailed,
        InvalidOption,
        InvalidUrl,
        GaveUp,
        Closed,
    ];
    let names: std::collections::HashSet<&str> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), all.len());
    assert!(names
        .iter()
        .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    assert_eq!(UpgradeRefused.as_str(), "upgrade_refused");
    let e = HoldfastError::new(SseBuffered, "x").on(Transport::Sse);
    assert_eq!(e.to_string(), "sse_buffered: x");
}

#[test]
fn frame_errors_say_what_was_wrong() {
    for (e, needle, code) in [
        (
            FrameError::InvalidJson,
            "not valid JSON",
            ErrorCode::BadFrame,
        ),
        (
            FrameError::NotAnObject,
            "not an event object",
            ErrorCode::BadFrame,
        ),
        (FrameError::BadField("type"), "`type`", ErrorCode::BadFrame),
        (
            FrameError::TooLarge { size: 10, limit: 5 },
            "10 bytes",
            ErrorCode::FrameTooLarge,
        ),
        (FrameError::Binary, "binary", ErrorCode::BadFrame),
    ] {
        assert!(e.describe().contains(needle), "{}", e.describe());
        assert_eq!(e.code(), code);
    }
}

#[test]
fn each_invalid_option_names_itself() {
    let cases: Vec<(&str, Box<dyn Fn(&mut Options)>)> = vec![
        ("url", Box::new(|o| o.url = " ".into())),
        ("backoff.initialMs", Box::new(|o| o.backoff.initial_ms = 0)),
        ("backoff.maxMs", Box::new(|o| o.backoff.max_ms = 10)),
        (
            "maxAttempts",
            Box::new(|o| o.backoff.max_attempts = Some(0)),
        ),
        (
            "heartbeat.intervalMs",
            Box::new(|o| o.heartbeat.ping_interval_ms = 10),
        ),
        (
            "heartbeat.serverSilenceMs",
            Box::new(|o| o.heartbeat.server_silence_ms = 0),
        ),
        (
            "heartbeat.clockJumpMs",
            Box::new(|o| o.heartbeat.clock_jump_ms = 0),
        ),
        ("probe.initialMs", Box::new(|o| o.probe.initial_ms = 1)),
        ("remember.ttlMs", Box::new(|o| o.memory.ttl_ms = 0)),
        (
            "polling.intervalMs",
            Box::new(|o| o.polling.interval_ms = 0),
        ),
        ("dedupWindow", Box::new(|o| o.dedup_window = 0)),
        ("maxFrameBytes", Box::new(|o| o.max_frame_bytes = 1)),
        (
            "diagnosticsCapacity",
            Box::new(|o| o.diagnostics_capacity = 0),
        ),
        (
            "params",
            Box::new(|o| o.params = vec![(String::new(), "v".into())]),
        ),
        ("interop.idField", Box::new(|o| o.interop.id_field.clear())),
        (
            "timeouts.openMs",
            Box::new(|o| o.timeouts.open_ms = u64::MAX),
        ),
    ];
    for (name, f) in cases {
        let mut o = opts();
        f(&mut o);
        let e = o.validate().expect_err(name);
        assert_eq!(e.code, ErrorCode::InvalidOption);
        assert!(e.message.contains(name), "{name}: {}", e.message);
    }
    // An empty base URL is fine when every rung has its own URL.
    let mut o = opts();
    o.url.clear();
    o.transports = vec![Transport::Polling];
    o.poll_url = Some("https://h/poll".into());
    o.send_url = Some("https://h/send".into());
    assert!(o.validate().is_ok());
    assert!(Engine::<serde_json::Value>::new(o, PageContext::default(), 1, 0).is_ok());
}

#[test]
fn transport_names_and_remembered_rungs_round_trip() {
    for t in [Transport::WebSocket, Transport::Sse, Transport::Polling] {
        assert_eq!(Transport::parse(t.as_str()), Some(t));
        let r = RememberedRung {
            transport: t,
            expires_at: 123,
        };
        assert_eq!(RememberedRung::decode(&r.encode()), Some(r));
    }
    assert_eq!(Transport::parse("carrier-pigeon"), None);
    assert_eq!(RememberedRung::decode("sse"), None);
    assert_eq!(RememberedRung::decode("sse x"), None);
    for s in [
        Status::Idle,
        Status::Connecting,
        Status::Connected,
        Status::Reconnecting,
        Status::Offline,
        Status::Closed,
    ] {
        assert!(!s.as_str().is_empty());
    }
}

#[test]
fn a_post_rejected_for_its_token_asks_for_a_new_one_and_is_sent_again() {
    let mut o = opts();
    o.use_token = true;
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    h.input(Input::Token(Ok("t1".into())));
    h.connect_last();
    let a = h.e.send(json!(1), h.now).unwrap();
    h.drain();
    h.input(Input::SendResult {
        msg_id: a.clone(),
        result: Err(HttpFailure {
            status: Some(401),
            ..Default::default()
        }),
    });
    assert_eq!(h.count_cmd(|c| matches!(c, Command::RequestToken)), 2);
    h.input(Input::Token(Err("provider down".into())));
    assert_eq!(*h.errors().last().unwrap(), ErrorCode::TokenProvider);
    h.advance(2_000);
    assert_eq!(
        h.count_cmd(|c| matches!(c, Command::RequestToken)),
        3,
        "asked again later"
    );
    h.input(Input::Token(Ok("t2".into())));
    h.advance(2_000);
    match h
        .cmds
        .iter()
        .rev()
        .find(|c| matches!(c, Command::Post { .. }))
        .unwrap()
    {
        Command::Post { msg_id, token, .. } => {
            assert_eq!(*msg_id, a);
            assert_eq!(token.as_ref().unwrap().expose(), "t2");
        }
        _ => unreachable!(),
    }
    assert_eq!(
        h.status(),
        Status::Connected,
        "the stream was never interrupted"
    );
}

#[test]
fn an_in_band_websocket_refusal_is_reported_and_does_not_fall_back() {
    let mut o = opts();
    o.use_token = true;
    let mut h = H::started(o);
    h.input(Input::Token(Ok("old".into())));
    let (ws, _, _) = h.last_conn();
    h.opened(ws);
    h.items(
        ws,
        vec![Item::ServerError {
            code: "token_expired".into(),
            message: "token past its exp".into(),
        }],
    );
    // The upgrade was answered, so the socket is open; the refusal is the close that follows.
    h.input(Input::Closed {
        conn: ws,
        code: Some(4402),
        reason: "token_expired".into(),
    });
    assert_eq!(
        h.errors(),
        [ErrorCode::Unauthorized],
        "the refusal frame and the close are one error for the app"
    );
    assert!(
        h.error_messages()[0].contains("token_expired"),
        "the close reason is shown"
    );
    assert!(h
        .notes()
        .iter()
        .any(|n| n.contains("refused the token: token_expired")));
    assert_eq!(h.count_cmd(|c| matches!(c, Command::RequestToken)), 2);
    assert!(
        h.opens.iter().all(|o| o.2 != Transport::Sse),
        "no fallback to SSE"
    );
    assert_eq!(h.count_cmd(|c| matches!(c, Command::Remember { .. })), 0);
}

/// Not a test of behaviour: measures how many events per second the engine turns from
/// decoded batches into app messages. `cargo test --release -p holdfast --lib throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput_of_event_batches() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    h.drain();
    let batches = 20_000u64;
    let per = 16u64;
    let items: Vec<Vec<Item<serde_json::Value>>> = (0..batches)
        .map(|b| {
            (0..per)
                .map(|i| Item::Event {
                    id: Some(format!("1700000000000-{}", b * per + i)),
                    kind: "t".into(),
                    data: serde_json::Value::Null,
                })
                .collect()
        })
        .collect();
    let start = std::time::Instant::now();
    let mut n = 0u64;
    for batch in items {
        h.e.handle(
            Input::Items {
                conn: ws,
                items: batch,
            },
            h.now,
        );
        while let Some(o) = h.e.poll_output() {
            if matches!(o, Output::Event(AppEvent::Message { .. })) {
                n += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, batches * per);
    println!(
        "engine: {n} events in {secs:.3} s = {:.0} events/s (16 per batch)",
        n as f64 / secs
    );
}

#[test]
fn a_websocket_that_goes_silent_after_its_hello_twice_steps_down_to_sse() {
    let mut h = H::started(opts());
    for _ in 0..2 {
        h.advance_until_open();
        let ws = h.connect_last();
        assert_eq!(h.e.snapshot().transport, Some(Transport::WebSocket));
        h.advance(45_000); // pings go unanswered
        assert!(!h.is_open(ws));
    }
    assert_eq!(
        h.errors(),
        [ErrorCode::HeartbeatTimeout, ErrorCode::HeartbeatTimeout]
    );
    h.advance_until_open();
    assert_eq!(h.last_conn().1, Transport::Sse);
    assert!(h
        .e
        .diagnostics()
        .notes
        .iter()
        .any(|n| n.text.contains("stepping down to sse")));
    // It comes back up later through a probe.
    h.connect_last();
    h.advance(59_999);
    h.input(Input::Activity {
        conn: h.conn_of(Transport::Sse),
        bytes: 1,
    });
    h.advance(1);
    assert_eq!(
        h.last_conn().1,
        Transport::WebSocket,
        "probed after a doubled delay"
    );
    // It passes its hello but never answers the ping: it never takes over.
    let probe = h.conn_of(Transport::WebSocket);
    h.opened(probe);
    h.hello(probe, None);
    h.advance(5_000);
    assert!(!h.is_open(probe));
    assert_eq!(h.e.snapshot().transport, Some(Transport::Sse));
}

#[test]
fn an_online_event_during_a_session_verifies_the_connection() {
    let mut h = H::started(opts());
    let ws = h.connect_last();
    let pings0 = h.pings.len();
    h.input(Input::Online);
    assert_eq!(h.pings.len(), pings0 + 1);
    h.items(ws, vec![Item::Pong]);
    h.advance(6_000);
    assert!(h.is_open(ws));
}

#[test]
fn a_failed_poll_inside_a_session_is_in_the_diagnostics() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    let mut h = H::started(o);
    let p = h.connect_last();
    h.closed(p, None);
    h.advance_until_open();
    let (p2, _, _) = h.last_conn();
    h.input(Input::HttpStatus {
        conn: p2,
        status: 503,
        retry_after_ms: Some(2_000),
        error_code: Some("unavailable".into()),
    });
    let last = h.e.diagnostics().attempts.back().unwrap();
    assert_eq!(last.conn, p2);
    assert_eq!(last.failure.as_ref().unwrap().code, ErrorCode::RateLimited);
    assert!(last
        .failure
        .as_ref()
        .unwrap()
        .message
        .contains("unavailable"));
}

// ----- options the application sets up front ----------------------------------------------

#[test]
fn the_since_option_is_sent_on_the_first_connect_and_older_events_are_not_delivered() {
    let mut o = opts();
    o.since = Some("42-0".into());
    let mut h = H::started(o);
    assert_eq!(h.e.snapshot().cursor.as_deref(), Some("42-0"));
    let (c, _, url) = h.last_conn();
    assert_eq!(url, "wss://app.example.com/realtime/ws?since=42-0");
    h.opened(c);
    h.events_on(c, &["41-9", "42-0", "42-1"]);
    assert_eq!(h.delivered(), ["42-1"]);
}

#[test]
fn an_empty_since_option_is_refused_naming_the_option() {
    let mut o = opts();
    o.since = Some(" ".into());
    let err = o.validate().unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidOption);
    assert!(err.message.contains("since"), "{}", err.message);
}

#[test]
fn backoff_jitter_sets_how_much_of_each_wait_is_random() {
    // Attempt n waits in [cap × (1 − jitter), cap]; measured over many seeds on the second
    // failure in a row (the first failure of a fresh start is not after a session).
    let waits = |jitter: f64| -> Vec<u64> {
        (0..200)
            .map(|seed| {
                let mut o = opts();
                o.transports = vec![Transport::WebSocket];
                o.backoff.jitter = jitter;
                let mut h = H::seeded(o, PageContext::new("https://app.example.com/"), seed);
                h.input(Input::Start);
                let (c, _, _) = h.last_conn();
                h.closed(c, Some(1006));
                let at = h.e.snapshot().next_retry_at.expect("a retry is scheduled");
                at - h.now
            })
            .collect()
    };
    let none = waits(0.0);
    assert!(
        none.windows(2).all(|w| w[0] == w[1]),
        "no jitter: every client waits the same"
    );
    let full = waits(1.0);
    let cap = *none.first().unwrap();
    assert!(full.iter().all(|&w| w <= cap));
    assert!(
        full.iter().any(|&w| w < cap / 2),
        "full jitter reaches below half the cap"
    );
    let equal = waits(0.5);
    assert!(equal.iter().all(|&w| w >= cap / 2 && w <= cap));
    let mut bad = opts();
    bad.backoff.jitter = 1.5;
    assert!(bad
        .validate()
        .unwrap_err()
        .message
        .contains("backoff.jitter"));
}

#[test]
fn polling_pauses_while_the_page_is_hidden_when_asked_and_catches_up_on_return() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    o.polling.pause_when_hidden = true;
    let mut h = H::started(o);
    let (p, _, _) = h.last_conn();
    h.opened(p);
    h.events_on(p, &["1", "2"]);
    h.input(Input::Hidden);
    h.closed(p, None);
    h.advance(60_000);
    assert!(h.open.is_empty(), "no poll while hidden");
    h.input(Input::Visible);
    let (p2, t, url) = h.last_conn();
    assert_ne!(p2, p);
    assert_eq!(t, Transport::Polling);
    assert!(url.contains("since=2"), "{url}");
    h.opened(p2);
    h.events_on(p2, &["3"]);
    assert_eq!(h.delivered(), ["1", "2", "3"]);
}

#[test]
fn polling_goes_on_while_hidden_by_default() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    let mut h = H::started(o);
    let (p, _, _) = h.last_conn();
    h.opened(p);
    h.events_on(p, &["1"]);
    h.input(Input::Hidden);
    h.closed(p, None);
    h.advance(1_000);
    assert_eq!(
        h.open.len(),
        1,
        "the next poll starts although the page is hidden"
    );
}

#[test]
fn an_oversized_event_in_a_poll_batch_is_reported_and_passed_so_the_next_poll_does_not_fetch_it_again(
) {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    let mut h = H::started(o);
    let (p, _, _) = h.last_conn();
    h.opened(p);
    h.items(
        p,
        vec![
            H::ev("1"),
            Item::TooLarge {
                id: Some("2".into()),
                size: 3 << 20,
                limit: 1 << 20,
            },
        ],
    );
    assert_eq!(h.delivered(), ["1"]);
    assert_eq!(h.errors(), [ErrorCode::FrameTooLarge]);
    assert!(h.error_messages()[0].contains("skipped"));
    assert_eq!(h.e.snapshot().cursor.as_deref(), Some("2"));
    h.closed(p, None);
    let (p2, _, url) = h.last_conn();
    assert!(url.contains("since=2"), "{url}");
    h.opened(p2);
    h.events_on(p2, &["3"]);
    assert_eq!(h.delivered(), ["1", "3"]);
}

#[test]
fn an_sse_event_over_the_limit_is_reported_in_its_place_and_the_reconnect_resumes_after_it() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    let c = h.connect_last();
    // Bytes through the real parser and decoder: event 2 is over the 32-byte limit.
    let mut parser = SseParser::new(32);
    let mut events = Vec::new();
    parser.feed(
        b"id: 1\nevent: t\ndata: {}\n\nid: 2\nevent: t\ndata: \"0123456789abcdefghij0123456789\"\n\n",
        &mut events,
    );
    let items = events
        .iter()
        .map(|e| decode::decode_sse_event::<serde_json::Value>(e, &Interop::default()).unwrap())
        .collect();
    h.items(c, items);
    assert_eq!(h.delivered(), ["1"]);
    assert_eq!(h.errors(), [ErrorCode::FrameTooLarge]);
    assert_eq!(
        h.e.snapshot().cursor.as_deref(),
        Some("2"),
        "the cursor passes it"
    );
    h.closed(c, None);
    let opens = h.opens.len();
    h.advance(10_000);
    assert!(h.opens.len() > opens, "it reconnects");
    let (_, t, url) = h.last_conn();
    assert_eq!(t, Transport::Sse);
    assert!(url.contains("since=2"), "{url}");
    assert_eq!(
        h.opens.last().unwrap().4.as_deref(),
        Some("2"),
        "Last-Event-ID names the skipped event, so the server does not send it again"
    );
}

#[test]
fn sse_connections_dying_after_the_same_idle_time_ask_the_server_for_heartbeats_below_it() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    let mut h = H::started(o);
    for _ in 0..2 {
        h.cut_after_idle(20_000, None);
    }
    assert_eq!(h.errors(), [ErrorCode::ClosedByPeer, ErrorCode::IdleCutoff]);
    assert!(h.error_messages()[1].contains("asking the server for heartbeats"));
    assert!(h
        .e
        .diagnostics()
        .notes
        .iter()
        .any(|n| n.text.contains("adaptive heartbeat")));
    // The reconnect asks for heartbeats under the cut-off (two thirds of it).
    let (_, t, url) = h.last_conn();
    assert_eq!(t, Transport::Sse);
    assert!(url.contains("heartbeat=13333"), "{url}");
}

#[test]
fn polls_cut_after_the_same_idle_time_are_held_for_less_than_that() {
    let mut o = opts();
    o.transports = vec![Transport::Polling];
    o.polling.wait_ms = Some(25_000);
    let mut h = H::started(o);
    // The held request of the session, after the request that proves the rung (wait=0).
    fn held(h: &mut H) -> (ConnId, String) {
        let (p, _, url) = h.last_conn();
        if url.contains("wait=0") {
            h.opened(p);
            h.items(p, vec![]);
            h.closed(p, None);
        }
        // An empty answer waits the poll interval before the next request.
        for _ in 0..10 {
            if !h.open.is_empty() {
                break;
            }
            h.advance(1_000);
        }
        let (p, _, url) = h.last_conn();
        (p, url)
    }
    for _ in 0..2 {
        let (p, url) = held(&mut h);
        assert!(url.contains("wait=25000"), "{url}");
        // A proxy cuts the held request after 15 s without a byte.
        h.advance(15_000);
        h.closed(p, None);
        if let Some(at) = h.e.snapshot().next_retry_at {
            h.advance(at - h.now);
        }
    }
    assert!(
        h.errors().contains(&ErrorCode::IdleCutoff),
        "{:?}",
        h.errors()
    );
    let (_, url) = held(&mut h);
    assert!(url.contains("wait=10000"), "{url}");
}

#[test]
fn without_adaptive_heartbeat_an_sse_idle_cutoff_only_says_what_to_change() {
    let mut o = opts();
    o.transports = vec![Transport::Sse];
    o.heartbeat.adaptive = false;
    let mut h = H::started(o);
    for _ in 0..2 {
        h.cut_after_idle(20_000, None);
    }
    assert!(h.error_messages()[1].contains("make the server send heartbeats more often"));
    assert!(!h.last_conn().2.contains("heartbeat="));
}

// ----- bad batch entries (issue 12, point 4) ---------------------------------------------------
// Kept in their own block: the rest of this file is being edited concurrently.

mod bad_batch_entries {
    use super::super::decode::decode_text;
    use super::super::harness::{opts, H};
    use super::super::*;
    use serde_json::Value;

    /// A poll body or WebSocket frame through the real decoder, as the web layer feeds it.
    fn body(h: &mut H, c: ConnId, text: &str) {
        let input = match decode_text::<Value>(text, &Interop::default(), 1 << 20) {
            Ok(items) => Input::Items { conn: c, items },
            Err(error) => Input::BadFrame { conn: c, error },
        };
        h.input(input);
    }

    fn polling() -> H {
        let mut o = opts();
        o.transports = vec![Transport::Polling];
        H::started(o)
    }

    #[test]
    fn a_poll_batch_delivers_its_good_events_reports_each_bad_entry_and_the_next_poll_starts_after_it(
    ) {
        let mut h = polling();
        let (p, _, _) = h.last_conn();
        h.opened(p);
        body(
            &mut h,
            p,
            r#"[{"id":1,"type":"t","data":1}, 7, {"id":2,"type":"t","data":2}, {"id":3,"type":5}]"#,
        );
        assert_eq!(h.delivered(), ["1", "2"]);
        assert_eq!(
            h.errors(),
            [ErrorCode::BadFrame, ErrorCode::BadFrame],
            "one typed error per bad entry"
        );
        let m = h.error_messages();
        assert!(m[0].contains("not an event object"), "{}", m[0]);
        assert!(m[1].contains("`type`"), "{}", m[1]);
        assert_eq!(
            h.e.snapshot().cursor.as_deref(),
            Some("3"),
            "the bad entry's id moves the cursor past it"
        );
        assert_eq!(h.status(), Status::Connected);
        let opens = h.opens.len();
        h.closed(p, None);
        assert_eq!(h.opens.len(), opens + 1, "the next poll starts at once");
        let (p2, _, url) = h.last_conn();
        assert!(url.contains("since=3"), "{url}");
        h.opened(p2);
        body(&mut h, p2, r#"[{"id":4,"type":"t","data":4}]"#);
        assert_eq!(h.delivered(), ["1", "2", "4"]);
        assert_eq!(h.errors().len(), 2, "nothing reported again");
    }

    #[test]
    fn a_bad_entry_replayed_at_or_below_the_cursor_is_not_reported_again() {
        let mut h = polling();
        let (p, _, _) = h.last_conn();
        h.opened(p);
        body(
            &mut h,
            p,
            r#"{"events":[{"id":"5-0","type":5}],"cursor":"5-0"}"#,
        );
        assert_eq!(h.errors(), [ErrorCode::BadFrame]);
        assert_eq!(h.e.snapshot().cursor.as_deref(), Some("5-0"));
        h.closed(p, None);
        let (p2, _, _) = h.last_conn();
        h.opened(p2);
        // A server that ignores `since` sends it again with a new event.
        body(
            &mut h,
            p2,
            r#"{"events":[{"id":"5-0","type":5},{"id":"6-0","type":"t","data":6}],"cursor":"6-0"}"#,
        );
        assert_eq!(h.delivered(), ["6-0"]);
        assert_eq!(h.errors(), [ErrorCode::BadFrame]);
    }

    #[test]
    fn a_poll_answer_with_nothing_usable_is_retried_with_backoff_not_at_once() {
        let mut h = polling();
        let (p, _, _) = h.last_conn();
        h.opened(p);
        h.events_on(p, &["1"]);
        h.closed(p, None);
        for page in ["[1, \"x\"]", "<html><body>502 Bad Gateway</body></html>"] {
            let (p, _, url) = h.last_conn();
            assert!(url.contains("since=1"), "{url}");
            h.opened(p);
            let opens = h.opens.len();
            body(&mut h, p, page);
            assert_eq!(h.errors().last(), Some(&ErrorCode::BadFrame), "{page}");
            assert!(!h.is_open(p));
            assert_eq!(h.opens.len(), opens, "{page}: no new poll at once");
            let at = h.e.snapshot().next_retry_at.expect("a retry is planned");
            assert!(at > h.now, "{page}");
            h.advance(at - h.now);
        }
        assert_eq!(h.errors().len(), 2, "one error per bad answer");
    }

    #[test]
    fn a_websocket_frame_holding_a_batch_with_a_bad_entry_delivers_the_rest_on_the_same_socket() {
        let mut h = H::started(opts());
        let ws = h.connect_last();
        body(
            &mut h,
            ws,
            r#"[{"id":"1","type":"t","data":1}, null, {"id":"2","type":"t","data":2}]"#,
        );
        assert_eq!(h.delivered(), ["1", "2"]);
        assert_eq!(h.errors(), [ErrorCode::BadFrame]);
        assert!(h.error_messages()[0].contains("skipped"));
        assert!(h.is_open(ws), "the socket stays");
        let streams = h.opens.iter().filter(|o| o.2 != Transport::Polling).count();
        assert_eq!(
            streams, 1,
            "no second stream (the one poll asked for the baseline)"
        );
    }
}

// ----- an SSE answer that is not an event stream (issue 12, point 4) ------------------------

mod sse_content_type {
    use super::super::decode::check_event_stream;
    use super::super::harness::{opts, H};
    use super::super::*;

    #[test]
    fn an_sse_answer_that_is_not_an_event_stream_fails_the_attempt_naming_its_type_and_the_ladder_moves_on(
    ) {
        let mut o = opts();
        o.transports = vec![Transport::Sse, Transport::Polling];
        let mut h = H::started(o);
        let (sse, t, _) = h.last_conn();
        assert_eq!(t, Transport::Sse);
        // What the fetch-stream adapter sends for a `200 text/html` instead of `Opened`.
        let error = check_event_stream(Some("text/html; charset=utf-8")).unwrap_err();
        h.input(Input::BadFrame { conn: sse, error });
        assert_eq!(h.errors(), [ErrorCode::HttpError]);
        let m = &h.error_messages()[0];
        assert!(m.contains("`text/html; charset=utf-8`"), "{m}");
        assert!(m.contains("text/event-stream"), "{m}");
        assert!(!h.is_open(sse));
        let (p, t, _) = h.last_conn();
        assert_eq!(t, Transport::Polling, "the next rung");
        h.opened(p);
        h.events_on(p, &["1"]);
        assert_eq!(h.delivered(), ["1"]);
        assert_eq!(h.e.snapshot().transport, Some(Transport::Polling));
    }

    #[test]
    fn an_eventsource_that_failed_the_connection_is_an_http_error_and_the_ladder_moves_on() {
        let mut o = opts();
        o.transports = vec![Transport::Sse, Transport::Polling];
        let mut h = H::started(o);
        let (sse, t, _) = h.last_conn();
        assert_eq!(t, Transport::Sse);
        // What the EventSource adapter sends when the browser failed the connection.
        h.input(Input::BadFrame {
            conn: sse,
            error: FrameError::NotEventStream { content_type: None },
        });
        assert_eq!(h.errors(), [ErrorCode::HttpError]);
        assert!(h.error_messages()[0].contains("EventSource"));
        assert_eq!(h.last_conn().1, Transport::Polling);
    }
}

// ----- polling under a rate limit -------------------------------------------------------

mod polling_rates {
    use super::*;

    fn polling() -> H {
        let mut o = opts();
        o.transports = vec![Transport::Polling];
        let mut h = H::started(o);
        let p = h.connect_last();
        h.closed(p, None);
        h.advance_until_open();
        h
    }

    #[test]
    fn a_429_on_a_poll_slows_the_polls_without_an_error_or_a_reconnect() {
        let mut h = polling();
        let (p, _, _) = h.last_conn();
        h.input(Input::HttpStatus {
            conn: p,
            status: 429,
            retry_after_ms: Some(1_000),
            error_code: Some("rate_limited".into()),
        });
        assert_eq!(h.status(), Status::Connected, "the session stays open");
        assert!(h.errors().is_empty(), "{:?}", h.error_messages());
        assert!(h
            .notes()
            .iter()
            .any(|n| n.contains("fewer polls (HTTP 429)")));
        assert!(!h.open.iter().any(|c| c.1 == Transport::Polling));
        h.advance(999);
        assert!(
            !h.open.iter().any(|c| c.1 == Transport::Polling),
            "Retry-After is honoured"
        );
        h.advance(101);
        let (p2, t, _) = h.last_conn();
        assert_eq!(t, Transport::Polling);
        assert_ne!(p2, p);
        // It goes on as before once the server answers.
        h.opened(p2);
        h.events_on(p2, &["1"]);
        h.closed(p2, None);
        assert_eq!(
            h.open.len(),
            1,
            "a poll that brought events is followed at once"
        );
        assert_eq!(h.delivered(), ["1"]);
    }
}

// ----- the first baseline and adopted cursors ---------------------------------------------

mod first_baseline {
    use super::*;

    fn poll_cursor(c: &str) -> Item<serde_json::Value> {
        Item::Hello {
            cursor: Some(c.into()),
            heartbeat_ms: None,
        }
    }

    #[test]
    fn a_client_without_a_cursor_asks_where_the_server_is_before_its_first_stream() {
        let mut h = H::new(opts());
        h.answer_baseline = true;
        h.input(Input::Start);
        assert_eq!(h.opens.len(), 1);
        let (c, t, url) = h.last_conn();
        assert_eq!(t, Transport::Polling);
        assert_eq!(url, "https://app.example.com/realtime/poll?wait=0");
        assert_eq!(h.e.first_baseline_poll(), Some(c));
        h.opened(c);
        h.items(c, vec![H::ev("3"), H::ev("4")]); // a short-poll backend: its whole history
        h.closed(c, None);
        assert!(
            h.delivered().is_empty(),
            "the baseline's events are not delivered"
        );
        let (_, t, url) = h.last_conn();
        assert_eq!(t, Transport::WebSocket);
        assert_eq!(url, "wss://app.example.com/realtime/ws?since=4");
    }

    #[test]
    fn a_stream_blocked_from_the_start_steps_down_from_the_baseline_and_loses_nothing() {
        let mut h = H::started_with_baseline(opts(), vec![poll_cursor("7")]);
        let (ws, t, url) = h.last_conn();
        assert_eq!(t, Transport::WebSocket);
        assert!(url.ends_with("ws?since=7"), "{url}");
        h.opened(ws); // 101, then nothing passes; 8 and 9 were published since it opened
        h.advance(5_000);
        let url = h.answer_check(vec![H::ev("8"), H::ev("9")]);
        assert!(url.contains("since=7"), "{url}");
        h.advance(1_000);
        assert_eq!(h.errors(), [ErrorCode::SilentAfterOpen]);
        let (sse, t, url) = h.last_conn();
        assert_eq!(t, Transport::Sse);
        assert!(url.ends_with("sse?since=7"), "{url}");
        h.opened(sse);
        h.events_on(sse, &["8", "9"]);
        assert_eq!(h.delivered(), ["8", "9"]);
        assert_eq!(h.gaps(), 0);
    }

    #[test]
    fn a_baseline_poll_that_does_not_answer_in_time_does_not_hold_the_first_stream() {
        let mut h = H::new(opts());
        h.answer_baseline = true;
        h.input(Input::Start);
        h.advance(2_999);
        assert_eq!(h.open.len(), 1, "still waiting for the baseline");
        h.advance(1);
        assert_eq!(
            h.last_conn().1,
            Transport::WebSocket,
            "after timeouts.raceMs"
        );
        // The late answer is still a resume point (the best there is).
        let c = h.open[0].0;
        h.opened(c);
        h.items(c, vec![poll_cursor("12")]);
        h.closed(c, None);
        assert_eq!(h.e.snapshot().cursor.as_deref(), Some("12"));
        assert!(h
            .notes()
            .iter()
            .any(|n| n.contains("learned after the stream opened")));
    }

    #[test]
    fn an_adopted_cursor_is_a_resume_point_not_a_filter() {
        let mut h = H::started(opts());
        let (ws, _, _) = h.last_conn();
        h.opened(ws);
        h.hello(ws, Some("10"));
        // An older event still on its way is new to the app: nothing was delivered yet.
        h.events_on(ws, &["9", "11"]);
        assert_eq!(h.delivered(), ["9", "11"]);
        h.events_on(ws, &["9", "10", "11"]);
        assert_eq!(
            h.delivered(),
            ["9", "11"],
            "repeats of what was delivered are dropped"
        );
        // The since option is the app's own cursor: a filter.
        let mut o = opts();
        o.since = Some("10".into());
        let mut h = H::started(o);
        let (ws, _, _) = h.last_conn();
        h.opened(ws);
        h.events_on(ws, &["9", "11"]);
        assert_eq!(h.delivered(), ["11"]);
    }

    #[test]
    fn a_websocket_server_that_never_answers_a_ping_gets_no_more_pings() {
        let mut o = opts();
        o.transports = vec![Transport::WebSocket];
        let mut h = H::started(o);
        let (ws, _, _) = h.last_conn();
        h.opened(ws);
        assert_eq!(h.pings.len(), 1, "one at open: a pong would prove the path");
        for _ in 0..5 {
            h.advance(30_000);
            h.items(ws, vec![Item::Heartbeat]); // its own heartbeat, every 30 s
        }
        assert_eq!(
            h.pings.len(),
            1,
            "pings would restart the server's heartbeat timer"
        );
        assert!(h.is_open(ws));
        assert!(h.errors().is_empty(), "{:?}", h.error_messages());
    }
}
