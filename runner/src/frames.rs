//! Static stack frame sizes of the guest's functions, read from its ELF:
//! how many bytes each function's frame takes, from its CFA (the caller's
//! rsp before the call) down to its rsp after the prologue. That is the
//! return address, the saved rbp, the callee-saved pushes and the rsp
//! adjustment (`sub rsp, N`, or the stack-probe sequence a big frame gets).
//!
//! The guest is built with frame pointers, and after `mov rbp, rsp` its
//! CFI says CFA = rbp + 16 and no more: the `sub rsp, N` that follows is in
//! no CFI row. So the prologue's instructions are decoded (`iced-x86`) and
//! followed from the instruction the CFI says the frame starts at (the
//! first change of the CFA rule: after a shrink-wrapped fast path, that is
//! not the function's first instruction), and the CFI is held against the
//! result for what it does say: the CFA rule at every instruction of the
//! prologue (rsp-based: the depth exactly; rbp-based: rbp + 16, set where
//! the decoder saw `mov rbp, rsp` at depth 16) and, once the prologue is
//! done, each callee-saved register's slot. A function whose CFA stays
//! rsp-based (built without a frame pointer) is checked the same way, and
//! there the CFI alone would have given the size.
//!
//! What is read: `push r64`, `mov rbp, rsp`, `sub`/`add rsp, imm`, `lea
//! rsp, [rsp|rbp + disp]`, `and rsp, -ALIGN` (a realigned frame: the size
//! is then an upper bound), LLVM's inline stack probes (unrolled: `sub rsp,
//! 0x1000` / `mov qword ptr [rsp], 0`; and the loop: `mov r11, rsp`, `sub
//! r11, N`, then `sub`, probe, `cmp rsp, r11`, `jne` back) and a call to
//! `__rust_probestack` (`mov eax, N`, `call`, `sub rsp, rax`). The
//! prologue ends at the first other instruction; a frame the CFI then
//! contradicts is reported as unreadable, with where and why (`runner
//! checkstack` counts them). Not counted: stack taken after the prologue,
//! at run time (`sub rsp, reg` for a dynamic allocation) or around a call
//! (pushed arguments). Not sized at all, each said as such: exception and
//! interrupt entry stubs (their CFA is loaded from memory: they save an
//! interrupted context, nothing calls them), the outermost frame (return
//! address undefined) and code without CFI (`global_asm!` without CFI
//! directives).

use crate::unwind::{Cfa, ElfCallFrames, Row, Rule, RBP, RIP, RSP};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::path::Path;

/// One function's static frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFrame {
    /// The code it covers: its FDE's range, or for code without CFI its
    /// symbol up to the next one.
    pub start: u64,
    pub end: u64,
    pub size: Size,
}

