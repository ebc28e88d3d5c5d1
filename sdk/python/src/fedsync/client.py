"""An asyncio client of fedsync's public API (docs/contract-v1.md)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence
from urllib.parse import quote

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from .cache import L1Cache
from .errors import UNAVAILABLE, VERSION_CONFLICT, FedsyncError, from_response

Json = dict[str, Any]


@dataclass
class FailoverReport:
    """What one failover did: the new hub was checked against versions seen."""

    from_edge: str
    to_edge: str
    detection: float
    checked: int = 0
    behind: list[str] = field(default_factory=list)


@dataclass
class Event:
    """What a subscription yields: ``change`` (with ``change``), ``snapshot``
    (a document re-read after ``snapshot_required``), ``connected`` or
    ``reconnecting`` (with ``error`` and ``delay``)."""

    type: str
    change: Json | None = None
    cursor: str = ""
    error: BaseException | None = None
    delay: float = 0.0


def _unreachable(err: BaseException) -> bool:
    if isinstance(err, (httpx.TransportError, OSError, WebSocketException)):
        return True
    return isinstance(err, FedsyncError) and err.status in (502, 504)


def _hub_down(err: BaseException | None) -> bool:
    if err is None:
        return False
    return _unreachable(err) or (isinstance(err, FedsyncError) and err.code == UNAVAILABLE)


class Client:
    """One agent's connection to a federation through its regional edges.

    ``edges`` are the regional edges, nearest first; the client uses the first
    and fails over to the next healthy one when :meth:`run_heartbeats` finds its
    hub gone (seed 4.1 scenario 1). Tokens come from ``client_id`` and
    ``client_secret`` (client credentials, refreshed ``refresh_before`` seconds
    before they expire) or are given as ``token``.
    """

    def __init__(
        self,
        edges: str | Sequence[str],
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        token: str | None = None,
        refresh_before: float = 60.0,
        timeout: float = 30.0,
        cache: L1Cache | None = None,
    ) -> None:
        self.edges = [edges] if isinstance(edges, str) else list(edges)
        if not self.edges:
            raise ValueError("at least one edge is required")
        self.edges = [e.rstrip("/") for e in self.edges]
        self._cur = 0
        self.client_id = client_id
        self._secret = client_secret
        self._token = token
        self._expires = 0.0
        self._refresh_before = refresh_before
        self._http = httpx.AsyncClient(timeout=timeout)
        self._token_lock = asyncio.Lock()
        self.cache = cache
        self._switched = asyncio.Event()
        self._seen: dict[str, int] = {}
        self._on_failover: list[Callable[[FailoverReport], None]] = []

    @property
    def edge(self) -> str:
        """The edge in use."""
        return self.edges[self._cur]

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- tokens and requests

    async def token(self) -> str:
        """A valid bearer token, fetched again near its expiry."""
        async with self._token_lock:
            if self.client_id is None:
                if not self._token:
                    raise FedsyncError(401, "unauthenticated", "no token and no client credentials")
                return self._token
            if self._token and self._expires - time.monotonic() > self._refresh_before:
                return self._token
            r = await self._http.post(
                self.edge + "/oauth2/token",
                data={"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret or ""},
            )
            body = _json(r)
            if r.status_code != 200:
                raise from_response(r.status_code, body, r.headers.get("Retry-After"))
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body.get("expires_in", 3600))
            return self._token

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(2):
            tok = await self.token()
            r = await self._http.request(
                method, self.edge + path, json=body, headers={"Authorization": "Bearer " + tok}
            )
            if r.status_code == 401 and attempt == 0 and self.client_id is not None:
                self._token = None  # revoked or expired early: take a new one
                continue
            data = _json(r)
            if r.status_code >= 300:
                raise from_response(r.status_code, data, r.headers.get("Retry-After"))
            return data
        raise AssertionError("unreachable")

    # ---- state

    async def push(
        self,
        doc_id: str,
        data_type: str,
        patch: Json,
        *,
        consistency: str | None = None,
        expected_version: int | None = None,
        base_version: int | None = None,
        vector_clock: dict[str, int] | None = None,
        message_id: str | None = None,
        retry: bool = True,
    ) -> Json:
        """Send one delta (POST /api/v1/sync/state). With ``retry`` a refusal
        that accepted nothing (429, 503) or an unreachable hub (with other
        edges to fail over to) is sent again under the same message id, which
        applies once."""
        body: Json = {"id": doc_id, "data_type": data_type, "patch": patch, "message_id": message_id or "py-" + uuid.uuid4().hex}
        if consistency:
            body["consistency"] = consistency
        if expected_version is not None:
            body["expected_version"] = expected_version
        if base_version is not None:
            body["base_version"] = base_version
        if vector_clock is not None:
            body["vector_clock"] = vector_clock
        while True:
            try:
                res: Json = await self._call("POST", "/api/v1/sync/state", body)
            except (FedsyncError, httpx.TransportError) as e:
                temporary = isinstance(e, FedsyncError) and e.temporary
                if not retry or not (temporary or (_unreachable(e) and len(self.edges) > 1)):
                    raise
                wait = e.retry_after if isinstance(e, FedsyncError) and e.retry_after else 1.0
                await self._sleep_or_switch(wait)
                continue
            if res.get("version"):
                self._saw(doc_id, int(res["version"]))
            if self.cache is not None:
                self.cache.drop(doc_id)
            return res

    async def push_batch(self, deltas: Sequence[Json], parallel: int = 8) -> list[Json | FedsyncError]:
        """Send many deltas (each a dict of :meth:`push`'s arguments), up to
        ``parallel`` at once; a result or an error per delta, in order."""
        sem = asyncio.Semaphore(max(parallel, 1))

        async def one(d: Json) -> Json | FedsyncError:
            async with sem:
                try:
                    args = dict(d)
                    return await self.push(args.pop("id"), args.pop("data_type"), args.pop("patch"), **args)
                except FedsyncError as e:
                    return e

        return list(await asyncio.gather(*(one(d) for d in deltas)))

    async def get(self, doc_id: str, *, fresh: bool = False) -> Json:
        """A document, from the L1 cache while it holds a fresh copy."""
        if self.cache is not None and not fresh:
            hit = self.cache.get(doc_id)
            if hit is not None:
                return hit
        st: Json = await self._call("GET", "/api/v1/sync/state/" + quote(doc_id, safe=""))
        if self.cache is not None:
            self.cache.put(st)
        return st

    async def query(self, id_prefix: str = "", data_type: str = "", limit: int = 100, page_token: str = "") -> Json:
        """One page: ``{"items": [...], "next_page_token": ".."}``."""
        body = {k: v for k, v in {"id_prefix": id_prefix, "data_type": data_type, "limit": limit, "page_token": page_token}.items() if v}
        page: Json = await self._call("POST", "/api/v1/sync/query", body)
        return page

    async def query_all(self, id_prefix: str = "", data_type: str = "") -> AsyncIterator[Json]:
        """Every document that matches, page after page."""
        token = ""
        while True:
            page = await self.query(id_prefix, data_type, 500, token)
            for item in page.get("items", []):
                yield item
            token = page.get("next_page_token", "")
            if not token:
                return

    async def update(
        self, doc_id: str, data_type: str, fn: Callable[[Json | None], Json | Awaitable[Json]], attempts: int = 5
    ) -> int:
        """Compare-and-set for strong writes: read, ask ``fn`` for the patch
        (it gets None for a new document), write with expected_version, again
        on version_conflict up to ``attempts`` times. Returns the version."""
        for _ in range(max(attempts, 1)):
            try:
                cur: Json | None = await self.get(doc_id, fresh=True)
            except FedsyncError as e:
                if e.code != "not_found":
                    raise
                cur = None
            patch = fn(cur)
            if asyncio.iscoroutine(patch) or isinstance(patch, Awaitable):
                patch = await patch
            assert isinstance(patch, dict)
            try:
                res = await self.push(doc_id, data_type, patch, consistency="strong",
                                      expected_version=int(cur["version"]) if cur else 0)
            except FedsyncError as e:
                if e.code == VERSION_CONFLICT:
                    continue
                raise
            return int(res["version"])
        raise FedsyncError(409, VERSION_CONFLICT, f"{doc_id}: still conflicting after {attempts} attempts")

    async def health(self) -> Json:
        """GET /api/v1/sync/health (no token); 503 bodies are returned too."""
        r = await self._http.get(self.edge + "/api/v1/sync/health")
        if r.status_code not in (200, 503):
            raise from_response(r.status_code, _json(r), r.headers.get("Retry-After"))
        h: Json = r.json()
        return h

    # ---- heartbeats and failover

    async def heartbeat(self) -> None:
        await self._call("POST", "/api/v1/sync/heartbeat")

    def on_failover(self, fn: Callable[[FailoverReport], None]) -> None:
        self._on_failover.append(fn)

    async def run_heartbeats(self, interval: float = 5.0, threshold: int = 3) -> None:
        """Heartbeat every ``interval`` until cancelled; after ``threshold``
        consecutive failures of the hub, switch to the next edge whose hub
        answers. Run it as a task."""
        failures, first = 0, 0.0
        while True:
            err: BaseException | None = None
            try:
                await asyncio.wait_for(self.heartbeat(), timeout=max(interval, 1.0))
            except (FedsyncError, httpx.TransportError, asyncio.TimeoutError) as e:
                err = e
            if _hub_down(err) or isinstance(err, asyncio.TimeoutError):
                if failures == 0:
                    first = time.monotonic()
                failures += 1
                if failures >= threshold and await self._failover(first):
                    failures = 0
            else:
                failures = 0
            await asyncio.sleep(interval)

    async def _failover(self, since: float) -> bool:
        start = self._cur
        for i in range(1, len(self.edges)):
            cand = (start + i) % len(self.edges)
            self._cur = cand
            try:
                await asyncio.wait_for(self.heartbeat(), timeout=2.0)
                ok = True
            except (FedsyncError, httpx.TransportError, asyncio.TimeoutError) as e:
                ok = not (_hub_down(e) or isinstance(e, asyncio.TimeoutError))
            if ok:
                rep = FailoverReport(self.edges[start], self.edges[cand], time.monotonic() - since)
                self._switched.set()
                self._switched = asyncio.Event()
                asyncio.get_running_loop().create_task(self._check(rep))
                return True
        self._cur = start
        return False

    async def _check(self, rep: FailoverReport) -> None:
        for doc_id, version in sorted(self._seen.items())[:1000]:
            try:
                st = await self.get(doc_id, fresh=True)
                have = int(st.get("version", 0))
            except FedsyncError as e:
                if e.code != "not_found":
                    continue
                have = 0
            rep.checked += 1
            if have < version:
                rep.behind.append(doc_id)
        for fn in self._on_failover:
            fn(rep)

    def _saw(self, doc_id: str, version: int) -> None:
        if version > self._seen.get(doc_id, 0):
            self._seen[doc_id] = version
        if len(self._seen) > 10_000:
            for k in list(self._seen)[:1000]:
                del self._seen[k]

    async def _sleep_or_switch(self, seconds: float) -> None:
        switched = self._switched
        try:
            await asyncio.wait_for(switched.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    # ---- subscriptions

    def subscribe(
        self,
        id_prefix: str = "",
        data_types: Sequence[str] = (),
        *,
        from_cursor: str = "",
        min_backoff: float = 0.25,
        max_backoff: float = 30.0,
    ) -> Subscription:
        """A live subscription over WebSocket /stream that reconnects with
        exponential backoff and jitter and resumes from its last cursor."""
        return Subscription(self, id_prefix, list(data_types), from_cursor, min_backoff, max_backoff)


class Subscription:
    """Iterate it (``async for event in sub``); ``cursor`` is the position of
    the last change delivered. ``close()`` ends it."""

    def __init__(self, client: Client, id_prefix: str, data_types: list[str], cursor: str, min_backoff: float, max_backoff: float) -> None:
        self._c = client
        self._prefix = id_prefix
        self._types = data_types
        self.cursor = cursor
        self._min, self._max = min_backoff, max_backoff
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._run()

    def _subscribe_message(self, with_cursor: bool) -> str:
        m: Json = {"type": "subscribe"}
        if self._prefix:
            m["id_prefix"] = self._prefix
        if self._types:
            m["data_types"] = self._types
        if with_cursor and self.cursor:
            m["from_cursor"] = self.cursor
        return json.dumps(m)

    async def _run(self) -> AsyncIterator[Event]:
        delay = self._min
        while not self._closed:
            connected = False
            err: BaseException | None = None
            try:
                tok = await self._c.token()
                url = "ws" + self._c.edge[len("http"):] + "/stream"
                async with connect(url, additional_headers={"Authorization": "Bearer " + tok}, max_size=64 << 20) as ws:
                    await ws.send(self._subscribe_message(True))
                    async for raw in ws:
                        m = json.loads(raw)
                        t = m.get("type")
                        if t == "subscribed":
                            connected = True
                            self.cursor = str(m.get("cursor", self.cursor))
                            yield Event("connected", cursor=self.cursor)
                        elif t == "change":
                            self.cursor = str(m.get("cursor", ""))
                            self._c._saw(str(m["id"]), int(m["version"]))
                            if self._c.cache is not None and "value" in m:
                                self._c.cache.put(m)  # before the reader sees it
                            yield Event("change", change=m, cursor=self.cursor)
                        elif t == "snapshot_required":
                            # Too old to replay: subscribe from now, then re-read.
                            await ws.send(self._subscribe_message(False))
                            async for st in self._c.query_all(self._prefix, self._types[0] if len(self._types) == 1 else ""):
                                yield Event("snapshot", change=st)
                        elif t == "error":
                            e = m.get("error") or {}
                            if e.get("code") in ("invalid_argument", "permission_denied"):
                                raise FedsyncError(400, str(e.get("code")), str(e.get("message", "")))
                        if self._closed:
                            return
            except FedsyncError as e:
                if e.code in ("invalid_argument", "permission_denied", "invalid_client"):
                    raise
                err = e
            except (ConnectionClosed, InvalidStatus, WebSocketException, OSError, httpx.TransportError) as e:
                err = e
            if self._closed:
                return
            if connected:
                delay = self._min
            wait = self._min + random.uniform(0, delay)
            yield Event("reconnecting", cursor=self.cursor, error=err, delay=wait)
            switched = self._c._switched
            try:
                await asyncio.wait_for(switched.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self._max)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json() if r.content else {}
    except ValueError:
        return {}
