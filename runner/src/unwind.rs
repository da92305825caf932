//! The runner's own unwinder: a faulting stack's raw words (the guest's
//! `STACK-DUMP`), walked with the guest ELF's DWARF call-frame information.
//!
//! The guest's call trace follows frame pointers; this follows what the
//! compiler (and, for the assembly entry paths, the hand-written CFI) says
//! each function's frame looks like, from the trap frame's registers. The
//! guest never computes any of it, so its trace can be held against the
//! result frame by frame.
//!
//! `CallFrames` is the question asked of the ELF ("at this pc, where is the
//! CFA and where is each register saved?"); `ElfCallFrames` answers it from
//! `.debug_frame` and `.eh_frame` with `gimli`, and DWARF expressions are
//! evaluated with `gimli` too. A frame whose CFA is *loaded from memory*
//! is an entry frame that saved a whole interrupted context (the guest's
//! `trap_common`/`irq_common`): no call can leave its caller's stack
//! pointer in memory, only an exception or interrupt entry, so the frame it
//! leads to is an interrupted instruction (looked up as is), not a return
//! address (looked up at `pc - 1`, inside the call).

use gimli::{EndianSlice, LittleEndian, Reader, UnwindSection};
use object::{Object, ObjectSection};
use serde::{Deserialize, Serialize};
use std::rc::Rc;

/// DWARF register numbers (x86-64 psABI).
pub const RBX: u16 = 3;
pub const RBP: u16 = 6;
pub const RSP: u16 = 7;
pub const R12: u16 = 12;
pub const R15: u16 = 15;
/// The return-address column: rip.
pub const RIP: u16 = 16;

/// Where the CFA is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cfa {
    /// A register plus an offset.
    Reg { reg: u16, offset: i64 },
    /// A DWARF expression's value (its bytes).
    Expr(Vec<u8>),
}

/// How to recover a register of the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    Undefined,
    Same,
    /// Saved at CFA + offset.
    Offset(i64),
    /// Is CFA + offset.
    ValOffset(i64),
    /// Is in another register.
    Register(u16),
    /// Saved at the address the expression computes (CFA pushed first).
    Expr(Vec<u8>),
    /// Is the expression's value (CFA pushed first).
    ValExpr(Vec<u8>),
    Constant(u64),
}

/// The unwind rules at one pc. Registers without a rule keep their value
/// (the callee-saved convention); the return address always has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub cfa: Cfa,
    pub rules: Vec<(u16, Rule)>,
}

impl Row {
    fn rule(&self, reg: u16) -> Rule {
        self.rules
            .iter()
            .find(|(r, _)| *r == reg)
            .map(|(_, rule)| rule.clone())
            .unwrap_or(if reg == RIP {
                Rule::Undefined
            } else {
                Rule::Same
            })
    }
}

/// The ELF's call-frame information, as the unwinder asks it.
pub trait CallFrames {
    /// The rules at `pc`, or `None` if no CFI covers it.
    fn row(&self, pc: u64) -> Option<Row>;
}

/// The words of a dumped stack; `None` for a word the guest could not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub lo: u64,
    pub words: Vec<Option<u64>>,
}

impl Memory {
    pub fn hi(&self) -> u64 {
        self.lo + 8 * self.words.len() as u64
    }

    pub fn read(&self, addr: u64) -> Option<u64> {
        if addr < self.lo || !addr.is_multiple_of(8) {
            return None;
        }
        *self.words.get(((addr - self.lo) / 8) as usize)?
    }
}

/// Register values; `None` where unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers(pub [Option<u64>; 17]);

impl Registers {
    pub fn get(&self, reg: u16) -> Option<u64> {
        *self.0.get(reg as usize)?
    }
    pub fn set(&mut self, reg: u16, v: Option<u64>) {
        if let Some(slot) = self.0.get_mut(reg as usize) {
            *slot = v;
        }
    }
}

