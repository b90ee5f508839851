//! PING, ECHO, HELLO, AUTH, SELECT, QUIT, CLIENT.

use bytes::Bytes;

use super::args::{self, int_arg, upper};
use super::{ConnCmd, Plan};
use crate::resp::Frame;

pub fn parse(name: &str, args: &[Bytes]) -> Result<Plan, Frame> {
    Ok(Plan::Conn(match name {
        "PING" if args.len() <= 1 => ConnCmd::Ping(args.first().cloned()),
        "PING" => return Err(args::wrong_arity("ping")),
        "ECHO" => ConnCmd::Echo(args[0].clone()),
        "AUTH" => match args {
            [password] => ConnCmd::Auth {
                user: None,
                password: password.clone(),
            },
            [user, password] => ConnCmd::Auth {
                user: Some(user.clone()),
                password: password.clone(),
            },
            _ => return Err(Frame::error(args::SYNTAX)),
        },
        "SELECT" => match int_arg(&args[0])? {
            0 => ConnCmd::Select(0),
            // augur is a cluster: like Redis Cluster, only database 0 exists.
            _ => return Err(Frame::error("ERR SELECT is not allowed in cluster mode")),
        },
        "QUIT" => ConnCmd::Quit,
        "HELLO" => hello(args)?,
        _ => client(args)?,
    }))
}

fn hello(args: &[Bytes]) -> Result<ConnCmd, Frame> {
    let mut proto = None;
    let mut auth = None;
    let mut name = None;
    let mut rest = args;
    if let Some(v) = args.first() {
        proto = Some(args::parse_i64(v).ok_or_else(|| {
            Frame::error("ERR Protocol version is not an integer or out of range")
        })?);
        rest = &args[1..];
    }
    let mut i = 0;
    while i < rest.len() {
        match upper(&rest[i]).as_str() {
            "AUTH" if i + 2 < rest.len() => {
                auth = Some((rest[i + 1].clone(), rest[i + 2].clone()));
                i += 3;
            }
            "SETNAME" if i + 1 < rest.len() => {
                name = Some(rest[i + 1].clone());
                i += 2;
            }
            _ => {
                return Err(Frame::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&rest[i])
                )))
            }
        }
    }
    Ok(ConnCmd::Hello { proto, auth, name })
}

fn client(args: &[Bytes]) -> Result<ConnCmd, Frame> {
    let sub = upper(&args[0]);
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(Frame::error(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                sub.to_lowercase()
            )))
        }
    };
    Ok(match sub.as_str() {
        "SETNAME" => {
            arity(2)?;
            if args[1].iter().any(|&c| c <= b' ' || c > b'~') {
                return Err(Frame::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            ConnCmd::ClientSetName(args[1].clone())
        }
        "GETNAME" => {
            arity(1)?;
            ConnCmd::ClientGetName
        }
        "ID" => {
            arity(1)?;
            ConnCmd::ClientId
        }
        "INFO" => {
            arity(1)?;
            ConnCmd::ClientInfo
        }
        "LIST" => ConnCmd::ClientList,
        "SETINFO" => {
            arity(3)?;
            ConnCmd::ClientOk
        }
        "NO-EVICT" | "NO-TOUCH" => {
            arity(2)?;
            ConnCmd::ClientOk
        }
        _ => {
            return Err(Frame::error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[0])
            )))
        }
    })
}
