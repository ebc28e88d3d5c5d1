from fedsync import L1Cache


def test_lru_by_bytes_ttl_and_version_order() -> None:
    now = [1000.0]
    c = L1Cache(max_bytes=10 << 10, ttl=60, clock=lambda: now[0])
    for i in range(20):
        c.put({"id": f"d{i:02d}", "version": 1, "value": {"s": "x" * 1000}})
    assert c.bytes <= 10 << 10 and len(c) == 8 and c.stats.evictions == 12
    assert c.get("d00") is None and c.get("d19") is not None
    c.put({"id": "d19", "version": 5, "value": {"v": 5}})
    c.put({"id": "d19", "version": 3, "value": {"v": 3}})
    got = c.get("d19")
    assert got is not None and got["version"] == 5
    now[0] += 61
    assert c.get("d19") is None and c.stats.expired == 1