/// What a frame's pc is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Where the fault hit (the trap frame's rip).
    Fault,
    /// A return address.
    Return,
    /// An instruction an exception or interrupt interrupted.
    Interrupted,
}

/// One unwound frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub pc: u64,
    pub kind: Kind,
    /// Its CFA, if it could be computed.
    pub cfa: Option<u64>,
    /// The CFA is rbp-based: the frame-pointer chain runs through this
    /// frame, so a frame-pointer walk sees its return address.
    pub frame_pointer: bool,
    /// The CFA was loaded from memory: an entry frame; the next frame is an
    /// interrupted instruction.
    pub entry: bool,
}

impl Frame {
    /// The address to name this frame by: a return address by its call.
    pub fn lookup_pc(&self) -> u64 {
        match self.kind {
            Kind::Return => self.pc.wrapping_sub(1),
            Kind::Fault | Kind::Interrupted => self.pc,
        }
    }
}

/// Why the unwind stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The outermost frame: its return address is undefined (a task's
    /// entry trampoline).
    Outermost,
    /// The next step needs memory outside the dump (another stack: the
    /// context an IRQ-stack entry interrupted).
    LeftStack { addr: u64 },
    /// No CFI covers this pc.
    NoCfi { pc: u64 },
    /// Something made no sense (a CFA going down, an unknown register...).
    Broken(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwind {
    pub frames: Vec<Frame>,
    pub end: End,
}

/// Frames past which an unwind is a loop, not a stack.
const MAX_FRAMES: usize = 4096;

const ENCODING: gimli::Encoding = gimli::Encoding {
    format: gimli::Format::Dwarf32,
    version: 4,
    address_size: 8,
};

/// Why an expression could not be evaluated.
enum Stop {
    Memory(u64),
    Broken(String),
}

/// Evaluate a CFI expression: its value, and whether it read memory.
fn eval(
    bytes: &[u8],
    regs: &Registers,
    mem: &Memory,
    initial: Option<u64>,
) -> Result<(u64, bool), Stop> {
    let broken = |e: gimli::Error| Stop::Broken(format!("DWARF expression: {e}"));
    let expr = gimli::Expression(EndianSlice::new(bytes, LittleEndian));
    let mut e = expr.evaluation(ENCODING);
    if let Some(v) = initial {
        e.set_initial_value(v);
    }
    let mut read = false;
    let mut step = e.evaluate().map_err(broken)?;
    loop {
        step = match step {
            gimli::EvaluationResult::Complete => break,
            gimli::EvaluationResult::RequiresMemory {
                address, size: 8, ..
            } => {
                let v = mem.read(address).ok_or(Stop::Memory(address))?;
                read = true;
                e.resume_with_memory(gimli::Value::Generic(v))
                    .map_err(broken)?
            }
            gimli::EvaluationResult::RequiresRegister { register, .. } => {
                let v = regs.get(register.0).ok_or_else(|| {
                    Stop::Broken(format!(
                        "the expression needs unknown register {}",
                        register.0
                    ))
                })?;
                e.resume_with_register(gimli::Value::Generic(v))
                    .map_err(broken)?
            }
            other => {
                return Err(Stop::Broken(format!(
                    "unsupported expression step {other:?}"
                )))
            }
        };
    }
    match e.result().as_slice() {
        [gimli::Piece {
            location: gimli::Location::Address { address },
            ..
        }] => Ok((*address, read)),
        other => Err(Stop::Broken(format!("expression result {other:?}"))),
    }
}

/// Unwind `mem` from `start` (the trap frame's registers) with `cfi`.
pub fn unwind(cfi: &dyn CallFrames, mem: &Memory, start: Registers) -> Unwind {
    let mut regs = start;
    let mut frames: Vec<Frame> = Vec::new();
    let mut kind = Kind::Fault;
    let mut last_cfa: Option<u64> = None;
    let end = loop {
        let Some(pc) = regs.get(RIP) else {
            break End::Broken("no return address".into());
        };
        if frames.len() >= MAX_FRAMES {
            break End::Broken(format!("more than {MAX_FRAMES} frames"));
        }
        let mut frame = Frame {
            pc,
            kind,
            cfa: None,
            frame_pointer: false,
            entry: false,
        };
        let Some(row) = cfi.row(frame.lookup_pc()) else {
            frames.push(frame);
            break End::NoCfi { pc };
        };
        let cfa = match &row.cfa {
            Cfa::Reg { reg, offset } => match regs.get(*reg) {
                Some(v) => Ok((v.wrapping_add_signed(*offset), false)),
                None => Err(Stop::Broken(format!(
                    "the CFA needs unknown register {reg}"
                ))),
            },
            Cfa::Expr(bytes) => eval(bytes, &regs, mem, None),
        };
        frame.frame_pointer = matches!(row.cfa, Cfa::Reg { reg: RBP, .. });
        let (cfa, entry) = match cfa {
            Ok(c) => c,
            Err(stop) => {
                frames.push(frame);
                break match stop {
                    Stop::Memory(addr) => End::LeftStack { addr },
                    Stop::Broken(why) => End::Broken(why),
                };
            }
        };
        frame.cfa = Some(cfa);
        frame.entry = entry;
        frames.push(frame);
        if let Some(prev) = last_cfa {
            if cfa <= prev {
                break End::Broken(format!(
                    "the CFA {cfa:#x} at {pc:#x} is not above the previous one {prev:#x}"
                ));
            }
        }
        last_cfa = Some(cfa);
        // The caller's registers.
        let mut next = regs;
        let mut stop = None;
        for reg in [RIP, RBP, RBX, R12, 13, 14, R15] {
            let value = match row.rule(reg) {
                Rule::Undefined => Ok(None),
                Rule::Same => Ok(regs.get(reg)),
                Rule::Offset(o) => {
                    let at = cfa.wrapping_add_signed(o);
                    mem.read(at).map(Some).ok_or(Stop::Memory(at))
                }
                Rule::ValOffset(o) => Ok(Some(cfa.wrapping_add_signed(o))),
                Rule::Register(r) => Ok(regs.get(r)),
                Rule::Expr(bytes) => eval(&bytes, &regs, mem, Some(cfa))
                    .and_then(|(at, _)| mem.read(at).map(Some).ok_or(Stop::Memory(at))),
                Rule::ValExpr(bytes) => eval(&bytes, &regs, mem, Some(cfa)).map(|(v, _)| Some(v)),
                Rule::Constant(c) => Ok(Some(c)),
            };
            match value {
                Ok(v) => next.set(reg, v),
                Err(s) => {
                    stop = Some(s);
                    break;
                }
            }
        }
        if let Some(s) = stop {
            break match s {
                Stop::Memory(addr) => End::LeftStack { addr },
                Stop::Broken(why) => End::Broken(why),
            };
        }
        if next.get(RIP).is_none() {
            break End::Outermost;
        }
        next.set(RSP, Some(cfa));
        regs = next;
        kind = if entry {
            Kind::Interrupted
        } else {
            Kind::Return
        };
    };
    Unwind { frames, end }
}

/// The return addresses (and interrupted instructions) a frame-pointer walk
/// from the trap frame's rbp can see: the caller of every frame whose CFA
/// is rbp-based, and the interrupted context behind every entry frame. A
/// frame caught before it set up rbp (in its prologue or epilogue, or one
/// built without a frame pointer) hides its caller from such a walk: that
/// is what frame pointers can tell, and no more.
pub fn frame_pointer_view(frames: &[Frame]) -> Vec<Frame> {
    frames
        .windows(2)
        .filter(|w| w[0].frame_pointer || w[0].entry)
        .map(|w| w[1])
        .collect()
}

type Rc64 = gimli::EndianRcSlice<LittleEndian>;

/// `CallFrames` from an ELF's `.debug_frame` (and `.eh_frame`, for the few
/// functions that come with one).
pub struct ElfCallFrames {
    debug_frame: gimli::DebugFrame<Rc64>,
    eh_frame: gimli::EhFrame<Rc64>,
    bases: gimli::BaseAddresses,
    /// Every FDE: (start, end, in .eh_frame, the FDE), sorted by start.
    fdes: Vec<(u64, u64, bool, gimli::FrameDescriptionEntry<Rc64>)>,
}

fn section(file: &object::File, name: &str) -> Result<(Rc<[u8]>, u64), String> {
    match file.section_by_name(name) {
        Some(s) => Ok((
            Rc::from(&*s.uncompressed_data().map_err(|e| e.to_string())?),
            s.address(),
        )),
        None => Ok((Rc::from(&[][..]), 0)),
    }
}

impl ElfCallFrames {
    pub fn parse(file: &object::File) -> Result<ElfCallFrames, String> {
        let (debug, _) = section(file, ".debug_frame")?;
        let (eh, eh_addr) = section(file, ".eh_frame")?;
        let text = file.section_by_name(".text").map_or(0, |s| s.address());
        let mut debug_frame = gimli::DebugFrame::from(Rc64::new(debug, LittleEndian));
        debug_frame.set_address_size(8);
        let mut eh_frame = gimli::EhFrame::from(Rc64::new(eh, LittleEndian));
        eh_frame.set_address_size(8);
        let bases = gimli::BaseAddresses::default()
            .set_eh_frame(eh_addr)
            .set_text(text);
        let mut fdes = Vec::new();
        let mut entries = debug_frame.entries(&bases);
        while let Some(entry) = entries.next().map_err(|e| format!(".debug_frame: {e}"))? {
            if let gimli::CieOrFde::Fde(partial) = entry {
                let fde = partial
                    .parse(gimli::DebugFrame::cie_from_offset)
                    .map_err(|e| format!(".debug_frame: {e}"))?;
                fdes.push((fde.initial_address(), fde.end_address(), false, fde));
            }
        }
        let mut entries = eh_frame.entries(&bases);
        while let Some(entry) = entries.next().map_err(|e| format!(".eh_frame: {e}"))? {
            if let gimli::CieOrFde::Fde(partial) = entry {
                let fde = partial
                    .parse(gimli::EhFrame::cie_from_offset)
                    .map_err(|e| format!(".eh_frame: {e}"))?;
                fdes.push((fde.initial_address(), fde.end_address(), true, fde));
            }
        }
        fdes.sort_by_key(|f| f.0);
        Ok(ElfCallFrames {
            debug_frame,
            eh_frame,
            bases,
            fdes,
        })
    }

    fn convert<S: UnwindSection<Rc64>>(
        section: &S,
        row: &gimli::UnwindTableRow<usize>,
    ) -> Option<Row> {
        let bytes = |e: &gimli::UnwindExpression<usize>| -> Option<Vec<u8>> {
            Some(e.get(section).ok()?.0.to_slice().ok()?.to_vec())
        };
        let cfa = match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => Cfa::Reg {
                reg: register.0,
                offset: *offset,
            },
            gimli::CfaRule::Expression(e) => Cfa::Expr(bytes(e)?),
        };
        let mut rules = Vec::new();
        for (reg, rule) in row.registers() {
            let rule = match rule {
                gimli::RegisterRule::Undefined => Rule::Undefined,
                gimli::RegisterRule::SameValue => Rule::Same,
                gimli::RegisterRule::Offset(o) => Rule::Offset(*o),
                gimli::RegisterRule::ValOffset(o) => Rule::ValOffset(*o),
                gimli::RegisterRule::Register(r) => Rule::Register(r.0),
                gimli::RegisterRule::Expression(e) => Rule::Expr(bytes(e)?),
                gimli::RegisterRule::ValExpression(e) => Rule::ValExpr(bytes(e)?),
                gimli::RegisterRule::Constant(c) => Rule::Constant(*c),
                _ => return None,
            };
            rules.push((reg.0, rule));
        }
        Some(Row { cfa, rules })
    }
}

