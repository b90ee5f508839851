//! Commands: from a request's arguments to a `Plan` the connection can execute.
//!
//! - `Plan::Keys`: per-key operations (`keyop`), routed by key to the owning core and
//!   combined into one reply (GET, SET, MGET, DEL, ...);
//! - `Plan::Conn`: answered by the connection itself (PING, HELLO, CLIENT, INFO, ...);
//! - `Plan::Fanout`: asked of every core (DBSIZE, FLUSHALL, SCAN, KEYS).
//!
//! One file per command family; `table` holds names, arities and flags.

pub mod args;
pub mod keyop;
pub mod table;

mod connection;
mod del;
mod expire;
mod float;
mod get;
pub mod hash;
mod incr;
mod lcs;
pub mod multi;
mod object;
mod rename;
mod scan;
mod server;
mod set;
mod strings;

use bytes::Bytes;

pub use keyop::{apply, KeyOp, KeyRequest};
pub use lcs::reply as lcs_reply;
pub use rename::{execute as execute_move, MoveKind, MovePlan};

use crate::resp::Frame;

/// How the per-key replies of a `Plan::Keys` become the command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// One key, its reply as is.
    One,
    /// MGET: an array of the replies.
    Array,
    /// DEL, EXISTS: the sum of integer replies.
    Sum,
    /// MSET: OK (or the first error).
    Ok,
    /// LCS: the longest common subsequence of the two values read.
    Lcs(lcs::LcsOpts),
}

#[derive(Debug)]
pub struct KeyPlan {
    pub reqs: Vec<KeyRequest>,
    pub combine: Combine,
}

#[derive(Debug)]
pub enum ConnCmd {
    Ping(Option<Bytes>),
    Echo(Bytes),
    Hello {
        proto: Option<i64>,
        auth: Option<(Bytes, Bytes)>,
        name: Option<Bytes>,
    },
    Auth {
        user: Option<Bytes>,
        password: Bytes,
    },
    Select(i64),
    Quit,
    ClientSetName(Bytes),
    ClientGetName,
    ClientId,
    ClientInfo,
    ClientList,
    /// CLIENT SETINFO and other subcommands that only need an OK.
    ClientOk,
    CommandCount,
    CommandList,
    CommandDocs,
    CommandInfo(Vec<Bytes>),
    ConfigGet(Vec<Bytes>),
    ConfigSet(Vec<(Bytes, Bytes)>),
    ConfigResetStat,
    Info(Vec<String>),
    Time,
    /// AUGUR STATUS: the cluster's nodes and fragments as text tables.
    AugurStatus,
    /// AUGUR POLICY GET.
    AugurPolicy,
    /// AUGUR PLACEMENT: the leader's decisions and their calibration.
    AugurPlacement,
    /// AUGUR WHERE key: `node <id> core <c>` (or `node <id>` when another node owns
    /// it), for tools that need keys at known places.
    AugurWhere(Bytes),
}

#[derive(Debug)]
pub enum FanoutCmd {
    DbSize,
    FlushAll,
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        /// SCAN ... TYPE t: only keys holding that type (checked by each core).
        type_filter: Option<crate::shard::fanout::ScanType>,
    },
    Keys(Bytes),
    RandomKey,
}

/// Which table fragment a cluster command names.
#[derive(Debug, Clone)]
pub enum FragmentRef {
    Id(u64),
    /// The fragment holding this key.
    Key(Bytes),
}

#[derive(Debug)]
pub enum Plan {
    Keys(KeyPlan),
    /// A reply known at parse time (OBJECT HELP).
    Reply(Frame),
    /// RENAME, RENAMENX, COPY: two keys, possibly on different cores.
    Move(MovePlan),
    Conn(ConnCmd),
    Fanout(FanoutCmd),
    /// AUGUR MIGRATE: move a fragment to node `to` (runs until it is done).
    Migrate {
        fragment: FragmentRef,
        to: u64,
    },
    /// AUGUR MIGRATIONS: the migrations in flight on every member, one line each.
    Migrations,
    /// AUGUR POLICY SET: on every member.
    SetPolicy(String),
    /// AUGUR HINT: node `node` will need `[lo, hi)` for `seconds`; on every member.
    Hint {
        lo: Bytes,
        hi: Option<Bytes>,
        node: u64,
        seconds: u64,
    },
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: the connection's transaction state.
    Txn(multi::TxnCmd),
}

