//! The Helm chart, `charts/switchyard`: linted and rendered with the default,
//! minimal, full-featured and development values; every rendered object
//! validated against the Kubernetes schemas; and what matters checked
//! against the program itself: the probes' routes answer on a running API,
//! the rendered configuration is accepted by the configuration parser, the
//! KEDA triggers watch the Redis keys where waiting runs really are, the
//! API's `/metrics` is served on its metrics port, behind a ClusterIP Service
//! of its own, and not on the public one the Ingress and the main Service
//! (whatever its type) route to, no secret is written into a manifest, and each
//! pod holds only the Secrets it uses.
//!
//! Needs `helm` and `kubernetes-validate`: `scripts/install-test-tools.sh`
//! puts them in `.tools/` (or set `SWITCHYARD_HELM` and
//! `SWITCHYARD_KUBERNETES_VALIDATE`). Without them these tests fail, saying so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_common::config::{Config, Defaults, SweeperLeader};
use switchyard_tests::{Options, TestApp, find_tool, repo};

/// The Kubernetes versions the manifests are validated against: the
/// chart's oldest (`kubeVersion`), the one the code's client is built for,
/// and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.30.0", "1.33.0", "1.37.0"];

/// Kinds from CRDs, which the validator has no schema for; their fields
/// are checked by the tests below instead.
const CUSTOM_KINDS: [&str; 3] = ["ScaledObject", "TriggerAuthentication", "ServiceMonitor"];

/// How long a worker may take after its drain: handing unfinished runs back
/// and releasing the Lease (bounded by 5 s in `worker/src/leader.rs`).
const AFTER_DRAIN_SECS: i64 = 5;

fn chart() -> PathBuf {
    repo().join("charts/switchyard")
}

/// A tool from its variable, `.tools/`, or the PATH; a clear failure if none.
fn tool(variable: &str, local: &str, name: &str) -> PathBuf {
    find_tool(variable, Some(local), name).unwrap_or_else(|| {
        panic!(
            "{name} is needed by the chart tests and was not found ({variable}, {local}, PATH): \
             run scripts/install-test-tools.sh, which installs it into .tools/"
        )
    })
}

fn helm() -> PathBuf {
    tool("SWITCHYARD_HELM", ".tools/bin/helm", "helm")
}

fn kubernetes_validate() -> PathBuf {
    tool(
        "SWITCHYARD_KUBERNETES_VALIDATE",
        ".tools/venv/bin/kubernetes-validate",
        "kubernetes-validate",
    )
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One way of installing the chart: values files and `--set` settings.
#[derive(Clone)]
struct Case {
    name: &'static str,
    files: Vec<PathBuf>,
    set: Vec<String>,
}

impl Case {
    fn new(name: &'static str, files: &[&str], set: &[&str]) -> Self {
        Self {
            name,
            files: files.iter().map(|f| repo().join(f)).collect(),
            set: set.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for file in &self.files {
            args.push("--values".into());
            args.push(file.display().to_string());
        }
        for setting in &self.set {
            args.push("--set".into());
            args.push(setting.clone());
        }
        args
    }

    fn lint(&self) {
        let output = run(Command::new(helm())
            .arg("lint")
            .arg("--strict")
            .arg(chart())
            .args(self.args()));
        assert!(
            output.status.success(),
            "{}: helm lint failed:\n{}{}",
            self.name,
            text(&output.stdout),
            text(&output.stderr)
        );
    }

    /// `helm template`: the output, or the error.
    fn try_render(&self) -> Result<String, String> {
        let output = run(Command::new(helm())
            .args(["template", "sy", "--namespace", "switchyard-test"])
            .arg(chart())
            .args(self.args()));
        if output.status.success() {
            Ok(text(&output.stdout))
        } else {
            Err(text(&output.stderr))
        }
    }

    fn render(&self) -> Rendered {
        let yaml = self
            .try_render()
            .unwrap_or_else(|e| panic!("{}: helm template failed: {e}", self.name));
        Rendered::parse(self.name, yaml)
    }
}

/// The cases every check runs on.
fn cases() -> Vec<Case> {
    vec![
        Case::new("default values", &[], &[]),
        Case::new(
            "minimal values",
            &["charts/switchyard/ci/minimal-values.yaml"],
            &[],
        ),
        Case::new(
            "full-featured values",
            &["charts/switchyard/ci/full-values.yaml"],
            &[],
        ),
        // The API's /metrics on its http port, as before `api.metricsPort`.
        Case::new(
            "API metrics on the http port",
            &["charts/switchyard/ci/full-values.yaml"],
            &["api.metricsPort=null"],
        ),
        // What the Tiltfile installs with in-cluster dependencies.
        Case::new(
            "development values",
            &["tilt/values-dev.yaml"],
            &[
                "database.url=postgres://postgres@postgres:5432/switchyard?sslmode=disable",
                "redis.url=redis://redis:6379",
            ],
        ),
    ]
}

/// Rendered manifests.
struct Rendered {
    case: &'static str,
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn parse(case: &'static str, yaml: String) -> Self {
        let mut objects = Vec::new();
        for document in serde_norway::Deserializer::from_str(&yaml) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{case}: rendered YAML does not parse: {e}"));
            if !value.is_null() {
                objects.push(value);
            }
        }
        Self {
            case,
            yaml,
            objects,
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn named(&self, kind: &str, suffix: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(suffix)
        })
    }

    fn one(&self, kind: &str, suffix: &str) -> &Value {
        self.named(kind, suffix)
            .unwrap_or_else(|| panic!("{}: no {kind} named *{suffix}", self.case))
    }

    fn container<'a>(&self, workload: &'a Value) -> &'a Value {
        let containers = workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1, "{}: one container", self.case);
        &containers[0]
    }

    /// Workloads: Deployments and Jobs.
    fn workloads(&self) -> Vec<&Value> {
        let mut all = self.all("Deployment");
        all.extend(self.all("Job"));
        all
    }
}

