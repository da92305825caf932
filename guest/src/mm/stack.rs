//! Kernel stacks: every kind, three strategies for task stacks, and the
//! per-CPU cache of two free stacks.
//!
//! `Vmap` is CONFIG_VMAP_STACK: a vmalloc allocation with guard pages, so an
//! overflow faults. `Direct` is what Linux did before 4.8: physically
//! contiguous pages reached through the direct map, no guard, and a
//! `thread_info`-like block at the lowest address, exactly where an overflow
//! lands first. `VmapCached` adds Linux's NR_CACHED_STACKS = 2 per-CPU cache,
//! which only pays off because a dead task's stack comes back right away
//! (see kernel/fork.c, `free_vm_stack_cache`/`alloc_vmap_stack`).
use super::vmalloc::{self, Owner};
use super::{frames, hhdm};
use crate::arch::x86_64::percpu::{self, MAX_CPUS};
use crate::arch::x86_64::stack::KernelStack;
use crate::sync::IrqLock;
use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use kcore::stack_cache::StackCache;
use kcore::stack_usage::{self, Chain};
use kcore::vmalloc::Guards;
use x86_64::VirtAddr;

const PAGE: usize = 4096;

/// Linux x86_64 THREAD_SIZE.
pub const DEFAULT_TASK_STACK: usize = 16 * 1024;
/// Per-CPU IRQ and exception stacks (Linux: IRQ_STACK_SIZE 16 KiB,
/// EXCEPTION_STKSZ 4 KiB). Ours are roomier for the oops printer, which
/// runs on them: its record and trace copies are kilobytes
/// (`runner checkstack`: `oops::report::print` alone is a 9 KiB frame),
/// and at 16 KiB the frame sizes on the trace tipped a guard hit's report
/// into a fault of its own, a triple fault.
pub const IRQ_STACK: usize = 16 * 1024;
pub const EXCEPTION_STACK: usize = 20 * 1024;

pub use abi::kinds::{StackKind, Strategy};

static STRATEGY: AtomicU8 = AtomicU8::new(Strategy::VmapCached.index() as u8);
static TASK_STACK_SIZE: AtomicUsize = AtomicUsize::new(DEFAULT_TASK_STACK);
static GUARD_PAGES: AtomicUsize = AtomicUsize::new(1);

pub fn strategy() -> Strategy {
    Strategy::from_index(STRATEGY.load(Ordering::Relaxed).into()).unwrap_or(Strategy::VmapCached)
}

/// Switch the strategy for stacks allocated from now on. Stacks already
/// handed out keep theirs; cached stacks are dropped so each strategy is
/// measured from a cold start.
pub fn set_strategy(s: Strategy) {
    STRATEGY.store(s.index() as u8, Ordering::Relaxed);
    drain_caches();
}

pub fn task_stack_size() -> usize {
    TASK_STACK_SIZE.load(Ordering::Relaxed)
}

pub fn set_task_stack_size(bytes: usize) {
    TASK_STACK_SIZE.store(bytes.next_multiple_of(PAGE).max(PAGE), Ordering::Relaxed);
    drain_caches();
}

pub fn guard_pages() -> usize {
    GUARD_PAGES.load(Ordering::Relaxed)
}

/// Guard pages on each side of every stack allocated from now on (0 turns
/// the protection off, to prove the testbed notices).
pub fn set_guard_pages(n: usize) {
    GUARD_PAGES.store(n, Ordering::Relaxed);
    drain_caches();
}

/// The legacy `thread_info` stand-in at the bottom of a `Direct` stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyThreadInfo {
    pub flags: u64,
    pub task: u64,
}

enum Backing {
    Vmap,
    Direct { frames: usize },
}

/// One kernel stack, owned. Dropping it unmaps and frees it.
pub struct Stack {
    kind: StackKind,
    bottom: VirtAddr,
    top: VirtAddr,
    backing: Backing,
}