impl ElfCallFrames {
    /// Every address range an FDE describes, `[start, end)`, in address
    /// order (a function the linker dropped keeps its FDE at 0: callers
    /// filter by the code they know of).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.fdes.iter().map(|f| (f.0, f.1))
    }

    /// Every row of the FDE that starts at `start`, as `(from, to, row)`
    /// in address order: what the CFI says between `from` and `to`.
    /// `None` without such an FDE, or when its table cannot be read.
    pub fn rows(&self, start: u64) -> Option<Vec<(u64, u64, Row)>> {
        let i = self.fdes.partition_point(|f| f.0 < start);
        let (from, _, eh, fde) = self.fdes.get(i)?;
        if *from != start {
            return None;
        }
        let mut ctx = gimli::UnwindContext::new();
        let mut out = Vec::new();
        if *eh {
            let mut table = fde.rows(&self.eh_frame, &self.bases, &mut ctx).ok()?;
            while let Some(row) = table.next_row().ok()? {
                let converted = ElfCallFrames::convert(&self.eh_frame, row)?;
                out.push((row.start_address(), row.end_address(), converted));
            }
        } else {
            let mut table = fde.rows(&self.debug_frame, &self.bases, &mut ctx).ok()?;
            while let Some(row) = table.next_row().ok()? {
                let converted = ElfCallFrames::convert(&self.debug_frame, row)?;
                out.push((row.start_address(), row.end_address(), converted));
            }
        }
        Some(out)
    }
}

