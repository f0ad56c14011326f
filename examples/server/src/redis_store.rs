//! Redis Streams as the history of every topic.
//!
//! One stream per topic (`<prefix>:stream:<topic>`), entries `t` (type) and `d` (data JSON),
//! the stream id is the event id. `XADD ... MAXLEN ~ N` bounds each stream by count;
//! `XTRIM ... MINID ~` bounds it by age. Whether a cursor fell into the trimmed range is
//! decided with `max-deleted-entry-id` and `entries-added` from `XINFO STREAM` (Redis
//! 7.0+): a cursor below it has lost events and gets a `reset`, and so does a cursor the
//! stream cannot have given out (its data was lost and the stream created anew).
//! Idempotency keys of upstream sends are `SET NX EX` keys, so a repeat is recognised by
//! whichever process receives it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Value};

use crate::event::{Event, EventId};

/// A failure talking to Redis, as text for logs and 503 bodies.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis: {}", self.0)
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError(e.to_string())
    }
}

/// What `XINFO STREAM` tells about a topic's stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamInfo {
    /// Every entry at or below this id may have been deleted.
    pub max_deleted: EventId,
    pub first: Option<EventId>,
    pub last: EventId,
    pub length: u64,
    pub entries_added: u64,
}

impl StreamInfo {
    /// Why the events after `cursor` cannot all be delivered, or `None` when they can:
    /// - `unknown_cursor`: newer than any id the stream ever generated. Ids come from Redis
    ///   alone, so every server gave out only ids up to `last-generated-id`: the stream lost
    ///   its data since, or the cursor is forged. Only new events follow.
    /// - `history_trimmed`: events after it were deleted or trimmed. `MAXLEN`/`MINID`
    ///   trimming does not move `max-deleted-entry-id` (only `XDEL` does), so a trimmed head
    ///   is recognised by the count of entries ever added exceeding the length: then a
    ///   cursor before the first retained entry may have missed some. (A cursor equal to the
    ///   last trimmed id also gets a reset: a needless reload, never a silent loss.)
    /// - `history_lost`: before the first entry of a stream that never lost one. No client
    ///   can hold such an id (a client that joined an empty stream holds `0-0`) unless the
    ///   stream it came from is gone: Redis restarted without persistence, or the key was
    ///   deleted, and the topic's stream was created anew.
    pub fn reset_reason(&self, cursor: EventId) -> Option<&'static str> {
        if cursor > self.last {
            return Some("unknown_cursor");
        }
        if cursor < self.max_deleted {
            return Some("history_trimmed");
        }
        if self.entries_added > self.length {
            let lost = match self.first {
                Some(first) => cursor < first,
                None => cursor < self.last,
            };
            return lost.then_some("history_trimmed");
        }
        match self.first {
            Some(first) if cursor != EventId::ZERO && cursor < first => Some("history_lost"),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    /// Shared by every request. It reconnects by itself after Redis restarts or fails over
    /// (the command that meets the broken connection fails, the next ones go through): a
    /// plain multiplexed connection stays broken, and the server with it.
    conn: ConnectionManager,
    prefix: String,
}

/// How long a follower's `XREAD` blocks before it looks around again.
pub const BLOCK_MS: u64 = 5_000;

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            // Reconnect attempts back off from 100 ms up to 2 s.
            .set_max_delay(Duration::from_secs(2));
        let mut conn = client.get_connection_manager_with_config(cfg).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(RedisStore {
            client,
            conn,
            prefix: prefix.to_string(),
        })
    }

    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(_))
        )
    }

    /// A connection of its own for a blocking `XREAD` (it would stall a shared one).
    pub async fn blocking_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS + 5_000)));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    pub fn stream_key(&self, topic: &str) -> String {
        format!("{}:stream:{}", self.prefix, topic)
    }

    pub async fn append(
        &self,
        topic: &str,
        items: &[(String, String)],
        max_len: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        let key = self.stream_key(topic);
        let mut pipe = redis::pipe();
        for (kind, data) in items {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg("t")
                .arg(kind)
                .arg("d")
                .arg(data);
        }
        let ids: Vec<String> = pipe.query_async(&mut self.conn.clone()).await?;
        ids.iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| StoreError(format!("XADD returned id {s:?}")))
            })
            .collect()
    }

    pub async fn info(&self, topic: &str) -> Result<StreamInfo, StoreError> {
        let key = self.stream_key(topic);
        let reply: Result<Value, redis::RedisError> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await;
        let value = match reply {
            Ok(v) => v,
            // A stream that was never written has lost nothing.
            Err(e) if e.to_string().contains("no such key") => return Ok(StreamInfo::default()),
            Err(e) => return Err(e.into()),
        };
        let mut info = StreamInfo::default();
        let pairs = map_pairs(&value);
        for (k, v) in pairs {
            match k.as_str() {
                "max-deleted-entry-id" => info.max_deleted = id_of(v).unwrap_or_default(),
                "last-generated-id" => info.last = id_of(v).unwrap_or_default(),
                "length" => info.length = int_of(v),
                "entries-added" => info.entries_added = int_of(v),
                "first-entry" => {
                    if let Value::Array(items) = v {
                        info.first = items.first().and_then(id_of);
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Entries strictly after `after`, at most `count`.
    pub async fn range_after(
        &self,
        topic: &str,
        after: EventId,
        count: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.stream_key(topic))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(reply.ids.iter().filter_map(to_event).collect())
    }

    pub async fn last_id(
        &self,
        conn: &mut MultiplexedConnection,
        topic: &str,
    ) -> Result<EventId, StoreError> {
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.stream_key(topic))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(reply
            .ids
            .first()
            .and_then(|s| s.id.parse().ok())
            .unwrap_or_default())
    }

    /// Blocks up to [`BLOCK_MS`] for entries of several topics, each after its own id.
    /// Returns (topic, events) for the topics that have new entries.
    pub async fn read_many_blocking(
        &self,
        conn: &mut MultiplexedConnection,
        after: &[(String, EventId)],
    ) -> Result<Vec<(String, Vec<Event>)>, StoreError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS");
        for (topic, _) in after {
            cmd.arg(self.stream_key(topic));
        }
        for (_, id) in after {
            cmd.arg(id.to_string());
        }
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        let prefix = format!("{}:stream:", self.prefix);
        Ok(reply
            .map(|r| {
                r.keys
                    .iter()
                    .filter_map(|k| {
                        let topic = k.key.strip_prefix(&prefix)?.to_string();
                        Some((topic, k.ids.iter().filter_map(to_event).collect()))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// This connection's id, for `CLIENT UNBLOCK`.
    pub async fn client_id(&self, conn: &mut MultiplexedConnection) -> Result<i64, StoreError> {
        Ok(redis::cmd("CLIENT").arg("ID").query_async(conn).await?)
    }

    /// Interrupts a blocking `XREAD` of another connection (it returns as if timed out).
    pub async fn unblock(&self, client_id: i64) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(client_id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Drops entries older than `min_ms` (approximately, whole macro nodes).
    pub async fn trim_older_than(&self, topic: &str, min_ms: u64) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("XTRIM")
            .arg(self.stream_key(topic))
            .arg("MINID")
            .arg("~")
            .arg(min_ms)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Records an upstream message key; false when it was seen before (within `ttl_secs`).
    pub async fn first_time(
        &self,
        topic: &str,
        key: &str,
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:idem:{}:{}", self.prefix, topic, key))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }
}

fn id_of(v: &Value) -> Option<EventId> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn int_of(v: &Value) -> u64 {
    match v {
        Value::Int(i) => (*i).max(0) as u64,
        other => text_of(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `XINFO` answers a flat array in RESP2 and a map in RESP3.
fn map_pairs(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((text_of(k)?, v)),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text_of(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn to_event(entry: &redis::streams::StreamId) -> Option<Event> {
    let id: EventId = entry.id.parse().ok()?;
    let kind = entry
        .map
        .get("t")
        .and_then(text_of)
        .unwrap_or_else(|| "message".into());
    let data = entry
        .map
        .get("d")
        .and_then(text_of)
        .unwrap_or_else(|| "null".into());
    // Entries written by other tools may hold anything: only valid JSON goes on the wire.
    let data = if serde_json::from_str::<serde_json::Value>(&data).is_ok() {
        data
    } else {
        serde_json::Value::String(data).to_string()
    };
    Some(Event::new(id, &kind, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EventId {
        EventId::new(ms, 0)
    }

    #[test]
    fn a_cursor_gets_a_reset_only_when_the_stream_cannot_deliver_what_follows_it() {
        // Never trimmed: entries 10..=12 are all the stream ever held.
        let whole = StreamInfo {
            max_deleted: EventId::ZERO,
            first: Some(id(10)),
            last: id(12),
            length: 3,
            entries_added: 3,
        };
        assert_eq!(whole.reset_reason(EventId::ZERO), None, "from the start");
        assert_eq!(whole.reset_reason(id(11)), None);
        assert_eq!(whole.reset_reason(id(12)), None, "up to date");
        assert_eq!(whole.reset_reason(id(5)), Some("history_lost"));
        assert_eq!(whole.reset_reason(id(13)), Some("unknown_cursor"));
        // Trimmed to 10..=12 out of 1..=12.
        let trimmed = StreamInfo {
            entries_added: 12,
            ..whole
        };
        assert_eq!(trimmed.reset_reason(id(5)), Some("history_trimmed"));
        assert_eq!(trimmed.reset_reason(EventId::ZERO), Some("history_trimmed"));
        assert_eq!(trimmed.reset_reason(id(10)), None);
        // Gone entirely (Redis came back empty and nothing was published since).
        let gone = StreamInfo::default();
        assert_eq!(gone.reset_reason(EventId::ZERO), None);
        assert_eq!(gone.reset_reason(id(12)), Some("unknown_cursor"));
    }
}