// SAFETY: both constructors map [bottom, top) writable before handing out
// the `Stack` (vmalloc pages or direct-mapped frames), page-aligned (so the
// top is 16-byte aligned) and at least a page long; it stays mapped and
// owned by this value until its `Drop` unmaps it. The legacy strategy's
// `thread_info` at the bottom is the stack owner's own data, as in Linux.
unsafe impl KernelStack for Stack {
    fn bottom(&self) -> VirtAddr {
        self.bottom
    }
    fn top(&self) -> VirtAddr {
        self.top
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} stack {:#x}..{:#x}",
            self.kind.linux_name(),
            self.bottom.as_u64(),
            self.top.as_u64()
        )
    }
}

#[derive(Debug)]
pub enum StackError {
    NoMemory,
}

impl Stack {
    /// A stack from the vmalloc area, with the current guard setting.
    pub fn vmap(kind: StackKind, bytes: usize, owner_id: u64) -> Result<Stack, StackError> {
        let g = guard_pages();
        let pages = bytes.div_ceil(PAGE);
        let a = vmalloc::vmalloc(
            pages,
            Guards { below: g, above: g },
            Owner::Stack { kind, id: owner_id },
        )
        .map_err(|_| StackError::NoMemory)?;
        let stack = Stack {
            kind,
            bottom: VirtAddr::new(a.base),
            top: VirtAddr::new(a.top()),
            backing: Backing::Vmap,
        };
        stack.clear();
        Ok(stack)
    }

    /// A pre-4.8 style stack: contiguous frames, aligned to their size,
    /// through the HHDM, with the legacy block at the bottom.
    pub fn direct(bytes: usize, task_id: u64) -> Result<Stack, StackError> {
        let n = bytes.div_ceil(PAGE);
        let phys =
            frames::alloc_contiguous(n, n.next_power_of_two()).ok_or(StackError::NoMemory)?;
        let bottom = hhdm::phys_to_virt(phys).ok_or(StackError::NoMemory)?;
        let stack = Stack {
            kind: StackKind::Task,
            bottom,
            top: bottom + (n * PAGE) as u64,
            backing: Backing::Direct { frames: n },
        };
        stack.clear();
        stack.set_legacy(LegacyThreadInfo {
            flags: 0,
            task: task_id,
        });
        Ok(stack)
    }

    pub fn bottom(&self) -> VirtAddr {
        self.bottom
    }
    pub fn top(&self) -> VirtAddr {
        self.top
    }
    pub fn size(&self) -> usize {
        (self.top - self.bottom) as usize
    }
    pub fn is_vmapped(&self) -> bool {
        matches!(self.backing, Backing::Vmap)
    }

    fn legacy_ptr(&self) -> Option<*mut LegacyThreadInfo> {
        matches!(self.backing, Backing::Direct { .. }).then(|| self.bottom.as_mut_ptr())
    }

    /// The legacy block of a `Direct` stack, as it is now (an overflow may
    /// have scribbled on it: that is what `stack.direct_legacy` looks for).
    pub fn legacy(&self) -> Option<LegacyThreadInfo> {
        // SAFETY: a Direct stack's lowest bytes are the block, inside frames
        // this Stack owns; a volatile read because an overflow writes it
        // behind the compiler's back.
        self.legacy_ptr().map(|p| unsafe { p.read_volatile() })
    }

    pub fn set_legacy(&self, info: LegacyThreadInfo) {
        if let Some(p) = self.legacy_ptr() {
            // SAFETY: as in `legacy`.
            unsafe { p.write_volatile(info) }
        }
    }

    /// The words use can show in: the whole stack, but for the legacy block
    /// at the bottom of a `Direct` one, which is written at allocation.
    fn usage_range(&self) -> core::ops::Range<usize> {
        let skip = match self.backing {
            Backing::Direct { .. } => core::mem::size_of::<LegacyThreadInfo>(),
            Backing::Vmap => 0,
        };
        self.bottom.as_u64() as usize + skip..self.top.as_u64() as usize
    }

