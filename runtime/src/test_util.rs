//! Helpers shared by unit tests; the integration tests (`runtime/tests/common`) include
//! this file too (`#[path]`), so the crate has one copy of [`skip`].

use std::ffi::OsString;

/// Arguments as strings, for comparing command lines against golden lists.
pub fn strs(v: Vec<OsString>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect()
}

/// The names in `dir`, sorted: what a user listing it would see.
pub fn sorted_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every number in `log` (one a line), in order.
pub fn counts(log: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The number written right after the last occurrence of `value` in `log`, once there
/// is one (None after `timeout`): a counter that carried on from `value` writes
/// `value + 1`, one restarted from zero writes 1.
pub fn next_after(log: &std::path::Path, value: u64, timeout: std::time::Duration) -> Option<u64> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let c = counts(log);
        if let Some(n) = c
            .iter()
            .rposition(|v| *v == value)
            .and_then(|i| c.get(i + 1))
        {
            return Some(*n);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Set to `1` (CI does) to make every missing precondition a test failure.
pub const REQUIRE_ENV: &str = "CEDANA_TEST_E2E";
/// When set, every skip also appends its `SKIPPED:` line to this file.
pub const SKIP_LOG_ENV: &str = "CEDANA_TEST_SKIP_LOG";

/// A test (or one of its checks) cannot run here because `why`; `fix` says how to get
/// what is missing. Under `CEDANA_TEST_E2E=1` this panics, since a skipped test would
/// otherwise count as passed; otherwise it prints `SKIPPED: <test>: <why>` to stderr,
/// appends that line to `$CEDANA_TEST_SKIP_LOG` if set, and returns false for the caller's
/// early return.
#[track_caller]
pub fn skip(why: &str, fix: &str) -> bool {
    // libtest runs each test on a thread named after it.
    let here = std::panic::Location::caller();
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(n) if n != "main" => n.to_string(),
        _ => format!("{}:{}", here.file(), here.line()),
    };
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: {why}; {REQUIRE_ENV}=1 requires every test to run: {fix}");
    }
    let line = format!("SKIPPED: {test}: {why} ({fix}; set {REQUIRE_ENV}=1 to fail instead)");
    use std::io::Write;
    // Straight to fd 2, not eprintln!: libtest captures the print macros of a passing
    // test, and a skip must show in every run.
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            panic!(
                "cannot append to {SKIP_LOG_ENV}={}: {e}",
                std::path::Path::new(&log).display()
            );
        }
    }
    false
}

/// True when running as root; otherwise [`skip`]s with `what` needing it.
#[track_caller]
pub fn need_root(what: &str) -> bool {
    nix::unistd::geteuid().is_root()
        || skip(
            &format!("{what} needs root"),
            "run the tests as root after `make deps`",
        )
}
