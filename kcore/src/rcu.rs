//! Grace periods for classic RCU: non-preemptible, quiescent-state based.
//!
//! A reader runs with preemption off, so a CPU that context switches or
//! idles holds nothing it found under an earlier `rcu_read_lock`: it has
//! passed a quiescent state. A grace period that starts after `call_rcu`
//! and ends once every online CPU has passed a quiescent state since it
//! started outlives every reader that could have seen the old object, so the
//! callback may then free it. This is the bookkeeping of Linux's old
//! rcuclassic.c, per CPU "next / wait / done" lists and a mask of CPUs the
//! current grace period still waits for, as plain data: the guest wraps
//! it in an irq-safe lock and keeps the read side (preemption) itself.
//!
//! Grace periods are numbered from 1 in the order they start; at most one
//! is in progress, so `gp_seq() - completed()` is 0 or 1.

use alloc::vec::Vec;
use core::mem;

/// Buckets of [`Counters::batch_hist`]: sizes 0, 1, 2–3, 4–7, ..., 64 and up.
pub const BATCH_BUCKETS: usize = 8;

/// The bucket a grace period that made `n` callbacks ready is counted in.
pub fn batch_bucket(n: u64) -> usize {
    if n == 0 {
        0
    } else {
        ((u64::BITS - n.leading_zeros()) as usize).min(BATCH_BUCKETS - 1)
    }
}

/// Smallest batch size counted in bucket `i` (the bucket ends below the
/// next one's start; the last is open-ended).
pub fn batch_bucket_start(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1 << (i - 1)
    }
}

/// Everything the state machine has seen, exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    pub gps_started: u64,
    pub gps_completed: u64,
    pub callbacks_queued: u64,
    /// Handed out by `take_done` (the guest runs them right after).
    pub callbacks_run: u64,
    /// Queued and not yet handed out: `callbacks_queued - callbacks_run`.
    pub pending: u64,
    /// Callbacks that became ready when the last grace period completed.
    pub last_batch: u64,
    pub max_batch: u64,
    /// Completed grace periods by batch size (see [`batch_bucket`]); a
    /// batch of 0 is a grace period `wait_target` asked for with no
    /// callbacks waiting.
    pub batch_hist: [u64; BATCH_BUCKETS],
}

struct Queued<C> {
    /// Global enqueue order, for `rcu_barrier`.
    seq: u64,
    cb: C,
}

struct PerCpu<C> {
    online: bool,
    /// The current grace period still waits for this CPU.
    need_qs: bool,
    /// Queued since the current grace period started: they wait for the
    /// next one, which starts after them.
    next: Vec<Queued<C>>,
    /// Waiting for the grace period in progress (all queued before it began).
    wait: Vec<Queued<C>>,
    /// Their grace period is over: ready for `take_done`.
    done: Vec<Queued<C>>,
}

pub struct Rcu<C> {
    cpus: Vec<PerCpu<C>>,
    /// Number of the last grace period started (0: none yet).
    started: u64,
    completed: u64,
    /// CPUs the grace period in progress still waits for.
    qs_left: usize,
    /// Highest grace-period number `wait_target` promised someone.
    requested: u64,
    counters: Counters,
}

impl<C> Rcu<C> {
    /// `n_cpus` CPUs, all online, no grace period yet.
    pub fn new(n_cpus: usize) -> Self {
        Rcu {
            cpus: (0..n_cpus)
                .map(|_| PerCpu {
                    online: true,
                    need_qs: false,
                    next: Vec::new(),
                    wait: Vec::new(),
                    done: Vec::new(),
                })
                .collect(),
            started: 0,
            completed: 0,
            qs_left: 0,
            requested: 0,
            counters: Counters::default(),
        }
    }

    pub fn n_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Queue `cb` on `cpu` (panics if `cpu >= n_cpus`, like an index). It
    /// becomes ready when a grace period that starts after this call has
    /// completed; one starts now if none is in progress.
    pub fn call_rcu(&mut self, cpu: usize, cb: C) {
        let seq = self.counters.callbacks_queued;
        // Always "next", even with a grace period in progress: that one may
        // have started before a reader that can still see the object.
        self.cpus[cpu].next.push(Queued { seq, cb });
        self.counters.callbacks_queued += 1;
        self.counters.pending += 1;
        self.advance();
    }