impl CallFrames for ElfCallFrames {
    fn row(&self, pc: u64) -> Option<Row> {
        let i = self.fdes.partition_point(|f| f.0 <= pc).checked_sub(1)?;
        let (start, end, eh, fde) = &self.fdes[i];
        if !(*start..*end).contains(&pc) {
            return None;
        }
        let mut ctx = gimli::UnwindContext::new();
        if *eh {
            let row = fde
                .unwind_info_for_address(&self.eh_frame, &self.bases, &mut ctx, pc)
                .ok()?;
            ElfCallFrames::convert(&self.eh_frame, row)
        } else {
            let row = fde
                .unwind_info_for_address(&self.debug_frame, &self.bases, &mut ctx, pc)
                .ok()?;
            ElfCallFrames::convert(&self.debug_frame, row)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A hand-made CFI table: pc ranges and their rows.
    pub struct Table(pub Vec<(std::ops::Range<u64>, Row)>);

    impl CallFrames for Table {
        fn row(&self, pc: u64) -> Option<Row> {
            self.0
                .iter()
                .find(|(r, _)| r.contains(&pc))
                .map(|(_, row)| row.clone())
        }
    }

    /// An ordinary function after its prologue: CFA = rbp + 16, the
    /// caller's rbp at CFA - 16, the return address at CFA - 8.
    fn framed() -> Row {
        Row {
            cfa: Cfa::Reg {
                reg: RBP,
                offset: 16,
            },
            rules: vec![(RBP, Rule::Offset(-16)), (RIP, Rule::Offset(-8))],
        }
    }

    /// At a function's first instruction: CFA = rsp + 8.
    fn entered() -> Row {
        Row {
            cfa: Cfa::Reg {
                reg: RSP,
                offset: 8,
            },
            rules: vec![(RIP, Rule::Offset(-8))],
        }
    }

    fn outermost() -> Row {
        Row {
            cfa: Cfa::Reg {
                reg: RSP,
                offset: 8,
            },
            rules: vec![(RIP, Rule::Undefined)],
        }
    }

    /// A trap entry: CFA = [rsp + 160], rip at rsp + 136, rbp at rsp + 64.
    fn trap_entry() -> Row {
        Row {
            cfa: Cfa::Expr(vec![0x77, 0xa0, 0x01, 0x06]),
            rules: vec![
                (RIP, Rule::Expr(vec![0x77, 0x88, 0x01])),
                (RBP, Rule::Expr(vec![0x77, 0xc0, 0x00])),
            ],
        }
    }

    fn memory(lo: u64, words: &HashMap<u64, u64>, hi: u64) -> Memory {
        Memory {
            lo,
            words: (lo..hi)
                .step_by(8)
                .map(|a| Some(*words.get(&a).unwrap_or(&0)))
                .collect(),
        }
    }

    fn regs(rip: u64, rsp: u64, rbp: u64) -> Registers {
        let mut r = Registers::default();
        r.set(RIP, Some(rip));
        r.set(RSP, Some(rsp));
        r.set(RBP, Some(rbp));
        r
    }

    /// f (0x1000..) called by g (0x2000..) called by the trampoline
    /// (0x3000..), each frame-pointer framed; the fault is in f.
    #[test]
    fn a_framed_chain_unwinds_to_the_outermost_frame() {
        let cfi = Table(vec![
            (0x1000..0x1100, framed()),
            (0x2000..0x2100, framed()),
            (0x3000..0x3010, outermost()),
        ]);
        let mut w = HashMap::new();
        // g's frame: rbp = 0x8f00; f's frame: rbp = 0x8e00.
        w.insert(0x8e00, 0x8f00); // f's saved rbp
        w.insert(0x8e08, 0x2050); // f returns into g
        w.insert(0x8f00, 0); // g's saved rbp
        w.insert(0x8f08, 0x3007); // g returns into the trampoline
        let mem = memory(0x8d00, &w, 0x9000);
        let u = unwind(&cfi, &mem, regs(0x1020, 0x8d80, 0x8e00));
        assert_eq!(u.end, End::Outermost);
        let pcs: Vec<(u64, Kind)> = u.frames.iter().map(|f| (f.pc, f.kind)).collect();
        assert_eq!(
            pcs,
            [
                (0x1020, Kind::Fault),
                (0x2050, Kind::Return),
                (0x3007, Kind::Return)
            ]
        );
        let seen: Vec<u64> = frame_pointer_view(&u.frames).iter().map(|f| f.pc).collect();
        assert_eq!(seen, [0x2050, 0x3007]);
    }

    #[test]
    fn a_frame_in_its_prologue_hides_its_caller_from_frame_pointers() {
        let cfi = Table(vec![
            (0x1000..0x1001, entered()),
            (0x2000..0x2100, framed()),
            (0x3000..0x3010, outermost()),
        ]);
        let mut w = HashMap::new();
        w.insert(0x8e78, 0x2050); // f just entered: its return address at rsp
        w.insert(0x8f00, 0);
        w.insert(0x8f08, 0x3007);
        let mem = memory(0x8d00, &w, 0x9000);
        // rbp is still g's.
        let u = unwind(&cfi, &mem, regs(0x1000, 0x8e78, 0x8f00));
        assert_eq!(u.end, End::Outermost);
        assert_eq!(u.frames.len(), 3);
        let seen: Vec<u64> = frame_pointer_view(&u.frames).iter().map(|f| f.pc).collect();
        assert_eq!(seen, [0x3007], "g's return address is invisible to rbp");
    }

    #[test]
    fn an_entry_frame_leads_to_the_interrupted_instruction() {
        // h (0x4000..) was called from the trap entry (0x5000..), which
        // interrupted f at 0x1000 (its first instruction: looked up as is,
        // not at 0x0fff, where there is no CFI at all).
        let cfi = Table(vec![
            (0x4000..0x4100, framed()),
            (0x5000..0x5010, trap_entry()),
            (0x1000..0x1100, framed()),
            (0x3000..0x3010, outermost()),
        ]);
        let mut w = HashMap::new();
        // The trap frame at 0x8c00: rip 0x1000, rbp 0x8f00 (f's), rsp 0x8e00.
        w.insert(0x8c00 + 136, 0x1000);
        w.insert(0x8c00 + 64, 0x8f00);
        w.insert(0x8c00 + 160, 0x8e00);
        // h's frame right below: saved rbp and the return into the entry.
        w.insert(0x8bf0, 0x8f00);
        w.insert(0x8bf8, 0x5008);
        w.insert(0x8f00, 0);
        w.insert(0x8f08, 0x3007);
        let mem = memory(0x8b00, &w, 0x9000);
        let u = unwind(&cfi, &mem, regs(0x4010, 0x8b80, 0x8bf0));
        assert_eq!(u.end, End::Outermost, "{:?}", u.frames);
        let pcs: Vec<(u64, Kind)> = u.frames.iter().map(|f| (f.pc, f.kind)).collect();
        assert_eq!(
            pcs,
            [
                (0x4010, Kind::Fault),
                (0x5008, Kind::Return),
                (0x1000, Kind::Interrupted),
                (0x3007, Kind::Return)
            ]
        );
        assert!(u.frames[1].entry && !u.frames[0].entry);
        let seen: Vec<u64> = frame_pointer_view(&u.frames).iter().map(|f| f.pc).collect();
        assert_eq!(seen, [0x5008, 0x1000, 0x3007]);
    }

    #[test]
    fn leaving_the_dump_and_missing_cfi_end_the_unwind_with_a_reason() {
        let cfi = Table(vec![
            (0x1000..0x1100, framed()),
            (0x5000..0x5010, trap_entry()),
        ]);
        let mut w = HashMap::new();
        w.insert(0x8e00, 0x8f00);
        w.insert(0x8e08, 0x5008);
        let mem = memory(0x8d00, &w, 0x8e10);
        // The entry's saved context lies beyond the dump.
        let u = unwind(&cfi, &mem, regs(0x1020, 0x8d80, 0x8e00));
        assert!(matches!(u.end, End::LeftStack { .. }), "{:?}", u.end);
        assert_eq!(u.frames.last().unwrap().pc, 0x5008);
        // A return into code without CFI.
        w.insert(0x8e08, 0x7777);
        let mem = memory(0x8d00, &w, 0x8e10);
        let u = unwind(&cfi, &mem, regs(0x1020, 0x8d80, 0x8e00));
        assert_eq!(u.end, End::NoCfi { pc: 0x7777 });
        // A chain that loops.
        w.insert(0x8e00, 0x8e00 - 16);
        w.insert(0x8e08, 0x1030);
        w.insert(0x8df0, 0x8e00 - 16);
        w.insert(0x8df8, 0x1030);
        let mem = memory(0x8d00, &w, 0x8e10);
        let u = unwind(&cfi, &mem, regs(0x1020, 0x8d80, 0x8e00));
        assert!(matches!(u.end, End::Broken(_)), "{:?}", u.end);
    }

    #[test]
    fn the_guest_elf_layout_of_a_real_elf_parses() {
        // The runner's own executable has a .eh_frame: every FDE found must
        // answer for its own start address.
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let cfi = ElfCallFrames::parse(&file).unwrap();
        assert!(!cfi.fdes.is_empty());
        for (start, _, _, _) in cfi.fdes.iter().step_by(97) {
            assert!(cfi.row(*start).is_some(), "{start:#x}");
        }
        assert!(cfi.row(0).is_none());
        // Each FDE's rows begin at its start and follow one another.
        for (start, end) in cfi.ranges().filter(|r| r.0 != 0).step_by(97) {
            let rows = cfi.rows(start).expect("an FDE's rows");
            assert_eq!(rows.first().map(|r| r.0), Some(start));
            assert!(rows.windows(2).all(|w| w[0].1 == w[1].0), "{start:#x}");
            assert!(rows.last().unwrap().1 <= end);
            assert_eq!(cfi.rows(start).unwrap()[0].2, cfi.row(start).unwrap());
        }
        assert!(cfi.rows(1).is_none());
    }
}
