//! The guest command line: `key=value` words separated by spaces.
//!
//! The runner writes it (`-append` on the direct path, the config's cmdline
//! under Limine); the guest reads it from the Limine executable-cmdline or
//! executable-file response. Example:
//! `scenarios=boot.smoke,core.spawn_join expect_cpus=4`.

/// Comma-separated scenario names to run, in order.
pub const SCENARIOS: &str = "scenarios";
/// The CPU count the runner asked QEMU for; `boot.smoke` checks it.
pub const EXPECT_CPUS: &str = "expect_cpus";
/// Task-stack strategy: `direct`, `vmap` or `vmap-cached` (the default).
pub const STACK_STRATEGY: &str = "stack";
/// Task-stack size in bytes (default 16384, Linux's THREAD_SIZE).
pub const STACK_SIZE: &str = "stack_size";
/// Guard pages on each side of every vmapped stack (default 1; 0 disables).
pub const GUARD_PAGES: &str = "guard_pages";
/// When a dead task's stack goes: `exit` (default), `rcu` or `legacy` (with
/// the task struct, after a grace period: pre-4.8), `rcu-cache` (an RCU callback
/// that tries the per-CPU cache first: Linux 5.18+).
pub const STACK_FREE: &str = "stack_free";
/// Where task structs live: `heap` (default) or `vmalloc`, the debug mode
/// that unmaps each one when it is freed, so a use after free faults and
/// is reported with the task's history.
pub const TASK_STRUCTS: &str = "task_structs";
/// The share of its stack, in percent, a task must use to be reported as a
/// near miss when it exits (default `usage::NEAR_MISS_DEFAULT`, 90).
pub const STACK_NEAR_MISS: &str = "stack_near_miss";
/// How much work the soak scenarios do: `check` (default) or `soak`
/// (`abi::config::Workload`).
pub const WORKLOAD: &str = "workload";

/// The value of `key` in `cmdline`, if present (the last one wins, like Linux).
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// The scenario names requested on `cmdline`, in order (empty names dropped).
pub fn scenarios(cmdline: &str) -> impl Iterator<Item = &str> {
    value(cmdline, SCENARIOS)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_lists() {
        let c = "foo scenarios=a,b,,c expect_cpus=4 scenarios=x,y";
        assert_eq!(value(c, EXPECT_CPUS), Some("4"));
        assert_eq!(value(c, "missing"), None);
        let mut it = scenarios(c);
        assert_eq!(
            (it.next(), it.next(), it.next()),
            (Some("x"), Some("y"), None)
        );
        assert_eq!(scenarios("").count(), 0);
    }
}
