//! The image and the chart's pods, run on this machine: the image is built
//! from the repository's Dockerfile with podman (its runtime stage as it is,
//! on a stand-in for its distroless base made from Debian's packages; its
//! build stage replaced by one that copies the binary this workspace built),
//! the chart is rendered, and its migration Job, API and worker Deployments
//! run as podman pods against the real PostgreSQL and Redis. A run is
//! streamed through them; the probes, the API's `/metrics` (on its metrics
//! port, not on its public one), and the user, capabilities, privileges
//! and root filesystem of the processes are checked from outside; and the
//! worker's ScaledObject is evaluated against the real queue, as KEDA
//! evaluates it, with the workers stopped, before that many workers are
//! started and drain the queue.
//!
//! Needs podman (with runc, slirp4netns and catatonit), helm, and the base
//! image's tarball: `scripts/install-test-tools.sh` installs them (Debian's
//! packages, and `.tools/`). Without them this test fails, saying so. It
//! runs as root, as the machine and CI do: podman's rootless mode needs
//! subordinate ids this test does not set up.
//!
//! Everything podman keeps for the test (images, containers, state) is in a
//! directory of its own, removed at the end with the pods, the images, the
//! database and the Redis keys, whether the test passed or not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use switchyard_tests::{
    Options, SseEvent, admin_url, deltas_of, find_tool, on_path, read_sse, redis_url, repo,
};

/// The runtime stage's base. No registry is reachable: the stand-in that
/// `scripts/install-test-tools.sh` makes (the same Debian packages, users
/// and certificates) is imported under this name before the build.
const BASE_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot";

/// Where `scripts/install-test-tools.sh` keeps the base's file system.
const BASE_TARBALL: &str = ".tools/images/distroless-cc-debian12-nonroot.tar";

