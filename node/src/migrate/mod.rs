//! Live migration of one table fragment from its owner (the source) to another node
//! (the target), zero-copy: the target pulls the source's regions with one-sided
//! READs; the source's CPU registers them and answers three small questions.
//!
//! The target drives ([`migrate_in`]):
//! 1. **plan** — commit `Migrating { to: target }` in the ownership table;
//! 2. **copy** — `Export`: the source core registers the regions of the fragment and
//!    says their lengths and log tails; the target allocates regions of the same
//!    length and READs `[0, tail)` of each in large chunks while the source keeps
//!    serving;
//! 3. **catch-up** — `Tails`, then READ what was appended, until the delta is small;
//! 4. **handoff** — `Fence`: the source stops serving the range (requests wait and are
//!    retried by their routers), retires its regions (one-sided readers bounce), and
//!    gives the final tails and content checksums; the target re-reads the header and
//!    the whole index, pulls the last log bytes, rebuilds each fragment from the copy
//!    (`Fragment::from_copy`, validated), compares checksums, commits `SetOwner` and
//!    installs the fragments; requests waiting on either side now route to it. The
//!    write pause is fence → install;
//! 5. **reclaim** — the source drops its copies once the table names the target
//!    (`core::CoreCtx::tidy_fences`); peers' registrations stay readable for a grace
//!    period.
//!
//! Any failure before the commit aborts: `Unfence`, state back to `Stable`, the source
//! still owns the fragment and lost nothing. A source whose fence is not followed by a
//! commit within `FENCE_TIMEOUT` unfences by itself.

use std::time::{Duration, Instant};

use augur_fabric::any::{AnyConnection, AnyMr};
use augur_fabric::{Access, Connection, Op, Region as FabricRegion, Transport};
use bytes::Bytes;
use tracing::Instrument;

use crate::context::Fence;
use crate::core::remote::WireFragment;
use crate::core::wire::{ExportedRegion, MigrationReport, PeerReply, PeerRequest, RegionTail};
use crate::core::CoreCtx;
use crate::ownership::{Change, FragmentState};
use crate::router::table::Owner;
use crate::store::region::Region;
use crate::store::Fragment;

/// Largest single READ of a copy.
const CHUNK: u64 = 4 << 20;
/// READs in flight per batch.
const BATCH: usize = 8;
/// Catch-up stops when a round brings less than this, or after `MAX_ROUNDS`.
const SMALL_DELTA: u64 = 256 << 10;
const MAX_ROUNDS: u32 = 8;
/// How long a whole migration may take before the target gives up.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Migration phases as recorded in the table's `Migrating { phase }`.
pub mod phase {
    pub const COPY: u8 = 1;
    pub const HANDOFF: u8 = 3;
}

async fn propose(ctx: &CoreCtx, change: Change) -> Result<(), String> {
    let ownership = ctx
        .shared
        .ownership
        .get()
        .ok_or("this node has no ownership table")?;
    match ownership.propose(change).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the ownership table shut down".into()),
    }
}

