//! The string and keyspace commands of issue #13 (part 2), driven by the `redis`
//! crate against a real two-core node.

mod common;

use common::{client, keys_on_two_cores, start_node};
use redis::{Commands, RedisResult};

fn cmd<T: redis::FromRedisValue>(c: &mut redis::Connection, words: &[&str]) -> RedisResult<T> {
    let mut command = redis::cmd(words[0]);
    for w in &words[1..] {
        command.arg(*w);
    }
    command.query(c)
}

fn err(c: &mut redis::Connection, words: &[&str]) -> String {
    match cmd::<redis::Value>(c, words) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{words:?} should fail, got {v:?}"),
    }
}

fn core_of(c: &mut redis::Connection, key: &str) -> String {
    cmd(c, &["AUGUR", "WHERE", key]).expect("augur where")
}

#[test]
fn string_commands_against_a_node() {
    let port = start_node(|_| {});
    let mut c = client(port);

    // GETEX
    let _: () = c.set("g", "v").unwrap();
    assert_eq!(
        cmd::<String>(&mut c, &["GETEX", "g", "EX", "100"]).unwrap(),
        "v"
    );
    let ttl: i64 = c.ttl("g").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    assert_eq!(
        cmd::<String>(&mut c, &["GETEX", "g", "PERSIST"]).unwrap(),
        "v"
    );
    assert_eq!(c.ttl::<_, i64>("g").unwrap(), -1);
    assert_eq!(
        cmd::<String>(&mut c, &["GETEX", "g", "PXAT", "1"]).unwrap(),
        "v"
    );
    assert_eq!(c.exists::<_, i64>("g").unwrap(), 0);
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["GETEX", "g"]).unwrap(),
        None
    );
    assert!(err(&mut c, &["GETEX", "g", "EX", "1", "PX", "1"]).contains("syntax error"));

    // GETRANGE / SUBSTR
    let _: () = c.set("s", "This is a string").unwrap();
    assert_eq!(
        cmd::<String>(&mut c, &["GETRANGE", "s", "0", "3"]).unwrap(),
        "This"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["GETRANGE", "s", "-3", "-1"]).unwrap(),
        "ing"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["SUBSTR", "s", "10", "100"]).unwrap(),
        "string"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["GETRANGE", "nope", "0", "-1"]).unwrap(),
        ""
    );

    // SETRANGE: zero padding, limits
    assert_eq!(
        cmd::<i64>(&mut c, &["SETRANGE", "r", "3", "ab"]).unwrap(),
        5
    );
    assert_eq!(c.get::<_, Vec<u8>>("r").unwrap(), b"\0\0\0ab");
    assert_eq!(
        cmd::<i64>(&mut c, &["SETRANGE", "empty", "9", ""]).unwrap(),
        0
    );
    assert_eq!(c.exists::<_, i64>("empty").unwrap(), 0);
    assert!(err(&mut c, &["SETRANGE", "r", "-1", "x"]).contains("offset is out of range"));
    assert!(err(&mut c, &["SETRANGE", "r", "536870911", "xy"]).contains("proto-max-bulk-len"));

    // INCRBYFLOAT
    let _: () = c.set("f", "10.50").unwrap();
    assert_eq!(
        cmd::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"]).unwrap(),
        "10.6"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["INCRBYFLOAT", "f", "-5"]).unwrap(),
        "5.6"
    );
    assert_eq!(
        cmd::<String>(&mut c, &["INCRBYFLOAT", "f2", "5.0e3"]).unwrap(),
        "5000"
    );
    assert!(err(&mut c, &["INCRBYFLOAT", "s", "1"]).contains("not a valid float"));
    assert!(err(&mut c, &["INCRBYFLOAT", "f", "x"]).contains("not a valid float"));
    assert!(err(&mut c, &["INCRBYFLOAT", "f", "inf"]).contains("NaN or Infinity"));

    // TOUCH, RANDOMKEY, OBJECT
    assert_eq!(
        cmd::<i64>(&mut c, &["TOUCH", "s", "f", "nope", "s"]).unwrap(),
        3
    );
    let some: String = cmd(&mut c, &["RANDOMKEY"]).unwrap();
    assert!(c.exists::<_, i64>(&some).unwrap() == 1, "{some}");
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "s"]).unwrap(),
        "embstr"
    );
    let _: () = c.set("i", "12345").unwrap();
    assert_eq!(
        cmd::<String>(&mut c, &["OBJECT", "ENCODING", "i"]).unwrap(),
        "int"
    );
    assert_eq!(
        cmd::<Option<String>>(&mut c, &["OBJECT", "ENCODING", "nope"]).unwrap(),
        None
    );
    assert_eq!(cmd::<i64>(&mut c, &["OBJECT", "IDLETIME", "s"]).unwrap(), 0);
    assert!(
        cmd::<Vec<String>>(&mut c, &["OBJECT", "HELP"])
            .unwrap()
            .len()
            > 5
    );
    assert!(err(&mut c, &["OBJECT", "FOO", "s"]).contains("unknown subcommand 'FOO'"));

    // SELECT as in Redis Cluster
    assert!(err(&mut c, &["SELECT", "1"]).contains("SELECT is not allowed in cluster mode"));
    assert_eq!(cmd::<String>(&mut c, &["SELECT", "0"]).unwrap(), "OK");

    // COMMAND knows them
    let info: Vec<redis::Value> =
        cmd(&mut c, &["COMMAND", "INFO", "getex", "rename", "object"]).unwrap();
    assert!(
        info.iter().all(|v| !matches!(v, redis::Value::Nil)),
        "{info:?}"
    );

    // Growing writes are refused over maxmemory; reads still work.
    let _: () = cmd(&mut c, &["CONFIG", "SET", "maxmemory", "1"]).unwrap();
    assert!(err(&mut c, &["SETRANGE", "s", "0", "x"]).contains("OOM"));
    assert!(err(&mut c, &["INCRBYFLOAT", "f", "1"]).contains("OOM"));
    assert!(err(&mut c, &["COPY", "s", "s2"]).contains("OOM"));
    assert_eq!(
        cmd::<String>(&mut c, &["GETRANGE", "s", "0", "3"]).unwrap(),
        "This"
    );
    let _: () = cmd(&mut c, &["CONFIG", "SET", "maxmemory", "0"]).unwrap();
}