/// The configuration the distroless image carries, given to the imported
/// file system: its user, working directory and environment.
const BASE_CONFIG: [&str; 4] = [
    "USER=65532",
    "WORKDIR=/home/nonroot",
    "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];

/// The image the test builds; its tag is the test's own suffix.
const IMAGE_REPOSITORY: &str = "localhost/switchyard-pods-test";

/// The host's loopback as slirp4netns shows it to a pod started with
/// `allow_host_loopback=true`: PostgreSQL and Redis are reached there.
const HOST_SEEN_FROM_PODS: &str = "10.0.2.2";

/// The pods' network: slirp4netns (user-mode, no bridge or firewall rules
/// on the host), with the host's loopback reachable.
const POD_NETWORK: &str = "slirp4netns:allow_host_loopback=true";

/// Runs waiting in the autoscaling check, and how many a worker is meant to
/// take (the ScaledObject's target and the worker's concurrency alike).
const BACKLOG: usize = 5;
const RUNS_PER_WORKER: usize = 2;
/// The ScaledObject's bounds: the backlog's workers fit under the maximum.
const MIN_WORKERS: usize = 1;
const MAX_WORKERS: usize = 4;

/// The scripted model's pause between words: a run lasts a few seconds, so
/// that a worker holding its share of runs cannot take the others' too.
const CHUNK_DELAY_MS: u64 = 200;

/// Bounds of the waits: one podman command; a pod's process becoming ready
/// or finishing; the backlog being drained.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
const START_LIMIT: Duration = Duration::from_secs(90);
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// One HTTP request, a run's whole event stream included.
const HTTP_LIMIT: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "run scripts/install-test-tools.sh, which installs podman, runc, \
     slirp4netns and catatonit from Debian's packages, helm into .tools/bin, and makes the \
     base image's tarball in .tools/images";

/// A program from its variable, `.tools/`, or the PATH; a clear failure if none.
fn tool(variable: &str, local: Option<&str>, name: &str) -> PathBuf {
    find_tool(variable, local, name).unwrap_or_else(|| {
        panic!(
            "{name} is needed by the pods test and was not found ({variable}, PATH): {INSTALL_HINT}"
        )
    })
}

/// Run a command to its end within `limit`: its output, or why not (it
/// could not start, or was still running at the limit and was killed).
fn run_within(command: &mut Command, limit: Duration) -> Result<Output, String> {
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {described}: {e}"))?;
    // Each pipe is read on a thread of its own, which hands its bytes over
    // when the pipe closes.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut bytes).ok();
            }
            sender.send(bytes).ok();
        });
        receiver
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                child.kill().ok();
                child.wait().ok();
                return Err(format!("{described} was still running after {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for {described}: {e}")),
        }
    };
    // A process the command left running in the background (podman's
    // conmon) could hold a pipe open: its output is not waited for forever.
    let collect = |receiver: std::sync::mpsc::Receiver<Vec<u8>>| {
        receiver
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("{described} left its output open"))
    };
    Ok(Output {
        status,
        stdout: collect(stdout)?,
        stderr: collect(stderr)?,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// podman, with the test's own storage, state and settings: nothing of the
/// machine's other containers is seen or touched, and removing the
/// directory removes all the test made.
struct Podman {
    program: PathBuf,
    dir: PathBuf,
}

impl Podman {
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.program);
        command
            .env("CONTAINERS_CONF", repo().join("tests/pods/containers.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("state"))
            .args(args);
        command
    }

    fn try_run<I, S>(&self, args: I) -> Result<Output, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_within(&mut self.command(args), COMMAND_LIMIT)
    }

    /// Run podman; its standard output. Fails the test, with podman's
    /// error, if it fails.
    fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(args);
        let described = format!("{command:?}");
        let output = run_within(&mut command, COMMAND_LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            output.status.success(),
            "{described} failed ({}):\n{}{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// `podman inspect` of a container, as JSON.
    fn inspect(&self, container: &str) -> Value {
        let out = self.run(["container", "inspect", container]);
        let mut all: Vec<Value> = serde_json::from_str(&out).expect("podman inspect prints JSON");
        assert_eq!(all.len(), 1, "one container {container}");
        all.remove(0)
    }

    /// The last lines each of the test's containers logged, for a failure's
    /// report.
    fn logs(&self) -> String {
        let Ok(listing) = self.try_run(["ps", "--all", "--format", "{{.Names}}"]) else {
            return String::new();
        };
        let mut report = String::new();
        for name in text(&listing.stdout).lines() {
            if name.ends_with("-infra") {
                continue;
            }
            if let Ok(output) = self.try_run(["logs", "--tail", "40", name]) {
                report.push_str(&format!(
                    "--- {name}\n{}{}",
                    text(&output.stdout),
                    text(&output.stderr)
                ));
            }
        }
        report
    }
}

/// What the test made: its podman directory (storage, state, build context,
/// manifests), its database and its Redis prefix. Dropping it removes them
/// all, whether the test passed or not.
struct Made {
    podman: Podman,
    database: String,
    prefix: String,
    /// Set once cleaned up: Drop has nothing left to do.
    cleaned: std::cell::Cell<bool>,
}

impl Made {
    fn dir(&self) -> &Path {
        &self.podman.dir
    }

    /// Remove the pods and images, then the directory; the database and the
    /// Redis keys. Every step is tried whatever failed before it; what
    /// failed is returned.
    fn clean_up(&self) -> Vec<String> {
        self.cleaned.set(true);
        let mut failures = Vec::new();
        let mut attempt = |what: &str, result: Result<Output, String>| match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => failures.push(format!("{what}: {}", text(&output.stderr))),
            Err(e) => failures.push(format!("{what}: {e}")),
        };
        if self.dir().join("storage").exists() {
            // Killed first: `pod rm --force` alone takes seconds a pod.
            self.podman.try_run(["pod", "kill", "--all"]).ok();
            attempt(
                "removing the pods",
                self.podman
                    .try_run(["pod", "rm", "--all", "--force", "--time", "0"]),
            );
            attempt(
                "removing the containers",
                self.podman
                    .try_run(["rm", "--all", "--force", "--time", "0"]),
            );
            attempt(
                "removing the volumes",
                self.podman.try_run(["volume", "rm", "--all", "--force"]),
            );
            attempt(
                "removing the images",
                self.podman.try_run(["rmi", "--all", "--force"]),
            );
        }
        // Whatever podman left mounted under the directory (nothing, when
        // the removals above worked), deepest first, before removing it.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| Path::new(point).starts_with(self.dir()))
            .collect();
        under.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in under {
            attempt(
                &format!("unmounting {point}"),
                run_within(Command::new("umount").arg(point), COMMAND_LIMIT),
            );
        }
        if let Err(e) = std::fs::remove_dir_all(self.dir())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            failures.push(format!("removing {}: {e}", self.dir().display()));
        }

        // The database and the keys, from a runtime of their own: this runs
        // from Drop too, which cannot await.
        let database = self.database.clone();
        let prefix = self.prefix.clone();
        let stores = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let mut errors = Vec::new();
                match admin_connection().await {
                    Ok(mut conn) => {
                        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "drop database if exists {database} with (force)"
                        )))
                        .execute(&mut conn)
                        .await
                        {
                            errors.push(format!("dropping database {database}: {e}"));
                        }
                    }
                    Err(e) => errors.push(format!("connecting to PostgreSQL: {e}")),
                }
                match redis_connection().await {
                    Ok(mut conn) => {
                        let script = redis::Script::new(
                            "local keys = redis.call('KEYS', ARGV[1]) \
                             for _, key in ipairs(keys) do redis.call('DEL', key) end \
                             return #keys",
                        );
                        let deleted: redis::RedisResult<i64> = script
                            .arg(format!("{prefix}:*"))
                            .invoke_async(&mut conn)
                            .await;
                        if let Err(e) = deleted {
                            errors.push(format!("deleting the keys {prefix}:*: {e}"));
                        }
                    }
                    Err(e) => errors.push(format!("connecting to Redis: {e}")),
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                }
            })
        });
        match stores.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("cleaning the database and keys panicked".into()),
        }
        failures
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if self.cleaned.get() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("the containers' last lines:\n{}", self.podman.logs());
        }
        for failure in self.clean_up() {
            eprintln!("cleaning up after the pods test: {failure}");
        }
    }
}

async fn admin_connection() -> Result<sqlx::PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(&admin_url())?.connect().await
}

async fn redis_connection() -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await
}

/// A URL's host and port, for the few forms the test is given
/// (`scheme://[user@]host[:port][/rest]`).
fn host_and_port(url: &str, default_port: u16) -> (String, u16) {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse().expect("a numeric port in the URL"),
        ),
        None => (host_port.to_owned(), default_port),
    }
}

/// What follows a URL's host and port: its path and query.
fn after_authority(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find(['/', '?'])
        .map_or("", |at| &after_scheme[at..])
}

/// Whether a URL carries a password (`user:password@`, or `password=`).
fn has_password(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        || url.contains("password=")
}