impl StaticFrame {
    /// The frame's bytes, CFA to rsp after the prologue; `None` if it is
    /// not sized.
    pub fn bytes(&self) -> Option<u64> {
        match &self.size {
            Size::Known(p) => Some(p.bytes),
            Size::Unsized(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Size {
    Known(Prologue),
    Unsized(Unsized),
}

/// A prologue as decoded (and checked against the CFI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prologue {
    /// CFA minus rsp after the prologue: 8 (the return address) + 8 per
    /// push + the rsp adjustment. An upper bound if `realign` is set.
    pub bytes: u64,
    /// Where the frame set-up starts (the first instruction that moves the
    /// CFA rule; the start of the function unless it was shrink-wrapped)
    /// and where the body starts; equal for a function with no frame.
    pub setup: u64,
    pub body: u64,
    /// Every push, in order: (DWARF register number, its slot's offset
    /// from the CFA). rbp included; a `push rax` that only pads is too.
    pub pushes: Vec<(u16, i64)>,
    /// Bytes the prologue moved rsp by, besides the pushes.
    pub adjust: u64,
    /// `mov rbp, rsp` at CFA - 16: rbp-based CFI from there on.
    pub frame_pointer: bool,
    pub probes: Probes,
    /// `and rsp, -ALIGN`: the frame is realigned at run time; `bytes`
    /// counts the most it can add (ALIGN - 8).
    pub realign: Option<u64>,
}

/// How the prologue touches a frame bigger than a page on the way down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probes {
    None,
    /// Unrolled: this many `mov qword ptr [rsp], 0` after page steps.
    Unrolled(u32),
    /// LLVM's probe loop, a page a turn.
    Loop,
    /// A call to `__rust_probestack`.
    Call,
}

/// Why a function has no static frame size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsized {
    /// Its CFA is loaded from memory: an exception or interrupt entry
    /// stub, which saves an interrupted context; nothing calls it.
    Entry,
    /// Its return address is undefined: the outermost frame of a task.
    Outermost,
    /// No call-frame information covers it (assembly without CFI).
    NoCfi,
    /// The prologue is not one this reads, or the CFI contradicts it.
    Unreadable(String),
}

impl Unsized {
    pub fn describe(&self) -> String {
        match self {
            Unsized::Entry => {
                "entry stub: its CFA is loaded from memory (an exception or interrupt frame), not a call frame".into()
            }
            Unsized::Outermost => "outermost frame: its return address is undefined".into(),
            Unsized::NoCfi => "no call-frame information (assembly without CFI directives)".into(),
            Unsized::Unreadable(why) => format!("not sized: {why}"),
        }
    }
}

/// The static frames of every function of an ELF, in address order.
pub struct StaticFrames {
    frames: Vec<StaticFrame>,
}

impl StaticFrames {
    pub fn load(path: &Path) -> Result<StaticFrames, String> {
        let data =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        StaticFrames::parse(&data).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(data: &[u8]) -> Result<StaticFrames, String> {
        let file = object::File::parse(data).map_err(|e| format!("not an ELF: {e}"))?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(format!("an ELF for {:?}, not x86-64", file.architecture()));
        }
        let cfi = ElfCallFrames::parse(&file)?;
        let mut text = Vec::new();
        for s in file
            .sections()
            .filter(|s| s.kind() == object::SectionKind::Text)
        {
            let bytes = s
                .data()
                .map_err(|e| format!("{}: {e}", s.name().unwrap_or("?")))?;
            text.push((s.address(), bytes));
        }
        // The executable section `addr` is in: its address and bytes.
        let section_of = |addr: u64| {
            text.iter()
                .find(|(base, bytes)| (*base..*base + bytes.len() as u64).contains(&addr))
        };
        let code = |from: u64, to: u64| -> Option<&[u8]> {
            let (base, bytes) = section_of(from)?;
            let lo = (from - base) as usize;
            let hi = (to.saturating_sub(*base) as usize).min(bytes.len());
            bytes.get(lo..hi)
        };
        let probestack: Vec<u64> = file
            .symbols()
            .filter(|s| s.name() == Ok("__rust_probestack"))
            .map(|s| s.address())
            .collect();
        let is_probestack = |a: u64| probestack.contains(&a);
        let mut frames = Vec::new();
        let mut covered: Vec<(u64, u64)> = Vec::new();
        for (start, end) in cfi.ranges() {
            let Some(bytes) = code(start, end) else {
                continue; // a dropped function's FDE, at 0
            };
            if covered.last().is_some_and(|&(s, _)| s == start) {
                continue; // in .eh_frame and .debug_frame both
            }
            covered.push((start, end));
            let size = match cfi.rows(start) {
                Some(rows) => analyze(start, bytes, &rows, &is_probestack),
                None => Size::Unsized(Unsized::Unreadable("its CFI rows do not parse".into())),
            };
            frames.push(StaticFrame { start, end, size });
        }
        // Code no FDE covers: every function or label in it, each up to
        // the next symbol (or the end of its section).
        let mut labels: Vec<u64> = file
            .symbols()
            .filter(|s| {
                matches!(
                    s.kind(),
                    SymbolKind::Text | SymbolKind::Unknown | SymbolKind::Label
                )
            })
            .filter(|s| !s.name().unwrap_or(".L").starts_with(".L"))
            .map(|s| s.address())
            .filter(|&a| section_of(a).is_some())
            .collect();
        labels.sort_unstable();
        labels.dedup();
        let inside = |a: u64| covered.iter().any(|&(s, e)| (s..e).contains(&a));
        for (i, &a) in labels.iter().enumerate() {
            let Some((base, bytes)) = section_of(a).filter(|_| !inside(a)) else {
                continue;
            };
            let section_end = base + bytes.len() as u64;
            let next = labels[i + 1..]
                .iter()
                .copied()
                .chain(covered.iter().map(|c| c.0).filter(|&s| s > a))
                .filter(|&n| n > a)
                .min()
                .unwrap_or(section_end)
                .min(section_end);
            frames.push(StaticFrame {
                start: a,
                end: next,
                size: Size::Unsized(Unsized::NoCfi),
            });
        }
        frames.sort_by_key(|f| f.start);
        Ok(StaticFrames { frames })
    }

    pub fn all(&self) -> &[StaticFrame] {
        &self.frames
    }
}

/// Lookups by address (the trace check's `Symbolize::frame_bytes`).
impl StaticFrames {
    /// The function whose code holds `pc` (an instruction's address).
    pub fn containing(&self, pc: u64) -> Option<&StaticFrame> {
        let i = self
            .frames
            .partition_point(|f| f.start <= pc)
            .checked_sub(1)?;
        let f = &self.frames[i];
        (pc < f.end).then_some(f)
    }

    /// The function a return address returns into (looked up at `ra - 1`,
    /// inside the call: a call that ends its function returns past it).
    ///
    /// In a frame-pointer chain, the frame whose saved rbp is at `fp` has
    /// its return address at `fp + 8`; that return address is in the
    /// caller, and `caller's fp - fp` is the caller's static frame size,
    /// `of_return_address(ra).bytes()`, whenever the caller keeps a frame
    /// pointer (`Prologue::frame_pointer`: else its rbp is not in the
    /// chain) and called with rsp where its prologue left it (no pushes
    /// or dynamic allocation around the call).
    pub fn of_return_address(&self, ra: u64) -> Option<&StaticFrame> {
        self.containing(ra.checked_sub(1)?)
    }

