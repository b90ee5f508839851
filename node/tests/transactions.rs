//! MULTI, EXEC, DISCARD, WATCH, UNWATCH against a real two-core node: Redis's reply
//! texts and shapes (RESP2 and RESP3), the `redis` crate's transactions, and isolation
//! of a transaction whose keys are on different cores.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, keys_on_two_cores, start_node};
use redis::{Commands, RedisResult, Value};

fn cmd<T: redis::FromRedisValue>(c: &mut redis::Connection, words: &[&str]) -> RedisResult<T> {
    let mut command = redis::cmd(words[0]);
    for w in &words[1..] {
        command.arg(*w);
    }
    command.query(c)
}

/// A raw connection: send commands, compare the exact reply bytes.
struct Raw(TcpStream);

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw(s)
    }

    fn send(&mut self, cmds: &[&[&str]]) {
        let mut out = Vec::new();
        for words in cmds {
            out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
            for w in *words {
                out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
            }
        }
        self.0.write_all(&out).unwrap();
    }

    /// Read until `expected.len()` bytes came (or 5 s passed), and compare.
    fn expect(&mut self, cmds: &[&[&str]], expected: &str) {
        self.send(cmds);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 4096];
        while got.len() < expected.len() && Instant::now() < deadline {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            expected,
            "replies to {cmds:?}"
        );
    }
}

#[test]
fn error_texts_and_reply_shapes_match_redis() {
    let port = start_node(|_| {});
    let mut r = Raw::connect(port);
    r.expect(
        &[
            &["EXEC"],
            &["DISCARD"],
            &["MULTI"],
            &["MULTI"],
            &["WATCH", "x"],
        ],
        "-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n\
         -ERR MULTI calls can not be nested\r\n-ERR WATCH inside MULTI is not allowed\r\n",
    );
    // Neither error aborted the transaction; runtime errors are per command.
    r.expect(
        &[
            &["SET", "s", "abc"],
            &["INCR", "n"],
            &["INCR", "s"],
            &["PING"],
            &["UNWATCH"],
            &["EXEC"],
        ],
        "+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
         *5\r\n+OK\r\n:1\r\n-ERR value is not an integer or out of range\r\n+PONG\r\n+OK\r\n",
    );
    // Queue-time errors: replied at once, and EXEC discards everything.
    r.expect(
        &[
            &["MULTI"],
            &["SET", "n", "100"],
            &["FOO", "a"],
            &["GET"],
            &["SET", "k", "v", "NX", "XX"],
            &["EXEC"],
            &["GET", "n"],
        ],
        "+OK\r\n+QUEUED\r\n-ERR unknown command 'FOO', with args beginning with: 'a' \r\n\
         -ERR wrong number of arguments for 'get' command\r\n-ERR syntax error\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n$1\r\n1\r\n",
    );
    // Empty transaction, DISCARD, and the connection keeps working after.
    r.expect(
        &[
            &["MULTI"],
            &["EXEC"],
            &["MULTI"],
            &["INCR", "n"],
            &["DISCARD"],
            &["GET", "n"],
        ],
        "+OK\r\n*0\r\n+OK\r\n+QUEUED\r\n+OK\r\n$1\r\n1\r\n",
    );
    // What augur refuses inside MULTI aborts the transaction like any queue-time error.
    r.expect(
        &[&["MULTI"], &["RANDOMKEY"], &["EXEC"]],
        "+OK\r\n-ERR RANDOMKEY is not allowed inside MULTI in augur: it walks or samples \
         the key space across calls and nodes\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    r.expect(
        &[&["WATCH"]],
        "-ERR wrong number of arguments for 'watch' command\r\n",
    );
    // RESP3: the same, and maps/arrays encoded in RESP3 inside EXEC's array.
    r.send(&[&["HELLO", "3"]]);
    std::thread::sleep(Duration::from_millis(50));
    let mut sink = [0u8; 4096];
    let _ = r.0.read(&mut sink);
    r.expect(
        &[&["MULTI"], &["GET", "nope"], &["EXISTS", "n"], &["EXEC"]],
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n_\r\n:1\r\n",
    );
    // QUIT inside MULTI acts at once, as in Redis.
    r.expect(&[&["MULTI"], &["QUIT"]], "+OK\r\n+OK\r\n");
}

