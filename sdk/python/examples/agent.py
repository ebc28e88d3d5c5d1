"""An example agent loop: heartbeats with hub failover, a live subscription to
its own documents, and a belief it updates every few seconds.

    FEDSYNC_CLIENT_SECRET=... python examples/agent.py ai-042
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

import fedsync


async def main(agent: str) -> None:
    edges = os.environ.get("FEDSYNC_EDGES", "http://127.0.0.1:8080,http://127.0.0.1:8090").split(",")
    async with fedsync.Client(edges, agent, os.environ["FEDSYNC_CLIENT_SECRET"], cache=fedsync.L1Cache()) as c:
        c.on_failover(lambda r: print(f"failed over {r.from_edge} -> {r.to_edge} after {r.detection:.1f} s; {len(r.behind)} documents behind"))
        beats = asyncio.create_task(c.run_heartbeats(interval=5.0))

        async def watch() -> None:
            async for ev in c.subscribe(agent + ":"):
                if ev.type == "change" and ev.change is not None:
                    print(f"{ev.change['id']} v{ev.change['version']}: {ev.change.get('value')}")
                elif ev.type == "reconnecting":
                    print(f"stream broke ({ev.error}); again in {ev.delay:.1f} s from cursor {ev.cursor}")

        watcher = asyncio.create_task(watch())
        try:
            while True:
                await c.push(agent + ":beliefs", "note", {"sky": random.choice(["blue", "grey"]), "confidence": random.random()})
                await asyncio.sleep(3)
        finally:
            beats.cancel()
            watcher.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ai-042"))