    /// A reader of the stack's words as they are now: 0 for an address
    /// outside `usage_range` or off a word (`kcore::stack_usage` asks only
    /// for those inside; this keeps every read sound if it did not).
    fn words(&self) -> impl Fn(usize) -> u64 + '_ {
        let range = self.usage_range();
        move |addr| {
            if !range.contains(&addr) || !addr.is_multiple_of(8) {
                return 0;
            }
            // SAFETY: `addr` is an aligned word inside [bottom, top), mapped
            // and owned by this Stack while `&self` lives. Volatile, through
            // a raw pointer and never a slice: the task may be running on
            // this stack, writing it behind the compiler's back.
            unsafe { (addr as *const u64).read_volatile() }
        }
    }

    /// How deep the stack was ever used: bytes from the top to the deepest
    /// word written since it was handed out zeroed (Linux's
    /// `stack_not_used()`, as the used part).
    pub fn high_water(&self) -> u64 {
        // A deliberate defect (`runner --defect high-water-from-rsp`): the
        // depth of the stack pointer now, at exit, taken for the deepest
        // the stack ever went.
        #[cfg(defect = "high-water-from-rsp")]
        {
            let sp = crate::arch::x86_64::cpu::stack_pointer();
            if (self.bottom.as_u64()..self.top.as_u64()).contains(&sp) {
                return self.top.as_u64() - sp;
            }
        }
        let range = self.usage_range();
        // The scan runs at every exit: a word read without `words`' checks
        // (7 instructions a word, half the cost of an exit under TCG).
        let read = |addr: usize| {
            // SAFETY: `used_bytes` reads only aligned words inside the
            // range it is handed (kcore::stack_usage's contract, which its
            // tests hold it to), and that range lies in [bottom, top),
            // mapped and owned by this Stack; volatile and raw, as in
            // `words`.
            unsafe { (addr as *const u64).read_volatile() }
        };
        stack_usage::used_bytes(range, read) as u64
    }

    /// The frame-record chain the deepest excursion left in the stack's
    /// unused part, innermost first (`kcore::stack_usage::stale_chain`),
    /// return addresses judged by `is_text`.
    pub fn deepest_chain<const N: usize>(&self, is_text: impl Fn(u64) -> bool) -> Chain<N> {
        let range = self.usage_range();
        let first = stack_usage::first_used(range.clone(), self.words());
        // On the running task's own stack, only what lies below the stack
        // pointer: the live frames above it are being written, this very
        // call's result among them (a walk that read them found its own
        // output buffer zeroed under it). Just below it are the frames of
        // the walk itself, where a chain can only end.
        let sp = crate::arch::x86_64::cpu::stack_pointer() as usize;
        let end = if (first..range.end).contains(&sp) {
            sp
        } else {
            range.end
        };
        // A deliberate defect (`runner --defect chain-from-frame-pointer`):
        // the chain walked from the frame pointer now, the exit path's live
        // frames, not from the deepest word the stack holds.
        #[cfg(defect = "chain-from-frame-pointer")]
        let (first, end) = {
            let rbp: usize;
            // SAFETY: reads a register, touches no memory.
            unsafe {
                core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
            };
            (rbp.clamp(first, range.end), range.end)
        };
        stack_usage::stale_chain(first..end, self.words(), is_text)
    }

    /// Zero the whole stack: a reused stack must not leak the old task's
    /// data or stale pointers into the new one (Linux: "Clear stale pointers
    /// from reused stack").
    /// Every new stack starts zeroed, fresh or reused (Linux's
    /// THREADINFO_GFP has __GFP_ZERO, and the cache path clears "stale
    /// pointers from reused stack"): nothing of a previous owner leaks into
    /// a new task, and the strategies are compared doing the same work.
    fn clear(&self) {
        // SAFETY: [bottom, top) is mapped writable and owned by this Stack,
        // which is not in use by any task while cached.
        unsafe { core::ptr::write_bytes(self.bottom.as_mut_ptr::<u8>(), 0, self.size()) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        match self.backing {
            Backing::Vmap => {
                vmalloc::vfree(self.bottom).expect("a vmapped stack's allocation vanished");
            }
            Backing::Direct { frames: n } => {
                let phys =
                    x86_64::PhysAddr::new(self.bottom.as_u64() - hhdm::offset().expect("HHDM"));
                frames::free_contiguous(phys, n);
            }
        }
    }
}

