//! A connection's transaction state: the commands queued since MULTI, the keys it
//! WATCHes, and EXEC (run atomically across cores by `core::txn`).

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::{combine_replies, Session};
use crate::cmd::multi::{self, TxnCmd};
use crate::cmd::FanoutCmd;
use crate::cmd::{self, args, KeyRequest, MoveKind, ParseContext, Plan};
use crate::core::txn::{Begin, Txn};
use crate::core::CoreCtx;
use crate::resp::Frame;
use crate::shard::fanout::FanoutReq;
use crate::shard::WatchToken;

/// Keys one connection may watch at once (a client controls this).
pub const MAX_WATCHED_KEYS: usize = 10_000;

/// Commands one transaction may queue (their bytes are bounded separately, by the
/// client query buffer limit).
pub const MAX_QUEUED: usize = 100_000;

/// Bytes a queued command is counted for beyond its arguments' own.
const QUEUED_OVERHEAD: usize = 64;

#[derive(Default)]
pub struct ConnTxn {
    /// Since MULTI, until EXEC or DISCARD.
    multi: Option<Queue>,
    watches: Vec<(Bytes, WatchToken)>,
}

#[derive(Default)]
struct Queue {
    /// The requests as sent: parsed again at EXEC, so relative times (SET ... EX)
    /// count from EXEC, as in Redis, not from when they were queued.
    commands: Vec<Vec<Bytes>>,
    bytes: usize,
    /// A queue-time error happened: EXEC replies EXECABORT.
    failed: bool,
}

impl ConnTxn {
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Mark the open transaction failed (a queue-time error was replied).
    pub fn fail(&mut self) {
        if let Some(q) = &mut self.multi {
            q.failed = true;
            // Nothing of it will run: give the memory back now.
            q.commands = Vec::new();
        }
    }
}