fn env_of(container: &Value) -> Vec<&Value> {
    container["env"]
        .as_array()
        .map(|env| env.iter().collect())
        .unwrap_or_default()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    env_of(container).into_iter().find(|e| e["name"] == name)
}

fn env_str<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    env_value(container, name).and_then(|e| e["value"].as_str())
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{value} is not an integer"))
}

/// The variables a container takes from Secrets: name → (Secret, key).
fn secret_refs(container: &Value) -> BTreeMap<String, (String, String)> {
    env_of(container)
        .into_iter()
        .filter_map(|e| {
            let reference = &e["valueFrom"]["secretKeyRef"];
            reference.is_object().then(|| {
                (
                    e["name"].as_str().expect("an env name").to_owned(),
                    (
                        reference["name"].as_str().expect("a Secret").to_owned(),
                        reference["key"].as_str().expect("a key").to_owned(),
                    ),
                )
            })
        })
        .collect()
}

/// A workload's container port names.
fn port_names(container: &Value) -> Vec<&str> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().expect("a named port"))
        .collect()
}

/// A NetworkPolicy's ingress rules that open `port` (a port name).
fn rules_on<'a>(policy: &'a Value, port: &str) -> Vec<&'a Value> {
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| {
            rule["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p["port"] == port))
        })
        .collect()
}

/// The rendered manifests pass the Kubernetes schemas (strictly: no
/// unknown field), and only the CRD kinds go unchecked.
fn validate(rendered: &Rendered) {
    let dir = scratch_dir();
    let file = dir.join("manifests.yaml");
    std::fs::write(&file, &rendered.yaml).expect("writing the manifests");
    let mut command = Command::new(kubernetes_validate());
    command.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        command.args(["--kubernetes-version", version]);
    }
    let output = run(command.arg(&file));
    let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "{}: the manifests do not validate:\n{report}",
        rendered.case
    );
    let passed = report
        .lines()
        .filter(|line| line.starts_with("INFO") && line.contains(" passed "))
        .count();
    let builtin = rendered
        .objects
        .iter()
        .filter(|o| !CUSTOM_KINDS.contains(&o["kind"].as_str().unwrap_or("")))
        .count();
    assert_eq!(
        passed,
        builtin * KUBERNETES_VERSIONS.len(),
        "{}: every built-in object is validated against every version:\n{report}",
        rendered.case
    );
    for line in report.lines().filter(|line| line.starts_with("WARN")) {
        assert!(
            CUSTOM_KINDS
                .iter()
                .any(|kind| line.contains(&format!("kind {kind} "))),
            "{}: unexpected warning: {line}",
            rendered.case
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-chart-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A stand-in for what a Secret would hold.
fn secret_placeholder(name: &str) -> String {
    match name {
        "DATABASE_URL" => "postgres://switchyard@postgres.test:5432/switchyard".into(),
        "REDIS_URL" => "redis://redis.test:6379".into(),
        _ => "from-a-secret".into(),
    }
}

/// The environment a container would see in namespace `switchyard-test`:
/// Secrets replaced by stand-ins, the downward API resolved, and what the
/// kubelet adds to every container.
fn environment(rendered: &Rendered, container: &Value) -> HashMap<String, String> {
    let mut env = HashMap::from([
        ("KUBERNETES_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
        ("HOSTNAME".to_owned(), "pod-0".to_owned()),
    ]);
    for entry in env_of(container) {
        let name = entry["name"].as_str().expect("an env name").to_owned();
        let value = if let Some(value) = entry["value"].as_str() {
            value.to_owned()
        } else if entry["valueFrom"]["secretKeyRef"].is_object() {
            secret_placeholder(&name)
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" {
            "switchyard-test".to_owned()
        } else {
            panic!(
                "{}: {name} has no value this test knows: {entry}",
                rendered.case
            )
        };
        env.insert(name, value);
    }
    env
}

/// Parse a container's configuration as the program does at start-up; the
/// catalog path is mapped to the rendered ConfigMap's content.
fn parse_config(rendered: &Rendered, workload: &Value) -> Config {
    let container = rendered.container(workload);
    let mut env = environment(rendered, container);
    let scratch = scratch_dir();
    if let Some(path) = env.get("SWITCHYARD_CONFIG").cloned() {
        let mounts = container["volumeMounts"].as_array().expect("volume mounts");
        let mount = mounts
            .iter()
            .find(|m| {
                path.starts_with(m["mountPath"].as_str().unwrap_or("")) && m["name"] == "catalog"
            })
            .unwrap_or_else(|| panic!("{}: {path} is not on a mounted volume", rendered.case));
        let volumes = workload["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume");
        let item = &volume["configMap"]["items"][0];
        let file = format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap(),
            item["path"].as_str().unwrap()
        );
        assert_eq!(
            file, path,
            "{}: SWITCHYARD_CONFIG is the mounted file",
            rendered.case
        );
        let map = rendered.one("ConfigMap", "-catalog");
        assert_eq!(map["metadata"]["name"], volume["configMap"]["name"]);
        let toml = map["data"][item["key"].as_str().unwrap()]
            .as_str()
            .expect("the catalog in the ConfigMap");
        let local = scratch.join("catalog.toml");
        std::fs::write(&local, toml).expect("writing the catalog");
        env.insert("SWITCHYARD_CONFIG".into(), local.display().to_string());
    }
    let config = Config::from_lookup(Defaults::default(), |name| env.get(name).cloned())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {} would not start: {e}",
                rendered.case, workload["metadata"]["name"]
            )
        });
    std::fs::remove_dir_all(scratch).ok();
    config
}