/// EXEC of a transaction whose watched key changed: `*-1` in RESP2, `_` in RESP3.
#[test]
fn watch_abort_is_the_null_array_in_both_protocols() {
    let port = start_node(|_| {});
    let mut other = client(port);
    for (resp3, null) in [(false, "*-1\r\n"), (true, "_\r\n")] {
        let mut r = Raw::connect(port);
        if resp3 {
            r.send(&[&["HELLO", "3"]]);
            std::thread::sleep(Duration::from_millis(50));
            let mut sink = [0u8; 4096];
            let _ = r.0.read(&mut sink);
        }
        r.expect(&[&["WATCH", "w", "w2"]], "+OK\r\n");
        let _: () = other.set("w", "changed").unwrap();
        r.expect(
            &[&["MULTI"], &["SET", "w2", "mine"], &["EXEC"]],
            &format!("+OK\r\n+QUEUED\r\n{null}"),
        );
        let w2: Option<String> = other.get("w2").unwrap();
        assert_eq!(w2, None, "an aborted EXEC wrote");
        // EXEC cleared the watch: the same transaction now runs.
        r.expect(
            &[&["MULTI"], &["SET", "w2", "mine"], &["EXEC"]],
            "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
        );
        let _: () = other.del(&["w", "w2"]).unwrap();
    }
}

#[test]
fn watch_sees_every_kind_of_change() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let mut other = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    let exec_after = |c: &mut redis::Connection, watch: &[&str], change: &mut dyn FnMut()| {
        let mut w = vec!["WATCH"];
        w.extend_from_slice(watch);
        let _: () = cmd(c, &w).unwrap();
        change();
        let _: () = cmd(c, &["MULTI"]).unwrap();
        let _: () = cmd(c, &["PING"]).unwrap();
        cmd::<Value>(c, &["EXEC"]).unwrap()
    };
    let ran = Value::Array(vec![Value::SimpleString("PONG".into())]);
    // Unchanged (absent, or present on two cores): runs.
    assert_eq!(exec_after(&mut c, &[&a, &b], &mut || {}), ran);
    let _: () = other.set(&a, "1").unwrap();
    let _: () = other.set(&b, "1").unwrap();
    assert_eq!(exec_after(&mut c, &[&a, &b], &mut || {}), ran);
    // Written, even with the same value.
    let aborted = exec_after(&mut c, &[&a, &b], &mut || {
        let _: () = other.set(&b, "1").unwrap();
    });
    assert_eq!(aborted, Value::Nil);
    // Deleted.
    let aborted = exec_after(&mut c, &[&a], &mut || {
        let _: () = other.del(&a).unwrap();
    });
    assert_eq!(aborted, Value::Nil);
    // Absent at WATCH, present at EXEC.
    let aborted = exec_after(&mut c, &[&a], &mut || {
        let _: () = other.set(&a, "back").unwrap();
    });
    assert_eq!(aborted, Value::Nil);
    // Expired in between (polled, not slept).
    let _: () = other.pset_ex(&b, "short", 30).unwrap();
    let aborted = exec_after(&mut c, &[&b], &mut || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while other.exists::<_, bool>(&b).unwrap() {
            assert!(Instant::now() < deadline, "the key never expired");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert_eq!(aborted, Value::Nil);
    // FLUSHALL, even when the key is written again to what it was.
    let _: () = other.set(&a, "v").unwrap();
    let aborted = exec_after(&mut c, &[&a], &mut || {
        let _: () = redis::cmd("FLUSHALL").query(&mut other).unwrap();
        let _: () = other.set(&a, "v").unwrap();
    });
    assert_eq!(aborted, Value::Nil);
    // UNWATCH and DISCARD forget the watches.
    let _: () = cmd(&mut c, &["WATCH", &a]).unwrap();
    let _: () = other.set(&a, "x").unwrap();
    let _: () = cmd(&mut c, &["UNWATCH"]).unwrap();
    assert_eq!(exec_after(&mut c, &[&b], &mut || {}), ran);
    let _: () = cmd(&mut c, &["WATCH", &a]).unwrap();
    let _: () = other.set(&a, "y").unwrap();
    let _: () = cmd(&mut c, &["MULTI"]).unwrap();
    let _: () = cmd(&mut c, &["DISCARD"]).unwrap();
    assert_eq!(exec_after(&mut c, &[&b], &mut || {}), ran);
}

#[test]
fn redis_crate_transactions_across_cores() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    // pipe().atomic(): MULTI ... EXEC, keys on two cores, plus a RENAME across them.
    let (x, y, moved, fresh): (i64, i64, Option<String>, Option<String>) = redis::pipe()
        .atomic()
        .incr(&a, 5)
        .incr(&b, 7)
        .rename(&a, "moved")
        .ignore()
        .set(&b, "fresh")
        .ignore()
        .get("moved")
        .get(&b)
        .query(&mut c)
        .unwrap();
    assert_eq!((x, y), (5, 7));
    assert_eq!(moved.as_deref(), Some("5"));
    assert_eq!(fresh.as_deref(), Some("fresh"));
    // A runtime error inside EXEC does not undo the rest.
    let result: RedisResult<(String, i64)> = redis::pipe()
        .atomic()
        .set(&a, "text")
        .incr(&a, 1)
        .query(&mut c);
    assert!(result.is_err(), "{result:?}");
    assert_eq!(c.get::<_, String>(&a).unwrap(), "text");
    // EXECABORT through the crate.
    let result: RedisResult<Value> = redis::pipe()
        .atomic()
        .set(&a, "never")
        .cmd("NOSUCHCOMMAND")
        .query(&mut c);
    // The crate reports the first error among the replies: the queue-time one.
    let e = result.expect_err("aborted");
    assert!(e.to_string().contains("unknown command"), "{e}");
    assert_eq!(c.get::<_, String>(&a).unwrap(), "text");
}

