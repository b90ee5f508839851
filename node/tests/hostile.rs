//! Hostile clients: oversized or never-finished requests are cut off with a clear
//! error, and the node stays up for everyone else.

mod common;

use std::time::Duration;

use common::{client, raw_exchange, start_node};
use redis::Commands;

#[test]
fn before_auth_only_small_requests_are_read() {
    let port = start_node(|c| c.requirepass = Some("secret-pw".into()));
    // A big bulk announced before AUTH is refused at its header: the node does not
    // wait for (or buffer) its bytes.
    let (out, closed) = raw_exchange(
        port,
        b"*2\r\n$4\r\nAUTH\r\n$100000\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(closed);
    let (out, closed) = raw_exchange(port, b"*11\r\n", Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(closed);
    // AUTH lifts the limits for the rest of the same pipeline.
    let mut wire =
        b"*2\r\n$4\r\nAUTH\r\n$9\r\nsecret-pw\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n"
            .to_vec();
    wire.resize(wire.len() + 100_000, b'v');
    wire.extend_from_slice(b"\r\nQUIT\r\n");
    let (out, closed) = raw_exchange(port, &wire, Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&out), "+OK\r\n+OK\r\n+OK\r\n");
    assert!(closed);
}

#[test]
fn a_partial_request_over_the_query_buffer_limit_closes() {
    let port = start_node(|c| {
        c.client_query_buffer_limit = 1 << 20;
        c.proto_max_bulk_len = 1 << 20;
    });
    let mut good = client(port);
    let _: () = good.set("kept", "yes").unwrap();
    // A request of a million small arguments, never finished: 2 MiB buffered.
    let mut wire = b"*1000000\r\n".to_vec();
    while wire.len() < 2 << 20 {
        wire.extend_from_slice(b"$16\r\naaaaaaaaaaaaaaaa\r\n");
    }
    let (out, closed) = raw_exchange(port, &wire, Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&out).starts_with("-ERR Protocol error: query buffer limit"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(closed);
    assert_eq!(good.get::<_, String>("kept").unwrap(), "yes");
    let limit: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("client-query-buffer-limit")
        .query(&mut good)
        .unwrap();
    assert_eq!(limit, vec!["client-query-buffer-limit", "1048576"]);
}

/// Poll until `done` or `limit` passes; how long it took.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::Read;
    let start = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed())
            }
            Err(_) => {}
        }
    }
    None
}

#[test]
fn idle_clients_are_closed_after_timeout() {
    use std::io::Write;
    let port = start_node(|c| c.timeout = 1);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A client that keeps talking stays.
    let mut busy = client(port);
    for _ in 0..8 {
        let _: String = redis::cmd("PING").query(&mut busy).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).is_some(),
        "idle client not closed"
    );
    let _: String = redis::cmd("PING").query(&mut busy).unwrap();
    let _ = idle.write_all(b"PING\r\n");
}

#[test]
fn half_a_request_is_closed_even_without_timeout() {
    use std::io::Write;
    let port = start_node(|c| c.partial_request_timeout = 1);
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nab").unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(5)).is_some(),
        "stalled request not closed"
    );
    // Trickling a byte at a time does not reset the clock.
    let mut trickle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let start = std::time::Instant::now();
    let mut closed = false;
    for b in b"*2\r\n$3\r\nGET\r\n$1000\r\n".iter().cycle().take(60) {
        if trickle.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    closed = closed || closed_within(&mut trickle, Duration::from_secs(1)).is_some();
    assert!(closed, "trickling client kept for {:?}", start.elapsed());
    // A quiet client between requests is not affected (timeout is 0).
    let mut quiet = client(port);
    let _: String = redis::cmd("PING").query(&mut quiet).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _: String = redis::cmd("PING").query(&mut quiet).unwrap();
}

