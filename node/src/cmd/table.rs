//! Every command augur knows: name, arity (negative: at least), flags and key
//! positions, in the shape `COMMAND` reports them.

pub struct Spec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const W: &[&str] = &["write", "denyoom", "fast"];
const WS: &[&str] = &["write"];
const WF: &[&str] = &["write", "fast"];
const WD: &[&str] = &["write", "denyoom"];
const R: &[&str] = &["readonly", "fast"];
const RS: &[&str] = &["readonly"];
const C: &[&str] = &["fast", "no-auth"];
const A: &[&str] = &["admin", "noscript"];
/// Transaction commands.
const T: &[&str] = &["noscript", "loading", "stale", "fast"];
const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);

pub static COMMANDS: &[Spec] = &[
    spec("get", 2, R, ONE),
    spec("getdel", 2, W, ONE),
    spec("mget", -2, R, (1, -1, 1)),
    spec("set", -3, W, ONE),
    spec("setnx", 3, W, ONE),
    spec("setex", 4, W, ONE),
    spec("psetex", 4, W, ONE),
    spec("getset", 3, W, ONE),
    spec("mset", -3, W, (1, -1, 2)),
    spec("msetnx", -3, WD, (1, -1, 2)),
    spec("incr", 2, W, ONE),
    spec("decr", 2, W, ONE),
    spec("incrby", 3, W, ONE),
    spec("decrby", 3, W, ONE),
    spec("append", 3, W, ONE),
    spec("strlen", 2, R, ONE),
    spec("getex", -2, WF, ONE),
    spec("getrange", 4, RS, ONE),
    spec("substr", 4, RS, ONE),
    spec("lcs", -3, RS, (1, 2, 1)),
    spec("setrange", 4, WD, ONE),
    spec("incrbyfloat", 3, W, ONE),
    spec("object", -2, RS, (2, 2, 1)),
    spec("expire", -3, WS, ONE),
    spec("pexpire", -3, WS, ONE),
    spec("expireat", -3, WS, ONE),
    spec("pexpireat", -3, WS, ONE),
    spec("ttl", 2, R, ONE),
    spec("pttl", 2, R, ONE),
    spec("expiretime", 2, R, ONE),
    spec("pexpiretime", 2, R, ONE),
    spec("persist", 2, WS, ONE),
    spec("del", -2, WS, (1, -1, 1)),
    spec("unlink", -2, WS, (1, -1, 1)),
    spec("exists", -2, R, (1, -1, 1)),
    spec("type", 2, R, ONE),
    spec("touch", -2, R, (1, -1, 1)),
    spec("rename", 3, WS, (1, 2, 1)),
    spec("renamenx", 3, WF, (1, 2, 1)),
    spec("copy", -3, WD, (1, 2, 1)),
    spec("hset", -4, W, ONE),
    spec("hsetnx", 4, W, ONE),
    spec("hmset", -4, W, ONE),
    spec("hget", 3, R, ONE),
    spec("hmget", -3, R, ONE),
    spec("hdel", -3, WF, ONE),
    spec("hlen", 2, R, ONE),
    spec("hexists", 3, R, ONE),
    spec("hstrlen", 3, R, ONE),
    spec("hincrby", 4, W, ONE),
    spec("hincrbyfloat", 4, W, ONE),
    spec("hgetall", 2, RS, ONE),
    spec("hkeys", 2, RS, ONE),
    spec("hvals", 2, RS, ONE),
    spec("hscan", -3, RS, ONE),
    spec("hrandfield", -2, RS, ONE),
    spec("randomkey", 1, RS, NONE),
    spec("scan", -2, RS, NONE),
    spec("keys", 2, RS, NONE),
    spec("dbsize", 1, R, NONE),
    spec("flushall", -1, WS, NONE),
    spec("flushdb", -1, WS, NONE),
    spec("info", -1, RS, NONE),
    spec("config", -2, A, NONE),
    spec("command", -1, &["loading", "stale"], NONE),
    spec("time", 1, R, NONE),
    spec("augur", -2, A, NONE),
    spec("ping", -1, &["fast"], NONE),
    spec("echo", 2, &["fast"], NONE),
    spec("hello", -1, C, NONE),
    spec("auth", -2, C, NONE),
    spec("select", 2, &["fast", "loading"], NONE),
    spec("quit", -1, C, NONE),
    spec("client", -2, &["admin", "noscript", "loading"], NONE),
    spec("multi", 1, T, NONE),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NONE,
    ),
    spec("discard", 1, T, NONE),
    spec("watch", -2, T, (1, -1, 1)),
    spec("unwatch", 1, T, NONE),
];

/// The spec of command `name` (any case), with its upper-case name.
pub fn lookup_name(name: &[u8]) -> Option<(&'static str, &'static Spec)> {
    // Every name fits 16 bytes, so an upper-cased name is one u128: a binary search
    // over a sorted index of those compares integers, with no String made per
    // request (the table walk and the upper-cased String were measurable,
    // `docs/perf.md`).
    static INDEX: std::sync::OnceLock<Vec<(u128, String, &'static Spec)>> =
        std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut v: Vec<_> = COMMANDS
            .iter()
            .filter_map(|s| Some((name_key(s.name.as_bytes())?, s.name.to_ascii_uppercase(), s)))
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    });
    let key = name_key(name)?;
    let at = index.binary_search_by_key(&key, |e| e.0).ok()?;
    let (_, upper, spec) = &index[at];
    Some((upper.as_str(), *spec))
}

/// `name` upper-cased and packed into an integer with its length (so "GET\0" is not
/// "GET"), if it is at most 15 bytes.
fn name_key(name: &[u8]) -> Option<u128> {
    if name.len() > 15 {
        return None;
    }
    let mut buf = [0u8; 16];
    for (d, c) in buf.iter_mut().zip(name) {
        *d = c.to_ascii_uppercase();
    }
    buf[15] = name.len() as u8;
    Some(u128::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_found_in_any_case_and_nothing_else() {
        for spec in COMMANDS {
            for name in [spec.name.to_string(), spec.name.to_ascii_uppercase()] {
                let (upper, found) = lookup_name(name.as_bytes()).expect(spec.name);
                assert_eq!(found.name, spec.name);
                assert_eq!(upper, spec.name.to_ascii_uppercase());
            }
        }
        for other in [
            &b"GET\0"[..],
            b"GE",
            b"",
            b"\0",
            b"hincrbyfloatxxxxxxxx",
            b"g\xc3\xa9t",
        ] {
            assert!(lookup_name(other).is_none(), "{other:?}");
        }
    }
}
