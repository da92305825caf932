//! Per-CPU data, reached through the GS base.
//!
//! Each CPU gets one `PerCpu` block, and GS points at it: `gs:[0]` holds the
//! block's own address, so `this()` is a single load and needs no CPU id.
//! This is what frees the kernel from finding its task by masking the stack
//! pointer (the pre-4.8 `current_thread_info()` trick): `current` lives in
//! per-CPU storage (`current::CurrentTasks`, a `CpuLocal`), not at the bottom
//! of the stack. The TSS lives here too, and its `rsp0` is the one place that
//! says where the running task's stack ends (luto's seed): the context
//! switch updates it, the fault handlers read it.
//!
//! Layers above keep their own per-CPU state in a `CpuLocal<T>` (Linux's
//! `DEFINE_PER_CPU`), indexed by this CPU's dense id, so this block names
//! nothing above arch. `this()` in preemptible code is sound because the
//! block is never freed; that it is still *this* CPU's block after the call
//! holds because a preempted task resumes on its own CPU (see
//! `current.rs`).
use super::stack::KernelStack;
use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::GsBase;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// More than QEMU's `-smp` limits on microvm; a compile-time bound keeps the
/// CPU table a plain array.
pub const MAX_CPUS: usize = 64;

/// IST slots (1-based in the IDT, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u16 = 0;
pub const IST_NMI: u16 = 1;
pub const IST_MACHINE_CHECK: u16 = 2;

#[repr(C)]
pub struct PerCpu {
    // The first three fields are read by assembly at fixed offsets.
    self_ptr: *const PerCpu,
    irq_depth: AtomicU64,
    irq_stack_top: AtomicU64,
    /// Dense index 0..n, in the order the bootloader listed the CPUs.
    pub id: usize,
    pub lapic_id: u32,
    preempt_count: AtomicU32,
    need_resched: AtomicBool,
    /// Timer interrupts taken (the scheduler tick).
    ticks: AtomicU64,
    /// The bottoms of the IST stacks, by slot.
    ist_bottom: [VirtAddr; 3],
    tss: UnsafeCell<TaskStateSegment>,
    gdt: GlobalDescriptorTable,
    idt: InterruptDescriptorTable,
    selectors: Selectors,
}

// SAFETY: the raw pointer and the TSS cell are only written by the owning CPU
// (the TSS through `set_stack_top`, which runs with interrupts off at context
// switch); other CPUs only read atomics and plain fields written before the
// block was published.
unsafe impl Sync for PerCpu {}

pub const IRQ_DEPTH_OFFSET: usize = offset_of!(PerCpu, irq_depth);
pub const IRQ_STACK_TOP_OFFSET: usize = offset_of!(PerCpu, irq_stack_top);

#[derive(Clone, Copy)]
struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

/// The stacks a CPU needs before it can take any interrupt. They come from
/// the vmalloc area, with guard pages, like every other kernel stack, and
/// live as long as the machine.
#[derive(Clone, Copy)]
pub struct CpuStacks {
    pub irq: &'static dyn KernelStack,
    pub double_fault: &'static dyn KernelStack,
    pub nmi: &'static dyn KernelStack,
    pub machine_check: &'static dyn KernelStack,
}

/// A value per CPU, by dense CPU index (Linux's `DEFINE_PER_CPU`): how the
/// layers above arch keep per-CPU state without a field in `PerCpu`.
pub struct CpuLocal<T> {
    slots: [T; MAX_CPUS],
}

impl<T> CpuLocal<T> {
    pub const fn new(slots: [T; MAX_CPUS]) -> CpuLocal<T> {
        CpuLocal { slots }
    }
    /// This CPU's value (see the module doc on preemptible callers).
    pub fn this(&self) -> &T {
        &self.slots[this().id]
    }
    /// CPU `id`'s value.
    pub fn get(&self, id: usize) -> &T {
        &self.slots[id]
    }
}

static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static ONLINE: AtomicU32 = AtomicU32::new(0);

