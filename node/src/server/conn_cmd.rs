//! Commands a connection answers itself: PING, ECHO, HELLO, AUTH, SELECT, QUIT,
//! CLIENT, COMMAND, CONFIG, INFO, TIME.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::Session;
use crate::cmd::table::{Spec, COMMANDS};
use crate::cmd::ConnCmd;
use crate::config::parse_memory;
use crate::context::NodeShared;
use crate::core::CoreCtx;
use crate::resp::Frame;

const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn bulk(s: impl Into<String>) -> Frame {
    Frame::Bulk(Bytes::from(s.into()))
}

/// Compare without an early exit, so timing does not reveal the password.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check credentials; None if accepted, else the error to send.
fn check_auth(shared: &NodeShared, user: Option<&Bytes>, password: &Bytes) -> Option<Frame> {
    let default_user = user.is_none_or(|u| &u[..] == b"default");
    match shared.password() {
        None if user.is_none() => Some(Frame::error(NO_PASSWORD)),
        None if default_user => None,
        Some(pw) if default_user && same_secret(&pw, password) => None,
        _ => Some(Frame::error(WRONGPASS)),
    }
}

pub fn execute(ctx: &CoreCtx, session: &mut Session, cmd: ConnCmd, name: &Bytes) -> Frame {
    let shared = &ctx.shared;
    shared.clients.update(session.id, |c| {
        c.last_command = String::from_utf8_lossy(name).to_lowercase()
    });
    match cmd {
        ConnCmd::Ping(None) => Frame::simple("PONG"),
        ConnCmd::Ping(Some(msg)) | ConnCmd::Echo(msg) => Frame::Bulk(msg),
        ConnCmd::Auth { user, password } => match check_auth(shared, user.as_ref(), &password) {
            None => {
                session.authenticated = true;
                Frame::ok()
            }
            Some(e) => e,
        },
        ConnCmd::Hello { proto, auth, name } => {
            if let Some(p) = proto {
                if !(2..=3).contains(&p) {
                    return Frame::error("NOPROTO unsupported protocol version");
                }
            }
            if let Some((user, password)) = &auth {
                if let Some(e) = check_auth(shared, Some(user), password) {
                    return e;
                }
                session.authenticated = true;
            }
            if !session.authenticated {
                return Frame::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            }
            if let Some(p) = proto {
                session.resp3 = p == 3;
            }
            let resp = if session.resp3 { 3 } else { 2 };
            shared.clients.update(session.id, |c| {
                c.resp = resp;
                if name.is_some() {
                    c.name = name.clone();
                }
            });
            Frame::Map(vec![
                (bulk("server"), bulk("redis")),
                (bulk("version"), bulk(super::info::REDIS_COMPAT_VERSION)),
                (bulk("proto"), Frame::Integer(resp as i64)),
                (bulk("id"), Frame::Integer(session.id as i64)),
                (bulk("mode"), bulk("standalone")),
                (bulk("role"), bulk("master")),
                (bulk("modules"), Frame::Array(vec![])),
            ])
        }
        ConnCmd::Select(0) => Frame::ok(),
        ConnCmd::Select(_) => Frame::error("ERR DB index is out of range"),
        ConnCmd::Quit => {
            session.quit = true;
            Frame::ok()
        }
        ConnCmd::ClientSetName(n) => {
            let name = (!n.is_empty()).then_some(n);
            shared.clients.update(session.id, |c| c.name = name);
            Frame::ok()
        }
        ConnCmd::ClientGetName => match shared.clients.get(session.id).and_then(|c| c.name) {
            Some(n) => Frame::Bulk(n),
            None => Frame::Null,
        },
        ConnCmd::ClientId => Frame::Integer(session.id as i64),
        ConnCmd::ClientInfo => match shared.clients.get(session.id) {
            Some(c) => Frame::Verbatim(Bytes::from(c.describe())),
            None => Frame::Null,
        },
        ConnCmd::ClientList => Frame::Verbatim(Bytes::from(
            shared
                .clients
                .list()
                .iter()
                .map(|c| c.describe())
                .collect::<String>(),
        )),
        ConnCmd::ClientOk => Frame::ok(),
        ConnCmd::CommandCount => Frame::Integer(COMMANDS.len() as i64),
        ConnCmd::CommandList => Frame::Array(COMMANDS.iter().map(command_entry).collect()),
        ConnCmd::CommandInfo(names) => Frame::Array(
            names
                .iter()
                .map(|n| match crate::cmd::table::lookup_name(n) {
                    Some((_, spec)) => command_entry(spec),
                    None => Frame::NullArray,
                })
                .collect(),
        ),
        // redis-cli asks for docs to show hints; having none is fine for it.
        ConnCmd::CommandDocs => Frame::Map(vec![]),
        ConnCmd::ConfigGet(patterns) => config_get(shared, &patterns),
        ConnCmd::ConfigSet(pairs) => config_set(shared, &pairs),
        ConnCmd::ConfigResetStat => Frame::ok(),
        ConnCmd::Info(sections) => {
            Frame::Verbatim(Bytes::from(super::info::render(ctx, &sections)))
        }
        ConnCmd::AugurPolicy => Frame::Bulk(Bytes::from(shared.policy())),
        ConnCmd::AugurPlacement => {
            let report = shared.placement_report().clone();
            Frame::Verbatim(Bytes::from(if report.is_empty() {
                "this node does not lead the ownership table; ask the leader (INFO cluster: cluster_leader)\n".to_string()
            } else {
                report
            }))
        }
        ConnCmd::AugurWhere(key) => {
            let me = shared.cluster().my_id;
            let owner = shared.routes.snapshot().owner_of(&key);
            let place = match owner {
                crate::router::table::Owner::Core(c) => format!("node {me} core {c}"),
                crate::router::table::Owner::Node(n) => format!("node {n}"),
                crate::router::table::Owner::Unassigned => "unassigned".to_string(),
            };
            Frame::Bulk(Bytes::from(place))
        }
        ConnCmd::AugurStatus => Frame::Verbatim(Bytes::from(super::status::render(shared))),
        ConnCmd::Time => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Frame::Array(vec![
                bulk(now.as_secs().to_string()),
                bulk(now.subsec_micros().to_string()),
            ])
        }
    }
}

