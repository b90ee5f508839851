//! Live migration of one table fragment from its owner (the source) to another node
//! (the target), zero-copy: the target pulls the source's regions with one-sided
//! READs; the source's CPU registers them and answers three small questions.
//!
//! The target drives ([`migrate_in`]):
//! 1. **plan** — commit `Migrating { to: target }` in the ownership table;
//! 2. **copy** — `Export`: the source core registers the regions of the fragment and
//!    says their lengths and log tails; the target allocates regions of the same
//!    length, READs each header, then the log `[log_start, tail)` in large chunks while
//!    the source keeps serving. The index is not copied: `CopyBuilder` checks each
//!    record as it lands and indexes it exactly as the source's writes did. While the
//!    READs are in flight, `Tails` requests prove what has landed, `CRC_STEP` bytes at a
//!    time (`store::copy::delta_crc`: header words and a log range);
//! 3. **catch-up** — `Tails`, then READ what was appended and prove it, until the delta
//!    is small;
//! 4. **handoff** — `Fence`: the source stops serving the range (requests wait and are
//!    retried by their routers), retires its regions (one-sided readers bounce), and
//!    gives the final tails and the checksums of the logs from where the target's proof
//!    stands; the target pulls and indexes the last log bytes, compares, finishes the
//!    fragments, commits `SetOwner` and installs them; requests waiting on either side
//!    now route to it. The write pause is fence → install, and its work is proportional
//!    to the last delta (decision 0011);
//! 5. **reclaim** — the source drops its copies once the table names the target
//!    (`core::CoreCtx::tidy_fences`); peers' registrations stay readable for a grace
//!    period.
//!
//! Any failure before the commit aborts: `Unfence`, state back to `Stable`, the source
//! still owns the fragment and lost nothing. A source whose fence is not followed by a
//! commit within `FENCE_TIMEOUT` unfences by itself.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use augur_fabric::any::{AnyConnection, AnyMr};
use augur_fabric::{Access, Connection, Op, Region as FabricRegion, Transport};
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use tracing::Instrument;

use crate::context::pace::Pace;
use crate::context::Fence;
use crate::core::remote::WireFragment;
use crate::core::wire::{
    ExportedRegion, MigrationReport, PauseParts, PeerReply, PeerRequest, RegionTail,
};
use crate::core::CoreCtx;
use crate::ownership::{Change, FragmentState};
use crate::router::table::Owner;
use crate::store::copy::CopyBuilder;
use crate::store::layout::HEADER_LEN;
use crate::store::region::Region;
use crate::store::Fragment;

/// Largest single READ of a copy.
const CHUNK: u64 = 4 << 20;
/// READs in flight per batch.
const BATCH: usize = 8;
/// Catch-up stops when a round brings less than this, or after `MAX_ROUNDS`.
const SMALL_DELTA: u64 = 256 << 10;
const MAX_ROUNDS: u32 = 8;
/// Log bytes the source checksums per `Tails` (a millisecond or two of its core), so
/// the copy is proven before the fence a step at a time, mostly while it is in flight.
pub const CRC_STEP: u64 = 16 << 20;
/// Rounds of proving before the fence checksums whatever is left.
const MAX_VERIFY_ROUNDS: u32 = 4096;
/// How long after the handoff the copy's fabric registrations are released.
const RELEASE_AFTER: Duration = Duration::from_millis(20);
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
    // This node's copy of the table may lag a migration that just finished elsewhere;
    // and a fragment that left this node moments ago may not be reclaimed here yet (its
    // fence and retired copy go on the maintenance tick): with millisecond handoffs a
    // fragment can come back within that tick, so wait for it first.
    let settle = Instant::now() + Duration::from_secs(2);
    let mut table = ownership.table();
    let still_leaving = || ctx.shared.fences().iter().any(|f| f.fragment == fragment);
    while (table
        .fragment(fragment)
        .is_some_and(|f| f.state != FragmentState::Stable)
        || still_leaving())
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
    ctx.shared.migration_stats().begin(fragment, f.owner, me);
    let planned = propose(
        ctx,
        Change::SetState {
            fragment,
            state: FragmentState::Migrating {
                to: me,
                phase: phase::COPY,
            },
        },
    )
    .await;
    if let Err(e) = planned {
        ctx.shared.migration_stats().end(fragment);
        return Err(e);
    }
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
        pause: PauseParts::default(),
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
    ctx.shared.migration_stats().end(fragment);
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