/// Settings a parser needs from the running config.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext {
    pub now_ms: u64,
    pub max_bulk_len: usize,
}

impl Plan {
    pub fn one(key: Bytes, op: KeyOp) -> Plan {
        Plan::Keys(KeyPlan {
            reqs: vec![KeyRequest { key, op }],
            combine: Combine::One,
        })
    }
}

/// Parse a request (`args[0]` is the command name). Errors are the reply to send.
pub fn parse(args: &[Bytes], ctx: &ParseContext) -> Result<Plan, Frame> {
    let Some((name, spec)) = table::lookup_name(&args[0]) else {
        return Err(unknown_command(args));
    };
    let arity_ok = if spec.arity >= 0 {
        args.len() == spec.arity as usize
    } else {
        args.len() >= spec.arity.unsigned_abs() as usize
    };
    if !arity_ok {
        return Err(args::wrong_arity(name));
    }
    let rest = &args[1..];
    match name {
        "GET" | "GETDEL" | "MGET" => get::parse(name, rest),
        "SET" | "SETNX" | "SETEX" | "PSETEX" | "GETSET" | "MSET" | "MSETNX" => {
            set::parse(name, rest, ctx)
        }
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => incr::parse(name, rest),
        "APPEND" | "STRLEN" | "GETEX" | "GETRANGE" | "SUBSTR" | "SETRANGE" | "INCRBYFLOAT" => {
            strings::parse(name, rest, ctx)
        }
        "OBJECT" => object::parse(rest),
        "LCS" => lcs::parse(rest),
        "RENAME" | "RENAMENX" | "COPY" => rename::parse(name, rest),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" | "TTL" | "PTTL" | "EXPIRETIME"
        | "PEXPIRETIME" | "PERSIST" => expire::parse(name, rest, ctx),
        "DEL" | "UNLINK" | "EXISTS" | "TOUCH" | "TYPE" => del::parse(name, rest),
        "SCAN" | "KEYS" => scan::parse(name, rest),
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => multi::parse(name, rest),
        "HSET" | "HSETNX" | "HMSET" | "HGET" | "HMGET" | "HDEL" | "HLEN" | "HEXISTS"
        | "HSTRLEN" | "HINCRBY" | "HINCRBYFLOAT" | "HGETALL" | "HKEYS" | "HVALS" | "HSCAN"
        | "HRANDFIELD" => hash::parse(name, rest),
        "RANDOMKEY" => Ok(Plan::Fanout(FanoutCmd::RandomKey)),
        "DBSIZE" | "FLUSHALL" | "FLUSHDB" | "INFO" | "CONFIG" | "COMMAND" | "TIME" | "AUGUR" => {
            server::parse(name, rest)
        }
        _ => connection::parse(name, rest),
    }
}

fn unknown_command(args: &[Bytes]) -> Frame {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        truncate(&args[0])
    );
    for a in args.iter().skip(1).take(16) {
        msg.push_str(&format!("'{}' ", truncate(a)));
    }
    Frame::error(msg)
}