/// The address the pods reach a server of the host at: the host's loopback
/// is `HOST_SEEN_FROM_PODS` to them.
fn seen_from_pods(host: &str) -> String {
    if ["127.0.0.1", "localhost", "::1", "[::1]"].contains(&host) {
        HOST_SEEN_FROM_PODS.to_owned()
    } else {
        host.to_owned()
    }
}

/// A port on the host's loopback that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The test's podman directory, in the temporary directory. podman refuses
/// a state directory (`--runroot`) path longer than 50 characters: under a
/// longer temporary directory's path, /tmp is used.
fn podman_dir(id: &str) -> PathBuf {
    let name = format!("sypods-{id}");
    let dir = std::env::temp_dir().join(&name);
    if dir.join("run").as_os_str().len() <= 50 {
        dir
    } else {
        Path::new("/tmp").join(name)
    }
}

/// The `switchyard` binary of this workspace, up to date: the one cargo
/// builds beside this test's own executable (`<target>/debug`). Under
/// `cargo test --workspace` it is built already and `cargo build` finds it
/// fresh (the same build, with the same features); run alone, this test has
/// it built. `SWITCHYARD_BIN` names another.
fn switchyard_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's executable");
    // <target>/<profile>/deps/pods-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from a cargo target directory");
    let target_dir = profile_dir.parent().expect("a cargo target directory");
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("{} names no profile", profile_dir.display()),
    };
    let output = run_within(
        Command::new(env!("CARGO"))
            .args([
                "build",
                "--locked",
                "--package",
                "switchyard",
                "--bin",
                "switchyard",
            ])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(repo()),
        Duration::from_secs(1800),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "building the switchyard binary:\n{}",
        text(&output.stderr)
    );
    let binary = profile_dir.join("switchyard");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

/// The Dockerfile the test builds: the repository's, with its build stage
/// replaced by `tests/pods/Dockerfile.build` and everything else (what
/// precedes the first stage, and the runtime stage) as it is.
fn dockerfile() -> String {
    let original =
        std::fs::read_to_string(repo().join("Dockerfile")).expect("reading the Dockerfile");
    let lines: Vec<&str> = original.lines().collect();
    let stage_starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .map(|(n, _)| n)
        .collect();
    assert!(stage_starts.len() >= 2, "the Dockerfile has build stages");
    let first = stage_starts[0];
    let runtime = *stage_starts.last().unwrap();
    // The comments just above the runtime stage's FROM belong to it.
    let mut runtime_start = runtime;
    while runtime_start > 0 && lines[runtime_start - 1].trim_start().starts_with('#') {
        runtime_start -= 1;
    }
    let from = lines[runtime].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        from.get(1).copied(),
        Some(BASE_IMAGE),
        "the runtime stage's base is the one whose stand-in the test tools make"
    );
    let build = std::fs::read_to_string(repo().join("tests/pods/Dockerfile.build"))
        .expect("reading tests/pods/Dockerfile.build");
    format!(
        "{}\n{build}\n{}\n",
        lines[..first].join("\n"),
        lines[runtime_start..].join("\n")
    )
}

/// The rendered chart's objects.
struct Rendered {
    objects: Vec<Value>,
}

impl Rendered {
    fn parse(yaml: &str) -> Self {
        let mut objects = Vec::new();
        for document in serde_norway::Deserializer::from_str(yaml) {
            let value = Value::deserialize(document).expect("the rendered chart is YAML");
            if !value.is_null() {
                objects.push(value);
            }
        }
        Self { objects }
    }

    fn one(&self, kind: &str, suffix: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("the chart renders no {kind} named *{suffix}"))
    }
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{value} is not an integer"))
}

