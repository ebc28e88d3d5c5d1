"""fedsync: the Python client of fedsync's public API.

    async with fedsync.Client(["http://127.0.0.1:8080", "http://127.0.0.1:8090"], "ai-042", secret) as c:
        await c.push("ai-042:beliefs", "note", {"sky": "blue"})
        async for ev in c.subscribe("ai-042:"):
            ...
"""

from .cache import CacheStats, L1Cache
from .client import Client, Event, FailoverReport, Subscription
from .errors import FedsyncError, NotFound, PermissionDenied, Unauthenticated, VersionConflict

__all__ = [
    "CacheStats",
    "Client",
    "Event",
    "FailoverReport",
    "FedsyncError",
    "L1Cache",
    "NotFound",
    "PermissionDenied",
    "Subscription",
    "Unauthenticated",
    "VersionConflict",
]
