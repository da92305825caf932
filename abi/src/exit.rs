//! Exit codes the guest writes to QEMU's isa-debug-exit device.
//!
//! QEMU turns a write of `v` into the process exit status `(v << 1) | 1`, so
//! every guest-chosen status is odd. Status 0 under `-no-reboot` means the
//! machine reset (a triple fault) without the guest saying anything; other
//! statuses are QEMU's own errors. The values are chosen away from 0 and 1 so
//! that a stray write of a small number is not mistaken for a verdict.

/// The I/O port of the isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the guest (or the loader before it) reports through isa-debug-exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GuestExit {
    /// Every scenario in the plan reported `ok`.
    Pass = 0x10,
    /// The report is complete and at least one scenario reported `not ok`.
    Fail = 0x11,
    /// The guest panicked; a `PANIC cpu=..` line precedes the exit.
    Panic = 0x12,
    /// A fault was caught and reported, but the guest could not go on
    /// (e.g. an overflow of an IRQ or exception stack).
    CaughtFatal = 0x13,
    /// A fault in a task was caught, but the task held something the rest
    /// of the kernel needs (a lock, an interrupts-off section, RCU
    /// callbacks): killing it would leave the machine broken, so it stops.
    /// A `TASK-STATE` record says why.
    CaughtUnrecoverable = 0x14,
    /// The direct-boot loader could not start the guest (bad ELF, no memory...).
    LoaderError = 0x7f,
}

impl GuestExit {
    pub const ALL: [GuestExit; 6] = [
        GuestExit::Pass,
        GuestExit::Fail,
        GuestExit::Panic,
        GuestExit::CaughtFatal,
        GuestExit::CaughtUnrecoverable,
        GuestExit::LoaderError,
    ];

    /// The value written to the port.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The exit status QEMU's process ends with after the guest wrote `self`.
    pub const fn qemu_status(self) -> i32 {
        ((self as u32) << 1 | 1) as i32
    }

    /// Decode a QEMU process exit status; `None` if no guest wrote it.
    pub fn from_qemu_status(status: i32) -> Option<GuestExit> {
        Self::ALL.into_iter().find(|e| e.qemu_status() == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_never_collide_with_reset() {
        for e in GuestExit::ALL {
            assert_eq!(GuestExit::from_qemu_status(e.qemu_status()), Some(e));
            assert_ne!(
                e.qemu_status(),
                0,
                "0 is QEMU's reset-under--no-reboot status"
            );
            assert_ne!(e.qemu_status(), 1, "1 is QEMU's own startup error status");
        }
        assert_eq!(GuestExit::from_qemu_status(0), None);
        assert_eq!(GuestExit::from_qemu_status(1), None);
        assert_eq!(GuestExit::Pass.qemu_status(), 33);
    }
}