fn container_of(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A port of a pod, published on the host's loopback.
#[derive(Debug)]
struct Published {
    name: String,
    host_port: u16,
}

/// A pod to play: its YAML, its name, its one container's name and ports.
struct PodToPlay {
    name: String,
    container: String,
    published: Vec<Published>,
    yaml: String,
}

impl PodToPlay {
    fn url(&self, port_name: &str, path: &str) -> String {
        let port = self
            .published
            .iter()
            .find(|p| p.name == port_name)
            .unwrap_or_else(|| panic!("{} publishes no port {port_name}", self.name));
        format!("http://127.0.0.1:{}{path}", port.host_port)
    }
}

/// A pod made from a workload's pod template, as its controller would
/// make it (a Job's pod, or one replica of a Deployment), and adapted to
/// what podman can run:
///
/// - podman plays Pods and Deployments, not Jobs, and plays a Deployment
///   as a single pod whatever its replicas: every workload becomes Pods
///   named `<workload>-<n>`, one per replica, as a controller makes them;
/// - no Service or cluster network reaches the pods: each container port
///   is published on the host's loopback, on a free port;
/// - podman turns `httpGet` probes into health checks that run `curl`
///   through a shell inside the container (on port 0 when the probe names
///   its port), and a distroless image has neither: the probes are left
///   out here and the test calls them itself, from outside, on the
///   published ports;
/// - the template's annotations stay behind: podman holds their values to
///   the 63 characters of a label's (Kubernetes does not), which the
///   chart's `checksum/catalog`, a SHA-256, exceeds;
/// - podman makes an `emptyDir` a volume named as the pod's volume, which
///   every pod naming its volume alike would share: each pod's are renamed
///   after the pod, so that each has its own, as on Kubernetes;
/// - the ConfigMaps the pod mounts go along in the same file, as podman
///   resolves `configMap` volumes from it.
fn pod_from(rendered: &Rendered, workload: &Value, index: usize) -> PodToPlay {
    let name = format!(
        "{}-{index}",
        workload["metadata"]["name"].as_str().expect("a name")
    );
    let template = &workload["spec"]["template"];
    let mut spec = template["spec"].clone();
    let mut published = Vec::new();
    let container_name = container_of(workload)["name"]
        .as_str()
        .expect("a container name")
        .to_owned();
    let mut own_volumes = BTreeMap::new();
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        if volume.get("emptyDir").is_some() {
            let renamed = format!("{name}-{}", volume["name"].as_str().expect("a name"));
            let old = std::mem::replace(&mut volume["name"], json!(renamed));
            own_volumes.insert(old.as_str().expect("a name").to_owned(), renamed);
        }
    }
    for container in spec["containers"].as_array_mut().expect("containers") {
        for mount in container["volumeMounts"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(renamed) = mount["name"].as_str().and_then(|n| own_volumes.get(n)) {
                mount["name"] = json!(renamed);
            }
        }
        let container = container.as_object_mut().expect("a container");
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            container.remove(probe);
        }
        if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports {
                let host_port = free_port();
                port["hostPort"] = json!(host_port);
                port["hostIP"] = json!("127.0.0.1");
                published.push(Published {
                    name: port["name"].as_str().expect("a named port").to_owned(),
                    host_port,
                });
            }
        }
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
    });
    let mut documents = vec![pod];
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(map) = volume["configMap"]["name"].as_str() {
            let config_map = rendered
                .objects
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == map)
                .unwrap_or_else(|| panic!("the chart renders no ConfigMap {map}"));
            documents.push(config_map.clone());
        }
    }
    let yaml = documents
        .iter()
        .map(|d| serde_norway::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    PodToPlay {
        container: format!("{name}-{container_name}"),
        name,
        published,
        yaml,
    }
}

/// The test's pods on podman.
struct Cluster<'a> {
    made: &'a Made,
    rendered: Rendered,
}

