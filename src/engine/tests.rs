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
