//! Interrupt and exception entry.
//!
//! Every vector has a tiny stub that makes the stack look the same (a dummy
//! error code where the CPU pushes none, then the vector number) and jumps to
//! a common path that saves every general-purpose register, like Linux's
//! `pt_regs`, and calls Rust with `&mut TrapFrame`. Exceptions run on the
//! stack they interrupted (or their IST stack: #DF, NMI, #MC); device
//! interrupts move to the per-CPU IRQ stack first, as Linux does, so a deep
//! task stack never has to absorb an interrupt's frames on top of its own.
use core::fmt;

/// The saved machine state of an interrupted context, lowest address first.
/// The layout is fixed by `trap_common`/`irq_common` below.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl fmt::Display for TrapFrame {
    /// The register dump, in the shape of a Linux oops (the caller prints
    /// the RIP line, with a symbol if it has one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "RSP: {:04x}:{:016x} EFLAGS: {:08x}",
            self.ss, self.rsp, self.rflags
        )?;
        writeln!(
            f,
            "RAX: {:016x} RBX: {:016x} RCX: {:016x}",
            self.rax, self.rbx, self.rcx
        )?;
        writeln!(
            f,
            "RDX: {:016x} RSI: {:016x} RDI: {:016x}",
            self.rdx, self.rsi, self.rdi
        )?;
        writeln!(
            f,
            "RBP: {:016x} R08: {:016x} R09: {:016x}",
            self.rbp, self.r8, self.r9
        )?;
        writeln!(
            f,
            "R10: {:016x} R11: {:016x} R12: {:016x}",
            self.r10, self.r11, self.r12
        )?;
        write!(
            f,
            "R13: {:016x} R14: {:016x} R15: {:016x}",
            self.r13, self.r14, self.r15
        )
    }
}

// Call-frame information for the entry code before the frame is complete:
// `ENTRY_CFI n` says that `n` words lie between rsp and the CPU-pushed
// return address (error code, vector, registers saved so far), so the
// interrupted rsp is at rsp + 8n + 24 and its rip at rsp + 8n. A fault on
// one of those pushes (an interrupt arriving with room for the CPU's frame
// but not for ours, on a nearly full stack) then still unwinds into the
// interrupted task. The bytes are DW_CFA_def_cfa_expression (0x0f) and
// DW_CFA_expression (0x10) for rip (DWARF register 16) over DW_OP_breg7
// (rsp) plus an SLEB128 offset: one byte below 64, two from there.
macro_rules! entry_cfi_macro {
    () => {
        concat!(
            ".macro ENTRY_CFI n\n",
            "    .if (\\n * 8 + 24) < 64\n",
            "    .cfi_escape 0x0f, 0x03, 0x77, (\\n * 8 + 24), 0x06\n",
            "    .else\n",
            "    .cfi_escape 0x0f, 0x04, 0x77, ((\\n * 8 + 24) & 0x7f) | 0x80, (\\n * 8 + 24) >> 7, 0x06\n",
            "    .endif\n",
            "    .if (\\n * 8) < 64\n",
            "    .cfi_escape 0x10, 0x10, 0x02, 0x77, (\\n * 8)\n",
            "    .else\n",
            "    .cfi_escape 0x10, 0x10, 0x03, 0x77, ((\\n * 8) & 0x7f) | 0x80, (\\n * 8) >> 7\n",
            "    .endif\n",
            ".endm\n",
        )
    };
}

