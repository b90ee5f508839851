//! The controller on the runtime. Core 0 of every node runs [`run`]; only the node that
//! leads the ownership table acts (a new leader starts with a fresh history). Each tick
//! the table, the telemetry (rates, fragment sizes) and live hints go in; decisions come
//! out and are carried out one migration at a time; outcomes go back for feedback.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::cmd::args::now_ms;
use crate::core::CoreCtx;
use crate::ownership::FragmentState;

use super::{Action, Controller, ControllerConfig, FragmentView, Hint, Policy, TickInput};

pub async fn run(ctx: Rc<CoreCtx>) {
    let tick = Duration::from_millis(ctx.shared.config.telemetry_interval_ms.max(10));
    let mut controller = Controller::new(
        Policy::Static,
        ControllerConfig {
            tick_ms: tick.as_millis() as u64,
            ..ControllerConfig::default()
        },
    );
    // Migrations in flight (at most `max_moves_per_tick`, each of its own fragment), and
    // finished ones not yet reported. A hot range usually spans several fragments; moved
    // one at a time, the last would arrive ticks after its clients.
    let in_flight = Rc::new(RefCell::new(0usize));
    let finished: Rc<RefCell<Vec<(u64, bool)>>> = Rc::default();
    let mut leading = false;
    loop {
        glommio::timer::sleep(tick).await;
        let Some(ownership) = ctx.shared.ownership.get() else {
            continue;
        };
        let now = now_ms();
        for (fragment, moved) in finished.borrow_mut().drain(..) {
            controller.outcome(fragment, moved, now);
        }
        let me = ownership.node_id();
        let leader = ownership.status().leader == Some(me);
        if leader != leading {
            leading = leader;
            if leader {
                // History built elsewhere is not ours: start afresh as the leader.
                controller = Controller::new(Policy::Static, controller.config().clone());
            }
        }
        if !leader {
            continue;
        }
        let policy = ctx.shared.policy().parse().unwrap_or(Policy::Static);
        controller.set_policy(policy);
        controller.calibrate(crate::telemetry::stats::peer_rtt_us(&ctx.shared.stats) as f64);
        let table = ownership.table();
        let (rates, sizes, orders) = {
            let mut t = ctx.shared.telemetry();
            (t.rates(), t.sizes(), t.take_orders())
        };
        let fragments: Vec<FragmentView> = table
            .fragments
            .values()
            .map(|f| FragmentView {
                id: f.id,
                owner: f.owner,
                bytes: sizes.get(&f.id).copied().unwrap_or(0),
                stable: f.state == FragmentState::Stable,
                lo: f.lo.clone(),
                hi: f.hi.clone(),
            })
            .collect();
        let nodes: Vec<u64> = table.members.keys().copied().collect();
        let hints: Vec<Hint> = ctx
            .shared
            .hints(now)
            .into_iter()
            .map(|h| Hint {
                lo: h.lo.to_vec(),
                hi: h.hi.map(|b| b.to_vec()),
                node: h.node,
                until_ms: h.until_ms,
            })
            .collect();
        let decisions = controller.tick(&TickInput {
            now_ms: now,
            fragments: &fragments,
            nodes: &nodes,
            rates: &rates,
            hints: &hints,
            orders: &orders,
        });
        *ctx.shared.placement_report() = controller.report();
        for d in decisions {
            let Action::Migrate { fragment, to } = d.action;
            if *in_flight.borrow() >= controller.config().max_moves_per_tick.max(1) {
                finished.borrow_mut().push((fragment, false));
                continue;
            }
            tracing::info!(
                fragment,
                to,
                policy = policy.name(),
                benefit_us = d.predicted_benefit_us,
                cost_us = d.cost_us,
                reason = %d.reason,
                "placement decision"
            );
            *in_flight.borrow_mut() += 1;
            let (ctx, in_flight, finished) = (ctx.clone(), in_flight.clone(), finished.clone());
            glommio::spawn_local(async move {
                let result = crate::migrate::start(&ctx, fragment, to).await;
                if let Err(e) = &result {
                    tracing::warn!(fragment, to, "placement migration failed: {e}");
                }
                finished.borrow_mut().push((fragment, result.is_ok()));
                *in_flight.borrow_mut() -= 1;
            })
            .detach();
        }
    }
}
