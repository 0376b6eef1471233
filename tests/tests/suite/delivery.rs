//! The image recipe and the development loop, checked without a Docker
//! engine or a cluster: the build context that `.dockerignore` lets through
//! is a complete workspace (cargo resolves a copy of it, offline and
//! locked), the Dockerfile builds the `switchyard` binary offline and runs it
//! unprivileged as the chart expects, and the Tiltfile, run by the Starlark
//! interpreter Tilt embeds, deploys the images it builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `.dockerignore` as ordered rules; only the forms it uses are understood,
/// and any other form fails the test rather than being misread.
enum Rule {
    /// `*`: every top-level entry.
    ExcludeAll,
    /// `!name`: the top-level entry `name` and all under it.
    Include(String),
    /// `**/name`: any entry called `name`, at any depth.
    ExcludeAnywhere(String),
}

fn dockerignore() -> Vec<Rule> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            if line == "*" {
                Rule::ExcludeAll
            } else if let Some(name) = line.strip_prefix("**/") {
                assert!(!name.contains(['*', '/', '?', '[']), "unsupported: {line}");
                Rule::ExcludeAnywhere(name.to_owned())
            } else if let Some(name) = line.strip_prefix('!') {
                assert!(!name.contains(['*', '/', '?', '[']), "unsupported: {line}");
                Rule::Include(name.to_owned())
            } else {
                panic!(".dockerignore: the test does not understand {line:?}")
            }
        })
        .collect()
}

/// Whether the context holds `relative` (a path under the repository).
fn in_context(rules: &[Rule], relative: &Path) -> bool {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut included = true;
    for rule in rules {
        match rule {
            Rule::ExcludeAll => included = false,
            Rule::Include(name) if parts.first() == Some(name) => included = true,
            Rule::ExcludeAnywhere(name) if parts.iter().any(|p| p == name) => included = false,
            _ => {}
        }
    }
    included
}

fn copy_context(rules: &[Rule], from: &Path, relative: &Path, to: &Path) -> usize {
    let mut copied = 0;
    for entry in std::fs::read_dir(from.join(relative)).expect("listing") {
        let entry = entry.expect("an entry");
        let path = relative.join(entry.file_name());
        if !in_context(rules, &path) {
            continue;
        }
        if entry.file_type().expect("a type").is_dir() {
            std::fs::create_dir_all(to.join(&path)).expect("mkdir");
            copied += copy_context(rules, from, &path, to);
        } else {
            std::fs::copy(entry.path(), to.join(&path)).expect("copying");
            copied += 1;
        }
    }
    copied
}

fn workspace_members() -> Vec<String> {
    let manifest: toml_like::Manifest = toml_like::parse(&read("Cargo.toml"));
    manifest.members
}

/// Just enough of the root manifest: `members = [...]` and `rust-version`.
mod toml_like {
    pub struct Manifest {
        pub members: Vec<String>,
        pub rust_version: String,
    }

    pub fn parse(text: &str) -> Manifest {
        let line = |key: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(key))
                .unwrap_or_else(|| panic!("Cargo.toml has no {key}"))
                .split_once('=')
                .expect("key = value")
                .1
                .trim()
                .to_owned()
        };
        let members = line("members")
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|m| m.trim().trim_matches('"').to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        Manifest {
            members,
            rust_version: line("rust-version").trim_matches('"').to_owned(),
        }
    }
}

#[test]
fn the_docker_build_context_is_a_complete_workspace() {
    let rules = dockerignore();
    for needed in ["Cargo.toml", "Cargo.lock", "migrations"] {
        assert!(
            in_context(&rules, Path::new(needed)),
            "{needed} in the build context"
        );
    }
    for member in workspace_members() {
        assert!(
            in_context(&rules, &Path::new(&member).join("Cargo.toml")),
            "workspace member {member} is in the build context"
        );
    }
    for left_out in [
        "target/debug/switchyard",
        "api/target/x",
        ".git/HEAD",
        ".tools/bin/helm",
    ] {
        assert!(
            !in_context(&rules, Path::new(left_out)),
            "{left_out} is left out"
        );
    }

    let context = std::env::temp_dir().join(format!("switchyard-context-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&context).unwrap();
    let files = copy_context(&rules, &repo(), Path::new(""), &context);
    assert!(files > 10, "{files} files copied");
    assert!(
        std::fs::read_dir(context.join("migrations"))
            .unwrap()
            .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "sql")),
        "the migrations, compiled into the binary, are in the context"
    );
    // What `cargo build --locked` in the image needs first: the workspace
    // resolves from the context alone, with the committed lock file. Offline,
    // for this machine's platform: only its packages are in the local cache
    // (the image builds for Linux like this machine).
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version",
            "1",
            "--filter-platform",
            &host_triple(),
            "--manifest-path",
        ])
        .arg(context.join("Cargo.toml"))
        .env("SQLX_OFFLINE", "true")
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "the build context does not resolve:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let bins: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "switchyard")
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(bins, ["switchyard"], "the package the Dockerfile builds");
    std::fs::remove_dir_all(context).ok();
}

