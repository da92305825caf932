//! Boots that do not depend on each other, run side by side (`--jobs`):
//! each takes as many units of the budget as it has vCPUs (at most the
//! whole budget), so the host is never asked for more CPUs than it has;
//! results are handed on in the plan's order, as soon as each and every
//! one before it is done, so the output reads the same however the boots
//! interleaved.

use std::sync::{mpsc, Condvar, Mutex, PoisonError};
use std::thread;

/// Run each `(cost, job)` through `work` on a thread of its own, with at
/// most `budget` cost in flight, and give `done` every result in `jobs`'
/// order. A job that costs more than the budget runs alone.
pub fn run_in_order<J, R, W, D>(jobs: Vec<(u32, J)>, budget: u32, work: W, mut done: D)
where
    J: Send,
    R: Send,
    W: Fn(J) -> R + Sync,
    D: FnMut(usize, R),
{
    let budget = budget.max(1);
    let free = Mutex::new(budget);
    let freed = Condvar::new();
    let n = jobs.len();
    let (tx, rx) = mpsc::channel();
    thread::scope(|scope| {
        for (i, (cost, job)) in jobs.into_iter().enumerate() {
            let cost = cost.clamp(1, budget);
            let (tx, free, freed, work) = (tx.clone(), &free, &freed, &work);
            scope.spawn(move || {
                {
                    let mut left = free.lock().unwrap_or_else(PoisonError::into_inner);
                    while *left < cost {
                        left = freed.wait(left).unwrap_or_else(PoisonError::into_inner);
                    }
                    *left -= cost;
                }
                let result = work(job);
                *free.lock().unwrap_or_else(PoisonError::into_inner) += cost;
                freed.notify_all();
                let _ = tx.send((i, result));
            });
        }
        drop(tx);
        let mut finished: Vec<Option<R>> = (0..n).map(|_| None).collect();
        let mut next = 0;
        for (i, result) in rx {
            finished[i] = Some(result);
            while let Some(result) = finished.get_mut(next).and_then(Option::take) {
                done(next, result);
                next += 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[test]
    fn results_come_in_order_and_the_budget_is_never_exceeded() {
        let in_flight = AtomicU32::new(0);
        let peak = AtomicU32::new(0);
        // Costs 1, 2, 3, 1, ...; later jobs are quicker, so they finish
        // first and must wait their turn to be handed on.
        let jobs: Vec<(u32, (u32, u64))> = (0..8u32)
            .map(|i| (1 + i % 3, (1 + i % 3, 40 - 4 * u64::from(i))))
            .collect();
        let mut order = Vec::new();
        run_in_order(
            jobs,
            3,
            |(cost, ms)| {
                let now = in_flight.fetch_add(cost, Ordering::SeqCst) + cost;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(ms));
                in_flight.fetch_sub(cost, Ordering::SeqCst);
                ms
            },
            |i, ms| order.push((i, ms)),
        );
        let expected: Vec<(usize, u64)> = (0..8).map(|i| (i, 40 - 4 * i as u64)).collect();
        assert_eq!(order, expected);
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (2..=3).contains(&peak),
            "peak {peak}: over budget, or nothing side by side"
        );
    }

    #[test]
    fn a_job_bigger_than_the_budget_runs_alone_and_one_job_is_enough() {
        let mut got = Vec::new();
        run_in_order(vec![(8, 'a'), (1, 'b')], 2, |c| c, |i, c| got.push((i, c)));
        assert_eq!(got, [(0, 'a'), (1, 'b')]);
        let mut none = 0;
        run_in_order(Vec::<(u32, ())>::new(), 0, |_| (), |_, _| none += 1);
        assert_eq!(none, 0);
    }
}