/// Pod settings every Switchyard container must have.
fn check_security(rendered: &Rendered, workload: &Value, read_only_root: bool) {
    let name = &workload["metadata"]["name"];
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert!(int(&pod["securityContext"]["runAsUser"]) > 0, "{name}");
    let container = rendered.container(workload);
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{name}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(security["privileged"], false, "{name}");
    assert_eq!(
        security["readOnlyRootFilesystem"], read_only_root,
        "{}: {name}",
        rendered.case
    );
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
}

/// No secret is written into a manifest: no Secret object, no secret-like
/// variable with a plain value, no URL with a password.
fn check_no_inlined_secrets(rendered: &Rendered) {
    assert!(
        rendered.all("Secret").is_empty(),
        "{}: the chart renders no Secret",
        rendered.case
    );
    for workload in rendered.workloads() {
        for entry in env_of(rendered.container(workload)) {
            let name = entry["name"].as_str().unwrap();
            let Some(value) = entry["value"].as_str() else {
                continue;
            };
            let upper = name.to_ascii_uppercase();
            assert!(
                !["KEY", "TOKEN", "PASSWORD", "SECRET"]
                    .iter()
                    .any(|word| upper.contains(word)),
                "{}: {name} is written in the manifest",
                rendered.case
            );
            if upper.ends_with("_URL") || upper.ends_with("_ENDPOINT") {
                let url = reqwest::Url::parse(value)
                    .unwrap_or_else(|e| panic!("{}: {name}={value}: {e}", rendered.case));
                assert!(
                    url.password().is_none() && !url.query_pairs().any(|(k, _)| k == "password"),
                    "{}: {name} carries a password",
                    rendered.case
                );
            }
        }
    }
}

