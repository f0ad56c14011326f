"""A backend of the kind FastAPI users already run, for the end-to-end suite.

The common shape of a FastAPI app with its own realtime endpoints, as written in the field:
a `log_store` list served by `/sse/logs` (a StreamingResponse generator) and a short poll
`/poll/logs?since=`, a WebSocket `/ws/logs` whose receive loop answers the text `ping` with
`{"type":"pong"}` and sends `{"type":"heartbeat"}` after 30 s without a client message, and
Redis when several processes share the events. Only what exactly-once resume needs is added:
an integer `id` on every event and `?since=` (and `Last-Event-ID`) honoured by replaying
what is newer. It speaks none of the Holdfast protocol's extras: no `hello`, no `: ok`, no
answer to `{"type":"ping"}`, no `reset`, nothing on connect.

Endpoints:
  WS   /ws/logs[?since=N][&token=T]  nothing on connect; replays events with id > N, then
                                      live events, one JSON object per text frame; the text
                                      `ping` gets {"type":"pong"}; any other text is ignored;
                                      {"type":"heartbeat"} after 30 s without a client message
  GET  /sse/logs[?since=N]            `id: <n>` + `data: <json>` per event, `: keepalive`
                                      after 30 s without one; Last-Event-ID honoured (since
                                      wins); nothing on connect
  GET  /poll/logs[?since=N]           a bare JSON array of the events with id > N (all of
                                      them without `since`), at once (a short poll)
  POST /publish                       body: an event {"type", "data"} or an array of them ->
                                      {"ids": [...]}; an element {"raw": X, "withId": bool}
                                      stores X as it is (a bad entry for the tests; with
                                      `withId` an object X gets the store's id)
  GET  /health, /stats                liveness; open connections, refusals, pongs, 410s
  /*                                  static files from SEED_STATIC_DIR (the test page)

Every event is {"id": <int>, "type": ..., "data": ...}; ids come from the store: a counter
in memory, or INCR in Redis when several processes share one store.

Switches (environment, set by the test that starts the process):
  SEED_REDIS_URL       share one event store in Redis (ids from INCR, live fan-out by PUBLISH)
  SEED_REDIS_PREFIX    key prefix in Redis (default `seed`)
  SEED_TOKEN_SECRET    require an HS256 JWT (`exp` in Unix seconds): WebSocket `?token=`,
                       SSE and poll `Authorization: Bearer`. A missing, bad or expired token
                       gets 401 (SSE, poll) or an accepted socket closed with 4401. When the
                       token expires under an open WebSocket it is closed with 4401; an open
                       SSE stream is ended (the session is over; a reconnect needs a token).
  SEED_HISTORY_MAX     keep only the newest N events; a poll whose `since` is older than what
                       is kept gets 410 Gone (WebSocket and SSE replay what is left, as the
                       usual code does)
  SEED_HEARTBEAT_SECS  WebSocket heartbeat / SSE keepalive after this much silence (30)
  SEED_STATIC_DIR      serve this directory at `/` (the test page and the package)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

HEARTBEAT_SECS = float(os.environ.get("SEED_HEARTBEAT_SECS", "30"))
TOKEN_SECRET = os.environ.get("SEED_TOKEN_SECRET") or None
HISTORY_MAX = int(os.environ.get("SEED_HISTORY_MAX", "0") or 0)
REDIS_URL = os.environ.get("SEED_REDIS_URL") or None
REDIS_PREFIX = os.environ.get("SEED_REDIS_PREFIX", "seed")
STATIC_DIR = os.environ.get("SEED_STATIC_DIR") or None


# ----- the event store ---------------------------------------------------------------------

def render(event_id: int, stored: dict) -> Any:
    """What a client is sent for a stored entry."""
    if "raw" in stored:
        raw = stored["raw"]
        if stored.get("withId") and isinstance(raw, dict):
            return {**raw, "id": event_id}
        return raw
    return {"id": event_id, "type": stored.get("type"), "data": stored.get("data")}


class MemoryStore:
    """The usual `log_store` list with a counter, plus a version that wakes waiting streams."""

    kind = "memory"

    def __init__(self, history_max: int):
        self.history_max = history_max
        self.entries: list[tuple[int, dict]] = []
        self.counter = 0
        self.trimmed_through = 0
        self.version = 0
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish(self, items: list[dict]) -> list[int]:
        ids = []
        for item in items:
            self.counter += 1
            self.entries.append((self.counter, item))
            ids.append(self.counter)
        if self.history_max and len(self.entries) > self.history_max:
            drop = len(self.entries) - self.history_max
            self.trimmed_through = self.entries[drop - 1][0]
            del self.entries[:drop]
        async with self.changed:
            self.version += 1
            self.changed.notify_all()
        return ids

    async def after(self, since: int) -> list[tuple[int, dict]]:
        return [(i, e) for (i, e) in self.entries if i > since]

    async def bounds(self) -> tuple[int, int]:
        """(highest trimmed id, highest id given out)."""
        return self.trimmed_through, self.counter

    async def wait_change(self, seen: int, timeout: float) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.version != seen), timeout)
            except asyncio.TimeoutError:
                pass


# Publishing in Redis is one script, so ids are given out and stored atomically (a reader
# at cursor N can never see N+2 before N+1), the history is trimmed, and every process is
# told by PUBLISH.
PUBLISH_LUA = """
local max = tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV do
  local id = redis.call('INCR', KEYS[1])
  redis.call('ZADD', KEYS[2], id, id .. '|' .. ARGV[i])
  ids[#ids + 1] = id
end
if max > 0 then
  local n = redis.call('ZCARD', KEYS[2])
  if n > max then
    local gone = redis.call('ZRANGE', KEYS[2], n - max - 1, n - max - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max - 1)
    redis.call('SET', KEYS[3], gone[2])
  end
end
redis.call('PUBLISH', KEYS[4], tostring(ids[#ids] or 0))
return ids
"""


class RedisStore:
    """One event store for several processes: a sorted set scored by INCR ids."""

    kind = "redis"

    def __init__(self, url: str, prefix: str, history_max: int):
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url, decode_responses=True)
        self.keys = [f"{prefix}:next", f"{prefix}:log", f"{prefix}:trimmed", f"{prefix}:new"]
        self.history_max = history_max
        self.version = 0
        self.changed = asyncio.Condition()
        self.listener: Optional[asyncio.Task] = None
        self.script = self.redis.register_script(PUBLISH_LUA)

    async def start(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.keys[3])

        async def listen() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    async with self.changed:
                        self.version += 1
                        self.changed.notify_all()

        self.listener = asyncio.create_task(listen())

    async def stop(self) -> None:
        if self.listener:
            self.listener.cancel()
        await self.redis.aclose()

    async def publish(self, items: list[dict]) -> list[int]:
        args = [self.history_max] + [json.dumps(i, separators=(",", ":")) for i in items]
        return [int(i) for i in await self.script(keys=self.keys, args=args)]

    async def after(self, since: int) -> list[tuple[int, dict]]:
        members = await self.redis.zrangebyscore(self.keys[1], f"({since}", "+inf")
        out = []
        for m in members:
            head, _, body = m.partition("|")
            out.append((int(head), json.loads(body)))
        return out

    async def bounds(self) -> tuple[int, int]:
        trimmed, latest = await self.redis.mget(self.keys[2], self.keys[0])
        return int(trimmed or 0), int(latest or 0)

    async def wait_change(self, seen: int, timeout: float) -> None:
        # A notification lost (or a process that subscribed late) costs at most `timeout`:
        # every waiter reads the store again after it.
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.version != seen), timeout)
            except asyncio.TimeoutError:
                pass


STORE = RedisStore(REDIS_URL, REDIS_PREFIX, HISTORY_MAX) if REDIS_URL else MemoryStore(HISTORY_MAX)

STATS: dict[str, Any] = {
    "connections": {"websocket": 0, "sse": 0},
    "polls": 0,
    "unauthorized": {"websocket": 0, "sse": 0, "polling": 0},
    "expired_closes": {"websocket": 0, "sse": 0},
    "gone": 0,
    "pongs": 0,
}


# ----- tokens -------------------------------------------------------------------------------

def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_expiry(token: Optional[str]) -> Optional[float]:
    """The `exp` of a valid HS256 JWT signed with SEED_TOKEN_SECRET, or None."""
    if not token or not TOKEN_SECRET:
        return None
    try:
        header, body, signature = token.split(".")
        expected = base64.urlsafe_b64encode(
            hmac.new(TOKEN_SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
        ).rstrip(b"=").decode()
        if not hmac.compare_digest(expected, signature):
            return None
        if json.loads(_b64url_decode(header)).get("alg") != "HS256":
            return None
        return float(json.loads(_b64url_decode(body))["exp"])
    except (ValueError, KeyError, TypeError):
        return None


def bearer(request: Request) -> Optional[str]:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def unauthorized(rung: str) -> JSONResponse:
    STATS["unauthorized"][rung] += 1
    return JSONResponse({"detail": "Not authenticated"}, status_code=401)


def parse_cursor(value: Optional[str]) -> Optional[int]:
    """`since` / Last-Event-ID as an int; raises ValueError when it is not one."""
    if value is None or value == "":
        return None
    n = int(value)
    if n < 0:
        raise ValueError(value)
    return n


# ----- the app ------------------------------------------------------------------------------

@asynccontextmanager
async def lifespan(_app: FastAPI):
    await STORE.start()
    yield
    await STORE.stop()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health():
    return {"status": "ok", "store": STORE.kind}


@app.get("/stats")
async def stats():
    trimmed, latest = await STORE.bounds()
    return {**STATS, "trimmed_through": trimmed, "latest": latest}


@app.post("/publish")
async def publish(request: Request):
    body = await request.json()
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        return JSONResponse({"detail": "an event object or a non-empty array of them"}, status_code=400)
    return {"ids": await STORE.publish(items)}


@app.websocket("/ws/logs")
async def ws_logs(websocket: WebSocket):
    # The usual FastAPI WebSocket handler: a receive loop that answers "ping" and sends a
    # heartbeat after 30 s without a client message; events are forwarded beside it.
    token_exp = None
    if TOKEN_SECRET:
        token_exp = token_expiry(websocket.query_params.get("token"))
        if token_exp is None or token_exp <= time.time():
            STATS["unauthorized"]["websocket"] += 1
            await websocket.accept()
            await websocket.close(code=4401, reason="unauthorized")
            return
    try:
        since = parse_cursor(websocket.query_params.get("since"))
    except ValueError:
        await websocket.accept()
        await websocket.close(code=1008, reason="bad since")
        return
    await websocket.accept()
    STATS["connections"]["websocket"] += 1
    send_lock = asyncio.Lock()

    async def send_json(obj: Any) -> None:
        async with send_lock:
            await websocket.send_text(json.dumps(obj))

    async def forward() -> None:
        cursor = since if since is not None else (await STORE.bounds())[1]
        while True:
            seen = STORE.version
            for event_id, stored in await STORE.after(cursor):
                await send_json(render(event_id, stored))
                cursor = event_id
            await STORE.wait_change(seen, 1.0)

    async def receive() -> None:
        while True:
            try:
                data = await asyncio.wait_for(websocket.receive_text(), timeout=HEARTBEAT_SECS)
                if data == "ping":
                    STATS["pongs"] += 1
                    await send_json({"type": "pong"})
            except asyncio.TimeoutError:
                await send_json({"type": "heartbeat"})

    async def expire() -> None:
        await asyncio.sleep(max(0.0, token_exp - time.time()))
        STATS["expired_closes"]["websocket"] += 1
        async with send_lock:
            await websocket.close(code=4401, reason="token expired")

    tasks = [asyncio.create_task(forward()), asyncio.create_task(receive())]
    if token_exp is not None:
        tasks.append(asyncio.create_task(expire()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        # Every task's end is collected: a socket closed under one task ends the others.
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, (WebSocketDisconnect, RuntimeError)):
                print(f"seed backend: websocket task failed: {outcome!r}", flush=True)
        STATS["connections"]["websocket"] -= 1


@app.get("/sse/logs")
async def sse_logs(request: Request, since: Optional[str] = None):
    token_exp = None
    if TOKEN_SECRET:
        token_exp = token_expiry(bearer(request))
        if token_exp is None or token_exp <= time.time():
            return unauthorized("sse")
    try:
        cursor = parse_cursor(since)
        if cursor is None:
            cursor = parse_cursor(request.headers.get("last-event-id"))
    except ValueError:
        return JSONResponse({"detail": "since must be an integer"}, status_code=400)
    if cursor is None:
        cursor = (await STORE.bounds())[1]

    async def log_event_generator():
        # The usual SSE generator: `data: <json>` per event (here with its `id:`), and a
        # keepalive comment when nothing was sent for 30 s.
        nonlocal cursor
        STATS["connections"]["sse"] += 1
        try:
            last_sent = time.monotonic()
            while True:
                seen = STORE.version
                chunk = []
                for event_id, stored in await STORE.after(cursor):
                    chunk.append(f"id: {event_id}\ndata: {json.dumps(render(event_id, stored))}\n\n")
                    cursor = event_id
                if chunk:
                    yield "".join(chunk)
                    last_sent = time.monotonic()
                if token_exp is not None and time.time() >= token_exp:
                    STATS["expired_closes"]["sse"] += 1
                    return
                if time.monotonic() - last_sent >= HEARTBEAT_SECS:
                    yield ": keepalive\n\n"
                    last_sent = time.monotonic()
                wait = min(1.0, max(0.01, HEARTBEAT_SECS - (time.monotonic() - last_sent)))
                if token_exp is not None:
                    wait = min(wait, max(0.01, token_exp - time.time()))
                await STORE.wait_change(seen, wait)
        finally:
            STATS["connections"]["sse"] -= 1

    return StreamingResponse(
        log_event_generator(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "Connection": "keep-alive"},
    )


@app.get("/poll/logs")
async def poll_logs(request: Request, since: Optional[str] = None):
    # The usual poll endpoint: every kept event after `since` (all of them without it).
    if TOKEN_SECRET:
        exp = token_expiry(bearer(request))
        if exp is None or exp <= time.time():
            return unauthorized("polling")
    STATS["polls"] += 1
    try:
        since_id = parse_cursor(since) or 0
    except ValueError:
        return JSONResponse({"detail": "since must be an integer"}, status_code=400)
    trimmed, _latest = await STORE.bounds()
    if since is not None and since != "" and since_id < trimmed:
        STATS["gone"] += 1
        return JSONResponse(
            {"detail": f"events after {since_id} are no longer kept; the oldest kept is {trimmed + 1}"},
            status_code=410,
        )
    return [render(i, e) for (i, e) in await STORE.after(since_id)]


if STATIC_DIR:
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
