//! Serving another node: requests arrive over an authenticated fabric connection
//! (chunks of [`PeerRequest`]s, see `router::wire`), each is executed by this core as
//! if a client of this node had sent it — except that a key this node does not own
//! is answered `Moved`, never forwarded again, so a request crosses at most one link.

use std::rc::Rc;

use augur_fabric::{AnyConnection, Connection};
use glommio::sync::Semaphore;

use crate::core::wire::{self, PeerReply, PeerRequest, Reassembly, KIND_REPLY, KIND_REQUEST};
use crate::core::CoreCtx;

/// Requests of one peer connection executing at once; more wait for a slot, which
/// stops reading from that peer (back-pressure instead of an unbounded queue).
const MAX_IN_FLIGHT: u64 = 256;

pub async fn serve(ctx: Rc<CoreCtx>, conn: AnyConnection) {
    let limit = ctx.peer_message_limit();
    let mut stitch = Reassembly::new(limit);
    let slots = Rc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let chunk = match crate::core::peers::recv(&conn).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(core = ctx.core, "peer connection ended: {e}");
                return;
            }
        };
        let whole = match stitch.push(&chunk) {
            Ok(Some(w)) if w.kind == KIND_REQUEST => w,
            Ok(Some(_)) => {
                tracing::warn!(core = ctx.core, "peer sent a reply as a request; closing");
                conn.close();
                return;
            }
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(core = ctx.core, "bad message from peer, closing: {e}");
                conn.close();
                return;
            }
        };
        let Ok(permit) = slots.clone().acquire_static_permit(1).await else {
            return;
        };
        let (ctx, conn) = (ctx.clone(), conn.clone());
        glommio::spawn_local(async move {
            let reply = match wire::decode::<PeerRequest>(&whole.payload, limit) {
                Ok(req) => answer(&ctx, req).await,
                Err(e) => {
                    tracing::warn!(core = ctx.core, "undecodable peer request: {e}");
                    PeerReply::Refused(e.to_string())
                }
            };
            let bytes = match wire::encode(&reply) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("cannot encode a peer reply: {e}");
                    return;
                }
            };
            for chunk in wire::chunks(KIND_REPLY, whole.id, &bytes, conn.max_message_size()) {
                if let Err(e) = conn.send(&chunk).await {
                    tracing::debug!("peer reply not sent: {e}");
                    break;
                }
            }
            drop(permit);
        })
        .detach();
    }
}

async fn answer(ctx: &Rc<CoreCtx>, req: PeerRequest) -> PeerReply {
    match req {
        PeerRequest::Keys {
            cluster_version,
            reqs,
        } => PeerReply::Keys(ctx.run_keys_for_peer(cluster_version, reqs).await),
        PeerRequest::Fanout(f) => PeerReply::Fanout(ctx.fanout_node(&f.into_local()).await),
        PeerRequest::Describe { key } => PeerReply::Described(ctx.describe_local(&key)),
        PeerRequest::Fence { .. } => {
            // A fence retires the fragment's regions: never under a transaction's hold,
            // whose checked keys must stay writable until it ends. Fencing itself does
            // not await, so nothing takes the hold in between.
            ctx.wait_unheld().await;
            let reply = crate::migrate::answer(ctx, req).await;
            if matches!(reply, PeerReply::Fenced(Ok(_))) {
                glommio::spawn_local(crate::core::watch_fences(ctx.clone())).detach();
            }
            reply
        }
        PeerRequest::MigrateIn { .. }
        | PeerRequest::Export { .. }
        | PeerRequest::Tails { .. }
        | PeerRequest::Unfence { .. } => crate::migrate::answer(ctx, req).await,
        PeerRequest::Ping => PeerReply::Ack,
        PeerRequest::Migrations => PeerReply::Migrations(ctx.shared.migration_stats().in_flight()),
        PeerRequest::SetPolicy(p) => {
            if crate::config::POLICIES.contains(&p.as_str()) {
                ctx.shared.set_policy(&p);
                PeerReply::Ack
            } else {
                PeerReply::Refused(format!("unknown policy {p}"))
            }
        }
        PeerRequest::Hint(h) => {
            ctx.shared.add_hint(h, crate::cmd::args::now_ms());
            PeerReply::Ack
        }
        PeerRequest::Telemetry(summary) => {
            // Only members report; anything else is dropped, not stored.
            if ctx.shared.cluster().members.contains_key(&summary.node) {
                ctx.shared.telemetry().ingest(summary);
            }
            PeerReply::Ack
        }
    }
}
