//! Topics, their history and live fan-out.
//!
//! Contract:
//! - `publish` gives each event an id that is larger than every earlier id of the topic.
//! - `read_after(cursor)` returns the retained events strictly after `cursor`, in order, in
//!   bounded batches; when events after `cursor` are no longer retained it says so with a
//!   [`Reset`] (never a silent skip) and moves the cursor to the oldest retained point.
//! - `Topic::watch()` wakes a subscriber whenever the topic may have new events; subscribers
//!   then call `read_after` with their own cursor. A slow subscriber therefore never blocks
//!   others, and catches up in batches (several events per frame).
//!
//! Each topic keeps a ring of recent events. In memory mode the ring *is* the history. With
//! Redis the stream is the history and the ring is a cache of its tail, filled by one
//! follower task per process that reads the streams of all its topics with one blocking
//! `XREAD` on one connection (new topics interrupt it with `CLIENT UNBLOCK`); cursors older
//! than the cache are served from the stream with `XRANGE`.
//!
//! Retention is bounded four ways: events per topic (`--history-count`), age
//! (`--history-secs`), bytes per topic (`--history-bytes`) and bytes of all topics together
//! (half of `--memory-budget`, see [`crate::budget`]). The last one trims the oldest events of
//! the whole process first (one queue of every event in arrival order), whichever topic they
//! belong to; their subscribers get a `reset` like any other trim. Reads are bounded in
//! events and in bytes, so no frame, chunk or poll body is built larger than asked.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::budget::Budget;
use crate::event::{Event, EventId};
use crate::redis_store::{RedisStore, StoreError};

/// How far a cursor was behind, and where delivery goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// `history_trimmed`, `history_lost`, `server_restarted` or `unknown_cursor`.
    pub reason: &'static str,
    /// The oldest retained event, delivered next (none: only new events follow).
    pub oldest: Option<EventId>,
}

impl Reset {
    pub fn frame(&self) -> String {
        serde_json::json!({
            "type": "reset",
            "reason": self.reason,
            "oldest": self.oldest.map(|id| id.to_string()),
        })
        .to_string()
    }
}

/// What a subscriber gets from one read.
#[derive(Debug, Default)]
pub struct Batch {
    pub reset: Option<Reset>,
    pub events: Vec<Arc<Event>>,
    /// The cursor after this batch.
    pub cursor: EventId,
}

#[derive(Debug, Clone)]
pub enum HubError {
    BadTopic(String),
    TooManyTopics,
    /// The client may not create another topic yet: retry after this many seconds.
    NewTopicsThrottled(u64),
    Store(StoreError),
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::BadTopic(t) => write!(
                f,
                "topic `{}` is invalid: use 1-128 characters from A-Z a-z 0-9 . _ : -",
                t.chars().take(40).collect::<String>()
            ),
            HubError::TooManyTopics => write!(f, "the server holds its maximum number of topics"),
            HubError::NewTopicsThrottled(s) => write!(
                f,
                "too many new topics from this address: retry after {s} s"
            ),
            HubError::Store(e) => write!(f, "history store unavailable ({e})"),
        }
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        HubError::Store(e)
    }
}

/// The largest id below `id` (so an exclusive range from it starts at `id`).
fn before(id: EventId) -> EventId {
    match (id.ms, id.seq) {
        (0, 0) => EventId::ZERO,
        (ms, 0) => EventId::new(ms - 1, u64::MAX),
        (ms, seq) => EventId::new(ms, seq - 1),
    }
}

pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    /// Every event with an id above `floor` is in `events` (when `ready`).
    floor: EventId,
    /// The newest id known.
    last: EventId,
    /// Memory mode: always. Redis mode: the follower has positioned the cache.
    ready: bool,
    /// Events were dropped for count, age or bytes (memory mode's reset reason).
    trimmed: bool,
    /// Bytes of `events` ([`Event::size`]), also counted in the budget.
    bytes: usize,
    budget: Arc<Budget>,
}

impl Ring {
    fn new(floor: EventId, ready: bool, budget: Arc<Budget>) -> Ring {
        Ring {
            events: VecDeque::new(),
            floor,
            last: floor,
            ready,
            trimmed: false,
            bytes: 0,
            budget,
        }
    }

