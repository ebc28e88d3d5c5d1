"""The SDK against a real mesh, as an agent uses it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid

import pytest

import fedsync
from conftest import mesh


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def _agent(m: dict[str, object], agent: str, **kw: object) -> fedsync.Client:
    secrets = m["secrets"]
    assert isinstance(secrets, dict)
    return fedsync.Client([str(m["na"]), str(m["eu"])], agent, secrets[agent], **kw)  # type: ignore[arg-type]


def test_push_get_query_and_cache() -> None:
    m = mesh()

    async def go() -> None:
        async with await _agent(m, "ai-021", cache=fedsync.L1Cache()) as c:
            res = await c.push("ai-021:py", "note", {"sky": "blue"})
            assert res["status"] == "accepted"
            for _ in range(200):
                try:
                    st = await c.get("ai-021:py", fresh=True)
                    break
                except fedsync.NotFound:
                    await asyncio.sleep(0.05)
            assert st["version"] == 1 and st["value"] == {"sky": "blue"}
            for _ in range(50):
                await c.get("ai-021:py")
            assert c.cache is not None and c.cache.stats.hits == 50
            ids = [d["id"] async for d in c.query_all("ai-021:")]
            assert "ai-021:py" in ids

    run(go())


def test_errors_carry_the_contract_codes() -> None:
    m = mesh()

    async def go() -> None:
        async with await _agent(m, "ai-022") as c:
            with pytest.raises(fedsync.NotFound):
                await c.get("ai-022:nothing")
            with pytest.raises(fedsync.PermissionDenied):
                await c.push("ai-023:not-mine", "note", {"a": 1})
            v = await c.update("ai-022:cas", "note", lambda cur: {"n": 1})
            with pytest.raises(fedsync.VersionConflict):
                await c.push("ai-022:cas", "note", {"n": 2}, consistency="strong", expected_version=v + 5)
            v2 = await c.update("ai-022:cas", "note", lambda cur: {"n": (cur or {}).get("value", {}).get("n", 0) + 1})
            assert v2 == v + 1
        async with fedsync.Client(str(m["na"]), "ai-022", "wrong-secret") as bad:
            with pytest.raises(fedsync.Unauthenticated):
                await bad.get("ai-022:cas")

    run(go())


def test_subscription_resumes_from_its_cursor() -> None:
    m = mesh()

    async def go() -> None:
        async with await _agent(m, "ai-024") as c:
            doc = "ai-024:sub-" + uuid.uuid4().hex[:8]
            sub = c.subscribe(doc)
            seen: list[int] = []
            async for ev in sub:
                if ev.type == "connected" and not seen:
                    for i in range(5):
                        await c.push(doc, "note", {"i": i}, message_id=f"{doc}-{i}")
                if ev.type == "change":
                    assert ev.change is not None
                    seen.append(int(ev.change["version"]))
                    if len(seen) == 5:
                        sub.close()
                        break
            cursor = sub.cursor
            for i in range(5, 8):
                await c.push(doc, "note", {"i": i}, message_id=f"{doc}-{i}")
            again = c.subscribe(doc, from_cursor=cursor)
            async for ev in again:
                if ev.type == "change":
                    assert ev.change is not None
                    seen.append(int(ev.change["version"]))
                    if len(seen) == 8:
                        break
            assert seen == list(range(1, 9))

    run(asyncio.wait_for(go(), 60))


@pytest.mark.skipif(os.environ.get("FEDSYNC_FAILOVER") != "1", reason="kills region na's hub: run last, by scripts/test-python-sdk.sh")
def test_zz_hub_failover() -> None:
    """Seed 4.1 scenario 1: 5 agents lose region na's hub (validation and
    broadcaster killed), fail over to eu after 3 missed heartbeats, and lose,
    skip or repeat nothing."""
    m = mesh()
    agents = [f"ai-{n:03d}" for n in range(31, 36)]

    async def go() -> None:
        clients = [await _agent(m, a) for a in agents]
        reports: list[fedsync.FailoverReport] = []
        for c in clients:
            c.on_failover(reports.append)
        beats = [asyncio.create_task(c.run_heartbeats(interval=1.0, threshold=3)) for c in clients]
        acked = {a: 0 for a in agents}
        first_after: dict[str, float] = {}
        killed_at = [0.0]
        stop = asyncio.Event()

        async def writer(c: fedsync.Client, a: str) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                started = time.monotonic()
                await c.push(f"{a}:fo", "note", {"n": n}, message_id=f"{a}-py-fo-{n}")
                acked[a] = n
                # The first write sent after the kill, acknowledged: failed over.
                if killed_at[0] and started > killed_at[0] and a not in first_after:
                    first_after[a] = time.monotonic() - killed_at[0]
                await asyncio.sleep(0.05)

        subs = [c.subscribe(f"{a}:fo", min_backoff=0.1, max_backoff=2.0) for c, a in zip(clients, agents)]
        iters = [s.__aiter__() for s in subs]
        for it in iters:
            while (await it.__anext__()).type != "connected":
                pass
        writers = [asyncio.create_task(writer(c, a)) for c, a in zip(clients, agents)]
        await asyncio.sleep(3)
        killed_at[0] = time.monotonic()
        # This mesh's processes only: their -data-dir is under its state directory.
        state = os.path.dirname(os.path.abspath(os.environ["FEDSYNC_CLIENTS"]))
        for inst in ("validation-na", "broadcaster-na"):
            r = subprocess.run(["pkill", "-KILL", "-f", re.escape(f"data-dir={state}/data/{inst}") + "( |$)"], check=False)
            assert r.returncode == 0, f"no process {inst} to kill"
        deadline = time.monotonic() + 60
        while len(first_after) < len(agents) or min(acked.values()) < 10:
            assert time.monotonic() < deadline, f"only {len(first_after)} agents write again"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*writers)
        times = sorted(first_after.values())
        print(f"failover, {len(times)} agents: p50 {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s")
        assert times[-1] < 3 * 1.0 + 10
        for c, a, it in zip(clients, agents, iters):
            want = 1
            while want <= acked[a]:
                ev = await asyncio.wait_for(it.__anext__(), 60)
                if ev.type == "change":
                    assert ev.change is not None
                    assert int(ev.change["version"]) == want, f"{a}: got {ev.change['version']}, want {want}"
                    want += 1
            st = await c.get(f"{a}:fo", fresh=True)
            assert st["version"] == acked[a], f"{a}: {acked[a]} acknowledged, version {st['version']}"
        assert len(reports) == len(agents) and all(r.to_edge == str(m["eu"]) for r in reports)
        for t in beats:
            t.cancel()
        for c in clients:
            await c.aclose()

    run(asyncio.wait_for(go(), 180))
