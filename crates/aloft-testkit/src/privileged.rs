//! Tests that need root, cgroups or mounts: skipped where they cannot run, except where
//! [`REQUIRE_PRIVILEGED`] is set (`.ci/run` sets it), so a CI that lost its privileges cannot
//! pass by skipping them.

/// The switch that turns skips into failures.
pub const REQUIRE_PRIVILEGED: &str = "ALOFT_REQUIRE_PRIVILEGED_TESTS";

/// Whether a privileged test can go on: `Err(why)` prints a skip line, or fails the test when
/// [`REQUIRE_PRIVILEGED`] is set.
pub fn privileged_or_skip(test: &str, can: Result<(), String>) -> bool {
    let Err(why) = can else { return true };
    assert!(
        std::env::var_os(REQUIRE_PRIVILEGED).is_none(),
        "{test} cannot run here ({why}) but {REQUIRE_PRIVILEGED} is set"
    );
    // Straight to stderr: libtest captures `eprintln!` of passing tests, and a skip must show.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}
