//! `MmRefs` under random gets and puts of all three kinds, from all three
//! contexts, with the caller's follow-up steps and a worker for deferred
//! work, against a model of who holds what.
//!
//! Page tables are freed exactly once, only after `mm_count` (and so
//! `mm_users`) reached zero; a drop is deferred exactly when it is the last
//! of `mm_users`/`mm_count` in a context that may not sleep, never for the
//! struct-only reference; the struct is freed exactly once, after every
//! reference of every kind is gone and every step before it has run.
use kcore::mm_refs::{Context, Deferred, DropOutcome, MmCounts, MmRefs, MmStats};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    GetUsers,
    PutUsers(Context),
    Grab,
    DropCount(Context),
    GetStruct,
    PutStruct(Context),
    RunWorker,
}

fn ctx() -> impl Strategy<Value = Context> {
    prop_oneof![
        Just(Context::Process),
        Just(Context::Atomic),
        Just(Context::RcuCallback)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::GetUsers),
        2 => ctx().prop_map(Op::PutUsers),
        2 => Just(Op::Grab),
        2 => ctx().prop_map(Op::DropCount),
        2 => Just(Op::GetStruct),
        2 => ctx().prop_map(Op::PutStruct),
        1 => Just(Op::RunWorker),
    ]
}

#[derive(Default)]
struct Model {
    /// References the test holds, by kind.
    users: u32,
    counts: u32,
    structs: u32,
    /// The chain: users' one mm_count, mm_count's one struct ref, still
    /// held (until the step after the teardown/free drops it).
    users_hold_count: bool,
    count_holds_struct: bool,
    work: Vec<Deferred>,
    teardowns: u32,
    pgt_frees: u32,
    struct_frees: u32,
    counts_seen: MmCounts,
}

impl Model {
    fn count_refs(&self) -> u32 {
        self.counts + self.users_hold_count as u32
    }
    fn struct_refs(&self) -> u32 {
        self.structs + self.count_holds_struct as u32
    }
}

/// What the test knows must come out of a drop that leaves `left`.
fn expect(left: u32, ctx: Context, sync: DropOutcome, deferred: Deferred) -> DropOutcome {
    match (left, ctx) {
        (0, Context::Process) => sync,
        (0, _) => DropOutcome::Defer(deferred),
        _ => DropOutcome::Nothing,
    }
}

/// Act on `outcome` as the guest would, following the chain.
fn handle(
    mm: &MmRefs,
    stats: &MmStats,
    m: &mut Model,
    ctx: Context,
    outcome: DropOutcome,
) -> Result<(), TestCaseError> {
    stats.record(outcome);
    match outcome {
        DropOutcome::Nothing => {}
        DropOutcome::Defer(d) => {
            prop_assert!(!ctx.may_sleep(), "deferred from process context");
            match d {
                Deferred::TearDownMappings => m.counts_seen.teardowns_deferred += 1,
                Deferred::FreePageTables => m.counts_seen.page_table_frees_deferred += 1,
            }
            m.work.push(d);
        }
        DropOutcome::TearDownMappings => {
            prop_assert!(ctx.may_sleep(), "exit_mmap in {:?}", ctx);
            m.counts_seen.teardowns += 1;
            tear_down(mm, stats, m, ctx)?;
        }
        DropOutcome::FreePageTables => {
            prop_assert!(ctx.may_sleep(), "page tables freed in {:?}", ctx);
            m.counts_seen.page_table_frees += 1;
            free_page_tables(mm, stats, m, ctx)?;
        }
        DropOutcome::FreeStruct => {
            m.struct_frees += 1;
            m.counts_seen.struct_frees += 1;
            prop_assert_eq!(m.struct_frees, 1, "struct freed twice");
            prop_assert_eq!(m.teardowns, 1, "struct freed with mappings");
            prop_assert_eq!(m.pgt_frees, 1, "struct freed with page tables");
            prop_assert_eq!((m.users, m.counts, m.structs), (0, 0, 0));
            prop_assert!(!m.users_hold_count && !m.count_holds_struct);
            prop_assert!(m.work.is_empty(), "struct freed under the worker");
        }
    }
    Ok(())
}

fn tear_down(
    mm: &MmRefs,
    stats: &MmStats,
    m: &mut Model,
    ctx: Context,
) -> Result<(), TestCaseError> {
    m.teardowns += 1;
    prop_assert_eq!(m.teardowns, 1, "mappings torn down twice");
    prop_assert_eq!(m.users, 0, "mappings torn down under a user");
    prop_assert!(m.users_hold_count);
    // __mmput's last act: mmdrop.
    m.users_hold_count = false;
    let want = expect(
        m.count_refs(),
        ctx,
        DropOutcome::FreePageTables,
        Deferred::FreePageTables,
    );
    let got = mm.drop_count(ctx);
    prop_assert_eq!(got, Ok(want));
    handle(mm, stats, m, ctx, want)
}

