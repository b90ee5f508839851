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
