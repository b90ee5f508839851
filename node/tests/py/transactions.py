"""redis-py's transactions against augur: the default pipeline (MULTI/EXEC),
transaction() with WATCH, a WATCH abort, and EXECABORT. Keys a and b are on
different cores. Exits non-zero (an AssertionError) on any mismatch."""
import sys

import redis

port, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
other = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
r.delete(a, b)

# The default pipeline wraps its commands in MULTI/EXEC.
pipe = r.pipeline()
pipe.set(a, 1).incr(a).set(b, "x").get(a).get(b)
got = pipe.execute()
assert got == [True, 2, True, "2", "x"], got

# transaction(): WATCH, read, MULTI, write, EXEC, retried on WatchError.
calls = []


def move_one(p):
    calls.append(1)
    va, vb = int(p.get(a)), p.get(b)
    if len(calls) == 1:
        other.incr(a)  # a concurrent write: this first attempt must abort
    p.multi()
    p.set(a, va - 1)
    p.set(b, vb + "!")


r.transaction(move_one, a, b)
assert len(calls) == 2, calls
assert r.get(a) == "2" and r.get(b) == "x!", (r.get(a), r.get(b))

# A watched key changed: EXEC returns null, redis-py raises WatchError.
with r.pipeline() as p:
    p.watch(a)
    other.set(a, "changed")
    p.multi()
    p.set(b, "never")
    try:
        p.execute()
        raise AssertionError("EXEC ran although a watched key changed")
    except redis.WatchError:
        pass
assert r.get(b) == "x!", r.get(b)

# A queue-time error: EXECABORT, nothing written.
p = r.pipeline()
p.set(b, "never")
p.execute_command("NOSUCHCOMMAND")
try:
    p.execute()
    raise AssertionError("EXEC ran after a queue-time error")
except redis.ResponseError as e:
    assert "EXECABORT" in str(e) or "unknown command" in str(e), e
assert r.get(b) == "x!", r.get(b)

print("redis-py transactions ok")
