//! Bad input and limits: the offending client gets a clear error, nothing is lost,
//! the node stays up for everyone else.

mod common;

use std::time::Duration;

use common::{client, raw_exchange, start_node};
use redis::Commands;

#[test]
fn malformed_protocol_closes_only_that_connection() {
    let port = start_node(|_| {});
    let mut good = client(port);
    let _: () = good.set("kept", "yes").unwrap();
    let cases: [(&[u8], &str); 4] = [
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (b"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$'\r\n"),
        (
            b"SET \"a b\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, expected) in cases {
        let (out, closed) = raw_exchange(port, input, Duration::from_secs(5));
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert!(closed, "connection should be closed after a protocol error");
    }
    // Replies to requests before the bad one still arrive, in order.
    let (out, closed) = raw_exchange(port, b"PING\r\n*1\r\n$-5\r\n", Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(closed);
    assert_eq!(good.get::<_, String>("kept").unwrap(), "yes");
}

#[test]
fn large_values_near_the_bulk_limit() {
    let limit = 4 << 20;
    let port = start_node(|c| c.proto_max_bulk_len = limit);
    let mut c = client(port);
    let value: Vec<u8> = (0..limit as usize).map(|i| (i * 7 % 251) as u8).collect();
    let _: () = c.set("big", &value[..]).unwrap();
    let back: Vec<u8> = c.get("big").unwrap();
    assert!(back == value, "4 MiB value came back different");
    // APPEND past the limit is refused and changes nothing.
    let e = redis::cmd("APPEND")
        .arg("big")
        .arg("x")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("proto-max-bulk-len"), "{e}");
    assert_eq!(c.strlen::<_, i64>("big").unwrap(), limit as i64);
    // One byte over: protocol error, that connection closed, the data intact.
    let mut frame = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", limit + 1).into_bytes();
    frame.extend(std::iter::repeat_n(b'z', limit as usize + 1));
    frame.extend_from_slice(b"\r\n");
    let (out, closed) = raw_exchange(port, &frame, Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&out).starts_with("-ERR Protocol error: invalid bulk length"));
    assert!(closed);
    let again: Vec<u8> = c.get("big").unwrap();
    assert!(again == value);
}

#[test]
fn value_larger_than_a_region_grows_its_fragment() {
    let port = start_node(|c| c.region_size = 1 << 20);
    let mut c = client(port);
    let value = vec![b'v'; 24 << 20];
    let _: () = c.set("huge", &value[..]).unwrap();
    let _: () = c.set("small", "s").unwrap();
    assert_eq!(c.strlen::<_, i64>("huge").unwrap(), 24 << 20);
    assert_eq!(c.get::<_, String>("small").unwrap(), "s");
}

#[test]
fn maxmemory_gives_oom_and_loses_nothing() {
    let port = start_node(|c| {
        c.region_size = 256 << 10;
        c.maxmemory = 6 << 20;
    });
    let mut c = client(port);
    let mut written = 0;
    let mut oom = None;
    for i in 0..200_000 {
        match c.set::<_, _, ()>(format!("key:{i:08}"), "0123456789abcdef0123456789abcdef") {
            Ok(()) => written += 1,
            Err(e) => {
                oom = Some(e.to_string());
                break;
            }
        }
    }
    let oom = oom.expect("maxmemory never refused a write");
    assert!(
        oom.contains("OOM") && oom.contains("command not allowed when used memory > 'maxmemory'"),
        "{oom}"
    );
    assert!(written > 1000);
    for i in (0..written).step_by(97) {
        let v: Option<String> = c.get(format!("key:{i:08}")).unwrap();
        assert!(v.is_some(), "key:{i:08} lost after OOM");
    }
    // Reads and deletes still work when full.
    assert_eq!(c.del::<_, i64>("key:00000000").unwrap(), 1);
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn maxclients_refuses_extra_connections() {
    let port = start_node(|c| c.maxclients = 2);
    let first = client(port);
    let _second = client(port);
    let (out, closed) = raw_exchange(port, b"PING\r\n", Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed);
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    let pong: String = redis::cmd("PING").query(&mut client(port)).unwrap();
    assert_eq!(pong, "PONG");
}