// One stub per vector. Vectors 8, 10-14, 17, 21, 29 and 30 come with a
// CPU-pushed error code; the others get a 0 so every frame has the same shape.
// In the line table every stub is on the line of `stubs!(` below, the
// macro's caller (`asm_lines`).
macro_rules! stubs {
    ($($v:literal)*) => {
        core::arch::global_asm!(
            entry_cfi_macro!(),
            ".section .text.trap_stubs, \"ax\"",
            asm_lines_begin!(),
            $(
                concat!(".section .text.trap_stubs, \"ax\"\n",
                        ".global trap_stub_", $v, "\n",
                        ".p2align 4\n"),
                asm_line!(concat!("trap_stub_", $v, ":\n",
                        "    .cfi_startproc simple\n",
                        "    .cfi_signal_frame\n")),
                concat!("    .if ", $v, " != 8 && ", $v, " != 10 && ", $v, " != 11 && ", $v, " != 12 && ",
                        $v, " != 13 && ", $v, " != 14 && ", $v, " != 17 && ", $v, " != 21 && ",
                        $v, " != 29 && ", $v, " != 30\n",
                        "    ENTRY_CFI 0\n",
                        "    push 0\n",
                        "    .endif\n",
                        "    ENTRY_CFI 1\n"),
                concat!("    push ", $v, "\n",
                        "    ENTRY_CFI 2\n"),
                concat!("    .if ", $v, " < 32\n",
                        "    jmp trap_common\n",
                        "    .else\n",
                        "    jmp irq_common\n",
                        "    .endif\n",
                        "    .cfi_endproc\n"),
            )*
            asm_lines_end!(),
            ".purgem ENTRY_CFI",
            ".section .rodata.trap_stubs, \"a\"",
            ".p2align 3",
            ".global trap_stub_table",
            "trap_stub_table:",
            $( concat!("    .quad trap_stub_", $v), )*
        );
    };
}

stubs!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
    64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95
    96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120
    121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144
    145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168
    169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192
    193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216
    217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240
    241 242 243 244 245 246 247 248 249 250 251 252 253 254 255
);

