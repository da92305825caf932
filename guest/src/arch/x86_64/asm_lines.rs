//! Line numbers for the `global_asm!` entry code. Without them a frame in
//! `trap_common` or `task_entry_trampoline` has no line: `??:?` to
//! addr2line and decode_stacktrace.sh, a bare `trap_common ()` to gdb, no
//! `at file:line` in the runner's unwind.
//!
//! `.file`/`.loc` in `global_asm!` are not enough. LLVM's assembler adds
//! their rows to the line table of the codegen unit's own compile unit,
//! whose address ranges cover its Rust functions only, and gdb and the
//! `addr2line` crate pick a unit by its ranges (binutils' addr2line found
//! some of those rows, not all). And a `.file` number may be declared once
//! per object: two blocks that rustc puts in one codegen unit may not both
//! say `.file 1`, and a number left unused breaks the compiler's own table.
//!
//! So each block describes itself, as GNU as does an assembly file built
//! with `-g`: a compile unit of its own, without children (the names come
//! from the symbol table), whose `DW_AT_low_pc`/`DW_AT_high_pc` cover the
//! block's code, with a line program of its own naming one file, the `.rs`
//! file the block is written in (`file!()`). The bytes go into subsection 1
//! of each debug section, after the compiler's: LLVM's compile unit finds
//! its abbreviations at the start of the object's `.debug_abbrev`, so
//! nothing may come before them. No code is emitted: the text is the same
//! with or without these rows.
//!
//! In a block, in its code section: `asm_lines_begin!()` before the first
//! instruction, `asm_line!("insn")` for each instruction (or assembler
//! macro) that starts a row with the line it is written on, and
//! `asm_lines_end!()` after the last instruction. A row holds up to the
//! next, so an unmarked instruction has the line above it. In an
//! assembler `.macro` body a row has the body's line, at every expansion;
//! in a `macro_rules!` (the trap stubs) every row has the line where the
//! macro is invoked, `line!()` being the line of the outermost macro call.
//!
//! The numeric labels 9001-9011 are these macros' own. The line of the
//! last row is kept in the assembler symbol `.Lasm_lines_line`: a row
//! advances the line by the difference, DWARF having no "set line".

/// Open the block's line program: its header, naming `file!()` (the file
/// this is invoked in), and the label its code starts at.
macro_rules! asm_lines_begin {
    () => {
        concat!(
            "9001:\n",
            ".pushsection .debug_line, 1\n",
            "9002:\n",
            "    .long 9004f - 9003f\n", // unit_length
            "9003:\n",
            "    .short 4\n",            // version
            "    .long 9006f - 9005f\n", // header_length
            "9005:\n",
            // minimum_instruction_length, maximum_operations_per_instruction,
            // default_is_stmt, line_base, line_range, opcode_base (no
            // special opcodes are used), the standard opcodes' lengths.
            "    .byte 1, 1, 1, -5, 14, 13\n",
            "    .byte 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1\n",
            "    .byte 0\n", // include_directories: none
            // file_names: file 1 (directory: the unit's, mtime and size
            // unknown), then the end of the list.
            "    .asciz \"",
            file!(),
            "\"\n",
            "    .byte 0, 0, 0, 0\n",
            "9006:\n",
            ".popsection\n",
            // The state machine's line starts at 1.
            ".set .Lasm_lines_line, 1\n",
        )
    };
}

/// `$insn`, starting a row: from here on the code is on the line of the
/// `.rs` file this is invoked on.
macro_rules! asm_line {
    ($insn:expr) => {
        concat!(
            "9007:\n",
            ".pushsection .debug_line, 1\n",
            "    .byte 0, 9, 2\n", // DW_LNE_set_address
            "    .quad 9007b\n",
            "    .byte 3\n", // DW_LNS_advance_line
            "    .sleb128 ",
            line!(),
            " - .Lasm_lines_line\n",
            "    .byte 1\n", // DW_LNS_copy: the row
            ".popsection\n",
            ".set .Lasm_lines_line, ",
            line!(),
            "\n",
            $insn,
        )
    };
}

/// Close the line program where the block's code ends, and give the block
/// its compile unit: its abbreviation table, then the unit.
macro_rules! asm_lines_end {
    () => {
        concat!(
            "9008:\n",
            ".pushsection .debug_line, 1\n",
            "    .byte 0, 9, 2\n", // DW_LNE_set_address
            "    .quad 9008b\n",
            "    .byte 0, 1, 1\n", // DW_LNE_end_sequence
            "9004:\n",
            ".popsection\n",
            ".pushsection .debug_abbrev, 1\n",
            "9009:\n",
            // Abbreviation 1: DW_TAG_compile_unit, no children; then the
            // attributes as (name, form) pairs, ending in (0, 0).
            "    .byte 1, 0x11, 0\n",
            "    .byte 0x10, 0x17\n", // DW_AT_stmt_list, DW_FORM_sec_offset
            "    .byte 0x11, 0x01\n", // DW_AT_low_pc, DW_FORM_addr
            "    .byte 0x12, 0x06\n", // DW_AT_high_pc, DW_FORM_data4 (a size)
            "    .byte 0x03, 0x08\n", // DW_AT_name, DW_FORM_string
            "    .byte 0x25, 0x08\n", // DW_AT_producer, DW_FORM_string
            "    .byte 0x13, 0x05\n", // DW_AT_language, DW_FORM_data2
            "    .byte 0, 0\n",
            "    .byte 0\n", // the end of the table
            ".popsection\n",
            ".pushsection .debug_info, 1\n",
            "    .long 9011f - 9010f\n", // unit_length
            "9010:\n",
            "    .short 4\n",            // version
            "    .long 9009b\n",         // debug_abbrev_offset
            "    .byte 8\n",             // address_size
            "    .byte 1\n",             // abbreviation 1
            "    .long 9002b\n",         // the line program above
            "    .quad 9001b\n",         // where the code starts
            "    .long 9008b - 9001b\n", // the code's size
            "    .asciz \"",
            file!(),
            "\"\n",
            "    .asciz \"global_asm! (guest/src/arch/x86_64/asm_lines.rs)\"\n",
            "    .short 0x8001\n", // DW_LANG_Mips_Assembler, as GNU as says
            "9011:\n",
            ".popsection\n",
        )
    };
}
