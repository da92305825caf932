//! The guest's memory bookkeeping, with no hardware in it.
//!
//! Everything here decides *which* addresses and frames to use; nothing here
//! touches a page table, a CPU register or memory it was not handed. That is
//! what lets `cargo test` run the same allocators on the host, with property
//! tests, that the guest runs in ring 0.
//!
//! - [`frames`]: physical frames, the first allocator up, so it needs no heap.
//! - [`vmalloc`]: the virtual area kernel stacks come from, guard pages and all.
//! - [`stack_hit`]: which guard a stack fault hit, from CR2 and the
//!   interrupted RSP, and which of the two decided.
//! - [`stack_cache`]: Linux's per-CPU cache of two free stacks.
//! - [`stack_usage`]: how deep a stack was ever used (its high-water
//!   mark) and the call chain its deepest excursion left behind.
//! - [`memmap`]: the boot memory map's promises, checked rather than trusted.
//! - [`clock`]: counter cycles to nanoseconds, wherever the counter starts.
//!
//! And the lifetimes of what lives in that memory:
//!
//! - [`refcount`]: Linux's `refcount_t`, saturating instead of wrapping.
//! - [`rcu_users`]: the task's `rcu_users` count that turns into its RCU
//!   callback head, once and for good.
//! - [`rcu`]: grace periods and callback batches for classic RCU.
//! - [`rcu_stall`]: a stalled grace period told from a vCPU the host does
//!   not run: age in the CPU's own ticks and NMI answers, not wall time.
//! - [`mm_refs`]: an address space's three kinds of reference, and which
//!   drops must be deferred to a worker.
//!
//! And what a task holds when it dies:
//!
//! - [`lockdep`]: the held-lock stack every lock and atomic section records
//!   on, and the exit policy (kill after resets, or stop) built on it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod clock;
pub mod exit_policy;
pub mod frames;
pub mod lockdep;
pub mod memmap;
pub mod mm_refs;
pub mod rcu;
pub mod rcu_stall;
pub mod rcu_users;
pub mod refcount;
pub mod stack_cache;
pub mod stack_hit;
pub mod stack_usage;
pub mod vmalloc;