// The common paths. The CPU aligned RSP to 16 before pushing its 5 words;
// with the error code, the vector and 15 registers the frame is 22 words,
// so RSP is 16-byte aligned again at the `call`, as the ABI wants.
//
// Around each `call` the code carries call-frame information (DWARF CFI)
// that says where the interrupted context is: a signal frame whose CFA is
// the interrupted rsp and whose registers are the saved ones, found from
// the frame's base (rsp in `trap_common`, rbx in `irq_common`, which may
// be on the IRQ stack while the frame is not). An unwinder that reads the
// ELF (the runner's) then walks from a handler into the code the exception
// interrupted, as it does through any call. The `.cfi_escape` bytes are
// DW_CFA_def_cfa_expression (0x0f) and DW_CFA_expression (0x10), with
// DW_OP_breg7 (rsp, 0x77) or DW_OP_breg3 (rbx, 0x73) plus the field's
// offset (SLEB128), and DW_OP_deref (0x06) for the CFA; the assertions
// after the block pin those offsets to `TrapFrame`'s layout.
core::arch::global_asm!(
    ".section .text.trap_stubs, \"ax\"",
    entry_cfi_macro!(),
    // The 15 pushes, each followed by the rule for the frame it leaves.
    // Their rows are in the macro, so a fault on a push (a half-built
    // frame) is told at the line of that push.
    ".macro SAVE_REGS",
    asm_line!("    push rax; ENTRY_CFI 3; push rbx; ENTRY_CFI 4; push rcx; ENTRY_CFI 5"),
    asm_line!("    push rdx; ENTRY_CFI 6; push rsi; ENTRY_CFI 7; push rdi; ENTRY_CFI 8"),
    asm_line!("    push rbp; ENTRY_CFI 9; push r8; ENTRY_CFI 10; push r9; ENTRY_CFI 11"),
    asm_line!("    push r10; ENTRY_CFI 12; push r11; ENTRY_CFI 13; push r12; ENTRY_CFI 14"),
    asm_line!("    push r13; ENTRY_CFI 15; push r14; ENTRY_CFI 16; push r15; ENTRY_CFI 17"),
    ".endm",
    ".macro RESTORE_REGS",
    asm_line!("    pop r15; pop r14; pop r13; pop r12; pop r11; pop r10; pop r9; pop r8"),
    asm_line!("    pop rbp; pop rdi; pop rsi; pop rdx; pop rcx; pop rbx; pop rax"),
    ".endm",
    // The frame's saved registers, relative to DW_OP_breg<base>.
    ".macro FRAME_CFI base",
    "    .cfi_escape 0x0f, 0x04, \\base, 0xa0, 0x01, 0x06", // CFA = [base + 160] (rsp)
    "    .cfi_escape 0x10, 0x10, 0x03, \\base, 0x88, 0x01", // rip at base + 136
    "    .cfi_escape 0x10, 0x06, 0x03, \\base, 0xc0, 0x00", // rbp at base + 64
    "    .cfi_escape 0x10, 0x03, 0x03, \\base, 0xe8, 0x00", // rbx at base + 104
    "    .cfi_escape 0x10, 0x0c, 0x02, \\base, 0x18", // r12 at base + 24
    "    .cfi_escape 0x10, 0x0d, 0x02, \\base, 0x10", // r13 at base + 16
    "    .cfi_escape 0x10, 0x0e, 0x02, \\base, 0x08", // r14 at base + 8
    "    .cfi_escape 0x10, 0x0f, 0x02, \\base, 0x00", // r15 at base + 0
    ".endm",
    "trap_common:",
    asm_lines_begin!(),
    "    .cfi_startproc simple",
    "    .cfi_signal_frame",
    "    ENTRY_CFI 2",
    "    SAVE_REGS",
    asm_line!("    cld"),
    "    FRAME_CFI 0x77",
    asm_line!("    mov rdi, rsp"),
    asm_line!("    call {exception}"),
    // Where a handler called from here returns: the frame-pointer walk
    // knows the trap frame sits right above this return address.
    ".global trap_return",
    "trap_return:",
    "    .cfi_endproc",
    "    RESTORE_REGS",
    asm_line!("    add rsp, 16"),
    asm_line!("    iretq"),
    // Device interrupts: switch to this CPU's IRQ stack unless already on it
    // (nesting), keeping the task-stack frame pointer in callee-saved rbx.
    // After the handler, back on the interrupted stack, the preemption point
    // runs: a context switch from here is what makes the timer preempt.
    // Global, as every label Rust names below (`extern "C"`) must be: a
    // local one resolves only while its user lands in the codegen unit
    // that holds this block, which any change elsewhere can undo.
    ".global irq_common",
    "irq_common:",
    "    .cfi_startproc simple",
    "    .cfi_signal_frame",
    "    ENTRY_CFI 2",
    "    SAVE_REGS",
    asm_line!("    cld"),
    asm_line!("    mov rdi, rsp"),
    asm_line!("    mov rbx, rsp"),
    "3:",
    "    FRAME_CFI 0x73",
    asm_line!("    add qword ptr gs:[{irq_depth}], 1"),
    asm_line!("    cmp qword ptr gs:[{irq_depth}], 1"),
    asm_line!("    jne 2f"),
    asm_line!("    mov rsp, gs:[{irq_stack_top}]"),
    "2:",
    asm_line!("    call {irq}"),
    asm_line!("    mov rsp, rbx"),
    asm_line!("    sub qword ptr gs:[{irq_depth}], 1"),
    asm_line!("    mov rdi, rsp"),
    asm_line!("    call {irq_exit}"),
    "4:",
    "    .cfi_endproc",
    "    RESTORE_REGS",
    asm_line!("    add rsp, 16"),
    asm_line!("    iretq"),
    ".global irq_common_end",
    "irq_common_end:",
    asm_lines_end!(),
    // Where the frame is complete and rbx its base (`half_built`): kept as
    // data, so that no symbol splits `irq_common` in a trace.
    "    .pushsection .rodata.irq_common_framed, \"a\"",
    "    .balign 8",
    ".global irq_common_framed",
    "irq_common_framed:",
    "    .quad 3b, 4b",
    "    .popsection",
    ".purgem ENTRY_CFI",
    exception = sym exception_entry,
    irq = sym irq_entry,
    irq_exit = sym irq_exit_entry,
    irq_depth = const super::percpu::IRQ_DEPTH_OFFSET,
    irq_stack_top = const super::percpu::IRQ_STACK_TOP_OFFSET,
);

/// The frame offsets the CFI above encodes.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(TrapFrame, rsp) == 160);
    assert!(offset_of!(TrapFrame, rip) == 136);
    assert!(offset_of!(TrapFrame, rbp) == 64);
    assert!(offset_of!(TrapFrame, rbx) == 104);
    assert!(offset_of!(TrapFrame, r12) == 24);
    assert!(offset_of!(TrapFrame, r13) == 16);
    assert!(offset_of!(TrapFrame, r14) == 8);
    assert!(offset_of!(TrapFrame, r15) == 0);
};

extern "C" {
    static trap_stub_table: [u64; 256];
    static trap_return: u8;
    static irq_common: u8;
    static irq_common_framed: [u64; 2];
    static irq_common_end: u8;
}

/// The context a device interrupt's entry code was building a frame for,
/// when a fault stops that code before the frame is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfBuilt {
    pub vector: Option<u8>,
    pub rip: u64,
    pub rflags: u64,
    pub rsp: u64,
}