/// Commands that act at once inside MULTI instead of being queued.
pub fn acts_inside_multi(name: &[u8]) -> bool {
    [&b"MULTI"[..], b"EXEC", b"DISCARD", b"WATCH", b"QUIT"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// Queue a parsed command (or refuse it); the reply to send now.
pub fn queue(
    ctx: &CoreCtx,
    session: &mut Session,
    request: &[Bytes],
    parsed: Result<Plan, Frame>,
) -> Frame {
    let plan = match parsed {
        Ok(plan) => plan,
        Err(e) => {
            session.txn.fail();
            return e;
        }
    };
    if let Some(refused) = multi::refusal(&plan, &request[0]) {
        session.txn.fail();
        return refused;
    }
    let grows = match &plan {
        Plan::Keys(k) => k.reqs.iter().any(|r| r.op.grows()),
        Plan::Move(m) => matches!(m.kind, MoveKind::Copy { .. }),
        _ => false,
    };
    if grows && ctx.shared.over_maxmemory() {
        session.txn.fail();
        return Frame::error("OOM command not allowed when used memory > 'maxmemory'.");
    }
    let limit = usize::try_from(ctx.shared.config.client_query_buffer_limit).unwrap_or(usize::MAX);
    let Some(q) = session.txn.multi.as_mut() else {
        return Frame::error("ERR internal: no transaction to queue in");
    };
    if q.failed {
        return Frame::simple("QUEUED");
    }
    q.bytes += request.iter().map(|a| a.len() + 16).sum::<usize>() + QUEUED_OVERHEAD;
    if q.bytes > limit || q.commands.len() >= MAX_QUEUED {
        session.txn.fail();
        return Frame::error(format!(
            "ERR Transaction discarded: its queued commands exceed client-query-buffer-limit or {MAX_QUEUED} commands"
        ));
    }
    q.commands.push(request.to_vec());
    Frame::simple("QUEUED")
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
pub async fn execute(ctx: &CoreCtx, session: &mut Session, cmd: TxnCmd) -> Frame {
    match cmd {
        TxnCmd::Multi if session.txn.in_multi() => Frame::error(multi::NESTED),
        TxnCmd::Multi => {
            session.txn.multi = Some(Queue::default());
            Frame::ok()
        }
        TxnCmd::Discard => match session.txn.multi.take() {
            None => Frame::error(multi::DISCARD_WITHOUT),
            Some(_) => {
                session.txn.watches.clear();
                Frame::ok()
            }
        },
        TxnCmd::Watch(_) if session.txn.in_multi() => Frame::error(multi::WATCH_INSIDE),
        TxnCmd::Watch(keys) => {
            if session.txn.watches.len() + keys.len() > MAX_WATCHED_KEYS {
                return Frame::error(format!(
                    "ERR too many watched keys: at most {MAX_WATCHED_KEYS} per connection"
                ));
            }
            match ctx.watch_tokens(&keys).await {
                Ok(tokens) => {
                    session.txn.watches.extend(keys.into_iter().zip(tokens));
                    Frame::ok()
                }
                Err(e) => e,
            }
        }
        TxnCmd::Unwatch => {
            session.txn.watches.clear();
            Frame::ok()
        }
        TxnCmd::Exec => exec(ctx, session).await,
    }
}

async fn exec(ctx: &CoreCtx, session: &mut Session) -> Frame {
    // EXEC always ends the transaction and its watches, whatever it replies.
    let watches = std::mem::take(&mut session.txn.watches);
    let Some(queue) = session.txn.multi.take() else {
        return Frame::error(multi::EXEC_WITHOUT);
    };
    if queue.failed {
        return Frame::error(multi::EXECABORT);
    }
    let parse_ctx = ParseContext {
        now_ms: args::now_ms(),
        max_bulk_len: ctx.shared.max_bulk_len.load(Ordering::Relaxed) as usize,
    };
    // Each parsed as it was when queued (a changed limit makes that command's reply
    // an error, like any runtime error).
    let commands: Vec<(Bytes, Plan)> = queue
        .commands
        .into_iter()
        .map(|request| {
            let plan = cmd::parse(&request, &parse_ctx).unwrap_or_else(Plan::Reply);
            (request[0].clone(), plan)
        })
        .collect();
    let mut keys: Vec<(Bytes, Vec<Bytes>)> = Vec::new();
    for (_, plan) in &commands {
        match plan {
            Plan::Keys(k) => keys.extend(
                k.reqs
                    .iter()
                    .map(|r| (r.key.clone(), r.keys().skip(1).cloned().collect())),
            ),
            Plan::Move(m) => {
                keys.push((m.src.clone(), Vec::new()));
                keys.push((m.dst.clone(), Vec::new()));
            }
            _ => {}
        }
    }
    let every_core = commands
        .iter()
        .any(|(_, plan)| matches!(plan, Plan::Fanout(_)));
    if every_core {
        let cluster = ctx.shared.cluster();
        if let Some(other) = cluster.members.keys().find(|id| **id != cluster.my_id) {
            return Frame::error(format!(
                "CROSSNODE DBSIZE, FLUSHALL and KEYS inside MULTI cover every node; augur runs them atomically only on a single-node cluster (node {other} is a member)"
            ));
        }
    }
    let txn = match ctx.begin_txn(&keys, &watches, every_core).await {
        Begin::Held(txn) => txn,
        Begin::Changed => return Frame::NullArray,
        Begin::Failed(e) => return e,
    };
    let mut replies = Vec::with_capacity(commands.len());
    let mut commands = commands.into_iter().peekable();
    while let Some((name, plan)) = commands.next() {
        let reply = match plan {
            Plan::Keys(first) => {
                // Consecutive key commands go together: one message per core.
                let mut shapes = vec![(first.combine, first.reqs.len())];
                let mut reqs: Vec<KeyRequest> = first.reqs;
                while let Some((_, Plan::Keys(_))) = commands.peek() {
                    if let Some((_, Plan::Keys(more))) = commands.next() {
                        shapes.push((more.combine, more.reqs.len()));
                        reqs.extend(more.reqs);
                    }
                }
                let mut frames = txn.run(reqs).await.into_iter();
                for (combine, len) in shapes {
                    replies.push(combine_replies(
                        combine,
                        frames.by_ref().take(len).collect(),
                    ));
                }
                continue;
            }
            Plan::Move(m) => {
                let txn = &txn;
                cmd::execute_move(m, |req| async move {
                    txn.run(vec![req])
                        .await
                        .pop()
                        .unwrap_or_else(|| Frame::error("ERR internal: no reply"))
                })
                .await
            }
            Plan::Fanout(f) => fanout(&txn, f).await,
            Plan::Conn(c) => super::conn_cmd::execute(ctx, session, c, &name),
            Plan::Reply(f) => f,
            // UNWATCH inside MULTI is queued; EXEC has already dropped the watches.
            Plan::Txn(TxnCmd::Unwatch) => Frame::ok(),
            _ => Frame::error("ERR internal: a command that cannot be queued was queued"),
        };
        replies.push(reply);
    }
    txn.release().await;
    Frame::Array(replies)
}

/// DBSIZE, FLUSHALL, KEYS under holds of every core of this (single-node) cluster.
async fn fanout(txn: &Txn<'_>, cmd: FanoutCmd) -> Frame {
    let req = match cmd {
        FanoutCmd::DbSize => FanoutReq::DbSize,
        FanoutCmd::FlushAll => FanoutReq::FlushAll,
        FanoutCmd::Keys(pattern) => FanoutReq::Keys(pattern),
        FanoutCmd::Scan { .. } | FanoutCmd::RandomKey => {
            return Frame::error("ERR internal: a command that cannot be queued was queued")
        }
    };
    match txn.fanout(&req).await {
        Ok(replies) => super::connection::fanout_reply(&req, replies),
        Err(e) => e,
    }
}