impl PerCpu {
    pub fn preempt_count(&self) -> u32 {
        self.preempt_count.load(Ordering::Relaxed)
    }
    /// Preemption off (an RCU read-side section): no context switch, so no
    /// quiescent state, on this CPU until the matching enable. Only through
    /// `sync::preempt`'s guards, which also record the section.
    pub(crate) fn preempt_disable(&self) {
        self.preempt_count.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn preempt_enable(&self) {
        self.preempt_count.fetch_sub(1, Ordering::Relaxed);
    }
    /// The kill path's reset (Linux's `preempt_count_set(PREEMPT_ENABLED)`
    /// in `make_task_dead`).
    pub(crate) fn reset_preempt_count(&self) {
        self.preempt_count.store(0, Ordering::Relaxed);
    }
    pub fn set_need_resched(&self, v: bool) {
        self.need_resched.store(v, Ordering::Relaxed);
    }
    pub fn need_resched(&self) -> bool {
        self.need_resched.load(Ordering::Relaxed)
    }
    /// Whether this CPU is inside a device interrupt handler.
    pub fn in_irq(&self) -> bool {
        self.irq_depth.load(Ordering::Relaxed) > 0
    }

    /// Timer interrupts this CPU has taken.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }
    pub(super) fn count_tick(&self) {
        self.ticks.fetch_add(1, Ordering::AcqRel);
    }

    /// The top of the running task's stack: `TSS.rsp0`.
    /// (This CPU's own block only: checked, since another CPU's TSS may be
    /// written by its owner meanwhile.)
    pub fn stack_top(&self) -> VirtAddr {
        self.assert_own("stack_top");
        // SAFETY: this CPU's own TSS (checked); only this CPU writes it, so
        // the read races with nothing but an interrupt on this CPU, which
        // completes before the read resumes.
        unsafe { (*self.tss.get()).privilege_stack_table[0] }
    }

    /// Panics unless this is the running CPU's own block with interrupts
    /// off: the TSS is written only by its CPU, and nothing on that CPU can
    /// run in between (the soundness of the TSS writes below).
    fn assert_own_irqs_off(&self, what: &str) {
        self.assert_own(what);
        assert!(
            !x86_64::instructions::interrupts::are_enabled(),
            "{what}: the TSS is written with interrupts off"
        );
    }

    fn assert_own(&self, what: &str) {
        assert!(
            core::ptr::eq(self, gs_self()),
            "{what}: only the CPU that owns this per-CPU block may touch its TSS"
        );
    }

    /// Record the top of the stack of the task about to run (the context
    /// switch, on this CPU, interrupts off: checked).
    pub fn set_stack_top(&self, top: VirtAddr) {
        self.assert_own_irqs_off("set_stack_top");
        // SAFETY: this CPU's own TSS (checked above), with interrupts off,
        // so no other code touches it meanwhile; the hardware reads rsp0
        // only on a privilege change, which a ring-0-only kernel never has.
        unsafe { (*self.tss.get()).privilege_stack_table[0] = top }
    }

    /// Point IST slot `slot` at `top` (the #DF handler moves its own slot
    /// while it runs; see `exceptions::double_fault`).
    pub(super) fn set_ist_top(&self, slot: u16, top: VirtAddr) {
        self.assert_own_irqs_off("set_ist_top");
        // SAFETY: this CPU's own TSS, interrupts off (checked above: inside
        // an exception handler); the CPU reads the slot only when it
        // delivers an exception through it, which is exactly the effect
        // wanted.
        unsafe { (*self.tss.get()).interrupt_stack_table[slot as usize] = top }
    }

    /// The bottom of IST slot `slot`'s stack.
    pub fn ist_bottom(&self, slot: u16) -> VirtAddr {
        self.ist_bottom[slot as usize]
    }

    /// The IST stack tops, for the fault handlers' reports.
    /// (This CPU's own block only: checked.)
    pub fn ist_top(&self, slot: u16) -> VirtAddr {
        self.assert_own("ist_top");
        // SAFETY: as in `stack_top`: only this CPU writes its TSS (the #DF
        // handler moves its own slot), and this is this CPU's.
        unsafe { (*self.tss.get()).interrupt_stack_table[slot as usize] }
    }

    pub fn irq_stack_top(&self) -> VirtAddr {
        VirtAddr::new(self.irq_stack_top.load(Ordering::Relaxed))
    }
}

/// Set up this CPU's per-CPU block, GDT, TSS and IDT, point GS at it and
/// load them. Runs once per CPU, on that CPU, with interrupts off.
pub fn init_this_cpu(id: usize, lapic_id: u32, stacks: CpuStacks) -> &'static PerCpu {
    assert!(id < MAX_CPUS, "CPU index {id} beyond MAX_CPUS");
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[IST_DOUBLE_FAULT as usize] = stacks.double_fault.top();
    tss.interrupt_stack_table[IST_NMI as usize] = stacks.nmi.top();
    tss.interrupt_stack_table[IST_MACHINE_CHECK as usize] = stacks.machine_check.top();