    /// `cpu` passed a quiescent state (context switch, idle, user mode):
    /// it holds no reference found under an earlier `rcu_read_lock`. The
    /// guest must not call this from inside a read-side section.
    pub fn quiescent_state(&mut self, cpu: usize) {
        let c = &mut self.cpus[cpu];
        if c.need_qs {
            c.need_qs = false;
            self.qs_left -= 1;
            self.advance();
        }
    }

    /// A quiescent state `cpu` noted earlier, without the lock, when
    /// `gp_seq()` read `noted_gp` (Linux's `rcu_qs()` sets a per-CPU flag
    /// at the context switch; the tick reports it). It counts only for that
    /// grace period, and only if it is still in progress: a note taken
    /// before a grace period started says nothing about readers that began
    /// before that start. Returns whether it counted.
    pub fn noted_quiescent_state(&mut self, cpu: usize, noted_gp: u64) -> bool {
        let counts = self.gp_in_progress() && noted_gp == self.started && self.cpus[cpu].need_qs;
        if counts {
            self.quiescent_state(cpu);
        }
        counts
    }

    /// An offline CPU runs no readers, so the grace period stops waiting
    /// for it; a CPU coming online has no readers older than the grace
    /// period in progress, so that one does not wait for it either. Its
    /// callbacks stay on its lists.
    pub fn set_online(&mut self, cpu: usize, online: bool) {
        let c = &mut self.cpus[cpu];
        c.online = online;
        if !online && c.need_qs {
            c.need_qs = false;
            self.qs_left -= 1;
            self.advance();
        }
    }

    pub fn is_online(&self, cpu: usize) -> bool {
        self.cpus[cpu].online
    }

    /// The callbacks `cpu` queued whose grace period is over, oldest first.
    /// They count as run: the guest invokes them right away, outside its lock.
    pub fn take_done(&mut self, cpu: usize) -> impl ExactSizeIterator<Item = C> {
        let done = mem::take(&mut self.cpus[cpu].done);
        let n = done.len() as u64;
        self.counters.callbacks_run += n;
        self.counters.pending -= n;
        done.into_iter().map(|q| q.cb)
    }

    /// `take_done(cpu)` would hand out something.
    pub fn has_done(&self, cpu: usize) -> bool {
        !self.cpus[cpu].done.is_empty()
    }

    /// The current grace period waits for a quiescent state from `cpu`
    /// (lets the tick skip the lock when there is nothing to report).
    pub fn needs_qs(&self, cpu: usize) -> bool {
        self.cpus[cpu].need_qs
    }

    /// Number of the grace period in progress, or of the last one if none
    /// is: grace periods started so far.
    pub fn gp_seq(&self) -> u64 {
        self.started
    }

