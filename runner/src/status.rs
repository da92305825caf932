//! The runner's own exit status: one code per way things can go wrong, so a
//! script can tell a hang from a panic without parsing the output.

use abi::Outcome;

pub const OK: i32 = 0;
pub const TEST_FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const SETUP: i32 = 10;
pub const INTERRUPTED: i32 = 130;

pub const HELP: &str = "\
Exit status (when boots end in different ways, the highest code wins):
    0    everything as expected
    1    test failure: a scenario reported `not ok`, or (test) passed where it should have failed
    2    usage error: unknown scenario, bad option
    3    panic: the guest panicked
    4    caught-fatal: a fault was caught and reported but the guest had to stop
    5    reset: QEMU ended without an exit code (a triple fault)
    6    timeout: a boot passed its deadline and was killed
    7    malformed: the KTAP report was missing, truncated or contradicted the exit code
    8    loader-error: the direct-boot loader refused to start the guest
    9    qemu-failed: QEMU could not start or died on its own
    10   setup error: QEMU not installed, build failed, artifacts missing
    11   caught-unrecoverable: a fault was caught in a task that held a lock (or another
         thing the kernel needs), so the guest stopped instead of killing it
    130  interrupted (Ctrl-C, SIGTERM)

Environment: QEMU overrides the qemu-system-x86_64 binary; CARGO the cargo used to build;
CARGO_TARGET_DIR where builds and serial logs (runs/<run id>/) go; LIMINE_DIR a Limine binary
release for --boot limine-bios/limine-uefi (else the cache `make limine` fills).";

/// The status for a scenario that ended in `outcome` when it should not have.
pub fn for_outcome(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Pass => OK,
        Outcome::Fail => TEST_FAILURE,
        Outcome::Panic => 3,
        Outcome::CaughtFatal => 4,
        Outcome::Reset => 5,
        Outcome::Timeout => 6,
        Outcome::Malformed => 7,
        Outcome::LoaderError => 8,
        Outcome::QemuFailed => 9,
        Outcome::CaughtUnrecoverable => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_documented_code() {
        let all = [
            Outcome::Fail,
            Outcome::Panic,
            Outcome::CaughtFatal,
            Outcome::Reset,
            Outcome::Timeout,
            Outcome::Malformed,
            Outcome::LoaderError,
            Outcome::QemuFailed,
            Outcome::CaughtUnrecoverable,
        ];
        for (i, o) in all.iter().enumerate() {
            let code = for_outcome(*o);
            assert!(all[..i].iter().all(|p| for_outcome(*p) != code));
            assert!(![OK, USAGE, SETUP, INTERRUPTED].contains(&code));
            let line = format!("    {code:<4} {}", o.as_str());
            let line = if *o == Outcome::Fail {
                "    1    test failure".to_string()
            } else {
                line
            };
            assert!(HELP.contains(&line), "{line:?} is not documented");
        }
    }
}
