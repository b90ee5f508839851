//! The command surface, driven by the `redis` crate against a real node.

mod common;

use std::time::Duration;

use common::{client, info_field, start_node};
use redis::{Commands, RedisResult, Value};

#[test]
fn strings_counters_and_multi_key() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let _: () = c.set("greeting", "hello").unwrap();
    assert_eq!(c.get::<_, String>("greeting").unwrap(), "hello");
    assert_eq!(c.append::<_, _, i64>("greeting", " world").unwrap(), 11);
    assert_eq!(c.strlen::<_, i64>("greeting").unwrap(), 11);
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(c.decr::<_, _, i64>("n", 7).unwrap(), -2);
    let err: RedisResult<i64> = c.incr("greeting", 1);
    assert!(err.unwrap_err().to_string().contains("not an integer"));
    let _: () = redis::cmd("SET")
        .arg("max")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    let overflow: RedisResult<i64> = c.incr("max", 1);
    assert!(overflow.unwrap_err().to_string().contains("overflow"));
    let _: () = c.mset(&[("a", "1"), ("b", "2"), ("\u{ff}z", "3")]).unwrap();
    let got: Vec<Option<String>> = c.mget(&["a", "missing", "b", "\u{ff}z"]).unwrap();
    assert_eq!(
        got,
        vec![Some("1".into()), None, Some("2".into()), Some("3".into())]
    );
    assert_eq!(c.exists::<_, i64>(&["a", "b", "a", "nope"]).unwrap(), 3);
    assert_eq!(c.del::<_, i64>(&["a", "b", "nope"]).unwrap(), 2);
    assert_eq!(
        redis::cmd("TYPE")
            .arg("greeting")
            .query::<String>(&mut c)
            .unwrap(),
        "string"
    );
    assert_eq!(
        redis::cmd("TYPE").arg("a").query::<String>(&mut c).unwrap(),
        "none"
    );
    assert_eq!(
        redis::cmd("GETDEL")
            .arg("greeting")
            .query::<String>(&mut c)
            .unwrap(),
        "hello world"
    );
    assert_eq!(c.get::<_, Option<String>>("greeting").unwrap(), None);
    assert_eq!(
        redis::cmd("SETNX")
            .arg("k")
            .arg("1")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("SETNX")
            .arg("k")
            .arg("2")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    let old: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("3")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("1"));
    let nx: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("4")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, None);
    let xx: Option<String> = redis::cmd("SET")
        .arg("nokey")
        .arg("4")
        .arg("XX")
        .query(&mut c)
        .unwrap();
    assert_eq!(xx, None);
    assert_eq!(c.get::<_, Option<String>>("nokey").unwrap(), None);
}