/// One region being copied: where it is on the source, and the fragment being rebuilt
/// here from its header and log.
/// Cells, because the copy phase READs a region and proves the landed part of it at
/// the same time (two futures of one task, never borrowing across an await).
struct Pull {
    exported: ExportedRegion,
    desc: augur_fabric::RemoteRegion,
    builder: RefCell<CopyBuilder>,
    mr: AnyMr,
    /// Log bytes below this are here (and checked and indexed, see `CopyBuilder`).
    copied: Cell<u64>,
    /// Log bytes below this are proven equal to the source's by a checksum.
    verified: Cell<u64>,
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
        if e.region_len != desc.len
            || e.tail > e.region_len
            || e.log_start > e.tail
            || e.log_start < HEADER_LEN as u64
        {
            return Err("source described an inconsistent region".into());
        }
        let region = Region::create(len, ctx.shared.config.hugepages)
            .map_err(|e| format!("allocating a region: {e}"))?;
        let file = region.export_file().map_err(|e| e.to_string())?;
        let mapped = FabricRegion::from_file(file, len).map_err(|e| e.to_string())?;
        let mr = transport
            .register(&mapped, Access::LOCAL)
            .map_err(|e| e.to_string())?;
        // The header first: it says how to read the rest. The index is not copied, it
        // is rebuilt here from the log.
        read_range(&conn, &desc, &mr, 0, HEADER_LEN as u64, None, |_| Ok(())).await?;
        let builder = CopyBuilder::new(region, e.region.fragment_id, e.lo.clone(), e.hi.clone())
            .map_err(|err| format!("the copy of {:?} is not valid: {err}", e.lo))?;
        let h = builder.header();
        if h.log_start as u64 != e.log_start || h.generation != e.region.generation {
            return Err(format!(
                "the header of {:?} does not match the source's description",
                e.lo
            ));
        }
        pulls.push(Pull {
            copied: Cell::new(e.log_start),
            verified: Cell::new(e.log_start),
            exported: e,
            desc,
            builder: RefCell::new(builder),
            mr,
        });
    }
    report.regions = pulls.len() as u32;
    report.bytes += HEADER_LEN as u64 * pulls.len() as u64;
    let headers = report.bytes;
    let landed = |pulls: &[Pull]| -> u64 {
        headers
            + pulls
                .iter()
                .map(|p| p.copied.get() - p.exported.log_start)
                .sum::<u64>()
    };
    let total = headers
        + pulls
            .iter()
            .map(|p| p.exported.tail - p.exported.log_start)
            .sum::<u64>();
    let show = |phase: &str, done: u64, total: u64| {
        ctx.shared
            .migration_stats()
            .progress(fragment, phase, done, total)
    };
    show("copy", headers, total);
    let pace = Some(&ctx.shared.migration_pace);

    let ask_tails = |pulls: &[Pull]| {
        let verify = pulls
            .iter()
            .map(|p| (p.verified.get(), p.copied.get()))
            .collect();
        let req = PeerRequest::Tails {
            lo: lo.clone(),
            hi: hi.cloned(),
            verify,
        };
        let regions = pulls.len();
        async move {
            match ask(req).await? {
                PeerReply::Tails(Ok(t)) if t.len() == regions => Ok(t),
                PeerReply::Tails(Err(e)) => Err(format!("source: {e}")),
                other => Err(format!("source answered {other:?} to Tails")),
            }
        }
    };

    // Copy while the source serves, and prove what has landed, a step at a time, while
    // the rest is in flight.
    let copy_started = Instant::now();
    for p in &pulls {
        let (landed_tx, mut landings) = futures::channel::mpsc::unbounded::<()>();
        let copy = pull(&conn, p, p.exported.tail, Some(landed_tx), pace);
        let prove = async {
            while landings.next().await.is_some() {
                show("copy", landed(&pulls), 0);
                while p.copied.get() - p.verified.get() >= CRC_STEP {
                    let tails = ask_tails(&pulls).await?;
                    for (q, t) in pulls.iter().zip(&tails) {
                        prove_copied(q, t, false)?;
                    }
                }
            }
            Ok::<(), String>(())
        };
        let (moved, ()) = futures::future::try_join(copy, prove).await?;
        report.bytes += moved;
    }
    report.copy_us = copy_started.elapsed().as_micros() as u64;
    tracing::debug!(bytes = report.bytes, us = report.copy_us, "copy phase done");

    // Catch up with what was appended meanwhile, and prove what was copied, a bounded
    // step per round so the source's core never checksums much at once.
    let mut rounds = 0u32;
    loop {
        show("catch-up", landed(&pulls), 0);
        let tails = ask_tails(&pulls).await?;
        let delta = catch_up(&conn, &pulls, &tails, false, pace).await?;
        report.bytes += delta;
        rounds += 1;
        let unverified: u64 = pulls
            .iter()
            .map(|p| p.copied.get() - p.verified.get())
            .sum();
        let caught_up = delta < SMALL_DELTA || rounds >= MAX_ROUNDS;
        if (caught_up && unverified < SMALL_DELTA) || rounds >= MAX_VERIFY_ROUNDS {
            break;
        }
    }
    report.catch_up_rounds = rounds;

    tracing::debug!(rounds = report.catch_up_rounds, "catch-up phase done");
    test_delay("AUGUR_TEST_DELAY_BEFORE_FENCE_MS").await;
    // Hand off: from here requests for the range wait.
    show("handoff", landed(&pulls), 0);
    let fenced_at = Instant::now();
    let finals = match ask(PeerRequest::Fence {
        fragment,
        lo: lo.clone(),
        hi: hi.cloned(),
        verified_to: pulls.iter().map(|p| p.verified.get()).collect(),
    })
    .await?
    {
        PeerReply::Fenced(Ok(t)) if t.len() == pulls.len() => t,
        PeerReply::Fenced(Err(e)) => return Err(format!("source cannot fence: {e}")),
        other => return Err(format!("source answered {other:?} to Fence")),
    };
    let mut mark = Instant::now();
    report.pause.fence_us = fenced_at.elapsed().as_micros() as u64;
    test_delay("AUGUR_TEST_DELAY_AFTER_FENCE_MS").await;
    if let Some(fin) = finals.iter().find(|f| f.crc_to != f.tail) {
        return Err(format!(
            "the source's final checksum ends at {}, not at its tail {}",
            fin.crc_to, fin.tail
        ));
    }
    let flip = std::env::var_os("AUGUR_TEST_FLIP_FINAL_DELTA").is_some();
    // Inside the write pause: never held back by the bandwidth budget.
    report.bytes += catch_up(&conn, &pulls, &finals, flip, None).await?;
    report.pause.final_pull_us = lap(&mut mark);
    let mut fragments = Vec::with_capacity(pulls.len());
    // Unregistering unmaps the fabric's second mapping of each region, milliseconds for
    // a big one: done after the handoff, off the pause.
    let mut registrations = Vec::with_capacity(pulls.len());
    for (p, fin) in pulls.into_iter().zip(&finals) {
        let Pull {
            exported,
            builder,
            mr,
            ..
        } = p;
        registrations.push(mr);
        let tail = usize::try_from(fin.tail).map_err(|_| "tail too large")?;
        let copy = builder
            .into_inner()
            .finish(tail)
            .map_err(|e| format!("the copy of {:?} is not valid: {e}", exported.lo))?;
        fragments.push(copy);
    }
    report.pause.verify_us = lap(&mut mark);
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
    report.pause.commit_us = lap(&mut mark);
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
        // Inside the pause, and the table offers no notification: poll finely.
        glommio::timer::sleep(Duration::from_micros(100)).await;
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
    report.pause.install_us = lap(&mut mark);
    report.pause_us = fenced_at.elapsed().as_micros() as u64;
    // Let the requests that waited on the fence run first.
    glommio::spawn_local(async move {
        glommio::timer::sleep(RELEASE_AFTER).await;
        drop(registrations);
    })
    .detach();
    Ok(())
}