#[test]
fn rename_and_copy_across_cores() {
    let port = start_node(|_| {});
    let mut c = client(port);
    let (a, b) = keys_on_two_cores(&mut c);

    let _: () = redis::cmd("SET")
        .arg(&a)
        .arg("v1")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    assert_eq!(cmd::<String>(&mut c, &["RENAME", &a, &b]).unwrap(), "OK");
    assert_eq!(c.exists::<_, i64>(&a).unwrap(), 0);
    assert_eq!(c.get::<_, String>(&b).unwrap(), "v1");
    let ttl: i64 = c.ttl(&b).unwrap();
    assert!((99..=100).contains(&ttl), "TTL moved with the value: {ttl}");
    assert!(err(&mut c, &["RENAME", &a, &b]).contains("no such key"));

    let _: () = c.set(&a, "other").unwrap();
    assert_eq!(cmd::<i64>(&mut c, &["RENAMENX", &b, &a]).unwrap(), 0);
    assert_eq!(c.get::<_, String>(&a).unwrap(), "other");
    assert_eq!(cmd::<i64>(&mut c, &["COPY", &b, &a]).unwrap(), 0);
    assert_eq!(cmd::<i64>(&mut c, &["COPY", &b, &a, "REPLACE"]).unwrap(), 1);
    assert_eq!(c.get::<_, String>(&a).unwrap(), "v1");
    assert_eq!(c.get::<_, String>(&b).unwrap(), "v1");
    let ttl: i64 = c.ttl(&a).unwrap();
    assert!((99..=100).contains(&ttl), "COPY keeps the TTL: {ttl}");
    let _: i64 = c.del(&a).unwrap();
    assert_eq!(cmd::<i64>(&mut c, &["RENAMENX", &b, &a]).unwrap(), 1);
    assert_eq!(c.exists::<_, i64>(&b).unwrap(), 0);
    assert_eq!(c.get::<_, String>(&a).unwrap(), "v1");
    assert!(err(&mut c, &["COPY", &a, &b, "DB", "1"]).contains("DB index is out of range"));
    assert!(err(&mut c, &["COPY", &a, &a]).contains("source and destination objects are the same"));

    // MSETNX: all or nothing, on one core or across the cores of the node.
    let same_core = format!("{a}-2");
    assert_eq!(core_of(&mut c, &same_core), core_of(&mut c, &a));
    let _: i64 = c.del(&[&a, &b]).unwrap();
    assert_eq!(
        cmd::<i64>(&mut c, &["MSETNX", &a, "1", &same_core, "2"]).unwrap(),
        1
    );
    assert_eq!(c.get::<_, String>(&same_core).unwrap(), "2");
    assert_eq!(
        cmd::<i64>(&mut c, &["MSETNX", "k0-3", "1", &a, "9"]).unwrap(),
        0
    );
    assert_eq!(c.exists::<_, i64>("k0-3").unwrap(), 0);
    // Across the two cores: all or nothing too (the cores are held, as by EXEC). `a`
    // exists, so nothing is set; then with two new keys, both are.
    assert_eq!(
        cmd::<i64>(&mut c, &["MSETNX", &a, "1", &b, "2"]).unwrap(),
        0
    );
    assert_eq!(c.exists::<_, i64>(b.as_str()).unwrap(), 0);
    assert_eq!(
        cmd::<i64>(&mut c, &["MSETNX", "k0-4", "1", &b, "2"]).unwrap(),
        1
    );
    assert_eq!(c.exists::<_, i64>(&["k0-4", b.as_str()]).unwrap(), 2);
    assert!(
        err(&mut c, &["MSETNX", &a, "1", &b]).contains("wrong number of arguments for 'msetnx'")
    );
}
