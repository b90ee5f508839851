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
