//! Helpers of the end-to-end tests that drive a real `aloft agent` process: the harness itself
//! ([`AgentProc`]), waiting and privileged-test skips come from `aloft-testkit`.
#![allow(dead_code)]

use std::path::PathBuf;

pub use aloft_testkit::{privileged_or_skip, wait_for, wait_for_async, AgentProc, PATIENCE};

/// Whether `pid` is a live process (zombies are dead); pids as the API reports them.
pub fn alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(aloft_testkit::alive)
}

/// A temp dir with an empty `image` directory in it: (the dir, the image path, as a string).
pub fn setup() -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let image_s = image.display().to_string();
    (tmp, image, image_s)
}
