//! One client connection: read what has arrived, parse every complete request in it,
//! execute them as a batch (pipelining), write all replies in order with one write.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::cmd::{self, args, Combine, FanoutCmd, KeyRequest, ParseContext, Plan};
use crate::core::CoreCtx;
use crate::resp::{Frame, Limits, RequestParser};
use crate::shard::fanout::{FanoutBody, FanoutReply, FanoutReq};
use crate::telemetry::stats;

const READ_CHUNK: usize = 64 << 10;

/// Per-connection protocol state.
pub struct Session {
    pub id: u64,
    pub resp3: bool,
    pub authenticated: bool,
    pub quit: bool,
    /// MULTI's queue and WATCHed keys.
    pub txn: super::txn::ConnTxn,
}

pub async fn serve(ctx: Rc<CoreCtx>, mut stream: TcpStream) {
    let shared = ctx.shared.clone();
    let core_stats = &shared.stats[ctx.core];
    let max = shared.maxclients.load(std::sync::atomic::Ordering::Relaxed);
    let Some(id) = shared.clients.register(
        stream.peer_addr().ok(),
        stream.local_addr().ok(),
        ctx.core,
        max,
    ) else {
        stats::bump(&core_stats.rejected_connections, 1);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    stats::bump(&core_stats.connections, 1);
    stats::bump(&core_stats.connections_total, 1);
    let mut session = Session {
        id,
        resp3: false,
        authenticated: shared.password().is_none(),
        quit: false,
        txn: Default::default(),
    };
    if let Err(e) = run(&ctx, &mut stream, &mut session).await {
        tracing::debug!(client = id, "connection ended: {e}");
    }
    shared.clients.remove(id);
    stats::set(
        &core_stats.connections,
        stats::get(&core_stats.connections).saturating_sub(1),
    );
}

async fn run(ctx: &CoreCtx, stream: &mut TcpStream, session: &mut Session) -> std::io::Result<()> {
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut parser = RequestParser::new();
    // Reused from batch to batch: an allocation per batch shows at -P1 (docs/perf.md).
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    let config = &ctx.shared.config;
    let query_limit = usize::try_from(config.client_query_buffer_limit).unwrap_or(usize::MAX);
    let idle_timeout = (config.timeout > 0).then(|| Duration::from_secs(config.timeout));
    let partial_timeout = Duration::from_secs(config.partial_request_timeout.max(1));
    // A client that stops reading its replies is closed after the same time without
    // progress: the timer restarts whenever the socket takes some bytes.
    stream.set_write_timeout(Some(partial_timeout))?;
    // When the request now partly in `input` began (or the last one completed).
    let mut request_started: Option<Instant> = None;
    loop {
        let wait = match request_started {
            Some(t) => {
                let left = partial_timeout.saturating_sub(t.elapsed());
                Some(idle_timeout.map_or(left, |idle| idle.min(left)))
            }
            None => idle_timeout,
        };
        // glommio refuses a zero timeout.
        stream.set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))))?;
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if request_started.is_some_and(|t| t.elapsed() >= partial_timeout) {
                    tracing::info!(
                        client = session.id,
                        "closing client: request not finished in time"
                    );
                    let msg =
                        "ERR Protocol error: request not completed within partial-request-timeout";
                    let _ = stream
                        .write_all(&Frame::error(msg).to_bytes(session.resp3))
                        .await;
                } else {
                    tracing::debug!(client = session.id, "closing idle client (timeout)");
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&chunk[..n]);
        let mut completed = false;
        let mut close = false;
        // Requests are executed in batches (pipelining); a batch ends after a command
        // that may change how the rest is parsed or encoded (AUTH lifts the
        // pre-auth size limits, HELLO switches protocol), so each request is parsed
        // and each reply encoded under the session state in force when it ran.
        loop {
            let limits = Limits {
                max_bulk_len: ctx
                    .shared
                    .max_bulk_len
                    .load(std::sync::atomic::Ordering::Relaxed)
                    as usize,
                max_inline_len: ctx.shared.config.max_inline_len as usize,
                unauthenticated: !session.authenticated,
                ..Limits::default()
            };
            let mut protocol_error = None;
            let mut session_change = false;
            loop {
                match parser.next(&mut input, &limits) {
                    Ok(Some(args)) if args.is_empty() => {}
                    Ok(Some(args)) => {
                        session_change = changes_session(&args[0]);
                        requests.push(args);
                        if session_change {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        protocol_error = Some(e);
                        break;
                    }
                }
            }
            completed |= !requests.is_empty();
            let resp3_before = session.resp3;
            execute_batch(ctx, session, &mut requests, &mut replies).await;
            let last = replies.len().saturating_sub(1);
            for (i, reply) in replies.drain(..).enumerate() {
                // Only the session-changing command, last in its batch, replies in
                // the protocol it switched to.
                let resp3 = if session_change && i == last {
                    session.resp3
                } else {
                    resp3_before
                };
                reply.encode(&mut output, resp3);
            }
            if let Some(e) = &protocol_error {
                Frame::error(format!("ERR {e}")).encode(&mut output, session.resp3);
                close = true;
            }
            if session.quit {
                close = true;
            }
            if close || !session_change {
                break;
            }
        }
        if !close && input.len() > query_limit {
            // Redis closes such a client too (client-query-buffer-limit).
            tracing::info!(
                client = session.id,
                buffered = input.len(),
                "closing client over the query buffer limit"
            );
            Frame::error(
                "ERR Protocol error: query buffer limit reached (client-query-buffer-limit)",
            )
            .encode(&mut output, session.resp3);
            close = true;
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if close {
            return Ok(());
        }
        // The partial-request clock runs from the first byte of a request: a trickle
        // of bytes does not reset it, a completed request does.
        request_started = if !parser.in_request(&input) {
            None
        } else if completed {
            Some(Instant::now())
        } else {
            request_started.or_else(|| Some(Instant::now()))
        };
        // Don't hold on to a large buffer after a large request.
        if input.capacity() > 4 * READ_CHUNK && input.is_empty() {
            input = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}

/// Commands after which the rest of a pipeline must be parsed or encoded afresh.
fn changes_session(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"AUTH") || name.eq_ignore_ascii_case(b"HELLO")
}

/// A reply that is ready, or the per-key replies it will be combined from.
enum Slot {
    Ready(Frame),
    /// Combined from the next `len` key replies.
    Keys {
        combine: Combine,
        len: usize,
    },
}

/// Execute pipelined requests (drained from `requests`), their replies appended to
/// `replies` in order. Key commands run together (local ones at once, others
/// batched per core); a command that is not per-key first waits for the key
/// commands before it, so effects stay in request order.
pub async fn execute_batch(
    ctx: &CoreCtx,
    session: &mut Session,
    requests: &mut Vec<Vec<Bytes>>,
    replies: &mut Vec<Frame>,
) {
    let shared = &ctx.shared;
    stats::bump(&shared.stats[ctx.core].commands, requests.len() as u64);
    let parse_ctx = ParseContext {
        now_ms: args::now_ms(),
        max_bulk_len: shared
            .max_bulk_len
            .load(std::sync::atomic::Ordering::Relaxed) as usize,
    };
    let mut slots: Vec<Slot> = Vec::with_capacity(requests.len());
    let mut pending: Vec<KeyRequest> = Vec::new();
    let mut key_replies: Vec<Frame> = Vec::new();
    for request in requests.drain(..) {
        if !session.authenticated && !allowed_before_auth(&request[0]) {
            slots.push(Slot::Ready(Frame::error("NOAUTH Authentication required.")));
            continue;
        }
        if session.txn.in_multi() && !super::txn::acts_inside_multi(&request[0]) {
            // Queued, not run: no need to wait for the key commands before it.
            let parsed = cmd::parse(&request, &parse_ctx);
            slots.push(Slot::Ready(super::txn::queue(
                ctx, session, &request, parsed,
            )));
            continue;
        }
        match cmd::parse(&request, &parse_ctx) {
            Err(e) => {
                // E.g. WATCH's arity inside MULTI: Redis fails the transaction too.
                session.txn.fail();
                slots.push(Slot::Ready(e))
            }
            Ok(Plan::Keys(plan)) => {
                if plan.reqs.iter().any(|r| r.op.grows()) && shared.over_maxmemory() {
                    slots.push(Slot::Ready(Frame::error(
                        "OOM command not allowed when used memory > 'maxmemory'.",
                    )));
                    continue;
                }
                if let Some(spread) = msetnx_across_cores(ctx, &plan.reqs) {
                    // In order with the rest of the pipeline: what came before runs first.
                    if !pending.is_empty() {
                        key_replies.extend(
                            ctx.run_keys_for(session.id, std::mem::take(&mut pending))
                                .await,
                        );
                    }
                    slots.push(Slot::Ready(msetnx_held(ctx, spread).await));
                    continue;
                }
                slots.push(Slot::Keys {
                    combine: plan.combine,
                    len: plan.reqs.len(),
                });
                pending.extend(plan.reqs);
            }
            Ok(other) => {
                if !pending.is_empty() {
                    key_replies.extend(
                        ctx.run_keys_for(session.id, std::mem::take(&mut pending))
                            .await,
                    );
                }
                let reply = match other {
                    Plan::Conn(c) => super::conn_cmd::execute(ctx, session, c, &request[0]),
                    Plan::Fanout(f) => fanout(ctx, f).await,
                    Plan::Reply(f) => f,
                    Plan::Move(m) => move_keys(ctx, m).await,
                    Plan::Migrate { fragment, to } => migrate(ctx, fragment, to).await,
                    Plan::Migrations => Frame::Verbatim(Bytes::from(
                        super::status::render_migrations(&crate::migrate::in_flight(ctx).await),
                    )),
                    Plan::SetPolicy(p) => {
                        ctx.shared.set_policy(&p);
                        broadcast(ctx, crate::core::wire::PeerRequest::SetPolicy(p)).await
                    }
                    Plan::Hint {
                        lo,
                        hi,
                        node,
                        seconds,
                    } => {
                        let now = args::now_ms();
                        let hint = crate::context::HintEntry {
                            lo,
                            hi,
                            node,
                            until_ms: now + seconds * 1000,
                        };
                        ctx.shared.add_hint(hint.clone(), now);
                        broadcast(ctx, crate::core::wire::PeerRequest::Hint(hint)).await
                    }
                    Plan::Txn(t) => super::txn::execute(ctx, session, t).await,
                    Plan::Keys(_) => Frame::error("ERR internal"),
                };
                slots.push(Slot::Ready(reply));
                if session.quit {
                    break;
                }
            }
        }
    }
    if !pending.is_empty() {
        let ran = ctx.run_keys_for(session.id, pending).await;
        if key_replies.is_empty() {
            key_replies = ran;
        } else {
            key_replies.extend(ran);
        }
    }
    // Key replies come back in request order, so each slot takes the next `len`; a
    // single-key command takes its one reply without a Vec around it.
    let mut key_replies = key_replies.into_iter();
    replies.extend(slots.into_iter().map(|slot| match slot {
        Slot::Ready(f) => f,
        Slot::Keys {
            combine: Combine::One,
            len: 1,
        } => key_replies.next().unwrap_or(Frame::Null),
        Slot::Keys { combine, len } => {
            combine_replies(combine, key_replies.by_ref().take(len).collect())
        }
    }));
}

fn allowed_before_auth(name: &[u8]) -> bool {
    [&b"AUTH"[..], b"HELLO", b"QUIT"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

pub(super) fn combine_replies(combine: Combine, mut replies: Vec<Frame>) -> Frame {
    match combine {
        Combine::One => replies.pop().unwrap_or(Frame::Null),
        Combine::Array => Frame::Array(replies),
        Combine::Sum => {
            let mut sum = 0;
            for r in replies {
                match r {
                    Frame::Integer(n) => sum += n,
                    err => return err,
                }
            }
            Frame::Integer(sum)
        }
        Combine::Ok => replies
            .into_iter()
            .find(Frame::is_error)
            .unwrap_or_else(Frame::ok),
        Combine::Lcs(opts) => cmd::lcs_reply(opts, replies),
    }
}

/// Tell every other member; OK once all have it, else which did not.
async fn broadcast(ctx: &CoreCtx, req: crate::core::wire::PeerRequest) -> Frame {
    let cluster = ctx.shared.cluster();
    let mut missing = Vec::new();
    for (id, m) in &cluster.members {
        if *id == cluster.my_id {
            continue;
        }
        let Some(&addr) = m.fabric.first() else {
            missing.push(*id);
            continue;
        };
        if !matches!(
            ctx.peers.request(addr, &req).await,
            Ok(crate::core::wire::PeerReply::Ack)
        ) {
            missing.push(*id);
        }
    }
    if missing.is_empty() {
        Frame::ok()
    } else {
        Frame::error(format!(
            "ERR set here, but nodes {missing:?} did not take it"
        ))
    }
}

/// AUGUR MIGRATE: run a migration and say how it went.
async fn migrate(ctx: &CoreCtx, fragment: cmd::FragmentRef, to: u64) -> Frame {
    let id = match fragment {
        cmd::FragmentRef::Id(id) => id,
        cmd::FragmentRef::Key(key) => match ctx
            .shared
            .ownership
            .get()
            .and_then(|o| o.table().fragment_for(&key).map(|f| f.id))
        {
            Some(id) => id,
            None => return Frame::error("ERR no fragment holds that key"),
        },
    };
    match crate::migrate::start(ctx, id, to).await {
        Ok(r) => Frame::Bulk(Bytes::from(format!(
            "fragment {} moved from node {} to node {}: {} regions, {} bytes in {:.1} ms (copy {:.1} ms, {} catch-up rounds), write pause {} us (fence {} us, final pull {} us, verify {} us, commit {} us, install {} us)",
            r.fragment,
            r.from,
            r.to,
            r.regions,
            r.bytes,
            r.total_us as f64 / 1000.0,
            r.copy_us as f64 / 1000.0,
            r.catch_up_rounds,
            r.pause_us,
            r.pause.fence_us,
            r.pause.final_pull_us,
            r.pause.verify_us,
            r.pause.commit_us,
            r.pause.install_us,
        ))),
        Err(e) => Frame::error(format!("ERR migration of fragment {id} failed: {e}")),
    }
}

/// MSETNX's pairs when its keys are on more than one core of this node (one core: its
/// shard does it all or nothing by itself; another node's keys: the shard refuses).
fn msetnx_across_cores(ctx: &CoreCtx, reqs: &[KeyRequest]) -> Option<Vec<(Bytes, Bytes)>> {
    let [KeyRequest {
        key,
        op: cmd::KeyOp::MSetNx { first, pairs },
    }] = reqs
    else {
        return None;
    };
    let routes = ctx.shared.routes.snapshot();
    let mut cores = std::collections::BTreeSet::new();
    for k in std::iter::once(key).chain(pairs.iter().map(|(k, _)| k)) {
        match routes.owner_of(k) {
            crate::router::table::Owner::Core(c) => cores.insert(c),
            _ => return None,
        };
    }
    (cores.len() > 1).then(|| {
        std::iter::once((key.clone(), first.clone()))
            .chain(pairs.iter().cloned())
            .collect()
    })
}

/// MSETNX over several cores, all or nothing and isolated: hold the cores (as EXEC
/// does), check that no key exists, set them all, release. A set that fails (OOM)
/// takes back the ones made before it: none of the keys existed.
async fn msetnx_held(ctx: &CoreCtx, pairs: Vec<(Bytes, Bytes)>) -> Frame {
    use crate::cmd::keyop::{SetCond, Ttl};
    use crate::core::txn::Begin;
    let keys: Vec<(Bytes, Vec<Bytes>)> = pairs.iter().map(|(k, _)| (k.clone(), vec![])).collect();
    let txn = match ctx.begin_txn(&keys, &[], false).await {
        Begin::Held(txn) => txn,
        Begin::Changed => return Frame::error("ERR internal: MSETNX watches nothing"),
        Begin::Failed(reply) => return reply,
    };
    let request = |key: &Bytes, op| KeyRequest {
        key: key.clone(),
        op,
    };
    let exists = txn
        .run(
            pairs
                .iter()
                .map(|(k, _)| request(k, cmd::KeyOp::Exists))
                .collect(),
        )
        .await;
    let reply = if let Some(e) = exists.iter().find(|f| f.is_error()) {
        e.clone()
    } else if exists
        .iter()
        .any(|f| matches!(f, Frame::Integer(n) if *n > 0))
    {
        Frame::Integer(0)
    } else {
        let sets = pairs
            .iter()
            .map(|(k, v)| {
                let op = cmd::KeyOp::Set {
                    value: v.clone(),
                    ttl: Ttl::Clear,
                    cond: SetCond::Always,
                    get: false,
                };
                request(k, op)
            })
            .collect();
        let done = txn.run(sets).await;
        match done.iter().find(|f| f.is_error()) {
            None => Frame::Integer(1),
            Some(e) => {
                let undo = pairs
                    .iter()
                    .zip(&done)
                    .filter(|(_, f)| !f.is_error())
                    .map(|((k, _), _)| request(k, cmd::KeyOp::Del))
                    .collect();
                txn.run(undo).await;
                e.clone()
            }
        }
    };
    txn.release().await;
    reply
}

/// The reply to DBSIZE (the counts summed), KEYS (the keys sorted) or FLUSHALL (OK)
/// from every core's answer; used here and under a transaction's holds.
pub(super) fn fanout_reply(req: &FanoutReq, replies: Vec<FanoutReply>) -> Frame {
    match req {
        FanoutReq::DbSize => Frame::Integer(
            replies
                .iter()
                .map(|r| match r.body {
                    FanoutBody::Count(n) => n as i64,
                    _ => 0,
                })
                .sum(),
        ),
        FanoutReq::Keys(_) => {
            let mut keys: Vec<Bytes> = replies
                .into_iter()
                .flat_map(|r| match r.body {
                    FanoutBody::Keys(k) => k,
                    _ => Vec::new(),
                })
                .collect();
            keys.sort_unstable();
            Frame::Array(keys.into_iter().map(Frame::Bulk).collect())
        }
        _ => Frame::ok(),
    }
}

async fn fanout(ctx: &CoreCtx, cmd: FanoutCmd) -> Frame {
    match cmd {
        FanoutCmd::DbSize | FanoutCmd::FlushAll | FanoutCmd::Keys(_) => {
            let req = match cmd {
                FanoutCmd::DbSize => FanoutReq::DbSize,
                FanoutCmd::Keys(pattern) => FanoutReq::Keys(pattern),
                _ => FanoutReq::FlushAll,
            };
            match ctx.fanout(req.clone()).await {
                Ok(replies) => fanout_reply(&req, replies),
                Err(e) => e,
            }
        }
        FanoutCmd::Scan {
            cursor,
            pattern,
            count,
            type_filter,
        } => scan(ctx, cursor, pattern, count, type_filter).await,
        FanoutCmd::RandomKey => random_key(ctx).await,
    }
}

/// RENAME, RENAMENX, COPY (see `cmd::rename`): both keys must be on this node's
/// cores, since a lost step between nodes could leave the key in both places.
async fn move_keys(ctx: &CoreCtx, plan: cmd::MovePlan) -> Frame {
    use crate::router::table::Owner;
    let routes = ctx.shared.routes.snapshot();
    for key in [&plan.src, &plan.dst] {
        match routes.owner_of(key) {
            // Unassigned: the steps themselves answer CLUSTERDOWN, changing nothing.
            Owner::Core(_) | Owner::Unassigned => {}
            Owner::Node(n) => {
                return Frame::error(format!(
                    "CROSSNODE '{}' needs both keys on the node serving the connection; key '{}' is on node {n}",
                    plan.name(),
                    String::from_utf8_lossy(&key[..key.len().min(128)])
                ))
            }
        }
    }
    if matches!(plan.kind, cmd::MoveKind::Copy { .. }) && ctx.shared.over_maxmemory() {
        return Frame::error("OOM command not allowed when used memory > 'maxmemory'.");
    }
    cmd::execute_move(plan, |req| async move {
        ctx.run_keys(vec![req])
            .await
            .pop()
            .unwrap_or_else(|| Frame::error("ERR internal: no reply"))
    })
    .await
}

/// RANDOMKEY: the first key after a random point (wrapping to the first key), asked
/// of every core as a short scan step. Keys after wide gaps are likelier than
/// others; Redis promises only "a random key". Null when there are no keys.
async fn random_key(ctx: &CoreCtx) -> Frame {
    use rand::Rng;
    let point: Vec<u8> = {
        let mut rng = rand::thread_rng();
        // Printable bytes: keys are mostly text, so a point among them spreads better.
        (0..8).map(|_| rng.gen_range(0x20u8..0x7f)).collect()
    };
    for after in [Some(Bytes::from(point)), None] {
        let replies = match ctx
            .fanout(FanoutReq::ScanStep {
                after,
                // A few, so that expired keys at the point do not hide live ones.
                count: 16,
                pattern: None,
                started: std::time::Instant::now(),
                type_filter: None,
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return e,
        };
        let first = replies
            .into_iter()
            .filter_map(|r| match r.body {
                FanoutBody::Scan { keys, .. } => keys.into_iter().next(),
                _ => None,
            })
            .min();
        if let Some(key) = first {
            return Frame::Bulk(key);
        }
    }
    Frame::Null
}

/// One SCAN call: every core examines up to `count` keys after the cursor's key; the
/// reply holds the matches up to the smallest key any core stopped at, and the new
/// cursor resumes after it. Keys are returned in order, each once.
async fn scan(
    ctx: &CoreCtx,
    cursor: u64,
    pattern: Option<Bytes>,
    count: usize,
    type_filter: Option<crate::shard::fanout::ScanType>,
) -> Frame {
    let (after, started) = if cursor == 0 {
        (None, std::time::Instant::now())
    } else {
        let found = match ctx.shared.cursors.lock() {
            Ok(mut c) => c.get(cursor),
            Err(poisoned) => poisoned.into_inner().get(cursor),
        };
        match found {
            Some(c) => (Some(c.after), c.started),
            None => return Frame::error("ERR invalid cursor"),
        }
    };
    let replies = match ctx
        .fanout(FanoutReq::ScanStep {
            after,
            count,
            pattern,
            started,
            type_filter,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut keys = Vec::new();
    let mut frontier: Option<Bytes> = None;
    for reply in replies {
        if let FanoutBody::Scan {
            keys: k,
            frontier: f,
        } = reply.body
        {
            keys.extend(k);
            if let Some(f) = f {
                frontier = Some(match frontier {
                    Some(cur) if cur <= f => cur,
                    _ => f,
                });
            }
        }
    }
    keys.sort_unstable();
    let next = match &frontier {
        Some(f) => {
            keys.retain(|k| k <= f);
            let id = match ctx.shared.cursors.lock() {
                Ok(mut c) => c.open(f.clone(), started),
                Err(poisoned) => poisoned.into_inner().open(f.clone(), started),
            };
            id.to_string()
        }
        None => "0".to_string(),
    };
    Frame::Array(vec![
        Frame::Bulk(Bytes::from(next)),
        Frame::Array(keys.into_iter().map(Frame::Bulk).collect()),
    ])
}
