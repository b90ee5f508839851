#![allow(dead_code)] // each test binary uses a different subset
//! Start a real node on a free loopback port for a test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use augur_node::Config;

pub mod wired;

pub fn start_node(configure: impl FnOnce(&mut Config)) -> u16 {
    let mut config = Config {
        port: 0,
        admin_port: 0,
        cores: 2,
        ..Config::default()
    };
    configure(&mut config);
    let node = augur_node::start(config).expect("node starts");
    let port = node.port;
    // The node serves until the test process exits.
    std::mem::forget(node);
    port
}

/// Two keys owned by different cores of a two-core node (cores own key ranges, so the
/// candidates start with bytes across the range): `k0` and another.
pub fn keys_on_two_cores(c: &mut redis::Connection) -> (String, String) {
    let core_of = |c: &mut redis::Connection, key: &str| -> String {
        redis::cmd("AUGUR")
            .arg("WHERE")
            .arg(key)
            .query(c)
            .expect("augur where")
    };
    let first = "k0".to_string();
    let home = core_of(c, &first);
    for other in ["0a", "Ak", "zz", "~k", "\u{7f}k", "\u{ff}k", "\u{fff}k"] {
        let place = core_of(c, other);
        if place != home {
            assert!(place.contains("core"), "{place}");
            return (first, other.to_string());
        }
    }
    panic!("every candidate key is on {home}");
}

pub fn client(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// Send raw bytes and read until the server closes (true) or `timeout` passes.
pub fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    // The server may close before reading everything (e.g. after a protocol error):
    // that is the behaviour under test, so a failed write is not a failure here.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A close with our bytes unread arrives as a reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

pub fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(con).expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}: {info}"))
}