impl Cluster<'_> {
    fn podman(&self) -> &Podman {
        &self.made.podman
    }

    fn play(&self, pod: &PodToPlay) {
        let file = self.made.dir().join(format!("{}.yaml", pod.name));
        std::fs::write(&file, &pod.yaml).expect("writing a pod's manifest");
        self.podman().run([
            OsStr::new("kube"),
            OsStr::new("play"),
            OsStr::new("--network"),
            OsStr::new(POD_NETWORK),
            file.as_os_str(),
        ]);
    }

    /// Wait for a container to exit; its exit code.
    async fn exit_code(&self, container: &str) -> i64 {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let state = &self.podman().inspect(container)["State"];
            if state["Status"] == "exited" {
                return int(&state["ExitCode"]);
            }
            assert!(
                Instant::now() < deadline,
                "{container} did not finish: {state}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until `url` answers 200, while the container runs.
    async fn wait_for(&self, container: &str, url: &str) {
        let http = http_client();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let last = match http.get(url).send().await {
                Ok(response) if response.status() == 200 => return,
                Ok(response) => format!("status {}", response.status()),
                Err(e) => e.to_string(),
            };
            let state = &self.podman().inspect(container)["State"];
            assert_eq!(
                state["Status"], "running",
                "{container} stopped while {url} was awaited"
            );
            assert!(
                Instant::now() < deadline,
                "{url} of {container} did not answer 200: {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Each of the container's probes, as the chart declares them, answers
    /// 200 without credentials on its published port.
    async fn check_probes(&self, workload: &Value, pod: &PodToPlay) -> usize {
        let container = container_of(workload);
        let mut checked = 0;
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = &container[probe]["httpGet"];
            if get.is_null() {
                continue;
            }
            let port = get["port"].as_str().expect("probes name their port");
            let path = get["path"].as_str().expect("a probe's path");
            let url = pod.url(port, path);
            let response = http_client()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{probe} of {}: {url}: {e}", pod.name));
            assert_eq!(response.status(), 200, "{probe} of {}: GET {url}", pod.name);
            checked += 1;
        }
        checked
    }

    /// What podman made of the chart's security settings, for a container
    /// running or not: the chart's user and group, no capability added and
    /// all dropped, no new privileges, a read-only root file system. The
    /// user and group.
    fn check_settings(&self, workload: &Value, container: &str) -> (i64, i64) {
        let pod_security = &workload["spec"]["template"]["spec"]["securityContext"];
        let security = &container_of(workload)["securityContext"];
        let user = int(&pod_security["runAsUser"]);
        let group = int(&pod_security["runAsGroup"]);
        assert!(user > 0 && group > 0, "the chart runs as non-root");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);

        let inspected = self.podman().inspect(container);
        assert_eq!(
            inspected["Config"]["User"],
            format!("{user}:{group}"),
            "{container}"
        );
        let host = &inspected["HostConfig"];
        assert_eq!(host["ReadonlyRootfs"], true, "{container}");
        assert!(
            host["SecurityOpt"]
                .as_array()
                .is_some_and(|options| options.iter().any(|o| o == "no-new-privileges")),
            "{container}: {}",
            host["SecurityOpt"]
        );
        assert!(
            host["CapAdd"].as_array().is_none_or(Vec::is_empty),
            "{container}: {}",
            host["CapAdd"]
        );
        (user, group)
    }

    /// From outside the running container: its process is the image's
    /// entrypoint with the chart's arguments, runs as the chart's user and
    /// group, holds no capability, cannot gain privileges, is confined by
    /// seccomp (the chart's RuntimeDefault: podman's default filter), and
    /// sees its root file system read-only, and the chart's /tmp writable.
    fn check_confinement(&self, workload: &Value, container: &str, role: &str) {
        let (user, group) = self.check_settings(workload, container);
        let inspected = self.podman().inspect(container);
        assert_eq!(inspected["State"]["Status"], "running", "{container}");
        let pid = int(&inspected["State"]["Pid"]);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let command_line = std::fs::read(proc_dir.join("cmdline")).expect("the process runs");
        let command_line: Vec<String> = command_line
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(text)
            .collect();
        assert_eq!(
            command_line,
            ["/usr/local/bin/switchyard", role],
            "{container}: the image's entrypoint with the chart's arguments"
        );
        let status = std::fs::read_to_string(proc_dir.join("status")).expect("the process runs");
        let field = |name: &str| -> Vec<String> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name}:")))
                .unwrap_or_else(|| panic!("/proc/{pid}/status has no {name}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        // Real, effective, saved and file-system ids.
        assert_eq!(field("Uid"), vec![user.to_string(); 4], "{container}");
        assert_eq!(field("Gid"), vec![group.to_string(); 4], "{container}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                field(set),
                ["0000000000000000"],
                "{container}: {set}, with every capability dropped"
            );
        }
        assert_eq!(
            field("NoNewPrivs"),
            ["1"],
            "{container}: allowPrivilegeEscalation: false"
        );
        assert_eq!(field("Seccomp"), ["2"], "{container}: a seccomp filter");

        let mountinfo =
            std::fs::read_to_string(proc_dir.join("mountinfo")).expect("the process runs");
        // The options of the mount the process sees at `point`: the last one
        // mounted there, which hides those before it.
        let options = |point: &str| -> Vec<String> {
            mountinfo
                .lines()
                .map(|line| line.split(' ').collect::<Vec<_>>())
                .rfind(|fields| fields.get(4) == Some(&point))
                .unwrap_or_else(|| panic!("{container}: nothing is mounted at {point}"))[5]
                .split(',')
                .map(str::to_owned)
                .collect()
        };
        assert!(
            options("/").contains(&"ro".to_owned()),
            "{container}: the root file system is read-only: {:?}",
            options("/")
        );
        assert!(
            options("/tmp").contains(&"rw".to_owned()),
            "{container}: /tmp, the chart's emptyDir, is writable"
        );
    }
}

/// A ticket count as KEDA's `redis` scaler reads a key: by the key's type
/// (a sorted set's, a set's, a list's or a hash's size; 0 for no key), in
/// one script, as the scaler does.
async fn length_as_keda_reads_it(
    conn: &mut redis::aio::MultiplexedConnection,
    database: i64,
    key: &str,
) -> i64 {
    let script = redis::Script::new(
        "local sizes = {zset = 'ZCARD', set = 'SCARD', list = 'LLEN', hash = 'HLEN', none = 'LLEN'} \
         return redis.call(sizes[redis.call('TYPE', KEYS[1]).ok], KEYS[1])",
    );
    let _: () = redis::cmd("SELECT")
        .arg(database)
        .query_async(conn)
        .await
        .expect("selecting the trigger's database");
    script
        .key(key)
        .invoke_async(conn)
        .await
        .unwrap_or_else(|e| panic!("reading {key} as KEDA does: {e}"))
}

/// What the ScaledObject makes of the queue: the metric it scales on, and
/// the replicas it asks the worker Deployment for.
///
/// As KEDA does: each `redis` trigger's metric is its key's length; with
/// `scalingModifiers`, the formula (here a sum of trigger names) combines
/// them into one metric, its `target` an average value per replica; without
/// them, each trigger's `listLength` is its own target and the HPA takes the
/// largest proposal. An HPA on an `AverageValue` target asks for
/// ceil(metric / target) replicas. Below the activation threshold (0 by
/// default) the object is inactive and KEDA sets `minReplicaCount`; when
/// active, the replicas stay within max(minReplicaCount, 1) and
/// `maxReplicaCount`.
async fn replicas_keda_would_ask_for(
    conn: &mut redis::aio::MultiplexedConnection,
    scaled: &Value,
    redis_address: &str,
) -> (i64, i64) {
    let spec = &scaled["spec"];
    let mut metrics = BTreeMap::new();
    let mut proposals = Vec::new();
    for trigger in spec["triggers"].as_array().expect("triggers") {
        assert_eq!(
            trigger["type"], "redis",
            "the test evaluates redis triggers"
        );
        let metadata = &trigger["metadata"];
        assert_eq!(
            metadata["address"], redis_address,
            "the trigger watches the Redis the pods use"
        );
        let database = metadata["databaseIndex"]
            .as_str()
            .map_or(0, |d| d.parse().expect("databaseIndex is a number"));
        let key = metadata["listName"].as_str().expect("listName");
        let length = length_as_keda_reads_it(conn, database, key).await;
        let target = metadata["listLength"]
            .as_str()
            .map_or(5, |l| l.parse().expect("listLength is a number"));
        proposals.push((length + target - 1) / target);
        metrics.insert(trigger["name"].as_str().unwrap_or(key).to_owned(), length);
    }
    let modifiers = &spec["advanced"]["scalingModifiers"];
    let (metric, wanted, active) = if modifiers.is_object() {
        let formula = modifiers["formula"].as_str().expect("a formula");
        let metric: i64 = formula
            .split('+')
            .map(|term| {
                *metrics.get(term.trim()).unwrap_or_else(|| {
                    panic!("the test evaluates sums of trigger names; {formula:?} has {term:?}")
                })
            })
            .sum();
        assert_eq!(
            modifiers["metricType"].as_str().unwrap_or("AverageValue"),
            "AverageValue",
            "the test evaluates AverageValue targets"
        );
        let target = int(&modifiers["target"]);
        let activation = modifiers.get("activationTarget").map_or(0, int);
        (metric, (metric + target - 1) / target, metric > activation)
    } else {
        let metric = metrics.values().sum();
        let wanted = proposals.iter().copied().max().unwrap_or(0);
        (metric, wanted, metrics.values().any(|&length| length > 0))
    };
    let min = spec["minReplicaCount"].as_i64().unwrap_or(0);
    let max = spec["maxReplicaCount"].as_i64().unwrap_or(100);
    let replicas = if active {
        wanted.clamp(min.max(1), max)
    } else {
        min
    };
    (metric, replicas)
}

/// An HTTP client whose every request is bounded.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(HTTP_LIMIT)
        .build()
        .expect("an HTTP client")
}

