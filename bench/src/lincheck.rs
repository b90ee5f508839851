//! A linearizability checker for one register (one key): Wing & Gong's search with
//! Lowe's just-in-time linearization and memoisation of (linearized set, value).
//!
//! A history is a set of operations, each with the interval in which it ran, taken
//! from one clock by the clients. Op A precedes op B in real time iff A completed
//! strictly before B was invoked; everything else is concurrent. The history is
//! linearizable iff there is a total order of its operations that respects real-time
//! precedence and in which every read returns the value of the latest write before
//! it (or `None`, the register's initial value, when there is none).
//!
//! An operation whose outcome is unknown (an error reply or a timeout) has no
//! completion: a write may then have taken effect at any point after its invocation,
//! or never; a read observed nothing and constrains nothing, so it is left out.
//!
//! Keys are independent registers, so a multi-key history is checked key by key
//! (linearizability is compositional).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What an operation did to the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<V> {
    /// Set the register to this value.
    Write(V),
    /// Read this value (`None`: the key did not exist).
    Read(Option<V>),
}

/// One operation on one register, with its interval on the test's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<V> {
    /// Who issued it (for reports only; the check needs only the intervals).
    pub client: usize,
    pub action: Action<V>,
    /// When the request was about to be sent.
    pub invoked: u64,
    /// When its reply had been received; `None` when the outcome is unknown.
    pub completed: Option<u64>,
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists.
    Violation,
    /// The search hit its step budget before deciding.
    Undecided {
        steps: u64,
    },
}

/// Steps of the search allowed per check by [`check`]'s callers that have no better idea.
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Register states: 0 is "absent", `i + 1` is the i-th distinct written value.
type State = u32;

/// The history with values interned, reads of unknown outcome dropped.
struct Prepared {
    /// Per kept op: the index into the caller's slice.
    origin: Vec<usize>,
    /// Per kept op: `Some(state)` for a write, `None` for a read, and the value read.
    writes: Vec<Option<State>>,
    reads: Vec<State>,
    invoked: Vec<u64>,
    completed: Vec<u64>,
    /// A read returned a value that no operation wrote: no search needed.
    unwritten_read: bool,
    /// Every write wrote a different value (see `search` for what that buys).
    unique_writes: bool,
}

fn prepare<V: Eq + Hash>(ops: &[Op<V>]) -> Prepared {
    let mut ids: HashMap<&V, State> = HashMap::new();
    for op in ops {
        if let Action::Write(v) = &op.action {
            let next = ids.len() as State + 1;
            ids.entry(v).or_insert(next);
        }
    }
    let mut p = Prepared {
        origin: Vec::new(),
        writes: Vec::new(),
        reads: Vec::new(),
        invoked: Vec::new(),
        completed: Vec::new(),
        unwritten_read: false,
        unique_writes: ops
            .iter()
            .filter(|o| matches!(o.action, Action::Write(_)))
            .count()
            == ids.len(),
    };
    for (i, op) in ops.iter().enumerate() {
        let (write, read) = match &op.action {
            Action::Write(v) => (Some(ids[v]), 0),
            Action::Read(_) if op.completed.is_none() => continue,
            Action::Read(None) => (None, 0),
            Action::Read(Some(v)) => match ids.get(v) {
                Some(&id) => (None, id),
                None => {
                    p.unwritten_read = true;
                    (None, State::MAX)
                }
            },
        };
        p.origin.push(i);
        p.writes.push(write);
        p.reads.push(read);
        p.invoked.push(op.invoked);
        p.completed.push(op.completed.unwrap_or(u64::MAX));
    }
    p
}

/// Decide whether `ops` (one register, initially absent) is linearizable, giving up
/// after `budget` search steps.
pub fn check<V: Eq + Hash>(ops: &[Op<V>], budget: u64) -> Verdict {
    let p = prepare(ops);
    if p.unwritten_read {
        return Verdict::Violation;
    }
    search(&p, budget)
}