/// The target triple of this machine's Rust toolchain.
fn host_triple() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("running rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// The Dockerfile's stages: (base image, instructions).
fn stages() -> Vec<(String, Vec<String>)> {
    let text = read("Dockerfile");
    // Join continued lines.
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(from) = line.strip_prefix("FROM ") {
            stages.push((from.to_owned(), Vec::new()));
        } else if let Some((_, instructions)) = stages.last_mut() {
            instructions.push(line.to_owned());
        }
    }
    stages
}

fn chart_defaults() -> Value {
    let text = read("charts/switchyard/values.yaml");
    Value::deserialize(serde_norway::Deserializer::from_str(&text)).expect("values.yaml")
}

#[test]
fn the_dockerfile_builds_offline_and_runs_unprivileged_as_the_chart_expects() {
    let stages = stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let text = read("Dockerfile");

    // The builder: a Rust new enough for the workspace, building the one
    // binary from the lock file with sqlx offline.
    let manifest = toml_like::parse(&read("Cargo.toml"));
    let rust = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(rust) >= version(&manifest.rust_version),
        "the image's Rust {rust} builds a workspace needing {}",
        manifest.rust_version
    );
    let (build_base, build) = &stages[0];
    assert!(
        build_base.starts_with("rust:${RUST_VERSION}"),
        "{build_base}"
    );
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("ENV ") && i.contains("SQLX_OFFLINE=true"))
    );
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN ")
                && i.contains("cargo build --release --locked -p switchyard")),
        "the build step: {build:?}"
    );

    // The runtime: small, the binary as entrypoint, an unprivileged user
    // that the chart's securityContext names too.
    let (runtime_base, runtime) = stages.last().unwrap();
    assert!(
        runtime_base.contains("distroless") || runtime_base.contains("-slim"),
        "a small runtime base: {runtime_base}"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("COPY --from=build") && i.ends_with("/usr/local/bin/switchyard")),
        "the binary is copied from the build stage: {runtime:?}"
    );
    assert!(runtime.contains(&r#"ENTRYPOINT ["/usr/local/bin/switchyard"]"#.to_owned()));
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("a USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let uid: i64 = uid
        .parse()
        .expect("a numeric uid (runAsNonRoot checks numbers)");
    assert_ne!(uid, 0, "not root");
    let values = chart_defaults();
    assert_eq!(values["podSecurityContext"]["runAsUser"], uid);
    assert_eq!(
        values["podSecurityContext"]["runAsGroup"],
        gid.parse::<i64>().unwrap()
    );
    let port = values["api"]["port"].as_i64().unwrap();
    assert!(runtime.contains(&format!("EXPOSE {port}")));
    assert!(runtime.contains(&format!("ENV SWITCHYARD_LISTEN=0.0.0.0:{port}")));
}

/// The Python of `.tools/venv` (PyYAML, starlark-go), or `SWITCHYARD_TOOLS_PYTHON`.
fn tools_python() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_TOOLS_PYTHON") {
        return PathBuf::from(path);
    }
    let local = repo().join(".tools/venv/bin/python");
    assert!(
        local.is_file(),
        "{} is needed by the Tiltfile tests: run scripts/install-test-tools.sh",
        local.display()
    );
    local
}

/// What the Tiltfile asks of Tilt with these arguments (see
/// `tilt/check_tiltfile.py`), or its failure.
fn run_tiltfile(args: &[&str]) -> Result<Value, String> {
    let output = Command::new(tools_python())
        .arg(repo().join("tilt/check_tiltfile.py"))
        .arg(repo())
        .args(args)
        .output()
        .expect("running the Tiltfile");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the record is JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn names<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap())
        .collect()
}

/// The checks every mode gets: resources name real workloads, dependencies
/// name real resources, every Switchyard image is one Tilt builds, and the
/// API's forwarded port is its container's.
fn check_tilt_record(mode: &str, record: &Value) -> Vec<String> {
    let objects = record["objects"].as_array().unwrap();
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
        .collect();
    let workload_names: Vec<&str> = workloads
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap())
        .collect();
    let resources = &record["resources"];
    let mut known: Vec<&str> = names(resources, "name");
    known.extend(names(&record["local_resources"], "name"));
    for resource in resources.as_array().unwrap() {
        let name = resource["name"].as_str().unwrap();
        assert!(
            workload_names.contains(&name),
            "{mode}: resource {name} is a workload"
        );
        for dep in resource["resource_deps"].as_array().unwrap() {
            assert!(
                known.contains(&dep.as_str().unwrap()),
                "{mode}: {name} waits for {dep}"
            );
        }
    }
    for name in ["switchyard-api", "switchyard-worker", "switchyard-migrate"] {
        assert!(known.contains(&name), "{mode}: {name} is a resource");
    }
    let built: Vec<&str> = names(&record["images"], "ref");
    let dependencies = read("tilt/dependencies.yaml");
    let mut images = Vec::new();
    for workload in &workloads {
        for container in workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            let image = container["image"].as_str().unwrap();
            let repository = image.split(':').next().unwrap();
            assert!(
                built.contains(&repository) || dependencies.contains(&format!("image: {image}")),
                "{mode}: {image} is built by Tilt or a development dependency"
            );
            images.push(image.to_owned());
        }
    }
    for image in record["images"].as_array().unwrap() {
        for path in [&image["context"], &image["dockerfile"]] {
            assert!(
                repo().join(path.as_str().unwrap()).exists() || path == "tilt/.build",
                "{mode}: {path} exists"
            );
        }
    }
    let api = workloads
        .iter()
        .find(|w| w["metadata"]["name"] == "switchyard-api")
        .unwrap();
    let port = api["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_i64()
        .unwrap();
    let forwards = &resources
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "switchyard-api")
        .unwrap()["port_forwards"];
    assert_eq!(
        forwards,
        &serde_json::json!([format!("8080:{port}")]),
        "{mode}"
    );
    images
}