/// Microseconds since `mark`, and move `mark` to now.
fn lap(mark: &mut Instant) -> u64 {
    let now = Instant::now();
    let us = now.duration_since(*mark).as_micros() as u64;
    *mark = now;
    us
}

/// Fault-injection tests widen a phase to kill a node inside it: the variable holds
/// milliseconds (unset or unparsable: no delay). Read per migration, never per request.
async fn test_delay(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        tracing::warn!("{var}: pausing this migration {ms} ms");
        glommio::timer::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
}

/// READ `[from, to)` of a region into the same offsets here, `CHUNK` bytes per READ and
/// `BATCH` of them in flight all the time (a new one starts as the oldest lands, rather
/// than a batch waiting for its slowest READ). `landed(end)` runs, in order, as each
/// `[from, end)` is complete.
async fn read_range(
    conn: &AnyConnection,
    desc: &augur_fabric::RemoteRegion,
    mr: &AnyMr,
    from: u64,
    to: u64,
    pace: Option<&Pace>,
    mut landed: impl FnMut(u64) -> Result<(), String>,
) -> Result<(), String> {
    let mut in_flight = FuturesOrdered::new();
    let mut next = from;
    let chunk = pace.map_or(CHUNK, |p| p.piece(CHUNK));
    loop {
        let mut held_back = None;
        while next < to && in_flight.len() < BATCH {
            let len = chunk.min(to - next);
            if let Some(wait) = pace.map(|p| p.try_take(len)).filter(|w| !w.is_zero()) {
                held_back = Some(wait);
                break;
            }
            let op = Op {
                remote: *desc,
                remote_offset: next,
                len,
                local: mr,
                local_offset: next,
            };
            let end = next + len;
            in_flight.push_back(async move { conn.read_batch(&[op]).await.map(|()| end) });
            next = end;
        }
        if in_flight.is_empty() {
            match held_back {
                Some(wait) => {
                    glommio::timer::sleep(wait).await;
                    continue;
                }
                None => return Ok(()),
            }
        }
        match in_flight.next().await {
            Some(Ok(end)) => landed(end)?,
            Some(Err(e)) => return Err(format!("reading the source region: {e}")),
            None => return Ok(()),
        }
    }
}