    /// Grace periods completed so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    pub fn gp_in_progress(&self) -> bool {
        self.started != self.completed
    }

    /// For `synchronize_rcu`: the value `completed()` must reach before
    /// every reader running now has finished, and a request that a grace
    /// period reaching it be started (even with no callbacks queued).
    ///
    /// Precisely: `gp_seq() + 1`, the first grace period that starts after
    /// this call (if one is in progress it may have started before a reader
    /// running now, so it does not count). Wait while `completed() <
    /// target` (or `!poll(target)`), passing quiescent states meanwhile.
    pub fn wait_target(&mut self) -> u64 {
        let target = self.started + 1;
        self.requested = self.requested.max(target);
        self.advance();
        target
    }

    /// The grace period `target` (from [`wait_target`](Self::wait_target))
    /// has completed.
    pub fn poll(&self, target: u64) -> bool {
        self.completed >= target
    }

    /// For `rcu_barrier`: a cookie naming every callback queued so far.
    pub fn barrier_cookie(&self) -> u64 {
        self.counters.callbacks_queued
    }

    /// Every callback queued before `barrier_cookie()` returned `cookie`
    /// has been handed out by `take_done` (from any CPU). The guest's
    /// `rcu_barrier` must also wait for batches it took but has not
    /// finished running. Grace periods keep starting by themselves while
    /// callbacks wait, so CPUs passing quiescent states is all it needs.
    pub fn barrier_done(&self, cookie: u64) -> bool {
        // Per CPU the lists are in enqueue order: done, wait, next.
        self.cpus.iter().all(|c| {
            let oldest = c.done.first().or(c.wait.first()).or(c.next.first());
            oldest.is_none_or(|q| q.seq >= cookie)
        })
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Complete the grace period once no CPU is left to wait for; start the
    /// next one when callbacks or a `wait_target` need it. Loops because a
    /// grace period with every CPU offline completes as it starts.
    fn advance(&mut self) {
        loop {
            if self.gp_in_progress() {
                if self.qs_left != 0 {
                    return;
                }
                self.complete_gp();
            } else if self.requested > self.started || self.cpus.iter().any(|c| !c.next.is_empty())
            {
                self.start_gp();
            } else {
                return;
            }
        }
    }

    fn start_gp(&mut self) {
        self.started += 1;
        self.counters.gps_started += 1;
        self.qs_left = 0;
        for c in &mut self.cpus {
            // The previous grace period emptied every wait list.
            debug_assert!(c.wait.is_empty());
            c.wait = mem::take(&mut c.next);
            // A quiescent state reported before this point says nothing
            // about readers that started before it: ask again.
            c.need_qs = c.online;
            self.qs_left += c.online as usize;
        }
    }

    fn complete_gp(&mut self) {
        self.completed = self.started;
        let mut batch = 0;
        for c in &mut self.cpus {
            batch += c.wait.len() as u64;
            // Move the buffer, not the elements: with every list empty the
            // state machine then holds no heap memory at all, so a leak
            // check that counts allocations does not depend on which
            // grace periods happened to have callbacks.
            let wait = mem::take(&mut c.wait);
            if c.done.is_empty() {
                c.done = wait;
            } else {
                c.done.extend(wait);
            }
        }
        let k = &mut self.counters;
        k.gps_completed += 1;
        k.last_batch = batch;
        k.max_batch = k.max_batch.max(batch);
        k.batch_hist[batch_bucket(batch)] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(r: &mut Rcu<u32>, cpu: usize) -> Vec<u32> {
        r.take_done(cpu).collect()
    }

    #[test]
    fn a_callback_waits_for_every_cpu() {
        let mut r = Rcu::new(3);
        assert_eq!(r.n_cpus(), 3);
        r.call_rcu(1, 10);
        assert!(r.gp_in_progress());
        assert_eq!(r.gp_seq(), 1);
        r.quiescent_state(0);
        r.quiescent_state(1);
        r.quiescent_state(1);
        assert_eq!(take(&mut r, 1), [] as [u32; 0], "CPU 2 may still read");
        r.quiescent_state(2);
        assert!(!r.gp_in_progress());
        assert_eq!(r.completed(), 1);
        assert!(r.has_done(1));
        assert_eq!(
            take(&mut r, 0),
            [] as [u32; 0],
            "only to the CPU that queued it"
        );
        assert_eq!(take(&mut r, 1), [10]);
        let k = r.counters();
        assert_eq!((k.callbacks_queued, k.callbacks_run, k.pending), (1, 1, 0));
        assert_eq!((k.last_batch, k.max_batch, k.batch_hist[1]), (1, 1, 1));
    }

    #[test]
    fn a_note_counts_only_for_the_grace_period_it_was_taken_in() {
        let mut r = Rcu::new(2);
        let stale = r.gp_seq(); // noted before any grace period
        r.call_rcu(0, 1);
        assert!(
            !r.noted_quiescent_state(0, stale),
            "taken before GP 1 began"
        );
        let during = r.gp_seq();
        assert!(r.noted_quiescent_state(0, during));
        assert!(!r.noted_quiescent_state(0, during), "counted once");
        assert!(r.noted_quiescent_state(1, during));
        assert_eq!(take(&mut r, 0), [1]);
        r.call_rcu(1, 2); // GP 2: the GP 1 notes are stale now
        assert!(!r.noted_quiescent_state(0, during));
        assert!(!r.noted_quiescent_state(1, during));
        assert!(r.gp_in_progress());
    }

    #[test]
    fn queued_during_a_grace_period_waits_for_the_next() {
        let mut r = Rcu::new(2);
        r.call_rcu(0, 1);
        r.quiescent_state(0);
        r.call_rcu(0, 2); // GP 1 in progress: 2 waits for GP 2
        r.quiescent_state(1); // GP 1 done; GP 2 starts for callback 2
        assert_eq!(take(&mut r, 0), [1]);
        assert_eq!(r.gp_seq(), 2);
        r.quiescent_state(0);
        assert_eq!(take(&mut r, 0), [] as [u32; 0]);
        r.quiescent_state(1);
        assert_eq!(take(&mut r, 0), [2]);
        assert!(!r.gp_in_progress());
    }

    #[test]
    fn a_quiescent_state_before_the_grace_period_does_not_count() {
        let mut r = Rcu::new(2);
        r.quiescent_state(0);
        r.quiescent_state(1);
        r.call_rcu(0, 1);
        assert!(r.needs_qs(0) && r.needs_qs(1));
        r.quiescent_state(0);
        assert_eq!(take(&mut r, 0), [] as [u32; 0]);
    }

    #[test]
    fn batches_are_counted_per_grace_period() {
        let mut r = Rcu::new(2);
        for i in 0..5 {
            r.call_rcu(i % 2, i as u32);
        }
        r.quiescent_state(0);
        r.quiescent_state(1); // GP 1: callback 0 only (the others came later)
        r.quiescent_state(0);
        r.quiescent_state(1); // GP 2: callbacks 1..5
        assert_eq!(take(&mut r, 0), [0, 2, 4]);
        assert_eq!(take(&mut r, 1), [1, 3]);
        let k = r.counters();
        assert_eq!((k.gps_completed, k.last_batch, k.max_batch), (2, 4, 4));
        assert_eq!(k.batch_hist[batch_bucket(1)], 1);
        assert_eq!(k.batch_hist[batch_bucket(4)], 1);
    }

    #[test]
    fn wait_target_starts_a_grace_period_of_its_own() {
        let mut r: Rcu<u32> = Rcu::new(2);
        let t = r.wait_target();
        assert_eq!(t, 1);
        assert!(r.gp_in_progress() && !r.poll(t));
        r.quiescent_state(0);
        r.quiescent_state(1);
        assert!(r.poll(t));
        assert!(!r.gp_in_progress(), "nothing else asked for one");
        assert_eq!(r.counters().batch_hist[0], 1, "an empty batch");
    }

    #[test]
    fn wait_target_during_a_grace_period_needs_the_next_one() {
        let mut r: Rcu<u32> = Rcu::new(2);
        r.call_rcu(0, 1);
        let t = r.wait_target();
        assert_eq!(t, 2);
        r.quiescent_state(0);
        r.quiescent_state(1);
        assert!(!r.poll(t) && r.gp_in_progress());
        r.quiescent_state(0);
        r.quiescent_state(1);
        assert!(r.poll(t));
    }

    #[test]
    fn offline_cpus_are_not_waited_for() {
        let mut r = Rcu::new(3);
        r.set_online(2, false);
        r.call_rcu(0, 1);
        assert!(!r.needs_qs(2));
        r.quiescent_state(0);
        r.set_online(1, false); // going offline ends its readers
        assert_eq!(take(&mut r, 0), [1]);
        r.set_online(0, false);
        r.call_rcu(0, 2); // nobody online: completes at once
        assert_eq!(take(&mut r, 0), [2]);
        assert!(!r.is_online(0));
    }

    #[test]
    fn barrier_covers_exactly_what_was_queued_before() {
        let mut r = Rcu::new(2);
        r.call_rcu(0, 1);
        r.call_rcu(1, 2);
        let cookie = r.barrier_cookie();
        assert!(!r.barrier_done(cookie));
        r.quiescent_state(0);
        r.quiescent_state(1);
        r.call_rcu(1, 3);
        assert_eq!(take(&mut r, 0), [1]);
        assert!(!r.barrier_done(cookie));
        r.quiescent_state(0);
        r.quiescent_state(1);
        assert_eq!(take(&mut r, 1), [2]);
        assert!(r.barrier_done(cookie), "callback 3 came later");
        assert!(!r.barrier_done(r.barrier_cookie()));
    }

    #[test]
    fn buckets() {
        let b: Vec<usize> = [0, 1, 2, 3, 4, 7, 8, 63, 64, 1000]
            .iter()
            .map(|&n| batch_bucket(n))
            .collect();
        assert_eq!(b, [0, 1, 2, 2, 3, 3, 4, 6, 7, 7]);
        for i in 0..BATCH_BUCKETS {
            assert_eq!(batch_bucket(batch_bucket_start(i)), i);
        }
    }
}
