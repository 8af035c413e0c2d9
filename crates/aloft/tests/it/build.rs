//! Image production through the real CLI: `aloft deploy --build-only` builds the app's
//! Dockerfile with buildah (FROM scratch + the static busybox of busybox-static: no registry is
//! reachable here) or fetches a prebuilt image with skopeo, and the tests look inside the OCI
//! layout it prints: the image config (Entrypoint, Cmd, Env, WorkingDir, User) and the files of
//! its layers. Nothing here talks to an agent: the API URL points at a closed port.
//!
//! Builds need root and buildah (skipped otherwise, failed under
//! `ALOFT_REQUIRE_PRIVILEGED_TESTS=1`). Each test has its own image store (vfs, in its temp
//! dir, through `CONTAINERS_STORAGE_CONF`, which aloft's buildah and skopeo inherit), so
//! nothing is left in the host's store and tests share no cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::privileged_or_skip;

/// Whether a build can run here.
fn can_build() -> Result<(), String> {
    if !crate::common::is_root() {
        return Err("buildah builds here run as root".into());
    }
    for tool in ["buildah", "skopeo"] {
        let ran = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !ran.is_ok_and(|s| s.success()) {
            return Err(format!("{tool} is not installed (apt-get install {tool})"));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    Ok(())
}

const BUSYBOX: &str = "/usr/bin/busybox";

/// An app directory (fly.toml, a static busybox) and a data dir, for one app name.
struct App {
    tmp: tempfile::TempDir,
    name: String,
}

impl App {
    fn new(test: &str) -> App {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("app")).unwrap();
        std::fs::create_dir(tmp.path().join("data")).unwrap();
        let store = tmp.path().join("store");
        std::fs::write(
            tmp.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}/root\"\nrunroot = \"{}/run\"\n",
                store.display(),
                store.display()
            ),
        )
        .unwrap();
        App {
            tmp,
            name: format!("bt-{}-{test}", std::process::id()),
        }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("app")
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// fly.toml: the app's name, then `extra`.
    fn config(&self, extra: &str) {
        self.write("fly.toml", &format!("app = \"{}\"\n{extra}", self.name));
    }

    /// A command that uses this test's image store.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env(
            "CONTAINERS_STORAGE_CONF",
            self.tmp.path().join("storage.conf"),
        );
        cmd
    }

    fn with_busybox(&self) {
        std::fs::copy(BUSYBOX, self.dir().join("busybox")).unwrap();
    }

    fn aloft(&self, args: &[&str]) -> Output {
        // A port nothing listens on: a build must not need the agent.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        self.command(env!("CARGO_BIN_EXE_aloft"))
            .args(args)
            .current_dir(self.dir())
            .env("ALOFT_API_URL", format!("http://{closed}"))
            .env("ALOFT_API_TOKEN", "unused")
            .env("ALOFT_DATA_DIR", self.tmp.path().join("data"))
            .env_remove("ALOFT_APP")
            .env_remove("ALOFT_BUILD_ISOLATION")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .output()
            .expect("aloft runs")
    }

    /// `deploy --build-only` that must succeed: the layout it printed, its tag, and stderr.
    fn build(&self, args: &[&str]) -> (PathBuf, String, String) {
        let mut all = vec!["deploy", "--build-only"];
        all.extend_from_slice(args);
        let out = self.aloft(&all);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "aloft {all:?} failed:\n{stdout}{stderr}"
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("OCI layout: "))
            .unwrap_or_else(|| panic!("no layout printed:\n{stdout}"));
        let (dir, tag) = line.split_once(" (image ").unwrap();
        (
            PathBuf::from(dir),
            tag.trim_end_matches(')').to_string(),
            stderr,
        )
    }

    /// `deploy --build-only` that must fail with exit code 1: its stderr.
    fn build_fails(&self, args: &[&str]) -> String {
        let mut all = vec!["deploy", "--build-only"];
        all.extend_from_slice(args);
        let out = self.aloft(&all);
        let (stdout, stderr) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "aloft {all:?} should fail:\n{stdout}{stderr}"
        );
        stderr
    }
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An image of an OCI layout, read the way the OCI image spec lays it out.
struct LayoutImage {
    config: Value,
    /// Every file of every layer, path (without a leading `./` or `/`) → content; later layers
    /// win.
    files: BTreeMap<String, Vec<u8>>,
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn read_layout(layout: &Path, tag: &str) -> LayoutImage {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"));
    let manifest = read_json(&blob(layout, entry["digest"].as_str().unwrap()));
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let bytes = std::fs::read(blob(layout, layer["digest"].as_str().unwrap())).unwrap();
        let media = layer["mediaType"].as_str().unwrap_or("");
        let reader: Box<dyn Read> = if media.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(bytes.as_slice()))
        } else {
            assert!(media.ends_with("tar"), "layer type {media}");
            Box::new(bytes.as_slice())
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let path = path.trim_start_matches("./").trim_start_matches('/');
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path.to_string(), data);
        }
    }
    LayoutImage { config, files }
}