/// Pull table fragment `fragment` to this node (run on the target).
pub async fn migrate_in(ctx: &CoreCtx, fragment: u64) -> Result<MigrationReport, String> {
    let started = Instant::now();
    let ownership = ctx
        .shared
        .ownership
        .get()
        .ok_or("this node has no ownership table")?;
    let me = ctx.shared.cluster().my_id;
    // This node's copy of the table may lag a migration that just finished elsewhere.
    let settle = Instant::now() + Duration::from_secs(2);
    let mut table = ownership.table();
    while table
        .fragment(fragment)
        .is_some_and(|f| f.state != FragmentState::Stable)
        && Instant::now() < settle
    {
        glommio::timer::sleep(Duration::from_millis(2)).await;
        table = ownership.table();
    }
    let f = table
        .fragment(fragment)
        .cloned()
        .ok_or_else(|| format!("no fragment {fragment}"))?;
    if f.owner == me {
        return Err(format!("fragment {fragment} is already on node {me}"));
    }
    if f.state != FragmentState::Stable {
        return Err(format!("fragment {fragment} is busy ({:?})", f.state));
    }
    let source = table
        .members
        .get(&f.owner)
        .and_then(|m| {
            m.fabric_addrs
                .get(f.core as usize % m.fabric_addrs.len().max(1))
        })
        .copied()
        .ok_or_else(|| format!("owner node {} has no fabric endpoint", f.owner))?;
    propose(
        ctx,
        Change::SetState {
            fragment,
            state: FragmentState::Migrating {
                to: me,
                phase: phase::COPY,
            },
        },
    )
    .await?;
    let lo = Bytes::copy_from_slice(&f.lo);
    let hi = f.hi.as_deref().map(Bytes::copy_from_slice);
    let mut report = MigrationReport {
        fragment,
        from: f.owner,
        to: me,
        regions: 0,
        bytes: 0,
        copy_us: 0,
        catch_up_rounds: 0,
        pause_us: 0,
        total_us: 0,
    };
    let span = tracing::info_span!("migration", fragment, from = f.owner, to = me);
    let outcome = glommio::timer::timeout(MIGRATION_TIMEOUT, async {
        Ok(
            copy_and_hand_off(ctx, fragment, source, &lo, hi.as_ref(), &mut report)
                .instrument(span)
                .await,
        )
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    match outcome {
        Ok(()) => {
            report.total_us = started.elapsed().as_micros() as u64;
            ctx.shared
                .migration_stats()
                .record_done(report.bytes, report.pause_us);
            tracing::info!(
                fragment,
                from = report.from,
                bytes = report.bytes,
                pause_us = report.pause_us,
                "migrated"
            );
            Ok(report)
        }
        Err(why) => {
            tracing::warn!(fragment, "migration aborted: {why}");
            ctx.shared.migration_stats().record_aborted();
            let _ = ctx
                .peers
                .request(source, &PeerRequest::Unfence { fragment })
                .await;
            // If the commit went through after all, the table says so; else undo the plan.
            let owner_now = ownership.table().fragment(fragment).map(|f| f.owner);
            if owner_now != Some(me) {
                let _ = propose(
                    ctx,
                    Change::SetState {
                        fragment,
                        state: FragmentState::Stable,
                    },
                )
                .await;
            }
            Err(why)
        }
    }
}

/// One region being copied: where it is on the source, where it lands here.
struct Pull {
    exported: ExportedRegion,
    desc: augur_fabric::RemoteRegion,
    region: Region,
    mr: AnyMr,
    copied: u64,
}

async fn copy_and_hand_off(
    ctx: &CoreCtx,
    fragment: u64,
    source: std::net::SocketAddr,
    lo: &Bytes,
    hi: Option<&Bytes>,
    report: &mut MigrationReport,
) -> Result<(), String> {
    let ask = |req: PeerRequest| async move {
        ctx.peers
            .request(source, &req)
            .await
            .map_err(|e| format!("source: {e}"))
    };
    let exported = match ask(PeerRequest::Export {
        fragment,
        lo: lo.clone(),
        hi: hi.cloned(),
    })
    .await?
    {
        PeerReply::Exported(Ok(v)) if !v.is_empty() => v,
        PeerReply::Exported(Err(e)) => return Err(format!("source cannot export: {e}")),
        other => return Err(format!("source answered {other:?} to Export")),
    };
    let conn = ctx
        .peers
        .connection(source)
        .await
        .map_err(|e| e.to_string())?;
    let transport = ctx.peers.transport().clone();
    let mut pulls = Vec::with_capacity(exported.len());
    for e in exported {
        let desc = e
            .region
            .decode()
            .ok_or("source sent a malformed region descriptor")?
            .region;
        let len = usize::try_from(e.region_len).map_err(|_| "region too large")?;
        if e.region_len != desc.len || e.tail > e.region_len || e.log_start > e.tail {
            return Err("source described an inconsistent region".into());
        }
        let region = Region::create(len, ctx.shared.config.hugepages)
            .map_err(|e| format!("allocating a region: {e}"))?;
        let file = region.export_file().map_err(|e| e.to_string())?;
        let mapped = FabricRegion::from_file(file, len).map_err(|e| e.to_string())?;
        let mr = transport
            .register(&mapped, Access::LOCAL)
            .map_err(|e| e.to_string())?;
        pulls.push(Pull {
            exported: e,
            desc,
            region,
            mr,
            copied: 0,
        });
    }
    report.regions = pulls.len() as u32;

    // Copy while the source serves.
    let copy_started = Instant::now();
    for p in &mut pulls {
        let tail = p.exported.tail;
        report.bytes += pull(&conn, p, 0, tail).await?;
        p.copied = tail;
    }
    report.copy_us = copy_started.elapsed().as_micros() as u64;
    tracing::debug!(bytes = report.bytes, us = report.copy_us, "copy phase done");

    // Catch up with what was appended meanwhile.
    for _ in 0..MAX_ROUNDS {
        let tails = match ask(PeerRequest::Tails {
            lo: lo.clone(),
            hi: hi.cloned(),
        })
        .await?
        {
            PeerReply::Tails(Ok(t)) if t.len() == pulls.len() => t,
            PeerReply::Tails(Err(e)) => return Err(format!("source: {e}")),
            other => return Err(format!("source answered {other:?} to Tails")),
        };
        let delta = catch_up(&conn, &mut pulls, &tails).await?;
        report.bytes += delta;
        report.catch_up_rounds += 1;
        if delta < SMALL_DELTA {
            break;
        }
    }

    tracing::debug!(rounds = report.catch_up_rounds, "catch-up phase done");
    test_delay("AUGUR_TEST_DELAY_BEFORE_FENCE_MS").await;
    // Hand off: from here requests for the range wait.
    let fenced_at = Instant::now();
    let finals = match ask(PeerRequest::Fence {
        fragment,
        lo: lo.clone(),
        hi: hi.cloned(),
    })
    .await?
    {
        PeerReply::Fenced(Ok(t)) if t.len() == pulls.len() => t,
        PeerReply::Fenced(Err(e)) => return Err(format!("source cannot fence: {e}")),
        other => return Err(format!("source answered {other:?} to Fence")),
    };
    test_delay("AUGUR_TEST_DELAY_AFTER_FENCE_MS").await;
    report.bytes += catch_up(&conn, &mut pulls, &finals).await?;
    // The index changed in place since the copy: take all of it, and the header.
    for p in &mut pulls {
        let log_start = p.exported.log_start;
        report.bytes += pull(&conn, p, 0, log_start).await?;
    }
    let mut fragments = Vec::with_capacity(pulls.len());
    for (p, fin) in pulls.into_iter().zip(&finals) {
        let Pull {
            exported,
            region,
            mr,
            ..
        } = p;
        drop(mr);
        let copy = Fragment::from_copy(
            region,
            exported.region.fragment_id,
            exported.lo.clone(),
            exported.hi.clone(),
        )
        .map_err(|e| format!("the copy of {:?} is not valid: {e}", exported.lo))?;
        let (tail, crc) = copy.content_crc();
        if tail as u64 != fin.tail || crc != fin.crc {
            return Err(format!(
                "the copy of {:?} differs from the source (tail {tail} vs {}, crc {crc:08x} vs {:08x})",
                exported.lo, fin.tail, fin.crc
            ));
        }
        fragments.push(copy);
    }
    tracing::debug!("handoff: copy verified, committing");
    let core = ctx.core;
    match propose(
        ctx,
        Change::SetOwner {
            fragment,
            owner: report.to,
            core: core as u32,
        },
    )
    .await
    {
        Ok(()) => {}
        Err(e) => {
            // A timed-out proposal may still have committed: the table decides.
            let ownership = ctx.shared.ownership.get().ok_or("no ownership table")?;
            let committed = ownership
                .table()
                .fragment(fragment)
                .is_some_and(|f| f.owner == report.to);
            if !committed {
                return Err(format!("commit failed: {e}"));
            }
        }
    }
    // Install only once this node's copy of the table shows the commit, and stamp the
    // route with that version, so no route update from an older table can undo it.
    let ownership = ctx.shared.ownership.get().ok_or("no ownership table")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let version = loop {
        let table = ownership.table();
        if table
            .fragment(fragment)
            .is_some_and(|f| f.owner == report.to)
        {
            break table.applied;
        }
        if Instant::now() > deadline {
            return Err("the commit did not reach this node's table".into());
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    };
    // A fragment coming back to a node it left may still find its old, retired copy
    // and fence here (reclaim runs on the maintenance tick): the new copy replaces both.
    ctx.shard.borrow_mut().drop_range(lo, hi.map(|h| &h[..]));
    ctx.shared.unfence(fragment);
    for f in fragments {
        ctx.install(f);
    }
    ctx.shared.routes.update(|r| {
        r.set_owner(lo, hi, Owner::Core(core));
        r.cluster_version = r.cluster_version.max(version);
    });
    report.pause_us = fenced_at.elapsed().as_micros() as u64;
    Ok(())
}

/// Fault-injection tests widen a phase to kill a node inside it: the variable holds
/// milliseconds (unset or unparsable: no delay). Read per migration, never per request.
async fn test_delay(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        tracing::warn!("{var}: pausing this migration {ms} ms");
        glommio::timer::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
}

/// READ `[from, to)` of a region into the same offsets here; returns the bytes moved.
async fn pull(conn: &AnyConnection, p: &Pull, from: u64, to: u64) -> Result<u64, String> {
    let mut at = from;
    while at < to {
        let mut ops = Vec::with_capacity(BATCH);
        while at < to && ops.len() < BATCH {
            let len = CHUNK.min(to - at);
            ops.push(Op {
                remote: p.desc,
                remote_offset: at,
                len,
                local: &p.mr,
                local_offset: at,
            });
            at += len;
        }
        conn.read_batch(&ops)
            .await
            .map_err(|e| format!("reading the source region: {e}"))?;
    }
    Ok(to.saturating_sub(from))
}

/// Pull each region's log from what was copied up to its new tail.
async fn catch_up(
    conn: &AnyConnection,
    pulls: &mut [Pull],
    tails: &[RegionTail],
) -> Result<u64, String> {
    let mut moved = 0;
    for (p, t) in pulls.iter_mut().zip(tails) {
        if t.generation != p.exported.region.generation {
            return Err(
                "a source region was replaced (compaction or split) during the copy".into(),
            );
        }
        if t.tail < p.copied || t.tail > p.exported.region_len {
            return Err("a source region's log went backwards or past its end".into());
        }
        moved += pull(conn, p, p.copied, t.tail).await?;
        p.copied = t.tail;
    }
    Ok(moved)
}

// ---- the source's side ---------------------------------------------------------------

fn describe_regions(
    ctx: &CoreCtx,
    lo: &Bytes,
    hi: Option<&Bytes>,
) -> Result<Vec<ExportedRegion>, String> {
    let shard = ctx.shard.borrow();
    let parts = shard
        .fragments_tiling(lo, hi.map(|h| &h[..]))
        .ok_or("the fragment's data is not all on this core")?;
    parts
        .into_iter()
        .map(|f| {
            let d = ctx.exports.describe(ctx.peers.transport(), f)?;
            Ok(ExportedRegion {
                lo: f.lo().clone(),
                hi: f.hi().cloned(),
                region: WireFragment {
                    fragment_id: d.fragment_id,
                    region: d.region.encode().to_vec(),
                    bucket_count: d.bucket_count,
                    generation: d.generation,
                },
                region_len: d.region.len,
                log_start: f.log_start() as u64,
                tail: f.log_tail() as u64,
            })
        })
        .collect()
}

fn tails(ctx: &CoreCtx, lo: &Bytes, hi: Option<&Bytes>) -> Result<Vec<RegionTail>, String> {
    let shard = ctx.shard.borrow();
    let parts = shard
        .fragments_tiling(lo, hi.map(|h| &h[..]))
        .ok_or("the fragment's data is not all on this core")?;
    Ok(parts
        .into_iter()
        .map(|f| RegionTail {
            generation: f.generation(),
            tail: f.log_tail() as u64,
            crc: 0,
        })
        .collect())
}

/// Fence, retire and checksum, with nothing in between: this core is the only
/// writer of these fragments and nothing here awaits.
fn fence(
    ctx: &CoreCtx,
    fragment: u64,
    lo: &Bytes,
    hi: Option<&Bytes>,
) -> Result<Vec<RegionTail>, String> {
    ctx.shared.fence(Fence {
        fragment,
        lo: lo.clone(),
        hi: hi.cloned(),
        since: Instant::now(),
    });
    let shard = ctx.shard.borrow();
    let Some(parts) = shard.fragments_tiling(lo, hi.map(|h| &h[..])) else {
        drop(shard);
        ctx.shared.unfence(fragment);
        return Err("the fragment's data is not all on this core".into());
    };
    Ok(parts
        .into_iter()
        .map(|f| {
            f.retire();
            let (tail, crc) = f.content_crc();
            RegionTail {
                generation: f.generation(),
                tail: tail as u64,
                crc,
            }
        })
        .collect())
}

/// Answer a migration request from a peer (source side, or the target's trigger).
pub async fn answer(ctx: &CoreCtx, req: PeerRequest) -> PeerReply {
    match req {
        PeerRequest::MigrateIn { fragment } => PeerReply::Migrated(migrate_in(ctx, fragment).await),
        PeerRequest::Export { lo, hi, .. } => {
            PeerReply::Exported(describe_regions(ctx, &lo, hi.as_ref()))
        }
        PeerRequest::Tails { lo, hi } => PeerReply::Tails(tails(ctx, &lo, hi.as_ref())),
        PeerRequest::Fence { fragment, lo, hi } => {
            PeerReply::Fenced(fence(ctx, fragment, &lo, hi.as_ref()))
        }
        PeerRequest::Unfence { fragment } => {
            ctx.abandon_fence(fragment);
            PeerReply::Ack
        }
        _ => PeerReply::Refused("not a migration request".into()),
    }
}

/// Ask node `to` to pull `fragment` (or do it here when `to` is this node).
pub async fn start(ctx: &CoreCtx, fragment: u64, to: u64) -> Result<MigrationReport, String> {
    let cluster = ctx.shared.cluster();
    if to == cluster.my_id {
        return migrate_in(ctx, fragment).await;
    }
    let addr = cluster
        .members
        .get(&to)
        .and_then(|m| m.fabric.first())
        .copied()
        .ok_or_else(|| format!("node {to} is not a member"))?;
    match ctx
        .peers
        .request_with_timeout(
            addr,
            &PeerRequest::MigrateIn { fragment },
            MIGRATION_TIMEOUT,
        )
        .await
    {
        Ok(PeerReply::Migrated(r)) => r,
        Ok(other) => Err(format!("node {to} answered {other:?}")),
        Err(e) => Err(format!("node {to}: {e}")),
    }
}
