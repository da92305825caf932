//! The interrupt descriptor table. Every CPU gets its own copy in its
//! per-CPU block (like its GDT and TSS), though all copies agree today:
//! every vector points at its stub in `trap.rs`; #DF, NMI and #MC switch to
//! their own IST stacks, because the stack they interrupt may be the one
//! that just overflowed.
#[cfg_attr(defect = "df-no-ist", allow(unused_imports))]
use super::percpu::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use super::trap::stub_address;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

pub fn build() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    let a = |v: u8| VirtAddr::new(stub_address(v));
    // SAFETY (all set_handler_addr calls): each address is the entry stub for
    // exactly that vector, which saves the full frame and ends in iretq, so
    // it is a valid handler for the vector's frame shape (with or without an
    // error code). The IST indices name stacks every CPU installs in its TSS
    // before loading this IDT.
    unsafe {
        idt.divide_error.set_handler_addr(a(0));
        idt.debug.set_handler_addr(a(1));
        idt.non_maskable_interrupt
            .set_handler_addr(a(2))
            .set_stack_index(IST_NMI);
        idt.breakpoint.set_handler_addr(a(3));
        idt.overflow.set_handler_addr(a(4));
        idt.bound_range_exceeded.set_handler_addr(a(5));
        idt.invalid_opcode.set_handler_addr(a(6));
        idt.device_not_available.set_handler_addr(a(7));
        // A deliberate defect (`runner --defect df-no-ist`): the #DF gate
        // left on the interrupted stack, the slip of a gate set up like all
        // the others. Its frame then cannot be pushed on the stack that just
        // overflowed, and the CPU triple-faults.
        #[cfg(not(defect = "df-no-ist"))]
        idt.double_fault
            .set_handler_addr(a(8))
            .set_stack_index(IST_DOUBLE_FAULT);
        #[cfg(defect = "df-no-ist")]
        idt.double_fault.set_handler_addr(a(8));
        idt.invalid_tss.set_handler_addr(a(10));
        idt.segment_not_present.set_handler_addr(a(11));
        idt.stack_segment_fault.set_handler_addr(a(12));
        idt.general_protection_fault.set_handler_addr(a(13));
        idt.page_fault.set_handler_addr(a(14));
        idt.x87_floating_point.set_handler_addr(a(16));
        idt.alignment_check.set_handler_addr(a(17));
        idt.machine_check
            .set_handler_addr(a(18))
            .set_stack_index(IST_MACHINE_CHECK);
        idt.simd_floating_point.set_handler_addr(a(19));
        idt.virtualization.set_handler_addr(a(20));
        idt.cp_protection_exception.set_handler_addr(a(21));
        idt.hv_injection_exception.set_handler_addr(a(28));
        idt.vmm_communication_exception.set_handler_addr(a(29));
        idt.security_exception.set_handler_addr(a(30));
        for v in 32..=255u8 {
            idt[v].set_handler_addr(a(v));
        }
    }
    idt
}