impl LayoutImage {
    fn run(&self, key: &str) -> &Value {
        &self.config["config"][key]
    }

    fn env(&self, name: &str) -> Option<String> {
        self.run("Env")
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
    }

    fn file(&self, path: &str) -> Option<String> {
        self.files
            .get(path)
            .map(|d| String::from_utf8_lossy(d).into_owned())
    }
}

const MULTI_STAGE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS tools
ARG FLAVOUR=plain
RUN mkdir -p /out && echo "$FLAVOUR" > /out/flavour

FROM base AS final
ARG GREETING=hi
ARG COLOUR
ENV GREETING=$GREETING COLOUR=$COLOUR
WORKDIR /srv/app
COPY --from=tools /out/flavour ./flavour
COPY . ./
RUN echo 'app:x:1000:1000::/srv/app:/bin/sh' >> /etc/passwd && echo "made by $GREETING" > made-by-run
USER app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat flavour"]

FROM final AS debug
ENV DEBUG=1
CMD ["env"]
"#;

/// Every instruction runs: a multi-stage Dockerfile named in fly.toml, its build args from
/// `[build.args]` and `--build-arg` (the flag wins), its target from `build-target` and
/// `--build-target`, its ignore file honoured; the layout's config carries what the Dockerfile
/// set, and the next build reuses the unchanged steps.
#[test]
fn a_multi_stage_dockerfile_is_built_with_its_args_target_and_ignore_file() {
    if !privileged_or_skip("a_multi_stage_dockerfile_is_built", can_build()) {
        return;
    }
    let app = App::new("multi");
    app.with_busybox();
    app.write("docker/Dockerfile.aloft", MULTI_STAGE);
    app.write("docker/ignore", "secret.txt\ndocker\n");
    app.write("secret.txt", "do not ship\n");
    app.write("kept.txt", "shipped\n");
    app.config(
        "[build]\ndockerfile = \"docker/Dockerfile.aloft\"\nignorefile = \"docker/ignore\"\nbuild-target = \"final\"\n[build.args]\nGREETING = \"toml\"\nCOLOUR = \"toml-colour\"\n",
    );

    let (layout, tag, stderr) = app.build(&["--build-arg", "COLOUR=flag-colour"]);
    assert!(
        stderr.contains("STEP") && stderr.contains("RUN echo 'app:x:1000"),
        "build output is shown:\n{stderr}"
    );
    assert!(layout.starts_with(app.tmp.path().join("data/builds")));
    let image = read_layout(&layout, &tag);
    assert_eq!(
        image.run("Entrypoint"),
        &serde_json::json!(["/bin/sh", "-c"])
    );
    assert_eq!(image.run("Cmd"), &serde_json::json!(["cat flavour"]));
    assert_eq!(image.run("WorkingDir"), "/srv/app");
    assert_eq!(image.run("User"), "app");
    assert_eq!(image.env("GREETING").as_deref(), Some("toml"));
    assert_eq!(image.env("COLOUR").as_deref(), Some("flag-colour"));
    assert_eq!(image.env("DEBUG"), None, "the debug stage is not built");
    assert_eq!(
        image.file("srv/app/made-by-run").as_deref(),
        Some("made by toml\n")
    );
    assert_eq!(image.file("srv/app/flavour").as_deref(), Some("plain\n"));
    assert_eq!(image.file("srv/app/kept.txt").as_deref(), Some("shipped\n"));
    assert!(image.file("srv/app/fly.toml").is_some());
    assert!(
        image.file("etc/passwd").unwrap().contains("app:x:1000"),
        "RUN steps ran"
    );
    for ignored in ["srv/app/secret.txt", "srv/app/docker/ignore"] {
        assert!(
            !image.files.contains_key(ignored),
            "{ignored} is in the ignore file but in the image"
        );
    }

    // Another target from the flag; the steps it shares with the last build come from cache.
    let (layout2, tag2, stderr) = app.build(&["--build-target", "debug", "--image-label", "dbg"]);
    assert_eq!(tag2, "dbg");
    assert!(stderr.contains("Using cache"), "no cached step:\n{stderr}");
    let debug = read_layout(&layout2, "dbg");
    assert_eq!(debug.env("DEBUG").as_deref(), Some("1"));
    assert_eq!(debug.run("Cmd"), &serde_json::json!(["env"]));
    assert_eq!(debug.env("COLOUR").as_deref(), Some("toml-colour"));

    // --no-cache builds every step again.
    let (_, _, stderr) = app.build(&["--no-cache"]);
    assert!(!stderr.contains("Using cache"), "cache used:\n{stderr}");
}