#[test]
fn expiry_options_ttl_and_active_removal() {
    let port = start_node(|c| c.expiry_interval_ms = 20);
    let mut c = client(port);
    let _: () = redis::cmd("SET")
        .arg("t")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = c.ttl("t").unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(c.ttl::<_, i64>("nope").unwrap(), -2);
    let _: () = c.set("p", "v").unwrap();
    assert_eq!(c.ttl::<_, i64>("p").unwrap(), -1);
    // KEEPTTL keeps it, a plain SET clears it, INCR/APPEND keep it.
    let _: () = redis::cmd("SET")
        .arg("t")
        .arg("w")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("t").unwrap() > 90_000);
    let _: () = redis::cmd("APPEND")
        .arg("t")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert!(c.pttl::<_, i64>("t").unwrap() > 90_000);
    assert_eq!(c.persist::<_, i64>("t").unwrap(), 1);
    assert_eq!(c.ttl::<_, i64>("t").unwrap(), -1);
    // EXPIRE NX/XX/GT/LT.
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(50)
            .arg("XX")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(50)
            .arg("NX")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(40)
            .arg("GT")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("p")
            .arg(40)
            .arg("LT")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    // A past time deletes.
    assert_eq!(
        redis::cmd("PEXPIRE")
            .arg("p")
            .arg(-1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(c.exists::<_, i64>("p").unwrap(), 0);
    // Short TTLs: hidden at once when due (lazy), removed by the active cycle.
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("short{i}"))
            .arg("v")
            .arg("PX")
            .arg(30)
            .query(&mut c)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(c.get::<_, Option<String>>("short7").unwrap(), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "active expiry did not remove keys"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let expired: u64 = info_field(&mut c, "stats", "expired_keys").parse().unwrap();
    assert!(expired >= 50, "expired_keys {expired}");
}

#[test]
fn errors_have_redis_shapes() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let e = redis::cmd("NOSUCH")
        .arg("a")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown command 'NOSUCH', with args beginning with: 'a'"),
        "{e}"
    );
    let e = redis::cmd("GET").query::<Value>(&mut c).unwrap_err();
    assert!(
        e.to_string()
            .contains("wrong number of arguments for 'get' command"),
        "{e}"
    );
    let e = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(0)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("invalid expire time in 'set' command"),
        "{e}"
    );
    let e = redis::cmd("SELECT")
        .arg(1)
        .query::<Value>(&mut c)
        .unwrap_err();
    // As Redis Cluster: one database only.
    assert!(
        e.to_string()
            .contains("SELECT is not allowed in cluster mode"),
        "{e}"
    );
    // The connection is still usable after errors.
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn pipelined_commands_answer_in_order() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg(format!("p{i}"));
        pipe.cmd("GET").arg(format!("p{i}"));
    }
    pipe.cmd("DBSIZE");
    let out: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(out.len(), 4001);
    for i in 0..2000usize {
        assert_eq!(out[2 * i], Value::Int(i as i64 + 1));
        assert_eq!(
            out[2 * i + 1],
            Value::BulkString((i + 1).to_string().into_bytes())
        );
    }
    assert_eq!(out[4000], Value::Int(2000));
}

#[test]
fn client_config_command_and_info() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut c)
            .unwrap(),
        "tester"
    );
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(
        info.contains(&format!("id={id} ")) && info.contains("name=tester"),
        "{info}"
    );
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut c)
        .unwrap();
    assert_eq!(save, vec!["save".to_string(), String::new()]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1gb")
        .query(&mut c)
        .unwrap();
    let mm: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmem*")
        .query(&mut c)
        .unwrap();
    assert!(mm.contains(&"1073741824".to_string()), "{mm:?}");
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    let all: Vec<Value> = redis::cmd("COMMAND").query(&mut c).unwrap();
    assert_eq!(all.len() as i64, count);
    let _: Value = redis::cmd("COMMAND").arg("DOCS").query(&mut c).unwrap();
    let _: () = c.set("x", "y").unwrap();
    assert_eq!(
        info_field(&mut c, "keyspace", "db0"),
        "keys=1,expires=0,avg_ttl=0"
    );
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Stats",
        "# Keyspace",
        "# Augur",
    ] {
        assert!(info.contains(section), "INFO lacks {section}");
    }
    assert!(
        info.contains("core1:fragments="),
        "per-core load in INFO augur"
    );
}

#[test]
fn auth_with_requirepass() {
    let port = start_node(|c| c.requirepass = Some("s3cret".into()));
    let (out, _) = common::raw_exchange(
        port,
        b"GET k\r\nAUTH wrong\r\nAUTH s3cret\r\nSET k v\r\nGET k\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text,
        "-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+OK\r\n$1\r\nv\r\n+OK\r\n"
    );
    let url = format!("redis://:s3cret@127.0.0.1:{port}/");
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
}

#[test]
fn resp3_after_hello_3() {
    let port = start_node(|_| {});
    let (out, _) = common::raw_exchange(
        port,
        b"HELLO 3\r\nGET missing\r\nHELLO 4\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("%7\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(
        text.contains("\r\n_\r\n-NOPROTO unsupported protocol version\r\n+OK\r\n"),
        "{text}"
    );
}

#[test]
fn scan_type_filter() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let _: () = c.set("plain", "v").unwrap();
    // The old sentinel-pattern implementation matched exactly this key.
    let _: () = c.set("\0no-such-type", "v").unwrap();
    let scan = |c: &mut redis::Connection, t: &str| -> Vec<String> {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(100)
            .arg("TYPE")
            .arg(t)
            .query(c)
            .unwrap();
        assert_eq!(next, 0);
        keys
    };
    assert_eq!(scan(&mut c, "string").len(), 2);
    assert!(scan(&mut c, "hash").is_empty());
}