    let block = alloc::boxed::Box::leak(alloc::boxed::Box::new(PerCpu {
        self_ptr: core::ptr::null(),
        irq_depth: AtomicU64::new(0),
        irq_stack_top: AtomicU64::new(stacks.irq.top().as_u64()),
        id,
        lapic_id,
        preempt_count: AtomicU32::new(0),
        need_resched: AtomicBool::new(false),
        ticks: AtomicU64::new(0),
        ist_bottom: [
            stacks.double_fault.bottom(),
            stacks.nmi.bottom(),
            stacks.machine_check.bottom(),
        ],
        tss: UnsafeCell::new(tss),
        gdt: GlobalDescriptorTable::new(),
        idt: InterruptDescriptorTable::new(),
        selectors: Selectors {
            code: SegmentSelector(0),
            data: SegmentSelector(0),
            tss: SegmentSelector(0),
        },
    }));
    block.self_ptr = block;
    let code = block.gdt.append(Descriptor::kernel_code_segment());
    let data = block.gdt.append(Descriptor::kernel_data_segment());
    // SAFETY: the TSS lives in this leaked (never freed, never moved) block.
    let tss_desc = unsafe { Descriptor::tss_segment_unchecked(block.tss.get()) };
    let tss = block.gdt.append(tss_desc);
    block.selectors = Selectors { code, data, tss };

    // SAFETY: the GDT lives in the leaked block, so it outlives its loading;
    // the selectors index it: a 64-bit kernel code segment, a writable data
    // segment, and a TSS descriptor pointing at a TSS that lives forever.
    unsafe {
        block.gdt.load_unsafe();
        CS::set_reg(block.selectors.code);
        SS::set_reg(block.selectors.data);
        DS::set_reg(block.selectors.data);
        ES::set_reg(block.selectors.data);
        load_tss(block.selectors.tss);
    }
    // Built only now: IDT entries take the code selector in force (ours,
    // no longer the bootloader's).
    block.idt = super::idt::build();
    let block: &'static PerCpu = block;
    block.idt.load();
    GsBase::write(VirtAddr::from_ptr(block as *const PerCpu));
    CPUS[id].store((block as *const PerCpu).cast_mut(), Ordering::Release);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    block
}

/// What GS points at on a CPU that has no block yet: a zero word, so
/// `gs:[0]` reads "no block" instead of faulting (see `early_init`).
static EARLY: u64 = 0;

/// The first thing every CPU does: point GS at `EARLY`, so that the locks
/// taken before `init_this_cpu` (heap, frames, the CPU's own stacks) can
/// ask `try_this` for a block and hear "none" for the price of one load.
pub fn early_init() {
    GsBase::write(VirtAddr::from_ptr(&EARLY as *const u64));
}

fn gs_self() -> *const PerCpu {
    let ptr: *const PerCpu;
    // SAFETY: reads gs:[0]: `early_init` (the first code on every CPU)
    // pointed GS at a zero word, and `init_this_cpu` at the block, whose
    // first word is its own address.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags))
    };
    ptr
}

/// This CPU's block. Panics if called before `init_this_cpu` on this CPU.
pub fn this() -> &'static PerCpu {
    try_this().expect("per-CPU data used before init_this_cpu")
}

/// This CPU's block, if it has one yet.
pub fn try_this() -> Option<&'static PerCpu> {
    let ptr = gs_self();
    // SAFETY: non-null only once `init_this_cpu` made it the leaked,
    // never freed or moved block.
    (!ptr.is_null()).then(|| unsafe { &*ptr })
}

/// Whether this CPU has its per-CPU block yet (early boot and panic paths,
/// which may run before `early_init` too: GS base 0 then).
pub fn ready() -> bool {
    GsBase::read().as_u64() != 0 && !gs_self().is_null()
}

/// Another CPU's block, by dense index.
pub fn get(id: usize) -> Option<&'static PerCpu> {
    let p = CPUS.get(id)?.load(Ordering::Acquire);
    // SAFETY: non-null entries point at leaked, never-freed blocks.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// How many CPUs have run `init_this_cpu`.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire) as usize
}

/// Every online CPU's block.
pub fn all() -> impl Iterator<Item = &'static PerCpu> {
    (0..MAX_CPUS).map_while(get)
}
