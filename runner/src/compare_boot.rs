//! `compare-boot`: boot `boot.conformance` on every boot path this machine
//! has, and print the boot facts side by side with what the protocol rules
//! out flagged (the judging is `compare`'s, pure and unit-tested).

use crate::boot::media;
use crate::cli::{BootPath, Options};
use crate::fatal::Fatal;
use crate::output::summary;
use crate::record::Mode;
use crate::report::compare;
use crate::session::{self, CONFORMANCE};
use crate::{select, status};
use abi::Outcome;

pub fn execute(options: &Options) -> Result<i32, Fatal> {
    let scenario = abi::scenario::find(CONFORMANCE)
        .ok_or_else(|| Fatal::setup(format!("{CONFORMANCE} is not in the scenario catalog")))?;
    let smp = options.smp.unwrap_or(4);
    let mut boots = Vec::new();
    let mut missing = Vec::new();
    for path in BootPath::ALL {
        match media::check(path) {
            Ok(()) => boots.extend(select::boots_on(path, &[(scenario, smp)])),
            Err(why) => missing.push(format!("{}: not compared: {why}", path.as_str())),
        }
    }
    select::name_boots(&mut boots);
    let paths: Vec<BootPath> = boots.iter().map(|b| b.path).collect();
    let setup = session::setup(options, &paths)?;
    let records = session::boot_all(Mode::Run, &setup, boots, options)?;
    if records.iter().any(|r| r.verdict.outcome != Outcome::Pass) {
        summary::print(Mode::Run, &records, &[]);
        return Ok(session::exit_status(Mode::Run, &records).max(status::TEST_FAILURE));
    }
    let columns: Vec<compare::Column> = session::conformance_columns(&records)
        .into_iter()
        .flat_map(|(_, columns)| columns)
        .collect();
    let flags = compare::judge(&columns);
    println!();
    for line in compare::table(&columns, &flags) {
        println!("{line}");
    }
    println!();
    for line in &missing {
        println!("{line}");
    }
    if flags.is_empty() {
        println!(
            "no difference the protocol forbids across {} path(s) at smp={smp} \
             (`~` marks one it allows)",
            columns.len(),
        );
        Ok(status::OK)
    } else {
        for flag in &flags {
            println!("FLAG {flag}");
        }
        println!("{} flag(s)", flags.len());
        Ok(status::TEST_FAILURE)
    }
}
