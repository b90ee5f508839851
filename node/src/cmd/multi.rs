//! MULTI, EXEC, DISCARD, WATCH, UNWATCH: parsing, Redis's reply texts, and which
//! commands a transaction may queue. The connection keeps the state
//! (`server::txn`); cores run EXEC atomically (`core::txn`).

use bytes::Bytes;

use super::{ConnCmd, FanoutCmd, Plan};
use crate::resp::Frame;

#[derive(Debug)]
pub enum TxnCmd {
    Multi,
    Exec,
    Discard,
    Watch(Vec<Bytes>),
    Unwatch,
}

pub const NESTED: &str = "ERR MULTI calls can not be nested";
pub const EXEC_WITHOUT: &str = "ERR EXEC without MULTI";
pub const DISCARD_WITHOUT: &str = "ERR DISCARD without MULTI";
pub const WATCH_INSIDE: &str = "ERR WATCH inside MULTI is not allowed";
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    Ok(Plan::Txn(match name {
        "MULTI" => TxnCmd::Multi,
        "EXEC" => TxnCmd::Exec,
        "DISCARD" => TxnCmd::Discard,
        "WATCH" => TxnCmd::Watch(args.to_vec()),
        _ => TxnCmd::Unwatch,
    }))
}

/// Why `plan` cannot be queued in a transaction (the reply, which also aborts the
/// transaction like any queue-time error), or `None` when it can.
pub fn refusal(plan: &Plan, name: &[u8]) -> Option<Frame> {
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let why = match plan {
        Plan::Keys(_) | Plan::Move(_) | Plan::Reply(_) => return None,
        Plan::Txn(_) => return None,
        Plan::Conn(c) => match c {
            ConnCmd::Ping(_)
            | ConnCmd::Echo(_)
            | ConnCmd::Select(_)
            | ConnCmd::ClientSetName(_)
            | ConnCmd::ClientGetName
            | ConnCmd::ClientId
            | ConnCmd::ClientInfo
            | ConnCmd::ClientList
            | ConnCmd::ClientOk
            | ConnCmd::CommandCount
            | ConnCmd::CommandList
            | ConnCmd::CommandDocs
            | ConnCmd::CommandInfo(_)
            | ConnCmd::ConfigGet(_)
            | ConnCmd::ConfigSet(_)
            | ConnCmd::ConfigResetStat
            | ConnCmd::Info(_)
            | ConnCmd::Time => return None,
            // QUIT is never queued (the connection answers it at once, as Redis does).
            ConnCmd::Quit => return None,
            // They change how the rest of the connection is parsed and encoded.
            ConnCmd::Hello { .. } | ConnCmd::Auth { .. } => "changes the connection's protocol",
            ConnCmd::AugurStatus
            | ConnCmd::AugurPolicy
            | ConnCmd::AugurPlacement
            | ConnCmd::AugurWhere(_) => "is an admin command",
        },
        // Run under holds of every core of the node (EXEC refuses them on a cluster
        // of several nodes).
        Plan::Fanout(FanoutCmd::DbSize | FanoutCmd::FlushAll | FanoutCmd::Keys(_)) => return None,
        Plan::Fanout(_) => "walks or samples the key space across calls and nodes",
        Plan::Migrate { .. } | Plan::Migrations | Plan::SetPolicy(_) | Plan::Hint { .. } => {
            "is an admin command"
        }
    };
    Some(Frame::error(format!(
        "ERR {name} is not allowed inside MULTI in augur: it {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{parse as parse_cmd, ParseContext};

    fn plan(words: &[&str]) -> Plan {
        let args: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let ctx = ParseContext {
            now_ms: 0,
            max_bulk_len: 1 << 20,
        };
        parse_cmd(&args, &ctx).expect("parses")
    }

    fn refused(words: &[&str]) -> Option<String> {
        refusal(&plan(words), words[0].as_bytes()).map(|f| match f {
            Frame::Error(e) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn transaction_commands_parse() {
        assert!(matches!(plan(&["multi"]), Plan::Txn(TxnCmd::Multi)));
        assert!(matches!(plan(&["EXEC"]), Plan::Txn(TxnCmd::Exec)));
        assert!(matches!(plan(&["discard"]), Plan::Txn(TxnCmd::Discard)));
        assert!(matches!(plan(&["unwatch"]), Plan::Txn(TxnCmd::Unwatch)));
        match plan(&["watch", "a", "b"]) {
            Plan::Txn(TxnCmd::Watch(keys)) => assert_eq!(keys, vec!["a", "b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_may_be_queued() {
        for ok in [
            &["set", "k", "v"][..],
            &["mget", "a", "b"],
            &["rename", "a", "b"],
            &["ping"],
            &["echo", "x"],
            &["client", "id"],
            &["time"],
            &["object", "help"],
        ] {
            assert_eq!(refused(ok), None, "{ok:?}");
        }
        assert_eq!(refused(&["dbsize"]), None);
        assert_eq!(refused(&["flushall"]), None);
        assert_eq!(refused(&["keys", "*"]), None);
        assert_eq!(
            refused(&["randomkey"]).as_deref(),
            Some("ERR RANDOMKEY is not allowed inside MULTI in augur: it walks or samples the key space across calls and nodes")
        );
        for no in [
            &["scan", "0"][..],
            &["randomkey"],
            &["hello", "3"],
            &["auth", "pw"],
            &["augur", "where", "k"],
            &["augur", "status"],
        ] {
            let why = refused(no).unwrap_or_else(|| panic!("{no:?} was queued"));
            assert!(why.starts_with("ERR "), "{why}");
            assert!(why.contains("inside MULTI"), "{why}");
        }
    }
}
