"""The suite runs against a real mesh: scripts/test-python-sdk.sh starts one
(make run's devstack, no simulated agents) and sets FEDSYNC_EDGE_NA,
FEDSYNC_EDGE_EU and FEDSYNC_CLIENTS (its clients.json)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def mesh() -> dict[str, Any]:
    na, eu, clients = os.environ.get("FEDSYNC_EDGE_NA"), os.environ.get("FEDSYNC_EDGE_EU"), os.environ.get("FEDSYNC_CLIENTS")
    if not (na and eu and clients):
        pytest.skip("no mesh: run scripts/test-python-sdk.sh (it starts one and sets FEDSYNC_EDGE_NA, FEDSYNC_EDGE_EU, FEDSYNC_CLIENTS)")
    with open(clients) as f:
        secrets = {c["client_id"]: c["client_secret"] for c in json.load(f)["clients"]}
    return {"na": na, "eu": eu, "secrets": secrets}
