//! `Rcu` under random interleavings of call_rcu, quiescent states,
//! take_done, CPU hotplug, synchronize_rcu and rcu_barrier on 1-4 CPUs.
//!
//! The safety model does not trust the grace-period counter: for each
//! callback it keeps the set of CPUs that were online when it was queued
//! and have not passed a quiescent state (or gone offline) since. A reader
//! on such a CPU may still see the object, so the callback must not be
//! handed out while the set is non-empty. On top of that, the counter view:
//! a callback queued while `gp_seq()` was `s` waits for grace period `s+1`
//! and is handed out exactly when `completed() >= s+1`, to its own CPU,
//! oldest first, once. Quiescent states may also be noted without the lock
//! and reported later (`noted_quiescent_state`, as the guest's tick does):
//! the note is when the CPU quiesced, so only callbacks queued before it
//! lose that CPU as a reader.
use kcore::rcu::Rcu;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Call(usize),
    Qs(usize),
    Note(usize),
    Report(usize),
    Take(usize),
    Online(usize, bool),
    Sync,
    Barrier,
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n).prop_map(Op::Call),
        6 => (0..n).prop_map(Op::Qs),
        3 => (0..n).prop_map(Op::Note),
        3 => (0..n).prop_map(Op::Report),
        3 => (0..n).prop_map(Op::Take),
        1 => (0..n, any::<bool>()).prop_map(|(c, o)| Op::Online(c, o)),
        1 => Just(Op::Sync),
        1 => Just(Op::Barrier),
    ]
}

fn case() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1usize..=4).prop_flat_map(|n| (Just(n), prop::collection::vec(op(n), 0..120)))
}

struct Cb {
    cpu: usize,
    gp_at_enqueue: u64,
    /// CPUs whose readers might still see the object.
    readers: u32,
    taken: bool,
}

struct Model {
    cbs: Vec<Cb>,
    online: u32,
    syncs: Vec<(u64, u32)>,
    barriers: Vec<u64>,
    run: u64,
    last_taken: Vec<Option<usize>>,
    /// Per CPU: `gp_seq()` when it last noted a quiescent state.
    noted: Vec<u64>,
}

impl Model {
    /// `cpu` can no longer be inside a reader that began earlier.
    fn quiesce(&mut self, cpu: usize) {
        for cb in &mut self.cbs {
            cb.readers &= !(1 << cpu);
        }
        for s in &mut self.syncs {
            s.1 &= !(1 << cpu);
        }
    }
}

fn take(r: &mut Rcu<usize>, m: &mut Model, cpu: usize) -> Result<(), TestCaseError> {
    let got: Vec<usize> = r.take_done(cpu).collect();
    for &id in &got {
        let cb = &mut m.cbs[id];
        prop_assert!(!cb.taken, "callback {} handed out twice", id);
        prop_assert_eq!(cb.cpu, cpu, "callback {} to the wrong CPU", id);
        prop_assert_eq!(
            cb.readers,
            0,
            "callback {} handed out while CPUs {:#b} may still read",
            id,
            cb.readers
        );
        prop_assert!(
            r.completed() > cb.gp_at_enqueue,
            "callback {} before its grace period",
            id
        );
        prop_assert!(m.last_taken[cpu] < Some(id), "out of order on CPU {}", cpu);
        m.last_taken[cpu] = Some(id);
        cb.taken = true;
        m.run += 1;
    }
    // Not late either: everything whose grace period is over came out.
    for (id, cb) in m.cbs.iter().enumerate() {
        if cb.cpu == cpu && r.completed() > cb.gp_at_enqueue {
            prop_assert!(cb.taken, "callback {} ready but withheld", id);
        }
    }
    Ok(())
}

fn check(r: &Rcu<usize>, m: &Model) -> Result<(), TestCaseError> {
    for &(target, readers) in &m.syncs {
        if r.poll(target) {
            prop_assert_eq!(readers, 0, "synchronize_rcu returned with readers left");
        }
    }
    for &cookie in &m.barriers {
        let all_taken = m.cbs[..cookie as usize].iter().all(|c| c.taken);
        prop_assert_eq!(r.barrier_done(cookie), all_taken, "barrier {}", cookie);
    }
    let k = r.counters();
    let queued = m.cbs.len() as u64;
    prop_assert_eq!(k.callbacks_queued, queued);
    prop_assert_eq!(k.callbacks_run, m.run);
    prop_assert_eq!(k.pending, queued - m.run);
    prop_assert_eq!(k.gps_started, r.gp_seq());
    prop_assert_eq!(k.gps_completed, r.completed());
    prop_assert!(r.gp_seq() - r.completed() <= 1);
    prop_assert_eq!(k.batch_hist.iter().sum::<u64>(), k.gps_completed);
    prop_assert!(k.last_batch <= k.max_batch);
    Ok(())
}

proptest! {
    #[test]
    fn grace_periods_protect_every_reader((n, ops) in case()) {
        let mut r: Rcu<usize> = Rcu::new(n);
        let mut m = Model {
            cbs: Vec::new(),
            online: (1 << n) - 1,
            syncs: Vec::new(),
            barriers: Vec::new(),
            run: 0,
            last_taken: vec![None; n],
            noted: vec![0; n],
        };
        for op in &ops {
            match *op {
                Op::Call(cpu) => {
                    let id = m.cbs.len();
                    m.cbs.push(Cb {
                        cpu,
                        gp_at_enqueue: r.gp_seq(),
                        readers: m.online,
                        taken: false,
                    });
                    r.call_rcu(cpu, id);
                }
                Op::Qs(cpu) => {
                    // An offline CPU runs nothing, so reports nothing.
                    if m.online & (1 << cpu) != 0 {
                        m.quiesce(cpu);
                        r.quiescent_state(cpu);
                    }
                }
                Op::Note(cpu) => {
                    if m.online & (1 << cpu) != 0 {
                        m.quiesce(cpu);
                        m.noted[cpu] = r.gp_seq();
                    }
                }
                Op::Report(cpu) => {
                    if m.online & (1 << cpu) != 0 {
                        r.noted_quiescent_state(cpu, m.noted[cpu]);
                    }
                }
                Op::Take(cpu) => take(&mut r, &mut m, cpu)?,
                Op::Online(cpu, online) => {
                    if online {
                        m.online |= 1 << cpu;
                    } else {
                        m.online &= !(1 << cpu);
                        m.quiesce(cpu);
                    }
                    r.set_online(cpu, online);
                }
                Op::Sync => {
                    let target = r.wait_target();
                    m.syncs.push((target, m.online));
                }
                Op::Barrier => m.barriers.push(r.barrier_cookie()),
            }
            check(&r, &m)?;
        }
        // Every CPU online and passing quiescent states: within two grace
        // periods (the one in progress, and the one for what came during
        // it) everything comes out, exactly once.
        for cpu in 0..n {
            m.online |= 1 << cpu;
            r.set_online(cpu, true);
        }
        for _ in 0..2 {
            for cpu in 0..n {
                m.quiesce(cpu);
                r.quiescent_state(cpu);
            }
            for cpu in 0..n {
                take(&mut r, &mut m, cpu)?;
            }
            check(&r, &m)?;
        }
        prop_assert!(m.cbs.iter().all(|c| c.taken), "callbacks stranded");
        prop_assert_eq!(r.counters().pending, 0);
        prop_assert!(!r.gp_in_progress());
        for &(target, _) in &m.syncs {
            prop_assert!(r.poll(target), "synchronize_rcu never returns");
        }
    }
}
