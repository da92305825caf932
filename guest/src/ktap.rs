//! Writing the report in KTAP, the format Linux KUnit speaks, so the runner
//! (and any KTAP consumer, kunit.py included) can read it.
//!
//! A scenario's `# ` diagnostic lines come before its result line, as KUnit
//! prints a test's log before `ok`/`not ok`.

pub fn header(plan: usize) {
    kprintln!("KTAP version 1");
    kprintln!("1..{plan}");
}

pub fn diag(args: core::fmt::Arguments) {
    kprintln!("# {args}");
}

pub fn result(number: usize, name: &str, ok: bool) {
    kprintln!("{} {number} {name}", if ok { "ok" } else { "not ok" });
}

pub fn skip(number: usize, name: &str, reason: &str) {
    kprintln!("ok {number} {name} # SKIP {reason}");
}
