//! End to end: every outcome class the runner knows, produced by a real QEMU
//! boot of a scenario built to end that way, and read back from `--json`.

#[path = "results_schema.rs"]
mod results_schema;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    json: Option<Value>,
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("runner-outcomes-{}-{name}", std::process::id()))
}

fn runner(name: &str, args: &[&str], configure: impl FnOnce(&mut Command)) -> Run {
    let json = scratch(&format!("{name}.json"));
    let _ = std::fs::remove_file(&json);
    let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
    command.args(args).arg("--json").arg(&json);
    configure(&mut command);
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the runner binary starts");
    let run = Run {
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        json: std::fs::read_to_string(&json)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok()),
    };
    let _ = std::fs::remove_file(&json);
    if let Some(document) = &run.json {
        results_schema::check(document);
    }
    run
}

/// Boot `args` and return the only boot's JSON record, after checking its class.
fn boot(name: &str, args: &[&str], outcome: &str) -> Value {
    let run = runner(name, args, |_| {});
    let json = run.json.unwrap_or_else(|| {
        panic!(
            "no JSON from `runner {}` (status {:?})\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            run.status,
            run.stdout,
            run.stderr
        )
    });
    let boots = json["boots"].as_array().expect("a boots array");
    assert_eq!(boots.len(), 1, "{json:#}");
    let boot = boots[0].clone();
    assert_eq!(
        boot["outcome"],
        outcome,
        "runner {}:\n{json:#}\nstdout:\n{}",
        args.join(" "),
        run.stdout
    );
    let serial = boot["serial_log"].as_str().expect("a serial log path");
    assert!(
        std::path::Path::new(serial).is_file(),
        "{serial} was not kept"
    );
    boot
}

#[test]
fn hang_is_a_timeout() {
    let boot = boot(
        "hang",
        &["run", "selftest.hang", "--timeout", "3"],
        "timeout",
    );
    assert!(boot["exit_status"].is_null());
    let seconds = boot["duration_s"].as_f64().unwrap();
    assert!((3.0..10.0).contains(&seconds), "killed after {seconds}s");
}

#[test]
fn triple_fault_is_a_reset() {
    let boot = boot("triple", &["run", "selftest.triple_fault"], "reset");
    assert_eq!(boot["exit_status"], 0);
}

#[test]
fn panic_is_a_panic_with_its_message() {
    let boot = boot("panic", &["run", "selftest.panic"], "panic");
    let message = boot["panic"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("selftest.panic: deliberate panic"),
        "{boot:#}"
    );
}

#[test]
fn broken_plan_is_malformed() {
    let boot = boot("bad_ktap", &["run", "selftest.bad_ktap"], "malformed");
    assert!(!boot["problems"].as_array().unwrap().is_empty(), "{boot:#}");
}

#[test]
fn not_ok_is_a_failure() {
    let boot = boot("fail", &["run", "selftest.fail"], "fail");
    assert_eq!(boot["results"][0]["outcome"], "fail");
}

#[test]
fn smoke_passes_on_four_cpus() {
    let boot = boot("smoke", &["run", "boot.smoke", "--smp", "4"], "pass");
    assert_eq!(boot["smp"], 4);
    assert_eq!(boot["results"][0]["outcome"], "pass");
}