/// Runs of `ids` by status.
async fn statuses(pool: &PgPool, ids: &[uuid::Uuid]) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select status::text, count(*) from runs where id = any($1) group by status",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .expect("reading the runs");
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_charts_pods_and_the_queue_scales_the_workers() {
    // The tools, first: without them the test fails at once, saying what to
    // run.
    let podman = tool("SWITCHYARD_PODMAN", None, "podman");
    let helm = tool("SWITCHYARD_HELM", Some(".tools/bin/helm"), "helm");
    for needed in ["runc", "slirp4netns", "catatonit"] {
        assert!(
            on_path(needed).is_some(),
            "{needed} is needed by the pods test and is not on the PATH: {INSTALL_HINT}"
        );
    }
    let base = repo().join(BASE_TARBALL);
    assert!(
        base.is_file(),
        "{} is needed by the pods test: {INSTALL_HINT}",
        base.display()
    );
    let started = Instant::now();
    // Where the time goes, for a failure's report.
    let progress = |what: &str| eprintln!("{:6.1} s  {what}", started.elapsed().as_secs_f64());
    let binary = switchyard_binary();
    progress("the binary is up to date");

    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let made = Made {
        podman: Podman {
            program: podman,
            dir: podman_dir(&suffix[suffix.len() - 12..]),
        },
        database: format!("sy_pods_{suffix}"),
        prefix: format!("sypods:{suffix}"),
        cleaned: Default::default(),
    };
    std::fs::create_dir_all(made.dir()).expect("the test's directory");

    // A database of the test's own; the pods' migrations fill it.
    let mut admin = admin_connection().await.expect("PostgreSQL is reachable");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create database {}",
        made.database
    )))
    .execute(&mut admin)
    .await
    .expect("creating the test database");
    admin.close().await.ok();
    let server = PgConnectOptions::from_str(&admin_url()).expect("TEST_DATABASE_URL is a URL");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(server.clone().database(&made.database))
        .await
        .expect("connecting to the test database");
    let mut redis = redis_connection().await.expect("Redis is reachable");

    // The image: the base's stand-in imported under the base's name, then
    // the Dockerfile's runtime stage on it, with the binary as build stage.
    let podman = &made.podman;
    let mut import = vec!["import".to_owned()];
    for change in BASE_CONFIG {
        import.push("--change".into());
        import.push(change.into());
    }
    import.push(base.display().to_string());
    import.push(BASE_IMAGE.into());
    podman.run(&import);
    let context = made.dir().join("context");
    std::fs::create_dir_all(&context).expect("the build context");
    std::fs::copy(&binary, context.join("switchyard")).expect("the binary in the context");
    let containerfile = made.dir().join("Dockerfile");
    std::fs::write(&containerfile, dockerfile()).expect("writing the Dockerfile");
    let image = format!("{IMAGE_REPOSITORY}:{suffix}");
    podman.run([
        OsStr::new("build"),
        OsStr::new("--pull=never"),
        OsStr::new("--tag"),
        OsStr::new(&image),
        OsStr::new("--file"),
        containerfile.as_os_str(),
        context.as_os_str(),
    ]);
    std::fs::remove_dir_all(&context).ok();
    progress("the image is built");

    // The chart, rendered for these pods: the test's database, Redis prefix
    // and image; the scripted model; one API replica (with the chart's
    // default metrics port); the workers' sweeper on PostgreSQL (no
    // Kubernetes API answers here for a Lease), their metrics port (so that
    // they have a probe), and KEDA on the queue.
    let (db_host, db_port) = host_and_port(&admin_url(), 5432);
    for url in [admin_url(), redis_url()] {
        assert!(
            !has_password(&url),
            "the test gives the chart its URLs inline, which the chart refuses with a \
             password: use a TEST_DATABASE_URL and TEST_REDIS_URL without one"
        );
    }
    let database_url = format!(
        "postgres://{}@{}:{db_port}/{}",
        server.get_username(),
        seen_from_pods(&db_host),
        made.database
    );
    let (redis_host, redis_port) = host_and_port(&redis_url(), 6379);
    let redis_address = format!("{}:{redis_port}", seen_from_pods(&redis_host));
    let pods_redis_url = format!("redis://{redis_address}{}", after_authority(&redis_url()));
    let catalog = Options::slow_scripted(CHUNK_DELAY_MS).catalog;
    let values = json!({
        "image": {"repository": IMAGE_REPOSITORY, "tag": suffix, "pullPolicy": "Never"},
        "database": {"url": database_url},
        "redis": {"url": pods_redis_url, "prefix": made.prefix},
        "catalog": {"toml": catalog},
        "api": {"replicas": 1},
        "worker": {
            "sweeperLeader": "postgres",
            "metricsPort": 9090,
            "concurrency": RUNS_PER_WORKER,
            "keda": {
                "enabled": true,
                "minReplicas": MIN_WORKERS,
                "maxReplicas": MAX_WORKERS,
                "queueLengthPerReplica": RUNS_PER_WORKER,
            },
        },
    });
    let values_file = made.dir().join("values.json");
    std::fs::write(&values_file, values.to_string()).expect("writing the values");
    let rendered = run_within(
        Command::new(&helm)
            .args(["template", "sy", "--namespace", "switchyard-pods"])
            .arg(repo().join("charts/switchyard"))
            .arg("--values")
            .arg(&values_file),
        COMMAND_LIMIT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rendered.status.success(),
        "helm template failed:\n{}",
        text(&rendered.stderr)
    );
    let cluster = Cluster {
        made: &made,
        rendered: Rendered::parse(&text(&rendered.stdout)),
    };
    let job = cluster.rendered.one("Job", "-migrate").clone();
    let api = cluster.rendered.one("Deployment", "-api").clone();
    let worker = cluster.rendered.one("Deployment", "-worker").clone();
    let scaled = cluster.rendered.one("ScaledObject", "-worker").clone();
    for workload in [&job, &api, &worker] {
        assert_eq!(container_of(workload)["image"], image.as_str());
    }

    // The migration Job's pod first, as Helm's pre-install hook: it runs to
    // its end, successfully, and leaves every migration applied.
    let migrate = pod_from(&cluster.rendered, &job, 0);
    cluster.play(&migrate);
    let code = cluster.exit_code(&migrate.container).await;
    assert_eq!(code, 0, "the migrations failed:\n{}", podman.logs());
    cluster.check_settings(&job, &migrate.container);
    let migrations = std::fs::read_dir(repo().join("migrations"))
        .expect("the migrations")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .expect("the migrations' table");
    assert_eq!(applied as usize, migrations, "every migration is applied");

    progress("the migrations ran");

    // The API and one worker.
    let api_pod = pod_from(&cluster.rendered, &api, 0);
    cluster.play(&api_pod);
    let first_worker = pod_from(&cluster.rendered, &worker, 0);
    cluster.play(&first_worker);
    cluster
        .wait_for(&api_pod.container, &api_pod.url("http", "/ready"))
        .await;
    cluster
        .wait_for(
            &first_worker.container,
            &first_worker.url("metrics", "/health"),
        )
        .await;
    assert_eq!(cluster.check_probes(&api, &api_pod).await, 3);
    assert_eq!(cluster.check_probes(&worker, &first_worker).await, 1);
    // The API's /metrics is on its metrics port (bound before the public
    // one answers), which the ServiceMonitor scrapes; the public port, which
    // the Ingress routes to, answers 404 there.
    let scraped = http_client()
        .get(api_pod.url("metrics", "/metrics"))
        .send()
        .await
        .expect("the API's metrics port answers");
    assert_eq!(scraped.status(), 200, "/metrics on the API's metrics port");
    let text = scraped.text().await.expect("the metrics");
    assert!(text.contains("switchyard_"), "{text}");
    let public = http_client()
        .get(api_pod.url("http", "/metrics"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(
        public.status(),
        404,
        "/metrics is not served on the API's public port"
    );
    cluster.check_confinement(&api, &api_pod.container, "api");
    cluster.check_confinement(&worker, &first_worker.container, "worker");

    progress("the API and a worker run, confined");

    // A key made as the chart's notes say, in the API's container; the
    // chart's API takes API keys only.
    let created = podman.run([
        "exec",
        &api_pod.container,
        "switchyard",
        "keys",
        "create",
        "--user",
        "pods-test",
    ]);
    let key = created.lines().last().expect("the key").trim().to_owned();
    let http = {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("a header"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(HTTP_LIMIT)
            .build()
            .expect("an HTTP client")
    };
    let unauthenticated = http_client()
        .post(api_pod.url("http", "/v1/threads"))
        .json(&json!({}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(unauthenticated.status(), 401);

    // A run streamed through the API pod, executed by the worker pod.
    let create_thread = || async {
        let response = http
            .post(api_pod.url("http", "/v1/threads"))
            .json(&json!({}))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 201);
        let thread: Value = response.json().await.expect("a thread");
        thread["id"].as_str().expect("a thread id").to_owned()
    };
    let thread = create_thread().await;
    let response = http
        .post(api_pod.url("http", &format!("/v1/threads/{thread}/runs")))
        .json(&json!({"input": {"content": "hi"}, "stream": true}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 200);
    let events: Vec<SseEvent> = read_sse(response, None).await;
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("run.completed"),
        "the stream ends with the run: {events:?}"
    );
    assert!(
        deltas_of(&events).starts_with("You said: \"hi\"."),
        "the scripted model answered: {events:?}"
    );
    let run_id: uuid::Uuid = events
        .iter()
        .find_map(|e| e.data["run_id"].as_str())
        .expect("the events name their run")
        .parse()
        .expect("a run id");
    let ran_by: String = sqlx::query_scalar("select worker_id from runs where id = $1")
        .bind(run_id)
        .fetch_one(&pool)
        .await
        .expect("the run");
    assert!(
        ran_by.starts_with(&format!("{}-", first_worker.name)),
        "the worker pod ran it (a worker names itself by its pod's host name): {ran_by}"
    );

    progress("a run was streamed");

    // Autoscaling against the real queue. The workers stopped (SIGTERM, as
    // Kubernetes stops a pod, within its grace period: they exit cleanly),
    // runs are queued; what KEDA reads of the trigger's keys is the backlog,
    // and the replicas it asks for are the backlog's share per worker.
    let grace = int(&worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]);
    podman.run([
        "pod",
        "stop",
        "--time",
        &grace.to_string(),
        &first_worker.name,
    ]);
    assert_eq!(
        cluster.exit_code(&first_worker.container).await,
        0,
        "a stopped worker exits cleanly"
    );
    podman.run(["pod", "rm", &first_worker.name]);
    let (idle_metric, idle_replicas) =
        replicas_keda_would_ask_for(&mut redis, &scaled, &redis_address).await;
    assert_eq!(idle_metric, 0, "nothing waits yet");
    assert_eq!(idle_replicas, MIN_WORKERS as i64);

    let mut backlog = Vec::new();
    for n in 0..BACKLOG {
        let thread = create_thread().await;
        let response = http
            .post(api_pod.url("http", &format!("/v1/threads/{thread}/runs")))
            .json(&json!({"input": {"content": format!("queued run {n}")}}))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 202);
        let run: Value = response.json().await.expect("a run");
        backlog.push(
            run["id"]
                .as_str()
                .expect("a run id")
                .parse::<uuid::Uuid>()
                .expect("a run id"),
        );
    }
    assert_eq!(
        statuses(&pool, &backlog).await,
        BTreeMap::from([("queued".to_owned(), BACKLOG as i64)]),
        "with no worker, the runs wait"
    );
    let (metric, replicas) = replicas_keda_would_ask_for(&mut redis, &scaled, &redis_address).await;
    assert_eq!(
        metric, BACKLOG as i64,
        "the keys KEDA reads hold one ticket per waiting run"
    );
    let expected = BACKLOG.div_ceil(RUNS_PER_WORKER);
    assert_eq!(
        replicas, expected as i64,
        "KEDA asks for the backlog's share per worker"
    );
    assert!(expected > 1, "the check needs more than one worker");

    progress("the backlog is queued");

    // That many workers drain the backlog, each taking its share.
    let workers: Vec<PodToPlay> = (1..=expected)
        .map(|n| pod_from(&cluster.rendered, &worker, n))
        .collect();
    for pod in &workers {
        cluster.play(pod);
    }
    for pod in &workers {
        cluster
            .wait_for(&pod.container, &pod.url("metrics", "/health"))
            .await;
    }
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let now = statuses(&pool, &backlog).await;
        if now.get("completed") == Some(&(BACKLOG as i64)) {
            break;
        }
        assert!(
            !now.contains_key("failed") && !now.contains_key("cancelled"),
            "runs ended badly: {now:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the workers did not drain the queue: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress("the workers drained the backlog");
    let ran_by: Vec<String> = sqlx::query_scalar("select worker_id from runs where id = any($1)")
        .bind(&backlog)
        .fetch_all(&pool)
        .await
        .expect("the runs");
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &ran_by {
        let pod = workers
            .iter()
            .find(|pod| id.starts_with(&format!("{}-", pod.name)))
            .unwrap_or_else(|| panic!("{id} is none of the started workers"));
        *per_worker.entry(pod.name.as_str()).or_default() += 1;
    }
    progress(&format!("runs per worker: {per_worker:?}"));
    // A worker takes at most its concurrency at once, and each run lasts
    // seconds: the backlog cannot have gone to one worker alone.
    assert!(
        per_worker.len() > 1,
        "the backlog was shared among the workers: {per_worker:?}"
    );
    let (metric, replicas) = replicas_keda_would_ask_for(&mut redis, &scaled, &redis_address).await;
    assert_eq!(metric, 0, "the queue is empty");
    assert_eq!(
        replicas, MIN_WORKERS as i64,
        "KEDA scales back to the minimum"
    );
    for pod in &workers {
        cluster.check_confinement(&worker, &pod.container, "worker");
    }

    // Everything the test made goes, and is seen gone.
    pool.close().await;
    drop(cluster);
    progress("the workers ran confined; cleaning up");
    let failures = made.clean_up();
    progress("cleaned up");
    assert!(failures.is_empty(), "cleaning up: {failures:?}");
    assert!(!made.dir().exists());
    let mut admin = admin_connection().await.expect("PostgreSQL is reachable");
    let left: i64 = sqlx::query_scalar("select count(*) from pg_database where datname = $1")
        .bind(&made.database)
        .fetch_one(&mut admin)
        .await
        .expect("listing databases");
    assert_eq!(left, 0, "the database is dropped");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", made.prefix))
        .query_async(&mut redis)
        .await
        .expect("listing keys");
    assert!(keys.is_empty(), "the keys are deleted: {keys:?}");
}