fn free_page_tables(
    mm: &MmRefs,
    stats: &MmStats,
    m: &mut Model,
    ctx: Context,
) -> Result<(), TestCaseError> {
    m.pgt_frees += 1;
    prop_assert_eq!(m.pgt_frees, 1, "page tables freed twice");
    prop_assert_eq!(m.count_refs(), 0, "page tables freed under mm_count");
    prop_assert_eq!(m.teardowns, 1, "page tables freed with mappings");
    prop_assert!(m.count_holds_struct);
    m.count_holds_struct = false;
    let want = if m.struct_refs() == 0 {
        DropOutcome::FreeStruct
    } else {
        DropOutcome::Nothing
    };
    prop_assert_eq!(mm.put_struct(ctx), Ok(want));
    handle(mm, stats, m, ctx, want)
}

fn run_worker(mm: &MmRefs, stats: &MmStats, m: &mut Model) -> Result<(), TestCaseError> {
    if let Some(d) = m.work.pop() {
        match d {
            Deferred::TearDownMappings => tear_down(mm, stats, m, Context::Process)?,
            Deferred::FreePageTables => free_page_tables(mm, stats, m, Context::Process)?,
        }
    }
    Ok(())
}

fn step(mm: &MmRefs, stats: &MmStats, m: &mut Model, op: Op) -> Result<(), TestCaseError> {
    // Only references the test actually holds are used or dropped: a
    // caller with no reference has no pointer to the mm.
    let holds_any = m.users + m.counts + m.structs > 0;
    match op {
        Op::GetUsers if holds_any => {
            let live = m.users > 0;
            prop_assert_eq!(mm.get_users_not_zero(), Ok(live));
            m.users += live as u32;
        }
        Op::PutUsers(ctx) if m.users > 0 => {
            m.users -= 1;
            let want = expect(
                m.users,
                ctx,
                DropOutcome::TearDownMappings,
                Deferred::TearDownMappings,
            );
            prop_assert_eq!(mm.put_users(ctx), Ok(want));
            handle(mm, stats, m, ctx, want)?;
        }
        Op::Grab if m.users + m.counts > 0 => {
            prop_assert_eq!(mm.grab(), Ok(()));
            m.counts += 1;
        }
        Op::DropCount(ctx) if m.counts > 0 => {
            m.counts -= 1;
            let want = expect(
                m.count_refs(),
                ctx,
                DropOutcome::FreePageTables,
                Deferred::FreePageTables,
            );
            prop_assert_eq!(mm.drop_count(ctx), Ok(want));
            handle(mm, stats, m, ctx, want)?;
        }
        Op::GetStruct if holds_any => {
            prop_assert_eq!(mm.get_struct(), Ok(()));
            m.structs += 1;
        }
        Op::PutStruct(ctx) if m.structs > 0 => {
            m.structs -= 1;
            let want = if m.struct_refs() == 0 {
                DropOutcome::FreeStruct
            } else {
                DropOutcome::Nothing
            };
            // Never deferred, whatever the context.
            prop_assert_eq!(mm.put_struct(ctx), Ok(want));
            handle(mm, stats, m, ctx, want)?;
        }
        Op::RunWorker => run_worker(mm, stats, m)?,
        _ => {}
    }
    prop_assert_eq!(mm.users(), m.users);
    prop_assert_eq!(mm.count(), m.count_refs());
    prop_assert_eq!(mm.struct_refs(), m.struct_refs());
    prop_assert_eq!(stats.snapshot(), m.counts_seen);
    Ok(())
}

proptest! {
    #[test]
    fn every_teardown_once_in_order_and_in_the_right_context(
        ops in prop::collection::vec(op(), 0..60),
        drain_ctx in prop::collection::vec(ctx(), 64),
    ) {
        let mm = MmRefs::new();
        let stats = MmStats::new();
        let mut m = Model {
            users: 1,
            users_hold_count: true,
            count_holds_struct: true,
            ..Model::default()
        };
        for &op in &ops {
            step(&mm, &stats, &mut m, op)?;
        }
        // Everyone lets go (users first, so gets stay legal), in random
        // contexts; then the worker drains.
        let mut ctxs = drain_ctx.iter().cycle();
        while m.users + m.counts + m.structs > 0 {
            let ctx = *ctxs.next().unwrap();
            let op = if m.users > 0 {
                Op::PutUsers(ctx)
            } else if m.counts > 0 {
                Op::DropCount(ctx)
            } else {
                Op::PutStruct(ctx)
            };
            step(&mm, &stats, &mut m, op)?;
        }
        while !m.work.is_empty() {
            step(&mm, &stats, &mut m, Op::RunWorker)?;
        }
        prop_assert_eq!((m.teardowns, m.pgt_frees, m.struct_frees), (1, 1, 1));
        let c = stats.snapshot();
        prop_assert_eq!(c.teardowns + c.teardowns_deferred, 1);
        prop_assert_eq!(c.page_table_frees + c.page_table_frees_deferred, 1);
        prop_assert_eq!(c.struct_frees, 1);
    }
}