    /// The function that starts at `start`, exactly (the tests' lookup).
    #[cfg(test)]
    pub fn starting_at(&self, start: u64) -> Option<&StaticFrame> {
        self.containing(start).filter(|f| f.start == start)
    }
}

/// The x86-64 psABI's DWARF number of a general-purpose register.
fn dwarf(reg: Register) -> Option<u16> {
    Some(match reg {
        Register::RAX => 0,
        Register::RDX => 1,
        Register::RCX => 2,
        Register::RBX => 3,
        Register::RSI => 4,
        Register::RDI => 5,
        Register::RBP => 6,
        Register::RSP => 7,
        Register::R8 => 8,
        Register::R9 => 9,
        Register::R10 => 10,
        Register::R11 => 11,
        Register::R12 => 12,
        Register::R13 => 13,
        Register::R14 => 14,
        Register::R15 => 15,
        _ => return None,
    })
}

/// The callee-saved registers of the psABI: the ones whose slots a
/// function's CFI must tell.
const CALLEE_SAVED: [u16; 6] = [3, 6, 12, 13, 14, 15];

fn is_reg(i: &Instruction, op: u32, reg: Register) -> bool {
    i.op_kind(op) == OpKind::Register && i.op_register(op) == reg
}

/// `[reg]`, no index, no displacement.
fn is_mem_at(i: &Instruction, op: u32, reg: Register) -> bool {
    i.op_kind(op) == OpKind::Memory
        && i.memory_base() == reg
        && i.memory_index() == Register::None
        && i.memory_displacement64() == 0
}

/// `mov REG, rsp`, either encoding: the register.
fn copies_rsp(i: &Instruction) -> Option<Register> {
    (matches!(i.code(), Code::Mov_rm64_r64 | Code::Mov_r64_rm64)
        && i.op0_kind() == OpKind::Register
        && is_reg(i, 1, Register::RSP))
    .then(|| i.op0_register())
}

/// `OP REG, imm` (sub, add, and): the immediate, sign-extended.
fn reg_imm(i: &Instruction, codes: [Code; 2], reg: Register) -> Option<i64> {
    (codes.contains(&i.code()) && is_reg(i, 0, reg)).then(|| i.immediate(1) as i64)
}

/// The CFI row in force at `pc`.
fn row_at(rows: &[(u64, u64, Row)], pc: u64) -> Option<&Row> {
    rows.iter()
        .find(|(from, to, _)| (*from..*to).contains(&pc))
        .map(|(_, _, r)| r)
}

fn show(cfa: &Cfa) -> String {
    match cfa {
        Cfa::Reg { reg: RSP, offset } => format!("rsp+{offset}"),
        Cfa::Reg { reg: RBP, offset } => format!("rbp+{offset}"),
        Cfa::Reg { reg, offset } => format!("r{reg}+{offset}"),
        Cfa::Expr(_) => "an expression".into(),
    }
}

/// Whether the CFA rule `cfa` is what the prologue's instructions made of
/// rsp (`depth` bytes below the CFA) and rbp (set at `fp_depth`).
fn cfi_agrees(cfa: Option<&Cfa>, depth: i64, fp_depth: Option<i64>) -> bool {
    match cfa {
        Some(Cfa::Reg { reg: RSP, offset }) => *offset == depth,
        Some(Cfa::Reg { reg: RBP, offset }) => *offset == 16 && fp_depth == Some(16),
        _ => false,
    }
}

/// The static frame of the function at `start` (its code `code`, its CFI
/// `rows`, as `ElfCallFrames::rows` gives them); `probestack` says whether
/// a call target is `__rust_probestack`.
pub fn analyze(
    start: u64,
    code: &[u8],
    rows: &[(u64, u64, Row)],
    probestack: &dyn Fn(u64) -> bool,
) -> Size {
    let unreadable = |why: String| Size::Unsized(Unsized::Unreadable(why));
    if rows.is_empty() {
        return Size::Unsized(Unsized::NoCfi);
    }
    if rows.iter().any(|(_, _, r)| matches!(r.cfa, Cfa::Expr(_))) {
        return Size::Unsized(Unsized::Entry);
    }
    let undefined_ra = |r: &Row| {
        r.rules
            .iter()
            .any(|(reg, rule)| *reg == RIP && *rule == Rule::Undefined)
    };
    if rows.iter().any(|(_, _, r)| undefined_ra(r)) {
        return Size::Unsized(Unsized::Outermost);
    }
    let entered = Cfa::Reg {
        reg: RSP,
        offset: 8,
    };
    // Where the frame set-up starts: the instruction that ends where the
    // CFA rule first changes, to rsp + 16 (a push) where it does: a block
    // laid out before the prologue but run after it would make the first
    // change one to rbp + 16.
    let pushed = |r: &Row| matches!(r.cfa, Cfa::Reg { reg: RSP, offset } if offset != 8);
    let first_change = rows
        .iter()
        .find(|(_, _, r)| pushed(r))
        .or_else(|| rows.iter().find(|(_, _, r)| r.cfa != entered))
        .map(|r| r.0);
    let Some(first_change) = first_change else {
        // CFA = rsp + 8 throughout: no frame beyond the return address.
        return Size::Known(Prologue {
            bytes: 8,
            setup: start,
            body: start,
            pushes: Vec::new(),
            adjust: 0,
            frame_pointer: false,
            probes: Probes::None,
            realign: None,
        });
    };
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut insns = Vec::new();
    while decoder.can_decode() {
        let i = decoder.decode();
        if i.is_invalid() {
            break;
        }
        insns.push(i);
    }
    let Some(first) = insns.iter().position(|i| i.next_ip() == first_change) else {
        return unreadable(format!(
            "no instruction ends at {first_change:#x}, where the CFI's CFA rule first changes"
        ));
    };
    let setup = insns[first].ip();
    let mut depth: i64 = match row_at(rows, setup).map(|r| &r.cfa) {
        Some(Cfa::Reg { reg: RSP, offset }) => *offset,
        other => {
            return unreadable(format!(
                "the CFA at {setup:#x} is {}, not rsp-based",
                other.map_or("undefined".into(), show)
            ))
        }
    };
    let entry_depth = depth;
    let mut pushes: Vec<(u16, i64)> = Vec::new();
    let mut fp_depth: Option<i64> = None;
    let mut realign: Option<u64> = None;
    let mut touches = 0u32;
    let mut probe_loop = false;
    let mut probe_call = false;
    // The probe loop: its counter register and the depth it runs down to.
    let mut probe_to: Option<(Register, i64)> = None;
    let mut in_loop = false;
    let mut k = first;
    let body = loop {
        let Some(i) = insns.get(k) else {
            return unreadable(format!(
                "the code ends inside the prologue begun at {setup:#x}"
            ));
        };
        // What the CFI says here must be what the instructions did.
        if !in_loop {
            let cfa = row_at(rows, i.ip()).map(|r| &r.cfa);
            if !cfi_agrees(cfa, depth, fp_depth) {
                return unreadable(format!(
                    "at {:#x} the CFI says CFA = {}, the prologue's instructions rsp+{depth}{}",
                    i.ip(),
                    cfa.map_or("nothing".into(), show),
                    fp_depth.map_or(String::new(), |d| format!(" (rbp = CFA-{d})")),
                ));
            }
        }
        let sub = reg_imm(
            i,
            [Code::Sub_rm64_imm8, Code::Sub_rm64_imm32],
            Register::RSP,
        );
        let add = reg_imm(
            i,
            [Code::Add_rm64_imm8, Code::Add_rm64_imm32],
            Register::RSP,
        );
        let and = reg_imm(
            i,
            [Code::And_rm64_imm8, Code::And_rm64_imm32],
            Register::RSP,
        );
        if i.code() == Code::Push_r64 {
            depth += 8;
            match dwarf(i.op0_register()) {
                Some(reg) => pushes.push((reg, -depth)),
                None => return unreadable(format!("push of {:?}", i.op0_register())),
            }
        } else if copies_rsp(i) == Some(Register::RBP) && fp_depth.is_none() {
            fp_depth = Some(depth);
        } else if let Some(n) = sub.filter(|n| *n > 0) {
            depth += n;
        } else if let Some(n) = add.filter(|n| *n < 0) {
            depth -= n;
        } else if let Some(n) = and.filter(|n| *n < 0 && (n.unsigned_abs()).is_power_of_two()) {
            let align = n.unsigned_abs();
            realign = Some(realign.map_or(align, |a| a.max(align)));
            depth += align as i64 - 8;
        } else if i.code() == Code::Lea_r64_m
            && is_reg(i, 0, Register::RSP)
            && i.memory_index() == Register::None
            && (i.memory_base() == Register::RSP
                || (i.memory_base() == Register::RBP && fp_depth.is_some()))
            && (i.memory_displacement64() as i64) <= 0
        {
            let base = if i.memory_base() == Register::RSP {
                depth
            } else {
                fp_depth.unwrap_or(depth)
            };
            depth = base - i.memory_displacement64() as i64;
        } else if matches!(i.code(), Code::Mov_rm64_imm32 | Code::Or_rm64_imm8)
            && is_mem_at(i, 0, Register::RSP)
            && i.immediate(1) == 0
        {
            touches += 1; // a probe: the page just stepped into
        } else if let Some((reg, n)) = probe_counter(&insns[k..]).filter(|_| probe_to.is_none()) {
            probe_to = Some((reg, depth + n));
            in_loop = true;
            k += 2;
            continue;
        } else if let Some(target) = probe_to
            .filter(|&(reg, _)| in_loop && compares_rsp(i, reg))
            .map(|(_, target)| target)
        {
            depth = target;
            // The loop's back edge must follow.
            let back = insns
                .get(k + 1)
                .filter(|j| is_jcc(j) && (setup..j.ip()).contains(&j.near_branch_target()));
            if back.is_none() {
                return unreadable(format!(
                    "a probe loop at {:#x} without its back edge",
                    i.ip()
                ));
            }
            probe_loop = true;
            in_loop = false;
            k += 2;
            continue;
        } else if let Some(n) = probestack_call(&insns[k..], probestack) {
            depth += n;
            probe_call = true;
            k += 3;
            continue;
        } else if in_loop {
            return unreadable(format!(
                "an instruction at {:#x} in a probe loop this does not read",
                i.ip()
            ));
        } else {
            break i.ip();
        }
        k += 1;
    };
    let pushed_bytes = 8 * pushes.len() as i64;
    if depth < entry_depth + pushed_bytes {
        return unreadable(format!(
            "the prologue ending at {body:#x} gives rsp back ({depth} bytes below the CFA after {pushed_bytes} bytes of pushes)"
        ));
    }
    // Past the prologue: the CFA rule and every callee-saved slot.
    let Some(after) = row_at(rows, body) else {
        return unreadable(format!("no CFI row at {body:#x}, after the prologue"));
    };
    let frame_pointer = fp_depth == Some(16);
    // A realigned frame has no fixed rsp-based CFA.
    let rsp_based = matches!(after.cfa, Cfa::Reg { reg: RSP, .. });
    let cfa_ok = cfi_agrees(Some(&after.cfa), depth, fp_depth) && !(rsp_based && realign.is_some());
    if !cfa_ok {
        return unreadable(format!(
            "after the prologue ({body:#x}) the CFI says CFA = {}, the instructions say rsp+{depth}",
            show(&after.cfa)
        ));
    }
    for reg in CALLEE_SAVED {
        let pushed = pushes.iter().find(|(r, _)| *r == reg).map(|p| p.1);
        let told = after
            .rules
            .iter()
            .find(|(r, _)| *r == reg)
            .map(|(_, rule)| rule);
        let agree = match (pushed, told) {
            (Some(at), Some(Rule::Offset(o))) => at == *o,
            (None, None | Some(Rule::Same)) => true,
            _ => false,
        };
        if !agree {
            return unreadable(format!(
                "register {reg}: pushed at {}, the CFI after the prologue says {}",
                pushed.map_or("no slot".into(), |o| format!("CFA{o}")),
                match told {
                    Some(Rule::Offset(o)) => format!("CFA{o}"),
                    Some(other) => format!("{other:?}"),
                    None => "nothing".into(),
                }
            ));
        }
    }
    let probes = if probe_loop {
        Probes::Loop
    } else if probe_call {
        Probes::Call
    } else if touches > 0 {
        Probes::Unrolled(touches)
    } else {
        Probes::None
    };
    let bytes = depth as u64;
    Size::Known(Prologue {
        bytes,
        setup,
        body,
        adjust: (depth - entry_depth - pushed_bytes) as u64,
        pushes,
        frame_pointer,
        probes,
        realign,
    })
}

/// A conditional near jump.
fn is_jcc(i: &Instruction) -> bool {
    use iced_x86::Mnemonic::*;
    i.op0_kind() == OpKind::NearBranch64
        && matches!(
            i.mnemonic(),
            Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg
        )
}

/// `mov REG, rsp`, `sub REG, N`: the start of a probe loop, REG and N.
fn probe_counter(insns: &[Instruction]) -> Option<(Register, i64)> {
    let [mov, sub, ..] = insns else {
        return None;
    };
    let reg = copies_rsp(mov).filter(|r| *r != Register::RBP)?;
    let n = reg_imm(sub, [Code::Sub_rm64_imm8, Code::Sub_rm64_imm32], reg)?;
    (n > 0).then_some((reg, n))
}

/// `cmp rsp, REG` (or `cmp REG, rsp`).
fn compares_rsp(i: &Instruction, reg: Register) -> bool {
    matches!(i.code(), Code::Cmp_rm64_r64 | Code::Cmp_r64_rm64)
        && ((is_reg(i, 0, Register::RSP) && is_reg(i, 1, reg))
            || (is_reg(i, 1, Register::RSP) && is_reg(i, 0, reg)))
}

/// `mov eax, N` (or rax), `call __rust_probestack`, `sub rsp, rax`: N.
fn probestack_call(insns: &[Instruction], probestack: &dyn Fn(u64) -> bool) -> Option<i64> {
    let [mov, call, sub, ..] = insns else {
        return None;
    };
    let n = match mov.code() {
        Code::Mov_r32_imm32 if mov.op0_register() == Register::EAX => mov.immediate(1) as i64,
        Code::Mov_rm64_imm32 | Code::Mov_r64_imm64 if is_reg(mov, 0, Register::RAX) => {
            mov.immediate(1) as i64
        }
        _ => return None,
    };
    let called = call.code() == Code::Call_rel32_64 && probestack(call.near_branch_target());
    let subtracts = matches!(sub.code(), Code::Sub_rm64_r64 | Code::Sub_r64_rm64)
        && is_reg(sub, 0, Register::RSP)
        && is_reg(sub, 1, Register::RAX);
    (called && subtracts && n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u64 = 0x1000;

    fn rsp(offset: i64) -> Cfa {
        Cfa::Reg { reg: RSP, offset }
    }

    fn rbp16() -> Cfa {
        Cfa::Reg {
            reg: RBP,
            offset: 16,
        }
    }

    fn row(cfa: Cfa, saved: &[(u16, i64)]) -> Row {
        let mut rules = vec![(RIP, Rule::Offset(-8))];
        rules.extend(saved.iter().map(|&(r, o)| (r, Rule::Offset(o))));
        Row { cfa, rules }
    }

    /// The rows LLVM writes for a frame-pointer prologue whose `push rbp`
    /// is at `AT + pre`, whose `mov rbp, rsp` ends at `AT + pre + 4` and
    /// whose prologue ends at `AT + body`, saving `saved`.
    fn fp_rows(pre: u64, body: u64, saved: &[(u16, i64)], end: u64) -> Vec<(u64, u64, Row)> {
        let mut all = vec![(RBP, -16)];
        all.extend_from_slice(saved);
        let p = AT + pre;
        vec![
            (AT, p + 1, row(rsp(8), &[])),
            (p + 1, p + 4, row(rsp(16), &[(RBP, -16)])),
            (p + 4, AT + body, row(rbp16(), &[(RBP, -16)])),
            (AT + body, AT + end, row(rbp16(), &all)),
        ]
    }

    const BODY: [u8; 3] = [0x49, 0x89, 0xf6]; // mov r14, rsi

    fn no_probestack(_: u64) -> bool {
        false
    }

    fn known(size: Size) -> Prologue {
        match size {
            Size::Known(p) => p,
            Size::Unsized(u) => panic!("{}", u.describe()),
        }
    }

    /// `stack_recurse` as the guest has it: push rbp; mov rbp, rsp; push
    /// r15; push r14; push rbx; sub rsp, 0x108: 8 + 8 + 24 + 264 = 304.
    const RECURSE: [u8; 16] = [
        0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0x53, 0x48, 0x81, 0xec, 0x08, 0x01, 0x00,
        0x00,
    ];

    fn recurse_rows() -> Vec<(u64, u64, Row)> {
        fp_rows(0, 16, &[(15, -24), (14, -32), (3, -40)], 64)
    }

    #[test]
    fn a_frame_pointer_prologue_counts_pushes_and_sub() {
        let code = [&RECURSE[..], &BODY].concat();
        let p = known(analyze(AT, &code, &recurse_rows(), &no_probestack));
        assert_eq!(p.bytes, 304);
        assert_eq!(p.adjust, 0x108);
        assert_eq!(p.pushes, [(6, -16), (15, -24), (14, -32), (3, -40)]);
        assert!(p.frame_pointer);
        assert_eq!((p.setup, p.body), (AT, AT + 16));
        assert_eq!(p.probes, Probes::None);
    }

    #[test]
    fn the_cfi_must_agree_with_the_pushes() {
        let code = [&RECURSE[..], &BODY].concat();
        // The CFI puts rbx one slot further: the decoder cannot be right.
        let rows = fp_rows(0, 16, &[(15, -24), (14, -32), (3, -48)], 64);
        let Size::Unsized(Unsized::Unreadable(why)) = analyze(AT, &code, &rows, &no_probestack)
        else {
            panic!("a disagreement must not be sized");
        };
        assert!(why.contains("register 3"), "{why}");
        // A callee-saved push the CFI says nothing of.
        let rows = fp_rows(0, 16, &[(15, -24), (14, -32)], 64);
        assert!(matches!(
            analyze(AT, &code, &rows, &no_probestack),
            Size::Unsized(Unsized::Unreadable(_))
        ));
    }

    #[test]
    fn a_shrink_wrapped_prologue_starts_where_the_cfi_says() {
        // test rdi, rdi; je +0 (a fast path), then push rbp; mov rbp, rsp;
        // push rbx; push rax (padding: no CFI slot): 8 + 8 + 8 + 8 = 32.
        let code = [
            &[0x48, 0x85, 0xff, 0x74, 0x00][..],
            &[0x55, 0x48, 0x89, 0xe5, 0x53, 0x50],
            &BODY,
        ]
        .concat();
        let rows = fp_rows(5, 11, &[(3, -24)], 32);
        let p = known(analyze(AT, &code, &rows, &no_probestack));
        assert_eq!(p.bytes, 32);
        assert_eq!(p.setup, AT + 5);
        assert_eq!(p.pushes, [(6, -16), (3, -24), (0, -32)]);
        assert_eq!(p.adjust, 0);
    }

    #[test]
    fn unrolled_probes_count_their_pages() {
        // push rbp; mov rbp, rsp; push rbx; sub rsp, 0x1000; mov qword ptr
        // [rsp], 0; sub rsp, 0x208: 8 + 8 + 8 + 0x1208.
        let code = [
            &[0x55, 0x48, 0x89, 0xe5, 0x53][..],
            &[0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00],
            &[0x48, 0xc7, 0x04, 0x24, 0x00, 0x00, 0x00, 0x00],
            &[0x48, 0x81, 0xec, 0x08, 0x02, 0x00, 0x00],
            &BODY,
        ]
        .concat();
        let rows = fp_rows(0, 27, &[(3, -24)], 40);
        let p = known(analyze(AT, &code, &rows, &no_probestack));
        assert_eq!(p.bytes, 24 + 0x1208);
        assert_eq!(p.probes, Probes::Unrolled(1));
    }

    #[test]
    fn a_probe_loop_runs_down_to_its_target() {
        // stack_large_frame: push rbp; mov rbp, rsp; push rbx; mov r11,
        // rsp; sub r11, 0x10000; L: sub rsp, 0x1000; mov qword ptr [rsp],
        // 0; cmp rsp, r11; jne L; sub rsp, 8: 24 + 0x10000 + 8.
        let code = [
            &[0x55, 0x48, 0x89, 0xe5, 0x53][..],
            &[0x49, 0x89, 0xe3],
            &[0x49, 0x81, 0xeb, 0x00, 0x00, 0x01, 0x00],
            &[0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00],
            &[0x48, 0xc7, 0x04, 0x24, 0x00, 0x00, 0x00, 0x00],
            &[0x4c, 0x39, 0xdc],
            &[0x75, 0xec],
            &[0x48, 0x83, 0xec, 0x08],
            &BODY,
        ]
        .concat();
        let rows = fp_rows(0, 39, &[(3, -24)], 48);
        let p = known(analyze(AT, &code, &rows, &no_probestack));
        assert_eq!(p.bytes, 24 + 0x10000 + 8);
        assert_eq!(p.probes, Probes::Loop);
        assert_eq!(p.body, AT + 39);
    }

    #[test]
    fn a_probestack_call_adds_rax() {
        // push rbp; mov rbp, rsp; mov eax, 0x11000; call PROBE; sub rsp,
        // rax: 16 + 0x11000.
        let code = [
            &[0x55, 0x48, 0x89, 0xe5][..],
            &[0xb8, 0x00, 0x10, 0x01, 0x00],
            &[0xe8, 0xf6, 0x0f, 0x00, 0x00], // to AT + 14 + 0xff6 = 0x2004
            &[0x48, 0x29, 0xc4],
            &BODY,
        ]
        .concat();
        let rows = fp_rows(0, 17, &[], 32);
        let p = known(analyze(AT, &code, &rows, &|a| a == 0x2004));
        assert_eq!(p.bytes, 16 + 0x11000);
        assert_eq!(p.probes, Probes::Call);
        // Without that symbol, `mov eax` is the body's.
        let p = known(analyze(AT, &code, &fp_rows(0, 4, &[], 32), &no_probestack));
        assert_eq!(p.bytes, 16);
    }

    #[test]
    fn a_realigned_frame_is_an_upper_bound() {
        // push rbp; mov rbp, rsp; and rsp, -64; sub rsp, 0x40.
        let code = [
            &[0x55, 0x48, 0x89, 0xe5][..],
            &[0x48, 0x83, 0xe4, 0xc0],
            &[0x48, 0x83, 0xec, 0x40],
            &BODY,
        ]
        .concat();
        let p = known(analyze(AT, &code, &fp_rows(0, 12, &[], 32), &no_probestack));
        assert_eq!(p.realign, Some(64));
        assert_eq!(p.bytes, 16 + 56 + 0x40);
    }

    #[test]
    fn a_frameless_function_is_checked_row_by_row() {
        // push rbx; sub rsp, 0x20; body: CFA = rsp+16, then rsp+48.
        let code = [&[0x53][..], &[0x48, 0x83, 0xec, 0x20], &BODY].concat();
        let rows = vec![
            (AT, AT + 1, row(rsp(8), &[])),
            (AT + 1, AT + 5, row(rsp(16), &[])),
            (AT + 5, AT + 8, row(rsp(48), &[(3, -16)])),
        ];
        let p = known(analyze(AT, &code, &rows, &no_probestack));
        assert_eq!(p.bytes, 48);
        assert!(!p.frame_pointer);
        // The CFI claims a bigger frame than the instructions make.
        let mut wrong = rows.clone();
        wrong[2].2.cfa = rsp(56);
        assert!(matches!(
            analyze(AT, &code, &wrong, &no_probestack),
            Size::Unsized(Unsized::Unreadable(_))
        ));
    }

    #[test]
    fn leaves_entries_and_the_outermost_frame() {
        let leaf = vec![(AT, AT + 4, row(rsp(8), &[]))];
        let p = known(analyze(
            AT,
            &[0x31, 0xc0, 0xc3, 0xcc],
            &leaf,
            &no_probestack,
        ));
        assert_eq!((p.bytes, p.pushes.len()), (8, 0));
        let entry = vec![(
            AT,
            AT + 4,
            Row {
                cfa: Cfa::Expr(vec![0x77, 0xa0, 0x01, 0x06]),
                rules: vec![],
            },
        )];
        assert_eq!(
            analyze(AT, &[0x6a, 0x00, 0x6a, 0x0e], &entry, &no_probestack),
            Size::Unsized(Unsized::Entry)
        );
        let outermost = vec![(
            AT,
            AT + 4,
            Row {
                cfa: rsp(8),
                rules: vec![(RIP, Rule::Undefined)],
            },
        )];
        assert_eq!(
            analyze(AT, &[0x31, 0xed, 0xff, 0xd0], &outermost, &no_probestack),
            Size::Unsized(Unsized::Outermost)
        );
        assert_eq!(
            analyze(AT, &[0xc3], &[], &no_probestack),
            Size::Unsized(Unsized::NoCfi)
        );
    }

    #[test]
    fn a_run_time_adjustment_is_not_static_and_an_unfollowed_cfi_is_refused() {
        // push rbp; mov rbp, rsp; sub rsp, rdi (a size known at run time)
        // while the CFI, rbp-based, cannot tell.
        let code = [&[0x55, 0x48, 0x89, 0xe5][..], &[0x48, 0x29, 0xfc], &BODY].concat();
        let rows = fp_rows(0, 7, &[], 16);
        let size = analyze(AT, &code, &rows, &no_probestack);
        // The decoder stops at `sub rsp, rdi`, and the body's row says
        // what the CFI says: the size read is the static part.
        assert_eq!(known(size).bytes, 16);
        // CFI that starts with a change no instruction ends at.
        let rows = vec![
            (AT, AT + 2, row(rsp(8), &[])),
            (AT + 2, AT + 8, row(rsp(16), &[])),
        ];
        assert!(matches!(
            analyze(AT, &code, &rows, &no_probestack),
            Size::Unsized(Unsized::Unreadable(_))
        ));
    }

    #[test]
    fn a_real_elf_is_sized_function_by_function() {
        // The runner's own executable: built without frame pointers, its
        // prologues are checked against rsp-based CFI at every step.
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let frames = StaticFrames::parse(&data).unwrap();
        let all = frames.all();
        let sized = all.iter().filter(|f| f.bytes().is_some()).count();
        let unreadable: Vec<&StaticFrame> = all
            .iter()
            .filter(|f| matches!(f.size, Size::Unsized(Unsized::Unreadable(_))))
            .take(5)
            .collect();
        assert!(
            all.len() > 100 && sized * 10 >= all.len() * 9,
            "{sized} of {} sized; e.g. {unreadable:#?}",
            all.len()
        );
        assert!(all.windows(2).all(|w| w[0].end <= w[1].start));
        for f in all {
            if let Size::Known(p) = &f.size {
                assert!(p.bytes >= 8, "{f:?}");
                assert!(
                    f.start <= p.setup && p.setup <= p.body && p.body < f.end.max(f.start + 1),
                    "{f:?}"
                );
                assert_eq!(frames.starting_at(f.start), Some(f));
            }
        }
        assert!(StaticFrames::parse(b"not an elf").is_err());
    }

    #[test]
    fn lookups_by_return_address_and_start() {
        let frames = StaticFrames {
            frames: vec![
                StaticFrame {
                    start: 0x1000,
                    end: 0x1040,
                    size: analyze(
                        0x1000,
                        &[0xc3],
                        &[(0x1000, 0x1040, row(rsp(8), &[]))],
                        &no_probestack,
                    ),
                },
                StaticFrame {
                    start: 0x1040,
                    end: 0x1080,
                    size: Size::Unsized(Unsized::NoCfi),
                },
            ],
        };
        assert_eq!(frames.containing(0x103f).map(|f| f.start), Some(0x1000));
        // A call that ends its function returns to the next one's start.
        assert_eq!(
            frames.of_return_address(0x1040).map(|f| f.start),
            Some(0x1000)
        );
        assert_eq!(
            frames.of_return_address(0x1040).and_then(|f| f.bytes()),
            Some(8)
        );
        assert_eq!(frames.starting_at(0x1040).and_then(|f| f.bytes()), None);
        assert!(frames.starting_at(0x1001).is_none());
        assert!(frames.containing(0x1080).is_none());
        assert!(frames.of_return_address(0).is_none());
    }
}
