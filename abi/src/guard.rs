//! The lines the guest prints about stack faults, and what each stack
//! scenario is expected to show. The runner checks the guest's claims
//! against the ground truth the guest announces before it overflows.
//!
//! `STACK-ALLOC {json}`: before overflowing, a scenario names the stack it
//! is about to overflow (bounds, guards, CPU, task, frame size).
//! `GUARD-HIT {json}`: the fault handler's machine-readable report.
//! `STACK-CORRUPTION {json}`: damage found after the fact, where no
//! hardware caught anything (a stack without guard pages).
//! Addresses are JSON strings of hex (`"0xffffc90000004000"`), so no JSON
//! reader rounds them through a double.

pub const ALLOC_PREFIX: &str = "STACK-ALLOC ";
pub const HIT_PREFIX: &str = "GUARD-HIT ";
pub const CORRUPTION_PREFIX: &str = "STACK-CORRUPTION ";

/// How a stack scenario's fault must come out for it to count as behaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Caught in the guard page below the stack, with good diagnostics.
    Overflow,
    /// Caught in the guard page above the stack.
    Underflow,
    /// Nothing caught it (no guard, or the machine died first).
    NotCaught,
    /// A fault, but not in the announced stack's guard: the access jumped
    /// over the guard (a frame without stack probes).
    GuardJumped,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Overflow => "overflow",
            Verdict::Underflow => "underflow",
            Verdict::NotCaught => "not-caught",
            Verdict::GuardJumped => "guard-jumped",
        }
    }
}

/// Stack kinds as the JSON lines name them.
pub mod stack_kind {
    pub const TASK: &str = "task";
    pub const IRQ: &str = "irq";
    pub const DOUBLE_FAULT: &str = "exception-df";
    pub const NMI: &str = "nmi";
    pub const MACHINE_CHECK: &str = "mc";
}

/// What the runner checks for one stack scenario.
#[derive(Clone, Copy, Debug)]
pub struct GuardExpect {
    pub verdict: Verdict,
    /// The kind of stack that overflows (`stack_kind::*`).
    pub stack_kind: &'static str,
    /// A function name (substring) the backtrace must contain.
    pub backtrace_fn: Option<&'static str>,
    /// How many guard hits one run produces (`stack.all_cpus`: one per CPU,
    /// given as 0 = "one per CPU").
    pub hits: u32,
    /// Recursion: the reported depth must fit the stack and frame size.
    pub recursion: bool,
}