/// Linux's NR_CACHED_STACKS.
pub const CACHED_STACKS: usize = 2;

static CACHES: [IrqLock<StackCache<Stack, CACHED_STACKS>>; MAX_CPUS] =
    [const { IrqLock::new(StackCache::new()).named("stack_cache") }; MAX_CPUS];

fn this_cache() -> &'static IrqLock<StackCache<Stack, CACHED_STACKS>> {
    &CACHES[percpu::this().id]
}

/// A stack for a new task, per the current strategy.
pub fn alloc_task_stack(task_id: u64) -> Result<Stack, StackError> {
    let bytes = task_stack_size();
    match strategy() {
        Strategy::Direct => Stack::direct(bytes, task_id),
        Strategy::Vmap => Stack::vmap(StackKind::Task, bytes, task_id),
        Strategy::VmapCached => {
            // The defect a cache that is refilled but never taken from:
            // `life.stack_cache` and `bench.*` must fail on it.
            let cached = if cfg!(defect = "cache-never-taken") {
                None
            } else {
                this_cache().lock().take()
            };
            match cached {
                Some(stack) => {
                    // A deliberate defect (`runner --defect
                    // cached-stack-not-cleared`): a cached stack handed
                    // out as the last task left it.
                    #[cfg(not(defect = "cached-stack-not-cleared"))]
                    stack.clear();
                    let _ = vmalloc::set_owner(
                        stack.bottom,
                        Owner::Stack {
                            kind: StackKind::Task,
                            id: task_id,
                        },
                    );
                    Ok(stack)
                }
                None => Stack::vmap(StackKind::Task, bytes, task_id),
            }
        }
    }
}

/// A dead task's stack comes back: into this CPU's cache if the strategy
/// caches and there is room, otherwise freed now.
pub fn release_task_stack(stack: Stack) {
    if strategy() == Strategy::VmapCached && stack.is_vmapped() && stack.size() == task_stack_size()
    {
        // Decide under the lock, free outside it: freeing shoots TLBs down.
        #[cfg(not(defect = "cache-never-put"))]
        let overflow = this_cache().lock().put(stack);
        // A deliberate defect (`runner --defect cache-never-put`): the
        // dead task's stack freed at once, the cache never refilled.
        #[cfg(defect = "cache-never-put")]
        let overflow: Result<(), Stack> = Err(stack);
        drop(overflow);
    } else {
        drop(stack);
    }
}

/// Stacks in CPU `cpu`'s cache now.
pub fn cache_len(cpu: usize) -> usize {
    CACHES[cpu].lock().len()
}

/// Where the stack CPU `cpu`'s cache would hand out next begins.
pub fn cache_newest(cpu: usize) -> Option<VirtAddr> {
    CACHES[cpu].lock().newest().map(Stack::bottom)
}

/// Cache statistics summed over all CPUs: (hits, lookups).
pub fn cache_stats() -> (u64, u64) {
    CACHES.iter().fold((0, 0), |(h, l), c| {
        let s = c.lock().stats();
        (h + s.hits, l + s.lookups())
    })
}

pub fn reset_cache_stats() {
    CACHES.iter().for_each(|c| c.lock().reset_stats());
}

/// Empty every CPU's cache (strategy or size change; leak checks).
pub fn drain_caches() {
    for cache in &CACHES {
        // Take under the lock, free outside it: freeing shoots TLBs down.
        loop {
            let stack = cache.lock().evict();
            match stack {
                Some(stack) => drop(stack),
                None => break,
            }
        }
    }
}
