//! Every input the fuzzers found a crash with (`fuzz/regressions/<target>/`) and every seed
//! (`fuzz/seeds/<target>/`), fed through the fuzz target's own harness (`fuzz/src/lib.rs`, included
//! here as a module): none may panic, not even where Cardinal catches the panic (a rule's panic
//! becomes a rule error), since the fuzzer reports those too. See fuzz/README.md.
// Test code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;

thread_local! {
    /// Where the last panic on this thread happened, caught or not.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records every panic's location for the thread it happens on, then reports it as usual.
fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info.location().map(ToString::to_string).unwrap_or_default();
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(at));
            report(info);
        }));
    });
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind` for `target`, and names each one that panicked. An input that
/// overflows the stack aborts the whole test binary instead: its name is printed before it runs.
fn replay(kind: &str, target: &str) {
    let run = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .expect("a known target");
    record_panics();
    let mut failed = Vec::new();
    let files = inputs(kind, target);
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        eprintln!("{}", file.display());
        LAST_PANIC.with(|last| last.borrow_mut().take());
        let unwound = catch_unwind(AssertUnwindSafe(|| run(&data))).is_err();
        if let Some(at) = LAST_PANIC.with(|last| last.borrow_mut().take()) {
            let caught = if unwound {
                ""
            } else {
                " (caught inside Cardinal)"
            };
            failed.push(format!("{}: panicked at {at}{caught}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {kind} of {target} panic:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn seeds_do_not_panic() {
    for (target, _) in harness::TARGETS {
        let count = inputs("seeds", target).len();
        assert!(count > 0, "no seeds for {target}");
        replay("seeds", target);
    }
}

// The crashes the fuzzers found (fuzz/regressions/README.md): unbounded nesting of
// `{"resource": ...}` wrappers in src/fhir/read.rs (a stack overflow, which would abort this test
// binary), byte slicing of non-ASCII text in src/fhir/time.rs, and resources whose kept JSON text did
// not parse back (lone surrogate escapes, numbers out of range), now refused by the reader.

#[test]
fn hook_request_regressions() {
    replay("regressions", "hook_request");
}

#[test]
fn fhir_reader_regressions() {
    replay("regressions", "fhir_reader");
}

#[test]
fn fhir_dates_regressions() {
    replay("regressions", "fhir_dates");
}

#[test]
fn prefetch_template_regressions() {
    replay("regressions", "prefetch_template");
}