/// Pull a region's log from what was copied up to `to`, checking and indexing each
/// piece as it lands (while the next READs are in flight), and saying so on `landed`;
/// returns the bytes moved.
async fn pull(
    conn: &AnyConnection,
    p: &Pull,
    to: u64,
    landed: Option<futures::channel::mpsc::UnboundedSender<()>>,
    pace: Option<&Pace>,
) -> Result<u64, String> {
    let from = p.copied.get();
    let lo = &p.exported.lo;
    read_range(conn, &p.desc, &p.mr, from, to, pace, |end| {
        let at = usize::try_from(end).map_err(|_| "offset too large")?;
        p.builder
            .borrow_mut()
            .extend(at)
            .map_err(|e| format!("the copy of {lo:?} is not valid: {e}"))?;
        p.copied.set(end);
        if let Some(landed) = &landed {
            // The prover may have stopped (it failed, and so does this copy).
            let _ = landed.unbounded_send(());
        }
        Ok(())
    })
    .await?;
    Ok(to.saturating_sub(from))
}

/// Check the source's checksum of `[verified, crc_to)` of a region against the copy's,
/// and move `verified` on. `flip_for_test` (fault injection,
/// `AUGUR_TEST_FLIP_FINAL_DELTA`) first changes the range's first byte, after its
/// records were checked, as a peer lying about bytes whose records' own crcs still
/// hold would: the checksum must catch it.
fn prove_copied(p: &Pull, t: &RegionTail, flip_for_test: bool) -> Result<(), String> {
    if t.generation != p.exported.region.generation {
        return Err("a source region was replaced (compaction or split) during the copy".into());
    }
    let (from, to) = (p.verified.get(), t.crc_to);
    if to < from || to > p.copied.get() {
        return Err("the source's checksum covers a range it was not asked for".into());
    }
    let (from, to) = (from as usize, to as usize);
    if flip_for_test && from < to {
        tracing::warn!(
            at = from,
            "AUGUR_TEST_FLIP_FINAL_DELTA: changing a copied byte"
        );
        p.builder.borrow_mut().region_mut().bytes_mut()[from] ^= 0x01;
    }
    let mine = p.builder.borrow().delta_crc(from, to);
    if mine != Some(t.crc) {
        return Err(format!(
            "the copy of {:?} differs from the source in [{from}, {to}) \
             (crc {:08x} here, {:08x} there)",
            p.exported.lo,
            mine.unwrap_or(0),
            t.crc
        ));
    }
    p.verified.set(t.crc_to);
    Ok(())
}

/// Pull each region's log from what was copied up to its new tail, then check the
/// source's checksum of the range it covered.
async fn catch_up(
    conn: &AnyConnection,
    pulls: &[Pull],
    tails: &[RegionTail],
    flip_for_test: bool,
    pace: Option<&Pace>,
) -> Result<u64, String> {
    let mut moved = 0;
    for (p, t) in pulls.iter().zip(tails) {
        if t.generation != p.exported.region.generation {
            return Err(
                "a source region was replaced (compaction or split) during the copy".into(),
            );
        }
        if t.tail < p.copied.get() || t.tail > p.exported.region_len {
            return Err("a source region's log went backwards or past its end".into());
        }
        moved += pull(conn, p, t.tail, None, pace).await?;
        prove_copied(p, t, flip_for_test)?;
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
                region: WireFragment::encode(&d),
                region_len: d.region.len,
                log_start: f.log_start() as u64,
                tail: f.log_tail() as u64,
            })
        })
        .collect()
}