/// `redis::transaction`'s WATCH/retry loop against a concurrent writer: every
/// increment lands exactly once, and the writer made the loop retry.
#[test]
fn optimistic_increment_retries_under_a_concurrent_writer() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    let _: () = c.set(&a, 0).unwrap();
    let _: () = c.set(&b, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes, a) = (stop.clone(), writes.clone(), a.clone());
        let attempts = attempts.clone();
        std::thread::spawn(move || {
            let mut w = client(port);
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                // Not synchronised with the attempts, only paced by them: at most one
                // write per two attempts, so however slow the machine, at most half of
                // the attempts can be aborted and the loop always progresses.
                let now = attempts.load(Ordering::Relaxed);
                if now % 2 == 1 && now != last {
                    last = now;
                    let _: i64 = w.incr(&a, 1).unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let rounds = 200;
    for _ in 0..rounds {
        let _: () = redis::transaction(&mut c, &[&a, &b], |con, pipe| {
            attempts.fetch_add(1, Ordering::Relaxed);
            let (va, vb): (i64, i64) = redis::pipe().get(&a).get(&b).query(con)?;
            pipe.set(&a, va + 1)
                .ignore()
                .set(&b, vb + 1)
                .ignore()
                .query(con)
        })
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let retries = attempts.load(Ordering::Relaxed) - rounds;
    let (va, vb): (i64, i64) = (c.get(&a).unwrap(), c.get(&b).unwrap());
    assert_eq!(vb, rounds as i64, "each transaction exactly once");
    assert_eq!(
        va,
        rounds as i64 + writes.load(Ordering::Relaxed) as i64,
        "no increment lost"
    );
    assert!(
        retries > 0,
        "the concurrent writer never made a transaction retry"
    );
    eprintln!(
        "{rounds} transactions, {retries} retries, {} concurrent writes",
        writes.load(Ordering::Relaxed)
    );
}

/// Keys on two cores, one connection incrementing both in transactions, another
/// reading both with MGET in a transaction: a reader must never see one incremented
/// and not the other.
#[test]
fn transactions_are_isolated_across_cores() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    let _: () = c.set(&a, 0).unwrap();
    let _: () = c.set(&b, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, a, b) = (stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut w = client(port);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: (i64, i64) = redis::pipe()
                    .atomic()
                    .incr(&a, 1)
                    .incr(&b, 1)
                    .query(&mut w)
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut reads, mut torn) = (0u64, Vec::new());
    while Instant::now() < deadline {
        // MGET in a transaction: a bare MGET reads its keys on their cores one after
        // the other (decision 0004), so it could straddle a whole transaction and
        // show a state that never existed even with perfect isolation.
        let ((x, y),): ((i64, i64),) = redis::pipe()
            .atomic()
            .mget(&[&a, &b])
            .query(&mut c)
            .unwrap();
        reads += 1;
        if x != y {
            torn.push((x, y));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.join().unwrap();
    eprintln!(
        "{transactions} transactions, {reads} reads, {} torn",
        torn.len()
    );
    assert!(transactions > 100, "too few transactions to show anything");
    assert!(torn.is_empty(), "saw half-applied transactions: {torn:?}");
}

#[test]
fn transaction_inputs_are_bounded() {
    let port = start_node(|config| {
        config.client_query_buffer_limit = 1 << 20;
        config.proto_max_bulk_len = 1 << 20;
    });
    let mut c = client(port);
    // Watched keys per connection.
    let keys: Vec<String> = (0..10_001).map(|i| format!("w{i}")).collect();
    let mut watch = redis::cmd("WATCH");
    watch.arg(&keys);
    let e = watch.query::<()>(&mut c).expect_err("too many");
    assert!(e.to_string().contains("too many watched keys"), "{e}");
    // Queued bytes count against the query buffer limit.
    let _: () = cmd(&mut c, &["MULTI"]).unwrap();
    let value = "x".repeat(64 << 10);
    let mut refused = None;
    for i in 0..32 {
        match redis::cmd("SET")
            .arg(format!("big{i}"))
            .arg(&value)
            .query::<String>(&mut c)
        {
            Ok(q) => assert_eq!(q, "QUEUED"),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("2 MiB queued under a 1 MiB limit");
    assert!(refused.contains("client-query-buffer-limit"), "{refused}");
    let e = cmd::<Value>(&mut c, &["EXEC"]).expect_err("aborted");
    assert!(e.to_string().contains("Transaction discarded"), "{e}");
    assert!(!c.exists::<_, bool>("big0").unwrap());
}

/// Transactions coordinated on both cores at once, over the same keys on both cores,
/// in both command orders: holds are taken in core order, so none waits for another
/// in a cycle; all finish, and every increment lands once.
#[test]
fn concurrent_transactions_from_both_cores_do_not_deadlock() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    // Two connections served by each core (CLIENT INFO says which).
    let mut by_core: [Vec<redis::Connection>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..64 {
        if by_core.iter().all(|v| v.len() >= 2) {
            break;
        }
        let mut con = client(port);
        let info: String = cmd(&mut con, &["CLIENT", "INFO"]).unwrap();
        let core: usize = info
            .split_whitespace()
            .find_map(|f| f.strip_prefix("core="))
            .and_then(|v| v.parse().ok())
            .expect("core= in CLIENT INFO");
        if by_core[core].len() < 2 {
            by_core[core].push(con);
        }
    }
    assert!(
        by_core.iter().all(|v| v.len() == 2),
        "could not get connections on both cores"
    );
    let rounds = 100;
    let started = Instant::now();
    let workers: Vec<_> = by_core
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, mut con)| {
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                for _ in 0..rounds {
                    let _: (i64, i64) = redis::pipe()
                        .atomic()
                        .incr(first, 1)
                        .incr(second, 1)
                        .query(&mut con)
                        .unwrap();
                }
            })
        })
        .collect();
    let n = workers.len() as i64;
    for w in workers {
        w.join().expect("a worker failed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "transactions took {:?}",
        started.elapsed()
    );
    let (x, y): (i64, i64) = c.mget(&[&a, &b]).unwrap();
    assert_eq!((x, y), (n * rounds, n * rounds));
}

/// Relative expiries count from EXEC, as in Redis, not from when the command was
/// queued: a queued `SET ... PX 300` run 400 ms later still lives 300 ms.
#[test]
fn queued_relative_times_count_from_exec() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let _: () = cmd(&mut c, &["MULTI"]).unwrap();
    let queued: String = cmd(&mut c, &["SET", "ttl", "v", "PX", "300"]).unwrap();
    assert_eq!(queued, "QUEUED");
    // The time between queueing and EXEC is what is under test.
    std::thread::sleep(Duration::from_millis(400));
    let _: Value = cmd(&mut c, &["EXEC"]).unwrap();
    let pttl: i64 = c.pttl("ttl").unwrap();
    assert!(pttl > 0 && pttl <= 300, "pttl {pttl}");
}

/// DBSIZE, KEYS and FLUSHALL inside MULTI run under holds of every core: they see the
/// transaction's own writes on both cores, and FLUSHALL empties both.
#[test]
fn fanout_commands_inside_multi_see_every_core() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    let mut r = Raw::connect(port);
    let (mut first, mut second) = (a.clone(), b.clone());
    if first > second {
        std::mem::swap(&mut first, &mut second);
    }
    r.expect(
        &[
            &["MULTI"],
            &["SET", &a, "1"],
            &["SET", &b, "2"],
            &["DBSIZE"],
            &["KEYS", "*"],
            &["FLUSHALL"],
            &["DBSIZE"],
            &["EXEC"],
        ],
        &format!(
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
             *6\r\n+OK\r\n+OK\r\n:2\r\n*2\r\n${}\r\n{first}\r\n${}\r\n{second}\r\n\
             +OK\r\n:0\r\n",
            first.len(),
            second.len()
        ),
    );
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0);
}

