"""redis-py as applications use it every day, against augur: hashes (hset with a
mapping, hgetall, hincrby, hdel), scan_iter(_type="hash"), getex, rename, and a
transactional pipeline mixing them. Keys a and b are on different cores. Exits
non-zero (an AssertionError) on any mismatch."""
import sys

import redis

port, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
r.flushall()

# Hashes.
assert r.hset(a, mapping={"name": "ada", "visits": 1}) == 2
assert r.hgetall(a) == {"name": "ada", "visits": "1"}, r.hgetall(a)
assert r.hincrby(a, "visits", 41) == 42
assert r.hget(a, "visits") == "42"
assert r.hmget(a, ["name", "missing"]) == ["ada", None]
assert r.hexists(a, "name") and not r.hexists(a, "missing")
assert r.hlen(a) == 2 and sorted(r.hkeys(a)) == ["name", "visits"]
assert r.type(a) == "hash"
try:
    r.get(a)
    raise AssertionError("GET of a hash did not fail")
except redis.ResponseError as e:
    assert str(e).startswith("WRONGTYPE"), e

# scan_iter by type: only the hash, not the strings.
r.set(b, "plain")
r.set("s:1", "x")
assert sorted(r.scan_iter(_type="hash")) == [a], list(r.scan_iter(_type="hash"))
assert sorted(r.scan_iter(match="s:*")) == ["s:1"]

# GETEX and RENAME (the renamed key lives on the other core).
assert r.getex(b, ex=100) == "plain"
assert 0 < r.ttl(b) <= 100
assert r.getex(b, persist=True) == "plain" and r.ttl(b) == -1
assert r.rename("s:1", "s:2")
assert r.get("s:2") == "x" and r.get("s:1") is None

# A transactional pipeline (the default) mixing hashes and strings on both cores.
pipe = r.pipeline()
pipe.hset(a, "name", "grace").hdel(a, "visits").incr("counter").hgetall(a)
got = pipe.execute()
assert got == [0, 1, 1, {"name": "grace"}], got
assert r.hdel(a, "name") == 1 and not r.exists(a)

print("redis-py everyday ok")