/// If `frame` (a fault's) stopped in the entry code of a device interrupt
/// (a stub of vector 32 or above, or `irq_common`'s register saves), the
/// context that interrupt interrupted: the CPU had pushed its 5 words, and
/// the pushes the entry code completed before `frame.rip` lie below them.
/// They are counted by decoding those pushes (the same count `ENTRY_CFI`
/// gives the runner's unwinder), so the interrupted rip and RFLAGS are
/// read from where the CPU put them, not guessed. The same holds once the
/// frame is complete and `irq_common` calls out with rbx at its base: the
/// call of `irq_exit_entry`, back on the task's stack, pushes a return
/// address a task with no room left cannot take (seen under KVM, where
/// interrupts land inside the recursion).
pub fn half_built(frame: &TrapFrame) -> Option<HalfBuilt> {
    const STUB_SLOT: u64 = 16; // the stubs' `.p2align 4`
                               // The stub's two pushes, and SAVE_REGS's fifteen.
    const FRAME_WORDS: u64 = 2 + 15;
    let common = (&raw const irq_common) as u64;
    // SAFETY: two addresses the linker filled in, never written.
    let [from, to] = unsafe { irq_common_framed };
    let framed = from..to;
    // A deliberate defect (`runner --defect exit-call-unframed`): only the
    // register saves are decoded, as before `stack.irq_exit` existed.
    if framed.contains(&frame.rip) && !cfg!(defect = "exit-call-unframed") {
        return interrupted(frame.rbx, FRAME_WORDS, None);
    }
    let stub =
        (32..=255u8).find(|&v| (stub_address(v)..stub_address(v) + STUB_SLOT).contains(&frame.rip));
    let (mut at, mut words) = match stub {
        Some(v) => (stub_address(v), 0),
        None if (common..(&raw const irq_common_end) as u64).contains(&frame.rip) => (common, 2),
        None => return None,
    };
    while at < frame.rip {
        let op = super::probe::read_u8(at)?;
        let len = match op {
            0x50..=0x57 => 1,                                                   // push r64
            0x41 if matches!(super::probe::read_u8(at + 1)?, 0x50..=0x57) => 2, // push r8-r15
            0x6a => 2,                                                          // push imm8
            0x68 => 5,                                                          // push imm32
            _ => return None, // past the saves: the frame is complete
        };
        at += len;
        words += 1;
    }
    interrupted(frame.rsp, words, stub)
}

/// The interrupted context, from `words` saved words at `base` below the
/// CPU's frame.
fn interrupted(base: u64, words: u64, stub: Option<u8>) -> Option<HalfBuilt> {
    let word = |i: u64| super::probe::read_u64(base + 8 * i);
    Some(HalfBuilt {
        // The stub's second push, once it is made.
        vector: stub.or_else(|| word(words.checked_sub(2)?).and_then(|v| u8::try_from(v).ok())),
        rip: word(words)?,
        rflags: word(words + 2)?,
        rsp: word(words + 3)?,
    })
}

/// The return address of a handler called from the exception entry: a
/// frame with it has the `TrapFrame` of the interrupted context right
/// above (at the frame's rbp + 16).
pub fn trap_return_address() -> u64 {
    (&raw const trap_return) as u64
}

/// Where `irq_common`'s call of the exit path (`irq_exit_entry`, the
/// preemption point) returns. That call is made back on the interrupted
/// stack with rsp at the frame's base, so, as with `trap_return`, the
/// `TrapFrame` lies right above the return address; and the handler has
/// returned: what runs from there (a preemption's `schedule`) runs in the
/// interrupted task's context.
pub fn irq_exit_return_address() -> u64 {
    // SAFETY: two addresses the linker filled in, never written.
    unsafe { irq_common_framed[1] }
}

/// The entry address of the stub for `vector`.
pub fn stub_address(vector: u8) -> u64 {
    // SAFETY: the table is 256 initialised, immutable quads emitted above.
    unsafe { trap_stub_table[vector as usize] }
}

extern "C" fn exception_entry(frame: &mut TrapFrame) {
    super::exceptions::dispatch(frame);
}

extern "C" fn irq_entry(frame: &mut TrapFrame) {
    super::interrupts::dispatch(frame);
}

extern "C" fn irq_exit_entry(frame: &mut TrapFrame) {
    super::interrupts::exit(frame);
}