/// MSETNX whose keys are on two cores: all or nothing (a key that exists stops every
/// set), and isolated — a reader's `MULTI; MGET; EXEC` sees both keys or neither, never
/// one (it was refused with CROSSSLOT before).
#[test]
fn msetnx_across_cores_is_all_or_nothing_and_isolated() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);
    let set: i64 = redis::cmd("MSETNX")
        .arg(&a)
        .arg("1")
        .arg(&b)
        .arg("1")
        .query(&mut c)
        .unwrap();
    assert_eq!(set, 1);
    let _: () = c.del(&b).unwrap();
    let refused: i64 = redis::cmd("MSETNX")
        .arg(&b)
        .arg("2")
        .arg(&a)
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(refused, 0, "a exists, so nothing is set");
    assert_eq!(c.get::<_, Option<String>>(&b).unwrap(), None);
    assert_eq!(c.get::<_, String>(&a).unwrap(), "1");

    // Isolation: one client creates both keys with MSETNX and deletes both in a
    // transaction, over and over; another never sees exactly one of them.
    let _: () = c.del(&a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, a, b) = (stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut w = client(port);
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::pipe()
                    .atomic()
                    .del(&a)
                    .del(&b)
                    .query(&mut w)
                    .unwrap();
                let n: i64 = redis::cmd("MSETNX")
                    .arg(&a)
                    .arg("x")
                    .arg(&b)
                    .arg("x")
                    .query(&mut w)
                    .unwrap();
                assert_eq!(n, 1);
                rounds += 1;
            }
            rounds
        })
    };
    let mut r = client(port);
    let (mut torn, mut reads) = (0, 0);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let got: (Option<String>, Option<String>) = redis::pipe()
            .atomic()
            .get(&a)
            .get(&b)
            .query(&mut r)
            .unwrap();
        reads += 1;
        if got.0.is_some() != got.1.is_some() {
            torn += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(
        rounds > 10 && reads > 10,
        "too little ran: {rounds} rounds, {reads} reads"
    );
    assert_eq!(torn, 0, "{torn} of {reads} reads saw one key of an MSETNX");
}