    fn push(&mut self, e: Arc<Event>) {
        let n = e.size();
        self.bytes += n;
        self.budget.hold_event(n);
        self.last = e.id;
        self.events.push_back(e);
    }

    /// Drops the oldest event (the floor moves up to it); returns its size.
    fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.events.pop_front()?;
        let n = e.size();
        self.bytes -= n;
        self.budget.release_event(n);
        self.floor = e.id;
        Some(n)
    }

    fn clear(&mut self) {
        while self.pop_oldest().is_some() {}
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Every retained event of the process in arrival order, to trim the oldest first when the
/// history of all topics passes its share of the budget.
struct Retention {
    budget: Arc<Budget>,
    /// Bytes one topic may retain.
    topic_bytes: usize,
    /// (topic, id) per event pushed; entries of events already gone are skipped and, when
    /// they pile up, swept out. Never locked while a ring is locked by the same thread.
    order: Mutex<VecDeque<(Weak<Topic>, EventId)>>,
}

impl Retention {
    /// Notes events just pushed to a topic (call without holding its ring).
    fn record(&self, topic: &Arc<Topic>, ids: impl IntoIterator<Item = EventId>) {
        let weak = Arc::downgrade(topic);
        self.order
            .lock()
            .unwrap()
            .extend(ids.into_iter().map(|id| (weak.clone(), id)));
        self.trim();
    }

    /// Trims the oldest events of all topics until the history is within its share.
    fn trim(&self) {
        while self.budget.history_over() {
            let Some((weak, id)) = self.order.lock().unwrap().pop_front() else {
                break;
            };
            let Some(topic) = weak.upgrade() else {
                continue;
            };
            let mut ring = topic.ring.lock().unwrap();
            while ring.events.front().is_some_and(|e| e.id <= id) {
                if let Some(n) = ring.pop_oldest() {
                    ring.trimmed = true;
                    self.budget.trimmed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let held = self.budget.events();
        let mut order = self.order.lock().unwrap();
        if order.len() > 2 * held + 1024 {
            order.retain(|(weak, id)| {
                weak.upgrade().is_some_and(|t| {
                    let ring = t.ring.lock().unwrap();
                    ring.events.front().is_some_and(|f| f.id <= *id)
                })
            });
        }
    }
}

pub struct Topic {
    pub name: String,
    ring: Mutex<Ring>,
    notify: watch::Sender<u64>,
    subscribers: AtomicUsize,
    last_used: Mutex<Instant>,
}

impl Topic {
    /// A receiver that changes whenever new events may be readable.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    fn wake(&self) {
        self.notify.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Keeps a topic alive (and counted) while a subscriber holds it.
pub struct Subscription {
    pub topic: Arc<Topic>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.topic.subscribers.fetch_sub(1, Ordering::Relaxed);
        *self.topic.last_used.lock().unwrap() = Instant::now();
    }
}

pub struct Hub {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    pub boot_ms: u64,
    history_count: usize,
    history_age: Option<Duration>,
    retention: Arc<Retention>,
    max_topics: usize,
    redis: Option<RedisStore>,
    /// Memory mode's idempotency keys: (topic, key) → first seen.
    seen_sends: Mutex<HashMap<(String, String), Instant>>,
    send_ttl: Duration,
    /// Memory mode's id sequence (the `<seq>` of `<boot_ms>-<seq>`).
    seq: std::sync::atomic::AtomicU64,
    /// Redis mode: the task that fills every topic's ring from the streams.
    follower: Option<Arc<Follower>>,
    /// Redis mode: streams this process wrote to lately (their age trimming is its job).
    published: Mutex<HashMap<String, Instant>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hub {
    /// A hub retaining at most `history_count` events and `history_bytes` bytes per topic,
    /// `history_secs` seconds (0: no age limit), and half of `budget` in all.
    pub fn new(
        history_count: usize,
        history_secs: u64,
        history_bytes: usize,
        budget: Arc<Budget>,
        redis: Option<RedisStore>,
    ) -> Arc<Hub> {
        let history_count = history_count.max(1);
        let retention = Arc::new(Retention {
            topic_bytes: history_bytes.clamp(1, budget.history_limit()),
            budget,
            order: Mutex::new(VecDeque::new()),
        });
        let follower = redis.as_ref().map(|store| {
            let f = Arc::new(Follower::default());
            f.client_id.store(-1, Ordering::SeqCst);
            tokio::spawn(follow(
                store.clone(),
                f.clone(),
                history_count,
                retention.clone(),
            ));
            f
        });
        Arc::new(Hub {
            topics: Mutex::new(HashMap::new()),
            boot_ms: now_ms(),
            history_count,
            history_age: (history_secs > 0).then(|| Duration::from_secs(history_secs)),
            retention,
            max_topics: 100_000,
            redis,
            seen_sends: Mutex::new(HashMap::new()),
            send_ttl: Duration::from_secs(3600),
            seq: std::sync::atomic::AtomicU64::new(0),
            follower,
            published: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the history store answers (always, in memory mode).
    pub async fn store_ok(&self) -> bool {
        match &self.redis {
            None => true,
            Some(store) => store.ping().await,
        }
    }

    pub fn is_redis(&self) -> bool {
        self.redis.is_some()
    }

    pub fn topic(self: &Arc<Self>, name: &str) -> Result<Arc<Topic>, HubError> {
        self.topic_for(name, false, None)
    }

    /// Looks a topic up (or creates it); counts a subscriber under the same lock the sweep
    /// takes, so the sweep never forgets a topic a subscriber is just joining.
    /// `may_create` is asked before a topic is created (Err: seconds to wait).
    fn topic_for(
        self: &Arc<Self>,
        name: &str,
        subscribe: bool,
        may_create: Option<MayCreate>,
    ) -> Result<Arc<Topic>, HubError> {
        if !valid_topic(name) {
            return Err(HubError::BadTopic(name.to_string()));
        }
        let mut topics = self.topics.lock().unwrap();
        if let Some(t) = topics.get(name) {
            // Marked used under the sweep's lock: a publish that just looked the topic up
            // cannot land in a topic the sweep forgets a moment later.
            *t.last_used.lock().unwrap() = Instant::now();
            if subscribe {
                t.subscribers.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(t.clone());
        }
        if topics.len() >= self.max_topics {
            return Err(HubError::TooManyTopics);
        }
        if let Some(check) = may_create {
            check().map_err(HubError::NewTopicsThrottled)?;
        }
        // Memory mode: ids come from one sequence for the whole process, so a topic that was
        // forgotten (idle, history aged out) and comes back never reuses an id, and a cursor
        // from its earlier life is below the new floor: it gets a reset, not silence.
        let floor = EventId::new(self.boot_ms, self.seq.load(Ordering::SeqCst));
        let topic = Arc::new(Topic {
            name: name.to_string(),
            ring: Mutex::new(Ring::new(
                floor,
                self.redis.is_none(),
                self.retention.budget.clone(),
            )),
            notify: watch::channel(0).0,
            subscribers: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        });
        if let (Some(store), Some(follower)) = (&self.redis, &self.follower) {
            follower.register(store, &topic);
        }
        if subscribe {
            topic.subscribers.fetch_add(1, Ordering::Relaxed);
        }
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    pub fn subscribe(self: &Arc<Self>, name: &str) -> Result<Subscription, HubError> {
        self.subscribe_as(name, None)
    }

    /// Subscribes on behalf of a client: a topic the hub does not hold is created only if
    /// `may_create` allows it.
    pub fn subscribe_as(
        self: &Arc<Self>,
        name: &str,
        may_create: Option<MayCreate>,
    ) -> Result<Subscription, HubError> {
        let topic = self.topic_for(name, true, may_create)?;
        Ok(Subscription { topic })
    }

    /// The newest event id of a topic: the cursor of a client that wants only new events.
    pub async fn latest(&self, topic: &Topic) -> Result<EventId, HubError> {
        {
            let ring = topic.ring.lock().unwrap();
            if ring.ready {
                return Ok(ring.last);
            }
        }
        let store = self
            .redis
            .as_ref()
            .expect("only redis topics are not ready");
        Ok(store.info(&topic.name).await?.last)
    }

    /// Retained events strictly after `cursor`: at most `max` of them, and no more than
    /// `max_bytes` of frames (but always one event when there is one, however large).
    pub async fn read_after(
        &self,
        topic: &Topic,
        cursor: EventId,
        max: usize,
        max_bytes: usize,
    ) -> Result<Batch, HubError> {
        let authoritative = self.redis.is_none();
        {
            let mut ring = topic.ring.lock().unwrap();
            self.prune(&mut ring);
            // With Redis the ring is a cache of the stream's tail: it serves a cursor only
            // if it knows that id (one it holds, or where it starts). Any other cursor is
            // checked against the stream itself, which can tell one it never gave out.
            let known = || {
                cursor == ring.floor || ring.events.binary_search_by(|e| e.id.cmp(&cursor)).is_ok()
            };
            if ring.ready && (authoritative || known()) {
                return Ok(self.read_ring(&ring, cursor, max, max_bytes, authoritative));
            }
        }
        let store = self
            .redis
            .as_ref()
            .expect("memory topics are always served from the ring");
        let info = store.info(&topic.name).await?;
        let mut batch = Batch {
            cursor,
            ..Batch::default()
        };
        if let Some(reason) = info.reset_reason(cursor) {
            let only_new = reason == "unknown_cursor";
            batch.reset = Some(Reset {
                reason,
                oldest: if only_new { None } else { info.first },
            });
            batch.cursor = match info.first {
                Some(first) if !only_new => before(first),
                _ => info.last,
            };
        }
        // A stream entry may be as large as a body (1 MiB): ask for a few at a time, until
        // `max` events or `max_bytes` are read.
        let mut bytes = 0;
        while batch.events.len() < max && bytes < max_bytes {
            let ask = (max - batch.events.len()).min(STREAM_READ);
            let events = store.range_after(&topic.name, batch.cursor, ask).await?;
            let got = events.len();
            let room = if batch.events.is_empty() {
                max_bytes
            } else {
                max_bytes - bytes
            };
            let mut taken = within_bytes(events.into_iter().map(Arc::new), room);
            if !batch.events.is_empty()
                && bytes + taken.first().map_or(0, |e| e.frame.len()) > max_bytes
            {
                break;
            }
            let complete = taken.len() == got;
            bytes += taken.iter().map(|e| e.frame.len()).sum::<usize>();
            if let Some(last) = taken.last() {
                batch.cursor = last.id;
            }
            batch.events.append(&mut taken);
            if got < ask || !complete {
                break;
            }
        }
        Ok(batch)
    }

    fn read_ring(
        &self,
        ring: &Ring,
        cursor: EventId,
        max: usize,
        max_bytes: usize,
        authoritative: bool,
    ) -> Batch {
        let mut batch = Batch {
            cursor,
            ..Batch::default()
        };
        // `since=0` asks for the whole retained history: a reset only if some of it is gone.
        let from_start = cursor == EventId::ZERO && !ring.trimmed;
        if cursor < ring.floor && from_start {
            batch.cursor = ring.floor;
        } else if cursor < ring.floor {
            let reason = if cursor.ms < self.boot_ms {
                "server_restarted"
            } else {
                "history_trimmed"
            };
            batch.reset = Some(Reset {
                reason,
                oldest: ring.events.front().map(|e| e.id),
            });
            batch.cursor = ring.floor;
        } else if authoritative && cursor > ring.last {
            // Not an id this server gave out (another server, or a forged cursor): the client
            // must forget it, or it would drop every new event as "already seen".
            batch.reset = Some(Reset {
                reason: "unknown_cursor",
                oldest: None,
            });
            batch.cursor = ring.last;
        }
        let start = ring.events.partition_point(|e| e.id <= batch.cursor);
        batch.events = within_bytes(ring.events.range(start..).take(max).cloned(), max_bytes);
        if let Some(last) = batch.events.last() {
            batch.cursor = last.id;
        }
        batch
    }

    fn prune(&self, ring: &mut Ring) {
        let before = ring.events.len();
        while ring.events.len() > self.history_count
            || (ring.bytes > self.retention.topic_bytes && ring.events.len() > 1)
        {
            ring.pop_oldest();
        }
        if let Some(age) = self.history_age {
            while ring
                .events
                .front()
                .is_some_and(|e| e.seen_at.elapsed() > age)
            {
                ring.pop_oldest();
            }
        }
        if ring.events.len() < before {
            ring.trimmed = true;
        }
    }

    /// Appends events (type, data JSON) to a topic; returns their ids.
    pub async fn publish(
        self: &Arc<Self>,
        name: &str,
        items: Vec<(String, String)>,
    ) -> Result<Vec<EventId>, HubError> {
        self.publish_as(name, items, None).await
    }

    /// [`Hub::publish`] on behalf of a client (see [`Hub::subscribe_as`]).
    pub async fn publish_as(
        self: &Arc<Self>,
        name: &str,
        items: Vec<(String, String)>,
        may_create: Option<MayCreate<'_>>,
    ) -> Result<Vec<EventId>, HubError> {
        if let Some(store) = &self.redis {
            if !valid_topic(name) {
                return Err(HubError::BadTopic(name.to_string()));
            }
            // No topic object: the follower of every process with subscribers (this one
            // included) delivers them, and topics nobody follows cost no XREAD key.
            let ids = store.append(name, &items, self.history_count).await?;
            self.published
                .lock()
                .unwrap()
                .insert(name.to_string(), Instant::now());
            return Ok(ids);
        }
        let topic = self.topic_for(name, false, may_create)?;
        let mut ids = Vec::with_capacity(items.len());
        {
            let mut ring = topic.ring.lock().unwrap();
            for (kind, data) in items {
                // Taken under the ring's lock: ids of one topic increase in publish order.
                let id = EventId::new(self.boot_ms, self.seq.fetch_add(1, Ordering::SeqCst) + 1);
                ring.push(Arc::new(Event::new(id, &kind, data)));
                ids.push(id);
            }
            self.prune(&mut ring);
        }
        self.retention.record(&topic, ids.iter().copied());
        *topic.last_used.lock().unwrap() = Instant::now();
        topic.wake();
        Ok(ids)
    }

    /// True the first time an upstream message key is seen on a topic (within an hour).
    pub async fn first_send(&self, topic: &str, key: &str) -> Result<bool, HubError> {
        if let Some(store) = &self.redis {
            return Ok(store
                .first_time(topic, key, self.send_ttl.as_secs())
                .await?);
        }
        let mut seen = self.seen_sends.lock().unwrap();
        let k = (topic.to_string(), key.to_string());
        if seen.contains_key(&k) {
            return Ok(false);
        }
        if seen.len() >= 100_000 {
            let ttl = self.send_ttl;
            seen.retain(|_, at| at.elapsed() < ttl);
        }
        seen.insert(k, Instant::now());
        Ok(true)
    }

    /// Periodic housekeeping: age retention, forgetting idle topics.
    pub async fn sweep(&self) {
        let idle_after = Duration::from_secs(60);
        let mut redis_topics = Vec::new();
        {
            let mut topics = self.topics.lock().unwrap();
            topics.retain(|_, t| {
                let mut ring = t.ring.lock().unwrap();
                self.prune(&mut ring);
                let unused = t.subscribers.load(Ordering::Relaxed) == 0
                    && t.last_used.lock().unwrap().elapsed() > idle_after;
                // Memory history must outlive its subscribers (that is what resume is for);
                // a Redis topic's cache can go, the stream keeps the history.
                let keep = !unused || (self.redis.is_none() && !ring.events.is_empty());
                if keep && self.redis.is_some() {
                    redis_topics.push(t.name.clone());
                }
                keep
            });
        }
        let ttl = Duration::from_secs(3600);
        self.seen_sends
            .lock()
            .unwrap()
            .retain(|_, at| at.elapsed() < ttl);
        if let (Some(store), Some(age)) = (&self.redis, self.history_age) {
            let min_ms = now_ms().saturating_sub(age.as_millis() as u64);
            {
                // A stream written within the retention age may still hold old entries.
                let mut published = self.published.lock().unwrap();
                published.retain(|_, at| at.elapsed() <= age + Duration::from_secs(60));
                for name in published.keys() {
                    if !redis_topics.contains(name) {
                        redis_topics.push(name.clone());
                    }
                }
            }
            for name in redis_topics {
                if let Err(e) = store.trim_older_than(&name, min_ms).await {
                    tracing::warn!(topic = %name, "age trim failed: {e}");
                }
            }
        }
    }

    pub fn topic_count(&self) -> usize {
        self.topics.lock().unwrap().len()
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.retention.budget
    }
}

/// Asked before a client's request creates a topic: Err(seconds to wait) refuses.
pub type MayCreate<'a> = &'a (dyn Fn() -> Result<(), u64> + Sync);

/// Stream entries asked for at once when a cursor is older than the cache.
const STREAM_READ: usize = 64;

/// The leading events whose frames fit in `max_bytes` (at least the first one).
fn within_bytes(events: impl Iterator<Item = Arc<Event>>, max_bytes: usize) -> Vec<Arc<Event>> {
    let mut total = 0;
    let mut out = Vec::new();
    for e in events {
        total += e.frame.len();
        if total > max_bytes && !out.is_empty() {
            break;
        }
        out.push(e);
    }
    out
}

/// Redis mode: the topics the follower reads, and how a new topic gets its attention.
#[derive(Default)]
struct Follower {
    topics: Mutex<HashMap<String, std::sync::Weak<Topic>>>,
    /// Bumped by every registration; `seen` is the last generation the follower took in.
    generation: std::sync::atomic::AtomicU64,
    seen: std::sync::atomic::AtomicU64,
    /// `CLIENT ID` of the follower's connection (negative: none yet).
    client_id: std::sync::atomic::AtomicI64,
    /// Wakes the follower while it has no topic at all.
    registered: tokio::sync::Notify,
}

impl Follower {
    fn register(self: &Arc<Self>, store: &RedisStore, topic: &Arc<Topic>) {
        self.topics
            .lock()
            .unwrap()
            .insert(topic.name.clone(), Arc::downgrade(topic));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.registered.notify_one();
        // The follower may be blocked in XREAD on the other topics: interrupt it until it has
        // taken this registration in (an UNBLOCK that lands between two reads is lost, so
        // repeat). Until then subscribers of the topic read the stream directly.
        let store = store.clone();
        let shared = self.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                if shared.seen.load(Ordering::SeqCst) >= generation {
                    return;
                }
                let id = shared.client_id.load(Ordering::SeqCst);
                if id >= 0 {
                    let _ = store.unblock(id).await;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
}

/// Redis mode: keeps the rings of all this process's topics filled with their streams' new
/// entries, with one blocking `XREAD` over all of them on one connection.
async fn follow(store: RedisStore, shared: Arc<Follower>, cache: usize, retention: Arc<Retention>) {
    loop {
        let result: Result<(), StoreError> = async {
            let mut conn = store.blocking_connection().await?;
            shared
                .client_id
                .store(store.client_id(&mut conn).await?, Ordering::SeqCst);
            let mut positions: HashMap<String, EventId> = HashMap::new();
            loop {
                let generation = shared.generation.load(Ordering::SeqCst);
                let live: Vec<(String, Arc<Topic>)> = {
                    let mut topics = shared.topics.lock().unwrap();
                    topics.retain(|_, t| t.strong_count() > 0);
                    topics
                        .iter()
                        .filter_map(|(n, t)| Some((n.clone(), t.upgrade()?)))
                        .collect()
                };
                positions.retain(|n, _| live.iter().any(|(l, _)| l == n));
                for (name, topic) in &live {
                    // A topic forgotten by the sweep and created again is a new object with
                    // an unpositioned ring, under a name the follower already reads.
                    if positions.contains_key(name) && topic.ring.lock().unwrap().ready {
                        continue;
                    }
                    let last = store.last_id(&mut conn, name).await?;
                    {
                        let mut ring = topic.ring.lock().unwrap();
                        ring.clear();
                        ring.floor = last;
                        ring.last = last;
                        ring.ready = true;
                    }
                    // Subscribers that read from the stream meanwhile may have missed a wake-up.
                    topic.wake();
                    positions.insert(name.clone(), last);
                }
                shared.seen.store(generation, Ordering::SeqCst);
                if positions.is_empty() {
                    tokio::select! {
                        _ = shared.registered.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
                let after: Vec<(String, EventId)> =
                    positions.iter().map(|(n, id)| (n.clone(), *id)).collect();
                for (name, events) in store.read_many_blocking(&mut conn, &after).await? {
                    let Some((_, topic)) = live.iter().find(|(n, _)| *n == name) else {
                        continue;
                    };
                    let mut added = Vec::new();
                    {
                        let mut ring = topic.ring.lock().unwrap();
                        for e in events {
                            if e.id > ring.last {
                                added.push(e.id);
                                ring.push(Arc::new(e));
                            }
                        }
                        // The cache is bounded like a memory history (the stream keeps the
                        // rest); its floor moves up, older cursors read the stream.
                        while ring.events.len() > cache
                            || (ring.bytes > retention.topic_bytes && ring.events.len() > 1)
                        {
                            ring.pop_oldest();
                        }
                        positions.insert(name.clone(), ring.last);
                    }
                    retention.record(topic, added);
                    topic.wake();
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("redis follower: {e}; retrying");
            shared.client_id.store(-1, Ordering::SeqCst);
            let live: Vec<Arc<Topic>> = shared
                .topics
                .lock()
                .unwrap()
                .values()
                .filter_map(|t| t.upgrade())
                .collect();
            for t in live {
                t.ring.lock().unwrap().ready = false;
                // Subscribers re-read from the stream itself meanwhile.
                t.wake();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| ("t".to_string(), i.to_string())).collect()
    }

    #[tokio::test]
    async fn a_forgotten_topic_never_reuses_ids_and_resets_old_cursors() {
        let hub = Hub::new(100, 0, usize::MAX, Budget::new(1 << 30), None);
        let old = hub.publish("a", items(3)).await.unwrap();
        hub.topics.lock().unwrap().remove("a");
        let new = hub.publish("a", items(1)).await.unwrap();
        assert!(new[0] > old[2], "{new:?} after {old:?}");
        let topic = hub.topic("a").unwrap();
        let batch = hub
            .read_after(&topic, old[0], 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(batch.reset.map(|r| r.reason), Some("history_trimmed"));
        assert_eq!(batch.events.iter().map(|e| e.id).collect::<Vec<_>>(), new);
    }

    #[tokio::test]
    async fn ids_increase_within_a_topic_across_interleaved_topics() {
        let hub = Hub::new(100, 0, usize::MAX, Budget::new(1 << 30), None);
        let mut last = EventId::ZERO;
        for _ in 0..3 {
            let a = hub.publish("a", items(2)).await.unwrap();
            hub.publish("b", items(2)).await.unwrap();
            assert!(a[0] > last && a[1] > a[0]);
            last = a[1];
        }
    }

    #[tokio::test]
    async fn reads_are_bounded_and_continue_from_the_returned_cursor() {
        let hub = Hub::new(1000, 0, usize::MAX, Budget::new(1 << 30), None);
        let ids = hub.publish("r", items(10)).await.unwrap();
        let topic = hub.topic("r").unwrap();
        let first = hub
            .read_after(&topic, EventId::ZERO, 4, usize::MAX)
            .await
            .unwrap();
        assert!(first.reset.is_none());
        assert_eq!(first.events.len(), 4);
        let rest = hub
            .read_after(&topic, first.cursor, 100, usize::MAX)
            .await
            .unwrap();
        let all: Vec<EventId> = first
            .events
            .iter()
            .chain(&rest.events)
            .map(|e| e.id)
            .collect();
        assert_eq!(all, ids);
    }

    #[tokio::test]
    async fn the_count_limit_trims_the_oldest_and_resets_cursors_below_it() {
        let hub = Hub::new(3, 0, usize::MAX, Budget::new(1 << 30), None);
        let ids = hub.publish("c", items(5)).await.unwrap();
        let topic = hub.topic("c").unwrap();
        let batch = hub
            .read_after(&topic, ids[0], 10, usize::MAX)
            .await
            .unwrap();
        let reset = batch.reset.unwrap();
        assert_eq!(
            (reset.reason, reset.oldest),
            ("history_trimmed", Some(ids[2]))
        );
        assert_eq!(batch.events.len(), 3);
        let ok = hub
            .read_after(&topic, ids[1], 10, usize::MAX)
            .await
            .unwrap();
        assert!(
            ok.reset.is_none(),
            "ids[1] is the last trimmed id: nothing after it is lost"
        );
    }

    #[tokio::test]
    async fn a_topic_keeps_at_most_its_bytes_and_the_oldest_go_first() {
        let hub = Hub::new(1000, 0, 10_000, Budget::new(1 << 30), None);
        let big = |n: usize| vec![("t".to_string(), format!("\"{}\"", "x".repeat(n)))];
        let first = hub.publish("b", big(3000)).await.unwrap();
        for _ in 0..5 {
            hub.publish("b", big(3000)).await.unwrap();
        }
        let topic = hub.topic("b").unwrap();
        assert!(topic.ring.lock().unwrap().bytes <= 10_000);
        let batch = hub
            .read_after(&topic, first[0], 100, usize::MAX)
            .await
            .unwrap();
        assert_eq!(batch.reset.map(|r| r.reason), Some("history_trimmed"));
        assert_eq!(
            batch.events.len(),
            3,
            "three events of ~3.2 KB fit in 10 KB"
        );
    }

    #[tokio::test]
    async fn over_the_budget_the_oldest_events_of_all_topics_are_trimmed_first() {
        let budget = Budget::new(crate::budget::MIN_BUDGET);
        let hub = Hub::new(100_000, 0, usize::MAX, budget.clone(), None);
        let chunk = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|_| ("t".to_string(), format!("\"{}\"", "x".repeat(10_000))))
                .collect()
        };
        // ~10 KB events, alternating topics, 1.5x the history's share in all.
        let share = budget.history_limit();
        let mut ids = Vec::new();
        for i in 0..(share * 3 / 2) / 100_000 {
            let t = if i % 2 == 0 { "a" } else { "b" };
            ids.push((t, hub.publish(t, chunk(10)).await.unwrap()));
        }
        assert!(budget.history() <= share, "{} > {share}", budget.history());
        assert!(
            budget.history() > share - 200_000,
            "trimmed far more than needed"
        );
        // The first publishes are gone from both topics, the last ones are all there.
        for (t, first) in &ids[..2] {
            let topic = hub.topic(t).unwrap();
            let batch = hub
                .read_after(&topic, first[0], 1, usize::MAX)
                .await
                .unwrap();
            assert!(batch.reset.is_some(), "{t} kept its oldest events");
        }
        for (t, last) in &ids[ids.len() - 2..] {
            let topic = hub.topic(t).unwrap();
            let batch = hub
                .read_after(&topic, last[0], 100, usize::MAX)
                .await
                .unwrap();
            assert!(batch.reset.is_none());
            assert_eq!(batch.events.len(), 9);
        }
    }

    #[tokio::test]
    async fn reads_stop_at_the_byte_limit_but_always_carry_one_event() {
        let hub = Hub::new(1000, 0, usize::MAX, Budget::new(1 << 30), None);
        let items: Vec<(String, String)> = (0..10)
            .map(|_| ("t".to_string(), format!("\"{}\"", "y".repeat(1000))))
            .collect();
        hub.publish("r", items).await.unwrap();
        let topic = hub.topic("r").unwrap();
        let batch = hub
            .read_after(&topic, EventId::ZERO, 100, 3500)
            .await
            .unwrap();
        assert_eq!(batch.events.len(), 3);
        let one = hub
            .read_after(&topic, EventId::ZERO, 100, 10)
            .await
            .unwrap();
        assert_eq!(one.events.len(), 1);
    }

    #[tokio::test]
    async fn a_repeated_send_key_is_recognised_per_topic() {
        let hub = Hub::new(3, 0, usize::MAX, Budget::new(1 << 30), None);
        assert!(hub.first_send("a", "k").await.unwrap());
        assert!(!hub.first_send("a", "k").await.unwrap());
        assert!(hub.first_send("b", "k").await.unwrap());
    }
}
