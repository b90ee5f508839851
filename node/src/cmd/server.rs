//! DBSIZE, FLUSHALL/FLUSHDB, INFO, CONFIG GET/SET/RESETSTAT, COMMAND, TIME.

use bytes::Bytes;

use super::args::{self, upper};
use super::{ConnCmd, FanoutCmd, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    Ok(match name {
        "DBSIZE" => Plan::Fanout(FanoutCmd::DbSize),
        "FLUSHALL" | "FLUSHDB" => {
            for a in args {
                if !matches!(upper(a).as_str(), "ASYNC" | "SYNC") {
                    return Err(Frame::error(args::SYNTAX));
                }
            }
            Plan::Fanout(FanoutCmd::FlushAll)
        }
        "INFO" => Plan::Conn(ConnCmd::Info(
            args.iter()
                .map(|a| String::from_utf8_lossy(a).to_lowercase())
                .collect(),
        )),
        "TIME" => Plan::Conn(ConnCmd::Time),
        "AUGUR" => match upper(&args[0]).as_str() {
            "STATUS" if args.len() == 1 => Plan::Conn(ConnCmd::AugurStatus),
            "STATUS" => return Err(args::wrong_arity("augur|status")),
            "WHERE" if args.len() == 2 => Plan::Conn(ConnCmd::AugurWhere(args[1].clone())),
            // AUGUR MIGRATE <fragment-id> <node-id> | AUGUR MIGRATE KEY <key> <node-id>
            "MIGRATE" if args.len() == 3 => Plan::Migrate {
                fragment: super::FragmentRef::Id(u64_arg(&args[1])?),
                to: u64_arg(&args[2])?,
            },
            "MIGRATE" if args.len() == 4 && upper(&args[1]) == "KEY" => Plan::Migrate {
                fragment: super::FragmentRef::Key(args[2].clone()),
                to: u64_arg(&args[3])?,
            },
            "MIGRATE" => return Err(Frame::error(args::SYNTAX)),
            "POLICY" if args.len() == 2 && upper(&args[1]) == "GET" => {
                Plan::Conn(ConnCmd::AugurPolicy)
            }
            "POLICY" if args.len() == 3 && upper(&args[1]) == "SET" => {
                let p = String::from_utf8_lossy(&args[2]).to_lowercase();
                if !crate::config::POLICIES.contains(&p.as_str()) {
                    return Err(Frame::error(
                        "ERR unknown policy; use static, reactive or predictive",
                    ));
                }
                Plan::SetPolicy(p)
            }
            "POLICY" => return Err(Frame::error(args::SYNTAX)),
            "PLACEMENT" if args.len() == 1 => Plan::Conn(ConnCmd::AugurPlacement),
            "MIGRATIONS" if args.len() == 1 => Plan::Migrations,
            "MIGRATIONS" => return Err(args::wrong_arity("augur|migrations")),
            // AUGUR HINT KEY <key> <node> <seconds> | AUGUR HINT <lo> <hi|+inf> <node> <seconds>
            "HINT" if args.len() == 5 => {
                let (lo, hi) = if upper(&args[1]) == "KEY" {
                    // The key's own range: [key, key + "\0").
                    let mut next = args[2].to_vec();
                    next.push(0);
                    (args[2].clone(), Some(Bytes::from(next)))
                } else {
                    let hi = (&args[2][..] != b"+inf").then(|| args[2].clone());
                    (args[1].clone(), hi)
                };
                let seconds = u64_arg(&args[4])?.min(86_400);
                Plan::Hint {
                    lo,
                    hi,
                    node: u64_arg(&args[3])?,
                    seconds,
                }
            }
            "HINT" => return Err(Frame::error(args::SYNTAX)),
            "WHERE" => return Err(args::wrong_arity("augur|where")),
            _ => return Err(subcommand_error("AUGUR", &args[0])),
        },
        "CONFIG" => config(args)?,
        _ => command(args)?,
    })
}

fn u64_arg(b: &Bytes) -> Result<u64, Frame> {
    args::parse_i64(b)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| Frame::error(args::NOT_INTEGER))
}

fn subcommand_error(cmd: &str, sub: &Bytes) -> Frame {
    Frame::error(format!(
        "ERR unknown subcommand '{}'. Try {cmd} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

fn config(args: &[Bytes]) -> Result<Plan, Frame> {
    let sub = upper(&args[0]);
    let rest = &args[1..];
    Ok(Plan::Conn(match sub.as_str() {
        "GET" if !rest.is_empty() => ConnCmd::ConfigGet(rest.to_vec()),
        "SET" if !rest.is_empty() && rest.len().is_multiple_of(2) => ConnCmd::ConfigSet(
            rest.chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
        ),
        "RESETSTAT" if rest.is_empty() => ConnCmd::ConfigResetStat,
        "GET" | "SET" | "RESETSTAT" => {
            return Err(Frame::error(format!(
                "ERR wrong number of arguments for 'config|{}' command",
                sub.to_lowercase()
            )))
        }
        _ => return Err(subcommand_error("CONFIG", &args[0])),
    }))
}

fn command(args: &[Bytes]) -> Result<Plan, Frame> {
    let Some(sub) = args.first() else {
        return Ok(Plan::Conn(ConnCmd::CommandList));
    };
    Ok(Plan::Conn(match upper(sub).as_str() {
        "COUNT" => ConnCmd::CommandCount,
        "DOCS" => ConnCmd::CommandDocs,
        "INFO" => ConnCmd::CommandInfo(args[1..].to_vec()),
        _ => return Err(subcommand_error("COMMAND", sub)),
    }))
}