/// QEMU boots the guest without its DWARF (`boot::image`), and what it
/// boots loads the same bytes as the full ELF the verdicts read.
#[test]
fn boots_the_guest_without_its_debug_sections() {
    use object::{Object, ObjectSection, ObjectSegment};
    let run = runner("image", &["run", "boot.smoke", "--print-qemu"], |_| {});
    let json = run.json.expect("a JSON document");
    assert_eq!(json["boots"][0]["outcome"], "pass", "{json:#}");
    let guest = PathBuf::from(json["images"]["guest"].as_str().unwrap());
    let image = guest.with_extension("boot");
    assert!(
        run.stdout
            .contains(&format!("-initrd {} ", image.display())),
        "QEMU was not given {}:\n{}",
        image.display(),
        run.stdout
    );
    let (full, booted) = (
        std::fs::read(&guest).unwrap(),
        std::fs::read(&image).unwrap(),
    );
    let parse = |data: &[u8]| {
        let file = object::File::parse(data).unwrap();
        let debug = file
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug")))
            .count();
        let segments: Vec<(u64, Vec<u8>)> = file
            .segments()
            .map(|s| (s.address(), s.data().unwrap().to_vec()))
            .collect();
        (debug, segments)
    };
    let ((full_debug, full_loaded), (image_debug, image_loaded)) = (parse(&full), parse(&booted));
    assert!(
        full_debug > 0 && image_debug == 0,
        "{full_debug} / {image_debug}"
    );
    assert_eq!(full_loaded, image_loaded);
    assert!(
        booted.len() * 3 < full.len(),
        "{} vs {}",
        booted.len(),
        full.len()
    );
}

#[test]
fn unknown_scenario_is_a_usage_error_before_anything_runs() {
    let target = scratch("target");
    let _ = std::fs::remove_dir_all(&target);
    let run = runner("unknown", &["run", "no.such.scenario"], |c| {
        c.env("CARGO_TARGET_DIR", &target);
    });
    assert_eq!(run.status, Some(2), "{}", run.stderr);
    let error: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(error.len(), 1, "one line: {error:?}");
    assert!(error[0].contains("no.such.scenario"), "{}", error[0]);
    for name in abi::SCENARIOS.iter().map(|s| s.name) {
        assert!(error[0].contains(name), "{name} not listed: {}", error[0]);
    }
    assert!(!target.join("runs").exists(), "a run directory was created");
    assert!(run.json.is_none());
    let _ = std::fs::remove_dir_all(&target);
}

/// The Limine release the Limine tests boot: `LIMINE_DIR`, else the cache
/// `make limine` fills. `None` (and a loud SKIP on stderr) when neither.
fn limine_dir(test: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap_or_default();
    let tag = makefile
        .lines()
        .find_map(|l| l.strip_prefix("LIMINE_TAG"))
        .and_then(|l| l.split(":=").nth(1))
        .map(str::trim)
        .unwrap_or("none");
    let cache = root.join(".cache/limine").join(tag);
    match std::env::var_os("LIMINE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if cache.join("limine-bios.sys").is_file() => Some(cache),
        None => {
            // Straight to the process's stderr, past the test harness's
            // capture, so the skip shows in a plain `cargo test` too.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: no Limine release: set LIMINE_DIR to a Limine binary release \
                 or run `make limine` to boot through real Limine"
            );
            None
        }
    }
}

fn limine_boot(test: &str, path: &str) {
    let Some(dir) = limine_dir(test) else { return };
    let args = [
        "run",
        "boot.smoke",
        "boot.conformance",
        "--boot",
        path,
        "--smp",
        "4",
    ];
    let run = runner(test, &args, |c| {
        c.env("LIMINE_DIR", &dir);
    });
    let json = run.json.unwrap_or_else(|| {
        panic!(
            "no JSON from `runner {}` (status {:?})\n{}",
            args.join(" "),
            run.status,
            run.stderr
        )
    });
    let boot = &json["boots"][0];
    assert_eq!(boot["boot_path"], path, "{json:#}");
    assert_eq!(boot["outcome"], "pass", "{json:#}\n{}", run.stdout);
    assert!(boot["qemu_command"].as_str().unwrap().contains("-cdrom"));
    assert_eq!(run.status, Some(0));
}

#[test]
fn smoke_and_conformance_pass_through_limine_bios() {
    limine_boot("limine_bios", "limine-bios");
}

#[test]
fn smoke_and_conformance_pass_through_limine_uefi() {
    limine_boot("limine_uefi", "limine-uefi");
}

#[test]
fn direct_boot_gives_the_guest_what_limine_gives() {
    let Some(dir) = limine_dir("compare_boot") else {
        return;
    };
    let run = runner("compare", &["compare-boot"], |c| {
        c.env("LIMINE_DIR", &dir);
    });
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("no difference the protocol forbids across 3 path(s)"),
        "{}",
        run.stdout
    );
    let header = run.stdout.lines().find(|l| l.starts_with("fact ")).unwrap();
    for path in ["direct", "limine-bios", "limine-uefi"] {
        assert!(header.contains(path), "{header}");
    }
}

