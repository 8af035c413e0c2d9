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

/// Whether this test process runs as root (real uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where Debian's busybox-static puts its static busybox (test images are made of it).
pub const BUSYBOX: &str = "/usr/bin/busybox";

/// Whether this host can build images and run container machines: root, buildah, runc, tini,
/// iproute2, iptables and a static busybox. The error names what is missing.
pub fn can_run_containers() -> Result<(), String> {
    if !is_root() {
        return Err("containers and buildah builds here need root".into());
    }
    for (tool, package) in [
        ("buildah", "buildah"),
        ("runc", "runc"),
        ("tini-static", "tini"),
        ("ip", "iproute2"),
        ("iptables", "iptables"),
    ] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "{tool} is not installed (apt-get install {package})"
            ));
        }
    }
    if !std::path::Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    Ok(())
}

/// A `containers-storage.conf` of its own under `dir` (vfs driver): builds in a test share no
/// image cache with the host or other tests, and leave nothing behind. Set
/// `CONTAINERS_STORAGE_CONF` to the returned path for the CLI.
pub fn private_image_store(dir: &std::path::Path) -> PathBuf {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}/root\"\nrunroot = \"{}/run\"\n",
            store.display(),
            store.display()
        ),
    )
    .unwrap();
    conf
}

/// A finished command's stdout then stderr, as one text (for assertions and their messages).
pub fn combined(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the `aloft` binary with `args` and `env`, in an environment without the test's own
/// agent, context or app (`ALOFT_API_URL`, `ALOFT_API_TOKEN`, `ALOFT_CONTEXT`, `ALOFT_APP`);
/// `stdin` is written to it and closed (`None`: /dev/null).
pub fn run_aloft(
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_aloft"));
    command.args(args);
    for var in [
        "ALOFT_API_URL",
        "ALOFT_API_TOKEN",
        "ALOFT_CONTEXT",
        "ALOFT_APP",
    ] {
        command.env_remove(var);
    }
    command
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("aloft runs");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// `aloft ARGS` against `agent` (its URL and token), stdin /dev/null.
pub fn aloft(agent: &AgentProc, args: &[&str]) -> std::process::Output {
    aloft_stdin(agent, args, None)
}

/// `aloft ARGS` against `agent`, with `stdin` written to it.
pub fn aloft_stdin(agent: &AgentProc, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    run_aloft(
        args,
        &[
            ("ALOFT_API_URL", agent.url.as_ref()),
            ("ALOFT_API_TOKEN", agent.token.as_ref()),
        ],
        stdin,
    )
}

/// Bytes of a command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The stdout of a command that must succeed (exit 0; else its stderr is shown).
pub fn ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The output (stdout then stderr) of a command that must fail.
pub fn fails(out: &std::process::Output) -> String {
    assert_ne!(out.status.code(), Some(0), "expected a failure");
    combined(out)
}

/// Pushes a one-layer image with a static busybox at /bin/busybox to `app`; its reference.
pub async fn push_busybox(agent: &AgentProc, app: &str, dir: &std::path::Path) -> String {
    use aloft_oci::layout::testing::{image, tar, write_layout, Entry};
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let img = image(
        &[tar(&[
            Entry::Dir("bin"),
            Entry::File("bin/busybox", &busybox, 0o755),
            Entry::Symlink("bin/sh", "busybox"),
            Entry::Dir("tmp"),
        ])],
        &["/bin/busybox"],
    );
    let layout = dir.join("layout");
    write_layout(&layout, &img, "busybox");
    let client = aloft_client::Client::new(&agent.url, Some(agent.token.clone()));
    client.push_image(app, &layout, |_| {}).await.unwrap();
    format!("aloft/{app}@{}", img.manifest)
}