/// A selector's labels are all on the pods of `workload`.
fn selects(selector: &Value, workload: &Value) -> bool {
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

/// The checks every case gets; returns the API's probe paths.
fn check(rendered: &Rendered, read_only_root: bool) -> BTreeSet<String> {
    let case = rendered.case;
    check_no_inlined_secrets(rendered);
    for workload in rendered.workloads() {
        check_security(rendered, workload, read_only_root);
    }

    // The API: its port, its probes, its shutdown.
    let api = rendered.one("Deployment", "-api");
    let container = rendered.container(api);
    assert_eq!(container["args"], json!(["api"]));
    let ports: HashMap<&str, i64> = container["ports"]
        .as_array()
        .expect("the API's ports")
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), int(&p["containerPort"])))
        .collect();
    let config = parse_config(rendered, api);
    assert_eq!(
        i64::from(config.listen.port()),
        ports["http"],
        "{case}: the API listens on its declared port"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "{case}: reachable from outside the pod"
    );
    // `switchyard api` refuses to start with no authenticator.
    assert!(
        !config.auth.methods.is_empty(),
        "{case}: the API is given its authenticators"
    );
    let mut probe_paths = BTreeSet::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        let port = get["port"].as_str().expect("a named port");
        assert!(ports.contains_key(port), "{case}: {probe} port {port}");
        // The public port is the one that must answer (and /ready is
        // served there only).
        assert_eq!(port, "http", "{case}: {probe} is on the public port");
        probe_paths.insert(get["path"].as_str().expect("a path").to_owned());
    }
    // /metrics: on a port of its own (api.metricsPort), the public port then
    // answering 404 there; or, without one, on the public port.
    let api_metrics = config.metrics_listen;
    match api_metrics {
        Some(listen) => {
            assert!(
                listen.ip().is_unspecified(),
                "{case}: the API's metrics listener is reachable from outside the pod"
            );
            assert_eq!(
                ports.get("metrics"),
                Some(&i64::from(listen.port())),
                "{case}: the API declares its metrics listener's port as `metrics`"
            );
            assert_ne!(
                listen.port(),
                config.listen.port(),
                "{case}: /metrics apart from the public port"
            );
        }
        None => assert!(
            !ports.contains_key("metrics"),
            "{case}: no `metrics` port without a metrics listener"
        ),
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    let pause = int(&container["lifecycle"]["preStop"]["sleep"]["seconds"]);
    let api_grace = int(&api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]);
    assert!(pause > 0, "{case}: a preStop pause lets endpoints drain");
    assert!(
        api_grace > pause,
        "{case}: the API's grace period ({api_grace}) outlasts its preStop pause ({pause})"
    );
    assert_eq!(
        api["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );

    // The API's Service and Ingress lead to its pods' port. The main
    // Service carries the public port only, whatever `api.service.type`: a
    // LoadBalancer or a NodePort must not expose the metrics port.
    let service = rendered.one("Service", "-api");
    assert!(
        selects(&service["spec"]["selector"], api),
        "{case}: Service → API pods"
    );
    let service_ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(
        service_ports.len(),
        1,
        "{case}: the API's Service ({}) has its http port only: {service_ports:?}",
        service["spec"]["type"]
    );
    assert_eq!(service_ports[0]["name"], "http");
    assert_eq!(service_ports[0]["targetPort"], "http");
    // The metrics port: a ClusterIP Service of its own, with that port only.
    let metrics_service = rendered.named("Service", "-api-metrics");
    match (api_metrics, metrics_service) {
        (Some(listen), Some(metrics_service)) => {
            assert!(
                selects(&metrics_service["spec"]["selector"], api),
                "{case}: the API's metrics Service → API pods"
            );
            assert_eq!(
                metrics_service["spec"]["type"], "ClusterIP",
                "{case}: the API's metrics stay inside the cluster"
            );
            assert!(
                metrics_service["spec"]["clusterIP"].is_null(),
                "{case}: a plain ClusterIP Service"
            );
            assert_eq!(
                metrics_service["spec"]["ports"],
                json!([{
                    "name": "metrics",
                    "port": listen.port(),
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }]),
                "{case}: the API's metrics Service has the metrics port only"
            );
        }
        (Some(_), None) => panic!("{case}: no Service for the API's metrics port"),
        (None, Some(_)) => panic!("{case}: an API metrics Service without a metrics port"),
        (None, None) => {}
    }
    // The Ingress routes to the public port only, never to `metrics`.
    if let Some(ingress) = rendered.named("Ingress", "-api") {
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                let backend = &path["backend"]["service"];
                assert_eq!(backend["name"], service["metadata"]["name"]);
                assert_eq!(
                    backend["port"]["name"], "http",
                    "{case}: the Ingress leads to the public port only"
                );
                assert!(
                    backend["port"]["number"].is_null(),
                    "{case}: the Ingress names its port"
                );
            }
        }
    }
    // The API's NetworkPolicy: `api.from` reaches the public port only; the
    // metrics port, when there is one, is reached by its own rule.
    if let Some(policy) = rendered.named("NetworkPolicy", "-api") {
        let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
        for rule in rules {
            let rule_ports = rule["ports"]
                .as_array()
                .unwrap_or_else(|| panic!("{case}: an API rule opens every port: {rule}"));
            assert_eq!(rule_ports.len(), 1, "{case}: one port per rule: {rule}");
            let port = rule_ports[0]["port"].as_str().expect("a named port");
            assert!(ports.contains_key(port), "{case}: the API has port {port}");
        }
        let on_http = rules_on(policy, "http");
        let on_metrics = rules_on(policy, "metrics");
        match api_metrics {
            Some(_) => {
                assert_eq!(
                    on_http.len(),
                    1,
                    "{case}: only api.from reaches the public port"
                );
                assert_eq!(on_metrics.len(), 1, "{case}: the metrics port has its rule");
            }
            None => assert!(on_metrics.is_empty(), "{case}"),
        }
    }

    // The worker: its drain fits in its grace period; it keeps the Lease
    // its Role allows.
    let worker = rendered.one("Deployment", "-worker");
    let container = rendered.container(worker);
    assert_eq!(container["args"], json!(["worker"]));
    let config = parse_config(rendered, worker);
    // The worker's only HTTP port is its metrics listener: probed there
    // when it has one, not at all otherwise.
    assert!(
        container["readinessProbe"].is_null(),
        "{case}: workers serve no traffic"
    );
    match config.metrics_listen {
        Some(listen) => {
            let probe = &container["livenessProbe"]["httpGet"];
            assert_eq!(probe["path"], "/health", "{case}");
            let port = container["ports"]
                .as_array()
                .and_then(|ports| ports.iter().find(|p| p["name"] == probe["port"]))
                .unwrap_or_else(|| panic!("{case}: the worker's probe port is declared"));
            assert_eq!(
                int(&port["containerPort"]),
                i64::from(listen.port()),
                "{case}"
            );
        }
        None => assert!(
            container["livenessProbe"].is_null(),
            "{case}: no listener, no probe"
        ),
    }
    let drain = config.shutdown_grace.as_secs() as i64;
    let worker_grace = int(&worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]);
    assert!(
        worker_grace > drain + AFTER_DRAIN_SECS,
        "{case}: the worker's grace period ({worker_grace} s) exceeds its drain ({drain} s) \
         and what follows it ({AFTER_DRAIN_SECS} s)"
    );
    match &config.sweeper_leader {
        SweeperLeader::Kubernetes(lease) => {
            assert_eq!(lease.namespace, "switchyard-test");
            assert_eq!(
                worker["spec"]["template"]["spec"]["automountServiceAccountToken"],
                true
            );
            let role = rendered.one("Role", "-sweeper");
            let allowed = |verb: &str| {
                role["rules"].as_array().unwrap().iter().any(|rule| {
                    rule["apiGroups"] == json!(["coordination.k8s.io"])
                        && rule["resources"] == json!(["leases"])
                        && rule["verbs"].as_array().unwrap().iter().any(|v| v == verb)
                        && rule["resourceNames"]
                            .as_array()
                            .is_none_or(|names| names.iter().any(|n| n == lease.name.as_str()))
                })
            };
            // What kube-lease-manager does with the Lease.
            for verb in ["get", "create", "patch"] {
                assert!(
                    allowed(verb),
                    "{case}: the workers may {verb} Lease {}",
                    lease.name
                );
            }
            let binding = rendered.one("RoleBinding", "-sweeper");
            assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
            assert_eq!(
                binding["subjects"][0]["name"],
                worker["spec"]["template"]["spec"]["serviceAccountName"]
            );
            assert_eq!(binding["subjects"][0]["namespace"], "switchyard-test");
        }
        SweeperLeader::Postgres => panic!("{case}: the chart's default leader is the Lease"),
    }

    // Scaling: an HPA or a ScaledObject, never both, on the worker.
    let hpa = rendered.named("HorizontalPodAutoscaler", "-worker");
    let scaled = rendered.named("ScaledObject", "-worker");
    assert!(
        !(hpa.is_some() && scaled.is_some()),
        "{case}: two autoscalers"
    );
    for target in [
        hpa.map(|h| &h["spec"]["scaleTargetRef"]),
        scaled.map(|s| &s["spec"]["scaleTargetRef"]),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(target["name"], worker["metadata"]["name"]);
        assert!(
            worker["spec"]["replicas"].is_null(),
            "{case}: the autoscaler owns replicas"
        );
    }

    // Disruption budgets select their pods.
    for pdb in rendered.all("PodDisruptionBudget") {
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        assert!(
            selects(selector, api) ^ selects(selector, worker),
            "{case}: {} selects one component",
            pdb["metadata"]["name"]
        );
    }

    // Migrations: a hook that needs nothing of the release.
    if let Some(job) = rendered.named("Job", "-migrate") {
        let hooks = job["metadata"]["annotations"]["helm.sh/hook"]
            .as_str()
            .unwrap();
        assert_eq!(hooks, "pre-install,pre-upgrade");
        let container = rendered.container(job);
        assert_eq!(container["args"], json!(["migrate"]));
        let spec = &job["spec"]["template"]["spec"];
        assert!(
            spec["serviceAccountName"].is_null(),
            "{case}: the hook runs before the ServiceAccount exists"
        );
        assert!(
            !serde_json::to_string(spec).unwrap().contains("configMap"),
            "{case}: the hook runs before the ConfigMap exists"
        );
        // The migrations hold the connections' Secrets and no other.
        for name in secret_refs(container).keys() {
            assert!(
                ["DATABASE_URL", "REDIS_URL"].contains(&name.as_str()),
                "{case}: the migration Job is given the Secret of {name}"
            );
        }
        parse_config(rendered, job);
    } else {
        panic!("{case}: no migration Job");
    }

    // Prometheus scrapes ports that exist on the Services it selects.
    for monitor in rendered.all("ServiceMonitor") {
        let selector = &monitor["spec"]["selector"]["matchLabels"];
        let services: Vec<&Value> = rendered
            .all("Service")
            .into_iter()
            .filter(|s| {
                selector
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &s["metadata"]["labels"][k] == v)
            })
            .collect();
        let endpoints = scraped_ports(monitor);
        assert_eq!(
            endpoints.iter().collect::<BTreeSet<_>>().len(),
            endpoints.len(),
            "{case}: each port is scraped once (an endpoint applies to every selected Service)"
        );
        match api_metrics {
            Some(_) => {
                assert!(
                    endpoints.contains(&"metrics"),
                    "{case}: the API's metrics port is scraped"
                );
                assert!(
                    services.iter().any(|s| s["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("-api-metrics")),
                    "{case}: the ServiceMonitor selects the API's metrics Service"
                );
                assert!(
                    !endpoints.contains(&"http"),
                    "{case}: the public port, which no longer serves /metrics, is not scraped"
                );
            }
            None => assert!(
                endpoints.contains(&"http"),
                "{case}: without a metrics port, the API's /metrics is on its http port"
            ),
        }
        for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
            assert!(
                services.iter().any(|s| s["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == endpoint["port"])),
                "{case}: ServiceMonitor port {} is on no selected Service",
                endpoint["port"]
            );
        }
    }
    probe_paths
}

#[test]
fn the_chart_lints_renders_and_validates_with_every_values_file() {
    for case in cases() {
        case.lint();
        let rendered = case.render();
        validate(&rendered);
        check(&rendered, case.name != "development values");
    }
}

#[test]
fn the_full_featured_values_turn_every_feature_on() {
    let rendered = cases()
        .into_iter()
        .find(|c| c.name == "full-featured values")
        .unwrap()
        .render();
    for (kind, suffix) in [
        ("Ingress", "-api"),
        ("ScaledObject", "-worker"),
        ("TriggerAuthentication", "-worker"),
        ("ServiceMonitor", "sy-switchyard"),
        ("NetworkPolicy", "-api"),
        ("NetworkPolicy", "-worker"),
        ("ConfigMap", "-catalog"),
        ("PodDisruptionBudget", "-api"),
        ("PodDisruptionBudget", "-worker"),
    ] {
        rendered.one(kind, suffix);
    }
    assert!(
        rendered
            .named("HorizontalPodAutoscaler", "-worker")
            .is_none()
    );
    let api = rendered.container(rendered.one("Deployment", "-api"));
    let worker = rendered.container(rendered.one("Deployment", "-worker"));
    let migrate = rendered.container(rendered.one("Job", "-migrate"));

    // Each pod holds the Secrets it uses and no other: the providers' keys
    // (`secretEnv`) on the workers only, `api.secretEnv` on the API only,
    // the connections' on all three.
    let refs = |entries: &[(&str, &str, &str)]| -> BTreeMap<String, (String, String)> {
        entries
            .iter()
            .map(|(name, secret, key)| (name.to_string(), (secret.to_string(), key.to_string())))
            .collect()
    };
    let connections = [
        ("DATABASE_URL", "switchyard-postgres", "url"),
        ("REDIS_URL", "switchyard-redis", "url"),
    ];
    let worker_secrets = [
        ("OPENAI_API_KEY", "llm-keys", "openai"),
        ("ANTHROPIC_API_KEY", "llm-keys", "anthropic"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "otel-collector-auth",
            "worker-headers",
        ),
    ];
    let api_secrets = [(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "otel-collector-auth",
        "api-headers",
    )];
    assert_eq!(
        secret_refs(worker),
        refs(&[&connections[..], &worker_secrets[..]].concat()),
        "the workers get the connections and `secretEnv`"
    );
    assert_eq!(
        secret_refs(api),
        refs(&[&connections[..], &api_secrets[..]].concat()),
        "the API gets the connections and `api.secretEnv`, no provider key"
    );
    assert_eq!(
        secret_refs(migrate),
        refs(&connections),
        "the migrations get the connections only"
    );
    for (container, what) in [(api, "the API"), (migrate, "the migration Job")] {
        for name in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
            assert!(
                env_value(container, name).is_none(),
                "{what} is given {name}"
            );
        }
        assert!(
            !serde_json::to_string(container)
                .unwrap()
                .contains("llm-keys"),
            "{what} refers to the providers' Secret"
        );
    }
    for (container, what) in [(worker, "the workers"), (migrate, "the migration Job")] {
        assert!(
            !serde_json::to_string(container)
                .unwrap()
                .contains("api-headers"),
            "{what} are given the API's own Secret"
        );
    }

    // /metrics on the API's metrics port: declared, listened on, in the
    // Service, scraped there; the Ingress and `api.from` reach the http
    // port only, `metricsFrom` the metrics port only.
    assert_eq!(port_names(api), ["http", "metrics"]);
    assert_eq!(
        env_str(api, "SWITCHYARD_METRICS_LISTEN"),
        Some("0.0.0.0:9090")
    );
    let service = rendered.one("Service", "-api");
    assert_eq!(service["metadata"]["name"], "sy-switchyard-api");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]),
        "the API's main Service: http only"
    );
    let metrics_service = rendered.one("Service", "-api-metrics");
    assert_eq!(
        metrics_service["metadata"]["name"],
        "sy-switchyard-api-metrics"
    );
    assert_eq!(metrics_service["spec"]["type"], "ClusterIP");
    assert_eq!(
        metrics_service["spec"]["ports"],
        json!([{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]),
        "the API's metrics Service: metrics only"
    );
    assert_eq!(
        scraped_ports(rendered.one("ServiceMonitor", "sy-switchyard")),
        ["metrics"],
        "the API's and the workers' metrics ports"
    );
    let policy = rendered.one("NetworkPolicy", "-api");
    let ingress_controller = json!([{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]);
    let monitoring = json!([{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]);
    let from = |port: &str| -> Vec<&Value> {
        rules_on(policy, port)
            .into_iter()
            .map(|rule| &rule["from"])
            .collect()
    };
    assert_eq!(from("http"), [&ingress_controller], "api.from → http only");
    assert_eq!(from("metrics"), [&monitoring], "metricsFrom → metrics only");
    let worker_policy = rendered.one("NetworkPolicy", "-worker");
    assert_eq!(
        worker_policy["spec"]["ingress"],
        json!([{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": monitoring}]),
        "metricsFrom → the workers' metrics port only"
    );
    assert_eq!(
        env_str(api, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://otel-collector.observability.svc:4318")
    );
    assert_eq!(env_str(api, "OTEL_SERVICE_NAME"), Some("switchyard-api"));
    let config = parse_config(&rendered, rendered.one("Deployment", "-api"));
    assert_eq!(
        config.catalog.agents.len(),
        2,
        "the catalog reached the program"
    );
    assert_eq!(config.redis_prefix, "prod:switchyard");
    assert!(config.cors.allows("https://chat.example.com"));
    assert!(config.cors.allows("https://pr-7.preview.example.com"));
    assert!(!config.cors.allows("http://localhost:3000"));
    assert!(config.cors.credentials);
    assert_eq!(config.auth.service_role, "Switchyard.Service");
}

#[test]
fn without_a_metrics_port_the_api_serves_metrics_on_its_http_port() {
    let rendered = cases()
        .into_iter()
        .find(|c| c.name == "API metrics on the http port")
        .unwrap()
        .render();
    let api = rendered.container(rendered.one("Deployment", "-api"));
    assert_eq!(port_names(api), ["http"]);
    assert!(env_value(api, "SWITCHYARD_METRICS_LISTEN").is_none());
    assert_eq!(
        parse_config(&rendered, rendered.one("Deployment", "-api")).metrics_listen,
        None
    );
    let service = rendered.one("Service", "-api");
    assert_eq!(service["spec"]["ports"].as_array().unwrap().len(), 1);
    assert!(
        rendered.named("Service", "-api-metrics").is_none(),
        "no metrics Service without a metrics port"
    );
    assert_eq!(
        scraped_ports(rendered.one("ServiceMonitor", "sy-switchyard")),
        ["http", "metrics"],
        "the API's http port and the workers' metrics port"
    );
    // metricsFrom adds to api.from on the http port.
    let policy = rendered.one("NetworkPolicy", "-api");
    let from: Vec<&Value> = rules_on(policy, "http")
        .into_iter()
        .map(|rule| &rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
        .collect();
    assert_eq!(
        from,
        [&json!("ingress-nginx"), &json!("monitoring")],
        "api.from and metricsFrom on the http port"
    );
    assert!(rules_on(policy, "metrics").is_empty());
}

#[test]
fn a_load_balancer_or_node_port_api_service_exposes_only_the_http_port() {
    for service_type in ["LoadBalancer", "NodePort"] {
        let setting = format!("api.service.type={service_type}");
        let case = Case::new(
            "full-featured values, public API Service",
            &["charts/switchyard/ci/full-values.yaml"],
            &[setting.as_str()],
        );
        case.lint();
        let rendered = case.render();
        validate(&rendered);
        check(&rendered, true);
        let service = rendered.one("Service", "-api");
        assert_eq!(service["spec"]["type"], service_type);
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]),
            "the {service_type} Service exposes the http port only"
        );
        // The metrics port stays on its ClusterIP Service, scraped there.
        let metrics_service = rendered.one("Service", "-api-metrics");
        assert_eq!(metrics_service["spec"]["type"], "ClusterIP");
        assert_eq!(
            metrics_service["spec"]["ports"],
            json!([{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}])
        );
        // No other Service of the release is exposed outside the cluster.
        for other in rendered.all("Service") {
            if other["metadata"]["name"] != service["metadata"]["name"] {
                assert!(
                    other["spec"]["type"].is_null() || other["spec"]["type"] == "ClusterIP",
                    "{service_type}: {} is exposed",
                    other["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn the_chart_refuses_what_would_break_a_deployment() {
    let minimal = "charts/switchyard/ci/minimal-values.yaml";
    for (settings, expected) in [
        (
            vec!["database.url=postgres://switchyard:hunter2@db:5432/switchyard"],
            "database.url holds a password",
        ),
        (
            vec!["redis.url=redis://:hunter2@cache:6379"],
            "redis.url holds a password",
        ),
        (
            vec!["database.existingSecret=db"],
            "database: set url or existingSecret, not both",
        ),
        (
            vec![
                "worker.shutdownGraceSecs=60",
                "worker.terminationGracePeriodSeconds=70",
            ],
            "must be at least worker.shutdownGraceSecs (60) + 15",
        ),
        (
            vec![
                "api.preStopSleepSeconds=30",
                "api.terminationGracePeriodSeconds=30",
            ],
            "must exceed api.preStopSleepSeconds",
        ),
        (
            vec![
                "worker.keda.enabled=true",
                "redis.url=",
                "redis.existingSecret=r",
            ],
            "worker.keda.redis.address (host:port) is required",
        ),
        (vec!["worker.keda.minReplicas=0"], "minReplicas"),
        (vec!["auth.methods=null"], "methods is required"),
        (
            vec!["auth.methods={oidc}"],
            "issuer, audience and jwksUrl are required",
        ),
        (vec!["auth.methods={password}"], "auth"),
        // Development mode lets anyone in as an administrator: never in a cluster.
        (vec!["auth.methods={dev}"], "auth"),
        (vec!["auth.methods={api_key,dev}"], "auth"),
        (
            vec!["extraEnv[0].name=SWITCHYARD_AUTH", "extraEnv[0].value=dev"],
            "extraEnv",
        ),
        (
            vec![
                "api.env[0].name=SWITCHYARD_DEV_FORCE",
                "api.env[0].value=true",
            ],
            "env",
        ),
        (vec!["worker.sweeperLeader=etcd"], "sweeperLeader"),
        (
            vec!["api.port=9090", "api.metricsPort=9090"],
            "api.metricsPort (9090) must differ from api.port",
        ),
        (vec!["api.metricsPort=0"], "metricsPort"),
        (vec!["api.metricsPort=65536"], "metricsPort"),
        (
            vec![
                "api.secretEnv[0].name=SWITCHYARD_AUTH",
                "api.secretEnv[0].secretName=s",
                "api.secretEnv[0].secretKey=k",
            ],
            "api.secretEnv",
        ),
        (
            vec![
                "api.secretEnv[0].name=TOKEN",
                "api.secretEnv[0].secretName=s",
            ],
            "secretKey is required",
        ),
        (vec!["redis.prefix=a b"], "prefix"),
        (vec!["workers.replicas=3"], "workers"),
    ] {
        let mut case = Case::new("refused", &[minimal], &[]);
        case.set = settings.iter().map(|s| s.to_string()).collect();
        let error = case
            .try_render()
            .expect_err(&format!("{settings:?} should be refused"));
        assert!(error.contains(expected), "{settings:?}: {error}");
    }
}

/// A port free on the loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn the_probes_point_at_routes_the_api_serves_without_credentials() {
    // The minimal values, scraped by a ServiceMonitor.
    let rendered = Case::new(
        "minimal values, scraped",
        &["charts/switchyard/ci/minimal-values.yaml"],
        &["metrics.serviceMonitor.enabled=true"],
    )
    .render();
    let paths = check(&rendered, true);
    assert!(!paths.is_empty());
    let config = parse_config(&rendered, rendered.one("Deployment", "-api"));
    let listen = config
        .metrics_listen
        .expect("the API has a metrics listener by default");
    // The rendered listener, on a free port of the loopback here.
    let metrics_port = free_port();
    let app = TestApp::spawn_with(Options {
        worker: false,
        env: vec![(
            "SWITCHYARD_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )],
        ..Default::default()
    })
    .await;
    assert!(listen.ip().is_unspecified());
    for path in paths {
        // The kubelet sends no credentials.
        let response = reqwest::get(app.url(&path)).await.expect("the API answers");
        assert_eq!(response.status(), 200, "GET {path}");
    }
    // What the ServiceMonitor scrapes is served on the metrics port, and
    // not on the public port the Ingress routes to.
    let endpoints = rendered.one("ServiceMonitor", "sy-switchyard")["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    let path = endpoints[0]["path"].as_str().unwrap();
    let public = reqwest::get(app.url(path)).await.expect("the API answers");
    assert_eq!(public.status(), 404, "GET {path} on the public port");
    let scraped = format!("http://127.0.0.1:{metrics_port}{path}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let response = loop {
        // The listener is bound as the API starts serving.
        match reqwest::get(&scraped).await {
            Ok(response) => break response,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{scraped}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(response.status(), 200, "GET {scraped}");
    let text = response.text().await.unwrap();
    assert!(text.contains("switchyard_"), "{text}");
}

/// The ScaledObject's formula applied to the Redis the app uses: each
/// trigger's key counted as KEDA's redis trigger counts it (a list's or a
/// sorted set's length, 0 when the key does not exist), all in one
/// snapshot, since a job moving between two keys read one after the other
/// would be counted twice.
async fn queue_length_seen_by_keda(app: &TestApp, scaled: &Value) -> i64 {
    let formula = scaled["spec"]["advanced"]["scalingModifiers"]["formula"]
        .as_str()
        .unwrap();
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    let mut keys = Vec::new();
    for trigger in triggers {
        assert_eq!(trigger["type"], "redis");
        assert!(
            formula.contains(trigger["name"].as_str().unwrap()),
            "the formula adds up every trigger"
        );
        keys.push(trigger["metadata"]["listName"].as_str().unwrap());
    }
    assert_eq!(formula.split('+').count(), triggers.len());
    let mut conn = app.redis.clone();
    let mut types = redis::pipe();
    for key in &keys {
        types.cmd("TYPE").arg(*key);
    }
    let kinds: Vec<String> = types.query_async(&mut conn).await.unwrap();
    let mut lengths = redis::pipe();
    lengths.atomic();
    for (key, kind) in keys.iter().zip(&kinds) {
        match kind.as_str() {
            "none" => lengths.cmd("EXISTS").arg(*key),
            "list" => lengths.cmd("LLEN").arg(*key),
            "zset" => lengths.cmd("ZCARD").arg(*key),
            other => panic!("{key} is a {other}, which the trigger does not count"),
        };
    }
    let counted: Vec<i64> = lengths.query_async(&mut conn).await.unwrap();
    counted.iter().sum()
}

/// The ports a ServiceMonitor's endpoints scrape, in order.
fn scraped_ports(monitor: &Value) -> Vec<&str> {
    monitor["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["port"].as_str().expect("a named port"))
        .collect()
}

async fn queued_runs(app: &TestApp) -> i64 {
    app.count("select count(*) from runs where status = 'queued'")
        .await
}

#[tokio::test]
async fn keda_counts_the_runs_waiting_in_the_queue() {
    // One worker running one run at a time, slowly: the other runs wait.
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_WORKER_CONCURRENCY", "1".into())],
        ..Options::slow_scripted(200)
    })
    .await;
    let prefix = format!("redis.prefix={}", app.config.redis_prefix);
    let rendered = Case::new(
        "KEDA on the test's prefix",
        &["charts/switchyard/ci/minimal-values.yaml"],
        &["worker.keda.enabled=true", &prefix],
    )
    .render();
    let scaled = rendered.one("ScaledObject", "-worker");
    assert_eq!(
        scaled["spec"]["triggers"][0]["metadata"]["address"], "redis.cache.svc:6379",
        "the address comes from redis.url"
    );
    assert_eq!(queue_length_seen_by_keda(&app, scaled).await, 0);

    let mut runs = Vec::new();
    for n in 0..4 {
        let thread = app.create_thread(json!({})).await;
        let thread_id = thread["id"].as_str().unwrap().to_owned();
        runs.push(
            app.start_run(&thread_id, &format!("run number {n}, a few words"))
                .await,
        );
    }
    // While the worker works through them, what KEDA sees is what waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut observed = BTreeSet::new();
    loop {
        let queued = queued_runs(&app).await;
        let seen = queue_length_seen_by_keda(&app, scaled).await;
        let queued_after = queued_runs(&app).await;
        if queued == queued_after {
            // A worker that took a job but has not claimed its run yet
            // leaves the run queued for a moment: at most one here.
            assert!(
                seen == queued || seen + 1 == queued,
                "KEDA sees {seen} waiting runs, {queued} are queued"
            );
            observed.insert(seen);
        }
        if queued == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs were not executed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        observed.iter().any(|&n| n >= 2),
        "a backlog was seen: {observed:?}"
    );
    for run in runs {
        app.wait_for_run(run["id"].as_str().unwrap()).await;
    }
    assert_eq!(queue_length_seen_by_keda(&app, scaled).await, 0);
}