#[test]
fn limine_paths_without_limine_fail_with_how_to_get_it() {
    let empty = scratch("no-limine");
    std::fs::create_dir_all(&empty).unwrap();
    for limine_dir in [Some(empty.as_path()), None] {
        let run = runner(
            "no-limine",
            &["run", "boot.smoke", "--boot", "limine-bios"],
            |c| {
                match limine_dir {
                    Some(dir) => c.env("LIMINE_DIR", dir),
                    None => c.env_remove("LIMINE_DIR"),
                };
            },
        );
        if limine_dir.is_none() && run.status == Some(0) {
            // `make limine` has filled the cache: nothing is missing.
            continue;
        }
        assert_eq!(
            run.status,
            Some(10),
            "setup error, not a test failure: {}",
            run.stderr
        );
        let error: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(error.len(), 1, "one line: {error:?}");
        assert!(
            error[0].contains("LIMINE_DIR") && error[0].contains("make limine"),
            "{}",
            error[0]
        );
        assert!(run.json.is_none());
    }
    let _ = std::fs::remove_dir_all(&empty);
}

/// The testbed can fail: with no guard pages, the recursion that is caught
/// with good diagnostics by default must come out as not caught (or as a
/// jumped guard), never "caught", and the runner must exit nonzero.
#[test]
fn no_guard_pages_means_not_caught() {
    let args = [
        "run",
        "stack.recursion",
        "--guard-pages",
        "0",
        "--timeout",
        "20",
    ];
    let run = runner("no_guard", &args, |_| {});
    let json = run.json.unwrap_or_else(|| {
        panic!(
            "no JSON (status {:?})\nstdout:\n{}\nstderr:\n{}",
            run.status, run.stdout, run.stderr
        )
    });
    let result = &json["boots"][0]["results"][0];
    assert_eq!(result["scenario"], "stack.recursion", "{json:#}");
    let verdict = result["guard"]["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict == "not-caught" || verdict == "guard-jumped",
        "verdict {verdict:?}:\n{json:#}"
    );
    assert_eq!(result["guard"]["as_expected"], false, "{json:#}");
    assert_ne!(run.status, Some(0), "{}", run.stdout);
    assert!(
        !result["guard"]["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("caught"),
        "{json:#}"
    );

    // And with guards (the default), the same scenario is caught and told well.
    let run = runner("guarded", &["run", "stack.recursion"], |_| {});
    let json = run.json.expect("JSON");
    let result = &json["boots"][0]["results"][0];
    assert_eq!(result["guard"]["verdict"], "caught-good", "{json:#}");
    assert_eq!(run.status, Some(0), "{}", run.stdout);
}

/// The whole `--json` document of a real run that has each optional part
/// (a guard verdict, a use-after-free verdict, a panic record) holds to
/// `runner/schema/results.schema.json` (`runner()` checks every run's), and
/// says which shape and runner it is.
#[test]
fn a_run_with_every_kind_of_verdict_holds_to_the_schema() {
    let args = ["run", "stack.underflow", "life.uaf", "selftest.panic"];
    let run = runner("schema", &args, |_| {});
    let json = run.json.unwrap_or_else(|| {
        panic!(
            "no JSON (status {:?})\nstdout:\n{}\nstderr:\n{}",
            run.status, run.stdout, run.stderr
        )
    });
    assert_eq!(json["schema_version"], 1, "{json:#}");
    assert_eq!(json["runner_version"], env!("CARGO_PKG_VERSION"));
    let results: Vec<&Value> = json["boots"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap())
        .collect();
    // What the schema was held to must have had each part in it.
    for part in ["guard", "uaf"] {
        assert!(
            results.iter().any(|r| r[part].is_object()),
            "no {part}: {json:#}"
        );
    }
    assert!(
        json["boots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["panic"].is_object()),
        "no panic record: {json:#}"
    );
}