/// A RUN step that fails (of a Dockerfile named by `--dockerfile`): its output is shown, and
/// the error names the step.
#[test]
fn a_failing_run_step_is_named_with_its_output_shown() {
    if !privileged_or_skip("a_failing_run_step_is_named", can_build()) {
        return;
    }
    let app = App::new("fails");
    app.with_busybox();
    app.write(
        "Dockerfile.fails",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN echo about to fail && exit 3\nCMD [\"true\"]\n",
    );
    app.config("");
    let stderr = app.build_fails(&["--dockerfile", "Dockerfile.fails"]);
    assert!(
        stderr.contains("about to fail"),
        "step output shown:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "the image build failed at step `RUN echo about to fail && exit 3` of Dockerfile.fails (exit status 3): the build output above shows why"
        ),
        "{stderr}"
    );
    let builds = app.tmp.path().join("data/builds");
    let layouts = std::fs::read_dir(&builds)
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().is_dir()).count())
        .unwrap_or(0);
    assert_eq!(layouts, 0, "no layout is left by a failed build");
}

/// An image built elsewhere into the local store, named by `[build] image`, becomes a layout;
/// a local name that is nowhere is an error naming it.
#[test]
fn a_prebuilt_image_is_taken_from_the_local_store() {
    if !privileged_or_skip(
        "a_prebuilt_image_is_taken_from_the_local_store",
        can_build(),
    ) {
        return;
    }
    let app = App::new("prebuilt");
    app.with_busybox();
    app.write(
        "prebuilt/Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nENV MADE=elsewhere\nCMD [\"/bin/busybox\", \"true\"]\n",
    );
    std::fs::copy(BUSYBOX, app.dir().join("prebuilt/busybox")).unwrap();
    let reference = format!("localhost/{}-img:v1", app.name);
    let built = app
        .command("buildah")
        .args([
            "build",
            "--quiet",
            "--isolation",
            "chroot",
            "-t",
            &reference,
        ])
        .arg(app.dir().join("prebuilt"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", texts(&built).1);
    // The Dockerfile beside fly.toml is not built: the image wins.
    app.write("Dockerfile", "FROM scratch\nRUN false\n");
    app.config(&format!("[build]\nimage = \"{reference}\"\n"));

    let (layout, tag, stderr) = app.build(&[]);
    assert!(
        stderr.contains("taken from the local buildah/podman store"),
        "{stderr}"
    );
    let image = read_layout(&layout, &tag);
    assert_eq!(image.env("MADE").as_deref(), Some("elsewhere"));
    assert_eq!(
        image.run("Cmd"),
        &serde_json::json!(["/bin/busybox", "true"])
    );
    assert!(image.files.contains_key("bin/busybox"));

    let missing = format!("localhost/{}-missing:v1", app.name);
    let stderr = app.build_fails(&["--image", &missing]);
    assert!(
        stderr.contains(&format!("the image {missing} does not exist")),
        "{stderr}"
    );
}

/// A registry that cannot be reached is named, with the reference.
#[test]
fn an_unreachable_registry_is_named() {
    if !privileged_or_skip("an_unreachable_registry_is_named", can_build()) {
        return;
    }
    let app = App::new("registry");
    app.config("");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let reference = format!("{closed}/team/app:v1");
    let stderr = app.build_fails(&["--image", &reference]);
    assert!(
        stderr.contains(&format!(
            "cannot reach the registry {closed} to fetch {reference}"
        )),
        "{stderr}"
    );
}

/// `[build] builder` (buildpacks): `config validate` accepts it with a warning; a deploy
/// refuses it at its place, before anything is built or the agent is asked.
#[test]
fn buildpacks_are_refused_at_deploy_with_their_place() {
    let app = App::new("buildpacks");
    app.config("\n[build]\n  builder = \"paketobuildpacks/builder:base\"\n");
    let out = app.aloft(&["config", "validate"]);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: [build] builder (Cloud Native Buildpacks) is not supported"),
        "{stderr}"
    );
    for args in [&["deploy", "--build-only"][..], &["deploy"][..]] {
        let out = app.aloft(args);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: deploy refused: the config asks for a build Aloft cannot do"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--> fly.toml:4:13"), "{args:?}: {stderr}");
        assert!(stderr.contains("write a Dockerfile"), "{args:?}: {stderr}");
    }
}