#[test]
fn the_tiltfile_runs_in_tilts_interpreter_and_deploys_what_it_builds() {
    // The default: in-cluster PostgreSQL and Redis, the binary built here
    // and synced into the API and worker.
    let record = run_tiltfile(&[]).unwrap_or_else(|e| panic!("default mode: {e}"));
    let images = check_tilt_record("default mode", &record);
    assert!(images.iter().any(|i| i.starts_with("postgres:")));
    assert!(images.iter().any(|i| i.starts_with("redis:")));
    // No development mode in a cluster: an administrator key is made in
    // the API's pod and printed, once the API is up.
    let key = record["local_resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "api-key")
        .expect("an api-key resource");
    let words: Vec<&str> = key["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(words[..3], ["kubectl", "exec", "deploy/switchyard-api"]);
    assert!(words.ends_with(&["keys", "create", "--admin", "--user", "developer"]));
    assert!(
        !serde_json::to_string(&record["objects"])
            .unwrap()
            .contains(r#""name":"SWITCHYARD_AUTH","value":"dev""#),
        "the laptop's cluster does not run in development mode"
    );
    let compile = &record["local_resources"][0];
    let command = compile["cmd"].as_str().unwrap();
    for dep in compile["deps"].as_array().unwrap() {
        assert!(repo().join(dep.as_str().unwrap()).exists(), "{dep} exists");
    }
    for member in ["api", "cli", "common", "worker", "migrations"] {
        assert!(
            compile["deps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == member),
            "a change in {member} rebuilds"
        );
    }
    let live = record["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"] == "switchyard")
        .unwrap();
    let synced = live["live_update"][0]["sync"][0].as_str().unwrap();
    assert!(
        command.ends_with(&format!("cp target/debug/switchyard {synced}")),
        "{command}"
    );
    // The process restarted after a sync is the synced binary.
    assert_eq!(
        live["restart"],
        serde_json::json!([live["live_update"][0]["sync"][1]])
    );
    let dev_dockerfile = read("tilt/Dockerfile");
    assert!(dev_dockerfile.contains(&format!(
        "ENTRYPOINT [\"{}\"]",
        live["restart"][0].as_str().unwrap()
    )));
    // The migration Job ends when the migration does: no restart wrapper.
    let job = record["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Job")
        .unwrap();
    let job_image = job["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    let job_build = record["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"] == job_image)
        .expect("the Job's image is built");
    assert!(job_build["restart"].is_null() && job_build["live_update"] == serde_json::json!([]));

    // External services by Secret and URL, the image built by Docker.
    let record = run_tiltfile(&[
        "--deps=external",
        "--database-secret=dev-database",
        "--redis-url=redis://cache.dev:6379",
        "--build=docker",
    ])
    .unwrap_or_else(|e| panic!("external mode: {e}"));
    check_tilt_record("external mode", &record);
    assert!(
        !serde_json::to_string(&record["objects"])
            .unwrap()
            .contains("postgres:16"),
        "no in-cluster PostgreSQL"
    );
    assert_eq!(record["images"][0]["dockerfile"], "Dockerfile");
    let dump = serde_json::to_string(&record["objects"]).unwrap();
    assert!(dump.contains(r#""secretKeyRef":{"key":"DATABASE_URL","name":"dev-database"}"#));
    assert!(dump.contains("redis://cache.dev:6379"));

    // Mistakes stop it with a message.
    for (args, expected) in [
        (vec!["--deps=cloud"], "--deps is in-cluster or external"),
        (
            vec!["--deps=external", "--redis-url=redis://c:6379"],
            "--database-url or --database-secret",
        ),
        (
            vec![
                "--deps=external",
                "--database-url=postgres://u:secret@db/x",
                "--redis-url=redis://c",
            ],
            "database.url holds a password",
        ),
        (vec!["--build=podman"], "--build is host or docker"),
    ] {
        let error = run_tiltfile(&args).expect_err(&format!("{args:?} is refused"));
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}