fn command_entry(spec: &Spec) -> Frame {
    Frame::Array(vec![
        bulk(spec.name),
        Frame::Integer(spec.arity as i64),
        Frame::Array(spec.flags.iter().map(|f| Frame::simple(f)).collect()),
        Frame::Integer(spec.first_key as i64),
        Frame::Integer(spec.last_key as i64),
        Frame::Integer(spec.step as i64),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
    ])
}

/// Every parameter CONFIG GET knows, with its current value.
fn parameters(shared: &NodeShared) -> Vec<(&'static str, String)> {
    let c = &shared.config;
    vec![
        ("bind", c.bind.to_string()),
        ("port", shared.port.to_string()),
        ("cores", shared.core_count().to_string()),
        (
            "maxmemory",
            shared.maxmemory.load(Ordering::Relaxed).to_string(),
        ),
        ("maxmemory-policy", "noeviction".into()),
        (
            "maxclients",
            shared.maxclients.load(Ordering::Relaxed).to_string(),
        ),
        (
            "requirepass",
            shared
                .password()
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_default(),
        ),
        (
            "proto-max-bulk-len",
            shared.max_bulk_len.load(Ordering::Relaxed).to_string(),
        ),
        ("max-inline-len", c.max_inline_len.to_string()),
        (
            "client-query-buffer-limit",
            c.client_query_buffer_limit.to_string(),
        ),
        ("region-size", c.region_size.to_string()),
        ("hugepages", if c.hugepages { "yes" } else { "no" }.into()),
        ("admin-port", c.admin_port.to_string()),
        // Persistence is a later milestone: say plainly that it is off.
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("timeout", c.timeout.to_string()),
        (
            "migration-max-mb-per-s",
            (shared.migration_pace.rate() >> 20).to_string(),
        ),
        (
            "partial-request-timeout",
            c.partial_request_timeout.to_string(),
        ),
    ]
}

fn config_get(shared: &NodeShared, patterns: &[Bytes]) -> Frame {
    let mut pairs = Vec::new();
    for (name, value) in parameters(shared) {
        if patterns
            .iter()
            .any(|p| crate::glob::matches_nocase(p, name.as_bytes()))
        {
            pairs.push((bulk(name), bulk(value)));
        }
    }
    Frame::Map(pairs)
}

fn config_set(shared: &NodeShared, pairs: &[(Bytes, Bytes)]) -> Frame {
    let mut updates: Vec<Box<dyn FnOnce()>> = Vec::new();
    for (name, value) in pairs {
        let name_s = String::from_utf8_lossy(name).to_lowercase();
        let value_s = String::from_utf8_lossy(value).into_owned();
        let bad = || {
            Frame::error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name_s}') - argument couldn't be parsed into an integer"
            ))
        };
        match name_s.as_str() {
            "maxmemory" => {
                let Some(v) = parse_memory(&value_s) else {
                    return bad();
                };
                updates.push(Box::new(move || {
                    shared.maxmemory.store(v, Ordering::Relaxed)
                }));
            }
            "maxclients" => {
                let Some(v) = value_s.parse::<u64>().ok().filter(|v| *v > 0) else {
                    return bad();
                };
                updates.push(Box::new(move || {
                    shared.maxclients.store(v, Ordering::Relaxed)
                }));
            }
            "proto-max-bulk-len" => {
                let Some(v) = parse_memory(&value_s).filter(|v| (1024..1 << 30).contains(v)) else {
                    return bad();
                };
                if v > shared.config.client_query_buffer_limit {
                    return Frame::error(
                        "ERR CONFIG SET failed: proto-max-bulk-len must not exceed client-query-buffer-limit",
                    );
                }
                updates.push(Box::new(move || {
                    shared.max_bulk_len.store(v, Ordering::Relaxed)
                }));
            }
            "migration-max-mb-per-s" => {
                let Some(v) = value_s.parse::<u64>().ok().filter(|v| *v < 1 << 40) else {
                    return bad();
                };
                updates.push(Box::new(move || shared.migration_pace.set_rate(v << 20)));
            }
            "requirepass" => {
                let pw = (!value.is_empty()).then(|| value.clone());
                updates.push(Box::new(move || {
                    if let Ok(mut p) = shared.requirepass.lock() {
                        *p = pw;
                    }
                }));
            }
            // Accepted so tools that turn persistence off before a benchmark work.
            "save" | "appendonly" if value_s.is_empty() || value_s == "no" => {}
            known if parameters(shared).iter().any(|(n, _)| *n == known) => {
                return Frame::error(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{known}') - can't set immutable config"
                ));
            }
            other => {
                return Frame::error(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{other}'"
                ));
            }
        }
    }
    // All or nothing, as Redis 7 does.
    for apply in updates {
        apply();
    }
    Frame::ok()
}