/// With neither a Dockerfile nor an image there is nothing to build: said, with the limits of
/// the process runtime the app runs on.
#[test]
fn build_only_without_a_dockerfile_says_there_is_nothing_to_build() {
    let app = App::new("plain");
    app.config("");
    let stderr = app.build_fails(&[]);
    assert!(stderr.contains("nothing to build"), "{stderr}");
    assert!(
        stderr.contains("no Dockerfile: machines run as host processes"),
        "{stderr}"
    );
}

/// `examples/process-groups` (the README's example app) builds as its comments say: with a
/// copy of the static busybox beside its Dockerfile.
#[test]
fn the_image_example_builds() {
    if !privileged_or_skip("the_image_example_builds", can_build()) {
        return;
    }
    let app = App::new("example");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process-groups");
    let copy = Command::new("cp")
        .arg("-rT")
        .arg(&example)
        .arg(app.dir())
        .status()
        .unwrap();
    assert!(copy.success());
    app.with_busybox();
    // The example's own name, made unique to this test.
    let toml = std::fs::read_to_string(app.dir().join("fly.toml")).unwrap();
    app.write(
        "fly.toml",
        &toml.replace("app = \"hello-groups\"", &format!("app = \"{}\"", app.name)),
    );
    let (layout, tag, _) = app.build(&[]);
    let image = read_layout(&layout, &tag);
    assert_eq!(
        image.run("Entrypoint"),
        &serde_json::json!(["sh", "entrypoint.sh"])
    );
    assert_eq!(image.run("User"), "app");
    assert_eq!(image.run("WorkingDir"), "/app");
    assert!(image.files.contains_key("app/web.sh"));
    assert!(image.files.contains_key("app/worker.sh"));
    assert!(
        image.files.contains_key("bin/httpd"),
        "busybox applets installed"
    );
}