fn search(p: &Prepared, budget: u64) -> Verdict {
    let n = p.writes.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events: 1..=n are calls of op e-1, n+1..=2n returns of op e-n-1; 0 is the head.
    // Sorted by time; at equal times calls come first, so touching intervals count
    // as concurrent (the lenient reading of "completed before invoked").
    let mut order: Vec<usize> = (1..=2 * n).collect();
    let key = |e: usize| -> (u64, bool, usize) {
        if e <= n {
            (p.invoked[e - 1], false, e)
        } else {
            (p.completed[e - n - 1], true, e)
        }
    };
    order.sort_by_key(|&e| key(e));
    let end = 2 * n + 1;
    let mut next = vec![end; 2 * n + 2];
    let mut prev = vec![0; 2 * n + 2];
    let mut last = 0;
    for &e in &order {
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    next[last] = end;
    prev[end] = last;

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: State = 0;
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    // (call event, state before it)
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut entry = next[0];
    let mut steps = 0u64;
    while next[0] != end {
        steps += 1;
        if steps > budget {
            return Verdict::Undecided { steps };
        }
        let mut backtrack = entry > n;
        if !backtrack {
            let op = entry - 1;
            let after = match p.writes[op] {
                Some(v) => Some(v),
                None => (p.reads[op] == state).then_some(state),
            };
            if let Some(after) = after {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    // Lift the call and its return out of the list.
                    let ret = op + n + 1;
                    for e in [entry, ret] {
                        next[prev[e]] = next[e];
                        prev[next[e]] = prev[e];
                    }
                    entry = next[0];
                    if p.unique_writes {
                        // Reads that may go now go first (see below): scan this
                        // level's candidates, the calls before the first return.
                        let mut e = entry;
                        while e <= n {
                            if p.writes[e - 1].is_none() && p.reads[e - 1] == state {
                                entry = e;
                                break;
                            }
                            e = next[e];
                        }
                    }
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
                // A read that may go now, from a configuration already explored:
                // this level is exhausted (see below).
                backtrack = p.unique_writes && p.writes[op].is_none();
            }
            if !backtrack {
                entry = next[entry];
                continue;
            }
        }
        // A return before its call was linearized (or a level known to fail): undo
        // the latest choice and try the next candidate after it.
        //
        // With unique write values, a read that may go now can always go first: the
        // state it reads can never come back once changed, so in any linearization
        // from here only reads lie between now and it. So when a level chose a read
        // and failed, the other candidates of that level would fail too: pop on.
        loop {
            let Some((call, before)) = stack.pop() else {
                return Verdict::Violation;
            };
            let op = call - 1;
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            let ret = op + n + 1;
            for e in [ret, call] {
                next[prev[e]] = e;
                prev[next[e]] = e;
            }
            entry = next[call];
            if !(p.unique_writes && p.writes[op].is_none()) {
                break;
            }
        }
    }
    Verdict::Linearizable
}

/// The smallest non-linearizable sub-history of `ops` this can find, as indices into
/// `ops`, sorted by invocation; `None` when `ops` is not shown to be a violation.
///
/// Sound by construction: a sub-history that keeps, for every read it keeps, the
/// write whose value it read is linearizable whenever the whole is (restrict the
/// whole's linearization to it). So every candidate is closed that way, and any
/// candidate that fails the check proves the whole history wrong. Shrinking: the
/// shortest failing prefix (by invocation), then the shortest failing suffix of that,
/// then ops dropped one at a time while `time_limit` lasts.
pub fn minimal_violation<V: Eq + Hash>(
    ops: &[Op<V>],
    budget: u64,
    time_limit: Duration,
) -> Option<Vec<usize>> {
    if check(ops, budget) != Verdict::Violation {
        return None;
    }
    let started = Instant::now();
    let mut by_invocation: Vec<usize> = (0..ops.len()).collect();
    by_invocation.sort_by_key(|&i| (ops[i].invoked, i));
    let writer_of = {
        let mut m: HashMap<&V, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if let Action::Write(v) = &op.action {
                m.entry(v).or_insert(i);
            }
        }
        m
    };
    // The candidate with every read's write added.
    let close = |picked: &[usize]| -> Vec<usize> {
        let mut set: Vec<usize> = picked.to_vec();
        for &i in picked {
            if let Action::Read(Some(v)) = &ops[i].action {
                if let Some(&w) = writer_of.get(v) {
                    set.push(w);
                }
            }
        }
        set.sort_by_key(|&i| (ops[i].invoked, i));
        set.dedup();
        set
    };
    let fails = |set: &[usize]| -> bool {
        let sub: Vec<&Op<V>> = set.iter().map(|&i| &ops[i]).collect();
        let owned: Vec<Op<&V>> = sub
            .iter()
            .map(|op| Op {
                client: op.client,
                action: match &op.action {
                    Action::Write(v) => Action::Write(v),
                    Action::Read(r) => Action::Read(r.as_ref()),
                },
                invoked: op.invoked,
                completed: op.completed,
            })
            .collect();
        check(&owned, budget) == Verdict::Violation
    };
    // Shortest failing prefix: binary search on its length (the full one fails).
    let (mut lo, mut hi) = (1, by_invocation.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&close(&by_invocation[..mid])) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let prefix = &by_invocation[..hi];
    // Then the shortest failing suffix of it.
    let (mut lo, mut hi) = (0, prefix.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fails(&close(&prefix[mid..])) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut current = close(&prefix[lo..]);
    // Then one op at a time, latest first.
    let mut i = current.len();
    while i > 0 && started.elapsed() < time_limit {
        i -= 1;
        let removed = current[i];
        let candidate: Vec<usize> = current
            .iter()
            .copied()
            .filter(|&j| {
                if j == removed {
                    return false;
                }
                // A read whose write goes goes with it.
                match (&ops[removed].action, &ops[j].action) {
                    (Action::Write(w), Action::Read(Some(r))) => w != r,
                    _ => true,
                }
            })
            .collect();
        let candidate = close(&candidate);
        if fails(&candidate) {
            current = candidate;
            i = i.min(current.len());
        }
    }
    Some(current)
}

/// A printable table of `ops[indices]`, times in µs from the earliest invocation;
/// `show` renders a value.
pub fn describe<V>(ops: &[Op<V>], indices: &[usize], show: impl Fn(&V) -> String) -> String {
    let t0 = indices.iter().map(|&i| ops[i].invoked).min().unwrap_or(0);
    let us = |t: u64| t.saturating_sub(t0) as f64 / 1000.0;
    let mut out = String::new();
    for &i in indices {
        let op = &ops[i];
        let what = match &op.action {
            Action::Write(v) => format!("write {}", show(v)),
            Action::Read(Some(v)) => format!("read  {}", show(v)),
            Action::Read(None) => "read  <absent>".to_string(),
        };
        let done = match op.completed {
            Some(c) => format!("{:>12.1}", us(c)),
            None => format!("{:>12}", "unknown"),
        };
        out.push_str(&format!(
            "  op {i:>6} client {:>2} [{:>12.1} .. {done}] us  {what}\n",
            op.client,
            us(op.invoked)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn w(client: usize, v: u32, invoked: u64, completed: u64) -> Op<u32> {
        Op {
            client,
            action: Action::Write(v),
            invoked,
            completed: Some(completed),
        }
    }
    fn w_unknown(client: usize, v: u32, invoked: u64) -> Op<u32> {
        Op {
            client,
            action: Action::Write(v),
            invoked,
            completed: None,
        }
    }
    fn r(client: usize, v: Option<u32>, invoked: u64, completed: u64) -> Op<u32> {
        Op {
            client,
            action: Action::Read(v),
            invoked,
            completed: Some(completed),
        }
    }
    fn ok(ops: &[Op<u32>]) -> bool {
        match check(ops, DEFAULT_BUDGET) {
            Verdict::Linearizable => true,
            Verdict::Violation => false,
            Verdict::Undecided { .. } => panic!("undecided"),
        }
    }

    #[test]
    fn sequential_history_is_accepted() {
        assert!(ok(&[
            r(0, None, 0, 5),
            w(0, 1, 10, 20),
            r(1, Some(1), 30, 40),
            w(1, 2, 50, 60),
            r(0, Some(2), 70, 80),
        ]));
        assert!(ok(&[]));
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        assert!(!ok(&[
            w(0, 1, 0, 10),
            w(0, 2, 20, 30),
            r(1, Some(1), 40, 50),
        ]));
        // The initial value is stale too once a write completed.
        assert!(!ok(&[w(0, 1, 0, 10), r(1, None, 20, 30)]));
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        assert!(!ok(&[w(0, 1, 0, 10), r(1, Some(7), 0, 30)]));
        assert!(!ok(&[r(1, Some(7), 0, 30)]));
    }

    #[test]
    fn read_going_back_in_time_is_rejected() {
        // Both reads overlap the second write, but once one saw 2 a later one can't see 1.
        assert!(!ok(&[
            w(0, 1, 0, 10),
            w(0, 2, 20, 100),
            r(1, Some(2), 30, 40),
            r(2, Some(1), 50, 60),
        ]));
        // The same with the reads concurrent with each other is fine.
        assert!(ok(&[
            w(0, 1, 0, 10),
            w(0, 2, 20, 100),
            r(1, Some(2), 30, 55),
            r(2, Some(1), 50, 60),
        ]));
    }

    #[test]
    fn read_before_the_write_was_invoked_is_rejected() {
        assert!(!ok(&[r(1, Some(1), 0, 10), w(0, 1, 20, 30)]));
        assert!(!ok(&[r(1, Some(1), 0, 10), w_unknown(0, 1, 20)]));
    }

    #[test]
    fn concurrent_histories_are_accepted() {
        // Reads overlapping a write may see either side of it.
        assert!(ok(&[
            w(0, 1, 0, 100),
            r(1, None, 10, 20),
            r(2, Some(1), 30, 40),
            r(1, Some(1), 50, 60),
        ]));
        // Two overlapping writes may take effect in either order.
        assert!(ok(&[
            w(0, 1, 0, 50),
            w(1, 2, 10, 60),
            r(2, Some(1), 70, 80),
        ]));
        assert!(ok(&[
            w(0, 1, 0, 50),
            w(1, 2, 10, 60),
            r(2, Some(2), 70, 80),
        ]));
        // ... but not in both.
        assert!(!ok(&[
            w(0, 1, 0, 50),
            w(1, 2, 10, 60),
            r(2, Some(2), 70, 80),
            r(2, Some(1), 90, 95),
        ]));
    }

    #[test]
    fn unknown_write_may_take_effect_late_or_never() {
        // Never.
        assert!(ok(&[w_unknown(0, 1, 0), r(1, None, 100, 110)]));
        // Long after it was sent.
        assert!(ok(&[
            w_unknown(0, 1, 0),
            r(1, None, 100, 110),
            r(1, Some(1), 1000, 1010)
        ]));
        // But once seen, it stays seen until overwritten.
        assert!(!ok(&[
            w_unknown(0, 1, 0),
            r(1, Some(1), 100, 110),
            r(1, None, 200, 210)
        ]));
        assert!(ok(&[
            w_unknown(0, 1, 0),
            r(1, Some(1), 100, 110),
            w(2, 2, 150, 160),
            r(1, Some(2), 200, 210)
        ]));
        // An unknown read constrains nothing.
        assert!(ok(&[
            w(0, 1, 0, 10),
            Op {
                client: 1,
                action: Action::Read(Some(99)),
                invoked: 20,
                completed: None
            },
        ]));
    }

    /// Brute force: some order of the ops that respects real time and register semantics.
    fn brute_force(ops: &[Op<u32>]) -> bool {
        let ops: Vec<&Op<u32>> = ops
            .iter()
            .filter(|o| o.completed.is_some() || matches!(o.action, Action::Write(_)))
            .collect();
        fn go(ops: &[&Op<u32>], done: &mut Vec<bool>, state: Option<u32>) -> bool {
            if done.iter().all(|&d| d) {
                return true;
            }
            for i in 0..ops.len() {
                if done[i] {
                    continue;
                }
                // i may go next only if no pending op completed before i was invoked.
                let blocked = (0..ops.len()).any(|j| {
                    !done[j] && j != i && ops[j].completed.is_some_and(|c| c < ops[i].invoked)
                });
                if blocked {
                    continue;
                }
                let next = match &ops[i].action {
                    Action::Write(v) => Some(*v),
                    Action::Read(v) if *v == state => state,
                    Action::Read(_) => continue,
                };
                done[i] = true;
                if go(ops, done, next) {
                    return true;
                }
                done[i] = false;
            }
            // Unknown writes may also never happen.
            let unknown: Vec<usize> = (0..ops.len())
                .filter(|&i| !done[i] && ops[i].completed.is_none())
                .collect();
            if !unknown.is_empty() && (0..ops.len()).all(|i| done[i] || ops[i].completed.is_none())
            {
                return true;
            }
            false
        }
        go(&ops, &mut vec![false; ops.len()], None)
    }

    /// Unique write values unless `values` is small (then the search cannot prune reads).
    fn random_history(rng: &mut StdRng, n: usize, values: u32) -> Vec<Op<u32>> {
        (0..n)
            .map(|i| {
                let invoked = rng.gen_range(0..40);
                let completed = invoked + rng.gen_range(0..15);
                let action = if rng.gen_bool(0.4) {
                    Action::Write(if values < n as u32 {
                        rng.gen_range(0..values)
                    } else {
                        i as u32
                    })
                } else {
                    let v = rng.gen_range(0..=values);
                    Action::Read((v > 0).then(|| v - 1))
                };
                let completed = if rng.gen_bool(0.1) && matches!(action, Action::Write(_)) {
                    None
                } else {
                    Some(completed)
                };
                Op {
                    client: i,
                    action,
                    invoked,
                    completed,
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let n = rng.gen_range(1..=7);
            let values = if rng.gen_bool(0.5) { n as u32 } else { 2 };
            let h = random_history(&mut rng, n, values);
            let expected = brute_force(&h);
            assert_eq!(ok(&h), expected, "{h:#?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both answers must be well represented for the comparison to mean anything.
        assert!(yes > 300 && no > 300, "yes {yes}, no {no}");
    }

    /// A register run for real: every op takes effect at a random point in its interval.
    fn linearizable_history(rng: &mut StdRng, clients: usize, per_client: usize) -> Vec<Op<u32>> {
        let mut events = Vec::new(); // (effect time, client, invoked, completed, is_write)
        for c in 0..clients {
            let mut t = rng.gen_range(0..50u64);
            for _ in 0..per_client {
                let invoked = t;
                let completed = invoked + rng.gen_range(1..100);
                let effect = rng.gen_range(invoked..=completed);
                events.push((effect, c, invoked, completed, rng.gen_bool(0.3)));
                t = completed + rng.gen_range(0..20);
            }
        }
        events.sort();
        let mut state = None;
        let mut next_value = 0;
        events
            .into_iter()
            .map(|(_, c, invoked, completed, write)| {
                let action = if write {
                    next_value += 1;
                    state = Some(next_value);
                    Action::Write(next_value)
                } else {
                    Action::Read(state)
                };
                Op {
                    client: c,
                    action,
                    invoked,
                    completed: Some(completed),
                }
            })
            .collect()
    }

    #[test]
    fn large_linearizable_histories_are_accepted_and_a_stale_read_is_found() {
        let mut rng = StdRng::seed_from_u64(11);
        for round in 0..5 {
            let mut h = linearizable_history(&mut rng, 9, 300);
            assert!(ok(&h), "round {round}");
            // Make one read after the middle return the value before the latest completed write.
            let mid = h.iter().map(|o| o.invoked).max().unwrap() / 2;
            let mut last_writes: Vec<&Op<u32>> = h
                .iter()
                .filter(|o| matches!(o.action, Action::Write(_)) && o.completed.unwrap() < mid)
                .collect();
            last_writes.sort_by_key(|o| o.completed);
            let stale = last_writes.iter().rev().find_map(|o| match o.action {
                Action::Write(v) => {
                    // a write that was certainly overwritten before `mid`
                    let overwritten = h.iter().any(|p| {
                        matches!(p.action, Action::Write(_))
                            && p.invoked > o.completed.unwrap()
                            && p.completed.unwrap() < mid
                    });
                    overwritten.then_some(v)
                }
                _ => None,
            });
            let stale = stale.expect("an overwritten write");
            h.push(r(99, Some(stale), mid, mid + 1));
            assert!(!ok(&h), "round {round}");
            let small = minimal_violation(&h, DEFAULT_BUDGET, Duration::from_secs(10))
                .expect("a violation");
            assert!(
                small.len() <= 4,
                "{}",
                describe(&h, &small, |v| v.to_string())
            );
            assert!(small.contains(&(h.len() - 1)));
        }
    }

    #[test]
    fn minimal_violation_is_none_for_a_good_history() {
        let h = [w(0, 1, 0, 10), r(1, Some(1), 20, 30)];
        assert_eq!(
            minimal_violation(&h, DEFAULT_BUDGET, Duration::from_secs(1)),
            None
        );
    }
}