/// Each region's tail and the checksum of its log over `[from, to)`, cut at the tail
/// and after `step` bytes.
fn tails_and_crcs(
    parts: &[&Fragment],
    ranges: &[(u64, u64)],
    step: u64,
) -> Result<Vec<RegionTail>, String> {
    if parts.len() != ranges.len() {
        return Err(format!(
            "asked about {} regions, the fragment has {}",
            ranges.len(),
            parts.len()
        ));
    }
    parts
        .iter()
        .zip(ranges)
        .map(|(f, &(from, to))| {
            let tail = f.log_tail() as u64;
            let crc_to = tail.min(to).min(from.saturating_add(step));
            let crc = usize::try_from(from)
                .ok()
                .zip(usize::try_from(crc_to).ok())
                .and_then(|(from, to)| f.log_delta_crc(from, to))
                .ok_or_else(|| format!("no log range [{from}, {crc_to}) to checksum"))?;
            Ok(RegionTail {
                generation: f.generation(),
                tail,
                crc,
                crc_to,
            })
        })
        .collect()
}

fn tails(
    ctx: &CoreCtx,
    lo: &Bytes,
    hi: Option<&Bytes>,
    verify: &[(u64, u64)],
) -> Result<Vec<RegionTail>, String> {
    let shard = ctx.shard.borrow();
    let parts = shard
        .fragments_tiling(lo, hi.map(|h| &h[..]))
        .ok_or("the fragment's data is not all on this core")?;
    tails_and_crcs(&parts, verify, CRC_STEP)
}

/// Fence, retire and checksum what the target has not proven yet, with nothing in
/// between: this core is the only writer of these fragments and nothing here awaits.
fn fence(
    ctx: &CoreCtx,
    fragment: u64,
    lo: &Bytes,
    hi: Option<&Bytes>,
    verified_to: &[u64],
) -> Result<Vec<RegionTail>, String> {
    ctx.shared.fence(Fence {
        fragment,
        core: ctx.core,
        lo: lo.clone(),
        hi: hi.cloned(),
        since: Instant::now(),
    });
    let shard = ctx.shard.borrow();
    let finals = match shard.fragments_tiling(lo, hi.map(|h| &h[..])) {
        Some(parts) => {
            for f in &parts {
                f.retire();
            }
            let to_tails: Vec<(u64, u64)> = verified_to.iter().map(|&v| (v, u64::MAX)).collect();
            tails_and_crcs(&parts, &to_tails, u64::MAX)
        }
        None => Err("the fragment's data is not all on this core".into()),
    };
    drop(shard);
    if finals.is_err() {
        // Serve again: the target aborts on this answer.
        ctx.abandon_fence(fragment);
    }
    finals
}

/// The migrations in flight to any member (each target reports its own); a member
/// that does not answer is left out.
pub async fn in_flight(ctx: &CoreCtx) -> Vec<crate::telemetry::migrations::Progress> {
    let mut all = ctx.shared.migration_stats().in_flight();
    let cluster = ctx.shared.cluster();
    let asks = cluster
        .members
        .iter()
        .filter(|(id, _)| **id != cluster.my_id)
        .filter_map(|(_, m)| m.fabric.first().copied())
        .map(|addr| async move {
            ctx.peers
                .request_with_timeout(addr, &PeerRequest::Migrations, Duration::from_secs(1))
                .await
        });
    for reply in futures::future::join_all(asks).await {
        if let Ok(PeerReply::Migrations(list)) = reply {
            let room = crate::telemetry::migrations::MAX_IN_FLIGHT;
            all.extend(list.into_iter().take(room));
        }
    }
    all.sort_by_key(|p| p.fragment);
    all
}

/// Answer a migration request from a peer (source side, or the target's trigger).
pub async fn answer(ctx: &CoreCtx, req: PeerRequest) -> PeerReply {
    match req {
        PeerRequest::MigrateIn { fragment } => PeerReply::Migrated(migrate_in(ctx, fragment).await),
        PeerRequest::Export { lo, hi, .. } => {
            PeerReply::Exported(describe_regions(ctx, &lo, hi.as_ref()))
        }
        PeerRequest::Tails { lo, hi, verify } => {
            PeerReply::Tails(tails(ctx, &lo, hi.as_ref(), &verify))
        }
        PeerRequest::Fence {
            fragment,
            lo,
            hi,
            verified_to,
        } => PeerReply::Fenced(fence(ctx, fragment, &lo, hi.as_ref(), &verified_to)),
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