/// Fragments move between the two cores (rebalancing by bytes) while clients on both
/// cores read and write keys of both: requests routed to a fragment's old core are
/// forwarded, in both directions at once. Every request must be answered.
#[test]
fn cross_core_forwarding_both_ways_completes() {
    let port = start_node(|c| {
        c.cores = 2;
        c.region_size = 64 << 10;
        c.expiry_interval_ms = 2;
    });
    let begin = std::time::Instant::now();
    let deadline = begin + Duration::from_secs(6);
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .unwrap()
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut ops = 0u64;
                let mut x = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                while std::time::Instant::now() < deadline {
                    let mut pipe = redis::pipe();
                    let mut keys = Vec::new();
                    for _ in 0..24 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Keys over the whole byte range, so both cores own some;
                        // writers lean on one half for a while, then the other, so
                        // the cores take turns being heavier.
                        let phase = (begin.elapsed().as_millis() / 700) as u64;
                        let half = if (w + phase).is_multiple_of(2) {
                            0u8
                        } else {
                            128
                        };
                        let first = half + (x % 128) as u8;
                        let key = [&[first][..], format!("{}", x % 4000).as_bytes()].concat();
                        keys.push(key.clone());
                        let size = 200 + (x % 1500) as usize;
                        pipe.set(key, vec![b'v'; size]).ignore();
                    }
                    pipe.mget(keys);
                    let r: redis::RedisResult<(Vec<Option<Vec<u8>>>,)> = pipe.query(&mut c);
                    let (got,) = r.unwrap_or_else(|e| panic!("worker {w} op {ops}: {e}"));
                    assert!(got.iter().all(Option::is_some), "a key just set is missing");
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    let ops: u64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    let mut c = client(port);
    let moves: u64 = common::info_field(&mut c, "augur", "fragment_moves")
        .parse()
        .unwrap();
    eprintln!("{ops} pipelines, {moves} fragment moves between cores");
    assert!(ops > 100);
    assert!(
        moves > 0,
        "no fragment moved between cores: nothing was forwarded"
    );
}

/// Replies are encoded in the protocol in force when their command ran: in one write,
/// a GET before `HELLO 3` answers nil as RESP2 `$-1`, one after it as RESP3 `_`.
#[test]
fn replies_before_hello_3_stay_resp2() {
    let port = start_node(|_| {});
    let (out, closed) = raw_exchange(
        port,
        b"GET missing-1\r\nHELLO 3\r\nGET missing-2\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    let out = String::from_utf8_lossy(&out);
    assert!(closed);
    assert!(out.starts_with("$-1\r\n%"), "{out:?}");
    assert!(out.ends_with("\r\n_\r\n+OK\r\n"), "{out:?}");
    // And back: HELLO 2 in a RESP3 pipeline.
    let (out, _) = raw_exchange(
        port,
        b"HELLO 3\r\nGET missing\r\nHELLO 2\r\nGET missing\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    let out = String::from_utf8_lossy(&out);
    let nils: Vec<&str> = out
        .split("\r\n")
        .filter(|l| *l == "_" || *l == "$-1")
        .collect();
    assert_eq!(nils, ["_", "$-1"], "{out:?}");
}

/// A glob with 30 stars against a 60-byte key: the recursive matcher did not finish
/// in 30 s; the linear one answers at once. The bound is generous on purpose.
#[test]
fn keys_with_many_stars_answers_promptly() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let key = "a".repeat(60);
    let _: () = c.set(&key, "v").unwrap();
    let pattern = format!("{}*b", "*a".repeat(30));
    let start = std::time::Instant::now();
    let keys: Vec<String> = c.keys(&pattern).unwrap();
    assert!(keys.is_empty());
    let (_, found): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(&pattern)
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(found.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    let hit: Vec<String> = c.keys(format!("{}*", "*a".repeat(30))).unwrap();
    assert_eq!(hit, vec![key]);
}

/// A client that pipelines requests for big values and never reads the replies is
/// closed once its socket takes nothing for partial-request-timeout, instead of
/// holding its connection and its replies forever.
#[test]
fn a_client_that_never_reads_is_closed() {
    use std::io::Write;
    let port = start_node(|c| c.partial_request_timeout = 1);
    let mut c = client(port);
    let _: () = c.set("big", vec![b'v'; 1 << 20]).unwrap();
    let mut deaf = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    deaf.write_all(&b"GET big\r\n".repeat(200)).unwrap();
    let connected = |c: &mut redis::Connection| -> u64 {
        common::info_field(c, "clients", "connected_clients")
            .parse()
            .unwrap()
    };
    let start = std::time::Instant::now();
    let mut seen = connected(&mut c);
    while seen > 1 && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
        seen = connected(&mut c);
    }
    assert_eq!(seen, 1, "the non-reading client is still connected");
    drop(deaf);
}