fn truncate(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Plan, Frame> {
        let args: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        parse(
            &args,
            &ParseContext {
                now_ms: 1_000_000,
                max_bulk_len: 512 << 20,
            },
        )
    }

    fn err(words: &[&str]) -> String {
        match p(words) {
            Err(Frame::Error(e)) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("expected error for {words:?}, got {other:?}"),
        }
    }

    #[test]
    fn redis_error_shapes() {
        assert_eq!(
            err(&["foo", "a", "b"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            err(&["get"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(err(&["set", "k", "v", "nx", "xx"]), "ERR syntax error");
        assert_eq!(
            err(&["set", "k", "v", "ex", "0"]),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(err(&["set", "k", "v", "ex", "x"]), args::NOT_INTEGER);
        assert_eq!(
            err(&["mset", "a", "1", "b"]),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(err(&["incrby", "k", "1.5"]), args::NOT_INTEGER);
        assert_eq!(err(&["scan", "x"]), "ERR invalid cursor");
    }

    #[test]
    fn string_command_errors_match_redis() {
        assert_eq!(err(&["getex", "k", "ex"]), args::SYNTAX);
        assert_eq!(err(&["getex", "k", "ex", "1", "px", "1"]), args::SYNTAX);
        assert_eq!(err(&["getex", "k", "persist", "ex", "1"]), args::SYNTAX);
        assert_eq!(err(&["getex", "k", "bogus"]), args::SYNTAX);
        assert_eq!(err(&["getex", "k", "ex", "x"]), args::NOT_INTEGER);
        assert_eq!(
            err(&["getex", "k", "px", "0"]),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(
            err(&["getex", "k", "ex", "9223372036854775807"]),
            "ERR invalid expire time in 'getex' command"
        );
        assert_eq!(
            err(&["getex"]),
            "ERR wrong number of arguments for 'getex' command"
        );
        assert_eq!(err(&["getrange", "k", "a", "1"]), args::NOT_INTEGER);
        assert_eq!(
            err(&["getrange", "k", "1"]),
            "ERR wrong number of arguments for 'getrange' command"
        );
        assert_eq!(
            err(&["substr", "k", "1", "2", "3"]),
            "ERR wrong number of arguments for 'substr' command"
        );
        assert_eq!(
            err(&["setrange", "k", "-1", "v"]),
            "ERR offset is out of range"
        );
        assert_eq!(err(&["setrange", "k", "x", "v"]), args::NOT_INTEGER);
        assert_eq!(
            err(&["incrbyfloat", "k", "abc"]),
            "ERR value is not a valid float"
        );
        assert_eq!(
            err(&["incrbyfloat", "k"]),
            "ERR wrong number of arguments for 'incrbyfloat' command"
        );
        assert_eq!(
            err(&["touch"]),
            "ERR wrong number of arguments for 'touch' command"
        );
        assert_eq!(
            err(&["randomkey", "x"]),
            "ERR wrong number of arguments for 'randomkey' command"
        );
        assert_eq!(
            err(&["select", "1"]),
            "ERR SELECT is not allowed in cluster mode"
        );
        assert_eq!(err(&["select", "x"]), args::NOT_INTEGER);
        assert!(matches!(
            p(&["select", "0"]),
            Ok(Plan::Conn(ConnCmd::Select(0)))
        ));
        let Ok(Plan::Keys(plan)) = p(&["GETEX", "k", "PXAT", "5"]) else {
            panic!("not a key plan")
        };
        assert!(matches!(
            plan.reqs[0].op,
            KeyOp::GetEx(Some(keyop::Ttl::At(5)))
        ));
        let Ok(Plan::Keys(plan)) = p(&["TOUCH", "a", "b"]) else {
            panic!("not a key plan")
        };
        assert_eq!(plan.combine, Combine::Sum);
    }

    #[test]
    fn set_options_become_one_key_op() {
        let Ok(Plan::Keys(plan)) = p(&["SET", "k", "v", "PX", "1500", "GET"]) else {
            panic!("not a key plan")
        };
        match &plan.reqs[0].op {
            KeyOp::Set { ttl, get, .. } => {
                assert_eq!(*ttl, keyop::Ttl::At(1_001_500));
                assert!(*get);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multi_key_commands_fan_out_per_key() {
        let Ok(Plan::Keys(plan)) = p(&["MGET", "a", "b", "c"]) else {
            panic!("not a key plan")
        };
        assert_eq!(plan.reqs.len(), 3);
        assert_eq!(plan.combine, Combine::Array);
        let Ok(Plan::Keys(plan)) = p(&["DEL", "a", "b"]) else {
            panic!("not a key plan")
        };
        assert_eq!(plan.combine, Combine::Sum);
    }
}
