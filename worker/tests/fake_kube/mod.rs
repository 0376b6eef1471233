//! A local Kubernetes API server that knows only Leases
//! (`coordination.k8s.io/v1`) and the calls kube-lease-manager makes on
//! them: get, create and patch. Objects and errors have the API server's
//! JSON shapes (a `Lease`, a `Status`), and patches follow its rules:
//! server-side apply refuses (409 `Conflict`) to change a field another
//! field manager owns, which is what keeps two workers from taking a free
//! Lease at once; merge patches take the fields they change, and `null`
//! removes a field.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::sync::Barrier;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases";
const APPLY: &str = "application/apply-patch+yaml";
const STRATEGIC_MERGE: &str = "application/strategic-merge-patch+json";
const MERGE: &str = "application/merge-patch+json";

/// The fake API server, serving until dropped.
pub struct FakeKube {
    origin: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<Store>>;

#[derive(Default)]
struct Store {
    leases: HashMap<(String, String), Lease>,
    resource_version: u64,
    unavailable: bool,
    /// Apply patches refused for a conflict.
    conflicts: usize,
    /// Reads still to hold at `gate` until the others of their round come.
    gathered_reads: usize,
    gate: Option<Arc<Barrier>>,
}

struct Lease {
    namespace: String,
    name: String,
    uid: String,
    resource_version: u64,
    created: String,
    spec: Map<String, Value>,
    managers: Vec<Manager>,
}

/// An entry of `metadata.managedFields`: the `spec` fields one manager set
/// with one kind of operation.
struct Manager {
    name: String,
    operation: Operation,
    time: String,
    fields: BTreeSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    Apply,
    Update,
}

impl FakeKube {
    pub async fn start() -> Self {
        let state = Shared::default();
        let app = Router::new()
            .route(LEASES, post(create))
            .route(&format!("{LEASES}/{{name}}"), get(read).patch(patch))
            .layer(middleware::from_fn_with_state(state.clone(), availability))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the fake Kubernetes API");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the fake Kubernetes API stopped");
        });
        Self {
            origin,
            state,
            server,
        }
    }

    /// A client for this server, set up as the worker sets up its own.
    pub fn client(&self) -> kube::Client {
        let uri = self.origin.parse().expect("origin is a URI");
        switchyard_worker::leader::client(kube::Config::new(uri)).expect("client")
    }

    /// A Lease with an empty spec, as left by an earlier deployment.
    pub fn create_lease(&self, namespace: &str, name: &str) {
        let mut store = lock(&self.state);
        store.resource_version += 1;
        let lease = Lease::new(namespace, name, store.resource_version);
        store
            .leases
            .insert((namespace.to_owned(), name.to_owned()), lease);
    }

    /// Answer the next `rounds * together` reads in rounds of `together`,
    /// the reads of a round all at once: clients that start together see
    /// the same Lease, as behind a slow API server, and race to take it.
    pub fn gather_reads(&self, together: usize, rounds: usize) {
        let mut store = lock(&self.state);
        store.gathered_reads = together * rounds;
        store.gate = Some(Arc::new(Barrier::new(together)));
    }

    /// How many apply patches were refused for a conflict.
    pub fn conflicts(&self) -> usize {
        lock(&self.state).conflicts
    }

    /// The Lease's `spec.holderIdentity`, if the Lease exists and is held.
    pub fn holder(&self, namespace: &str, name: &str) -> Option<String> {
        let store = lock(&self.state);
        let lease = store.leases.get(&(namespace.to_owned(), name.to_owned()))?;
        lease
            .spec
            .get("holderIdentity")?
            .as_str()
            .map(str::to_owned)
    }

    /// Make every request fail with 503 (`false`), or serve again (`true`).
    pub fn set_available(&self, available: bool) {
        lock(&self.state).unavailable = !available;
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, Store> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn availability(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if lock(&state).unavailable {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
            Value::Null,
        );
    }
    next.run(request).await
}

async fn read(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let gate = {
        let mut store = lock(&state);
        match store.gathered_reads.checked_sub(1) {
            Some(left) => {
                store.gathered_reads = left;
                store.gate.clone()
            }
            None => None,
        }
    };
    if let Some(gate) = gate {
        gate.wait().await;
    }
    let store = lock(&state);
    match store.leases.get(&(namespace, name.clone())) {
        Some(lease) => (StatusCode::OK, axum::Json(lease.to_json())).into_response(),
        None => not_found(&name),
    }
}

async fn create(
    State(state): State<Shared>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(object) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("the body is not a JSON object".into());
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required".into(),
            Value::Null,
        );
    };
    let mut store = lock(&state);
    let key = (namespace.clone(), name.clone());
    if store.leases.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
            details(&name, &[]),
        );
    }
    store.resource_version += 1;
    let mut lease = Lease::new(&namespace, &name, store.resource_version);
    let spec = spec_of(&object);
    lease.merge(&manager_name(&query, &headers), &spec);
    let created = lease.to_json();
    store.leases.insert(key, lease);
    (StatusCode::CREATED, axum::Json(created)).into_response()
}

async fn patch(
    State(state): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // kube sends JSON for every kind of patch (JSON is YAML, for apply).
    let Ok(object) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("the patch is not a JSON object".into());
    };
    let spec = spec_of(&object);
    let mut store = lock(&state);
    let Store {
        leases,
        resource_version,
        conflicts: refused,
        ..
    } = &mut *store;
    let key = (namespace.clone(), name.clone());
    match content_type.as_str() {
        APPLY => {
            let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
                return bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                );
            };
            let force = query.get("force").is_some_and(|f| f == "true");
            let created = !leases.contains_key(&key);
            let lease = leases
                .entry(key)
                .or_insert_with(|| Lease::new(&namespace, &name, 0));
            if let Err(conflicts) = lease.apply(manager, &spec, force) {
                *refused += 1;
                return conflict(&name, &conflicts);
            }
            *resource_version += 1;
            lease.resource_version = *resource_version;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(lease.to_json())).into_response()
        }
        STRATEGIC_MERGE | MERGE => {
            let Some(lease) = leases.get_mut(&key) else {
                return not_found(&name);
            };
            // Every field of a Lease's spec is a scalar: a strategic merge
            // patch merges it as a JSON merge patch does.
            lease.merge(&manager_name(&query, &headers), &spec);
            *resource_version += 1;
            lease.resource_version = *resource_version;
            (StatusCode::OK, axum::Json(lease.to_json())).into_response()
        }
        _ => status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {APPLY}, {STRATEGIC_MERGE}, {MERGE}"
            ),
            Value::Null,
        ),
    }
}

impl Lease {
    fn new(namespace: &str, name: &str, resource_version: u64) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uuid::Uuid::now_v7().to_string(),
            resource_version,
            created: now(),
            spec: Map::new(),
            managers: Vec::new(),
        }
    }

    /// Server-side apply by `manager`: the fields it sets become its own;
    /// changing a field another manager owns is a conflict unless forced;
    /// fields it applied before and no longer applies are removed unless
    /// someone else owns them. Returns the conflicting managers and fields.
    fn apply(
        &mut self,
        manager: &str,
        spec: &Map<String, Value>,
        force: bool,
    ) -> Result<(), Vec<(String, String)>> {
        let conflicts: Vec<(String, String)> = self
            .managers
            .iter()
            .filter(|m| m.name != manager || m.operation != Operation::Apply)
            .flat_map(|m| {
                m.fields
                    .iter()
                    .filter(|field| {
                        spec.get(*field)
                            .is_some_and(|value| self.spec.get(*field) != Some(value))
                    })
                    .map(|field| (m.name.clone(), field.clone()))
            })
            .collect();
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        let applied: BTreeSet<String> = spec.keys().cloned().collect();
        let before = self
            .owner(manager, Operation::Apply)
            .map(|m| std::mem::take(&mut m.fields))
            .unwrap_or_default();
        for (field, value) in spec {
            if self.spec.get(field) != Some(value) {
                self.disown_others(manager, Operation::Apply, field);
            }
            self.spec.insert(field.clone(), value.clone());
        }
        for dropped in before.difference(&applied) {
            if !self.managers.iter().any(|m| m.fields.contains(dropped)) {
                self.spec.remove(dropped);
            }
        }
        self.take(manager, Operation::Apply, applied);
        Ok(())
    }

    /// A merge patch (an update) by `manager`: `null` removes a field, any
    /// other value sets it; the fields it changes become its own.
    fn merge(&mut self, manager: &str, spec: &Map<String, Value>) {
        let mut changed = BTreeSet::new();
        for (field, value) in spec {
            if value.is_null() {
                self.spec.remove(field);
                for m in &mut self.managers {
                    m.fields.remove(field);
                }
            } else if self.spec.get(field) != Some(value) {
                self.spec.insert(field.clone(), value.clone());
                self.disown_others(manager, Operation::Update, field);
                changed.insert(field.clone());
            }
        }
        if let Some(owner) = self.owner(manager, Operation::Update) {
            changed.extend(std::mem::take(&mut owner.fields));
        }
        self.take(manager, Operation::Update, changed);
    }

    fn owner(&mut self, manager: &str, operation: Operation) -> Option<&mut Manager> {
        self.managers
            .iter_mut()
            .find(|m| m.name == manager && m.operation == operation)
    }

    fn disown_others(&mut self, manager: &str, operation: Operation, field: &str) {
        for m in &mut self.managers {
            if m.name != manager || m.operation != operation {
                m.fields.remove(field);
            }
        }
    }

    /// Record `fields` as `manager`'s, dropping entries left with no field.
    fn take(&mut self, manager: &str, operation: Operation, fields: BTreeSet<String>) {
        self.managers
            .retain(|m| !(m.name == manager && m.operation == operation));
        if !fields.is_empty() {
            self.managers.push(Manager {
                name: manager.to_owned(),
                operation,
                time: now(),
                fields,
            });
        }
        self.managers.retain(|m| !m.fields.is_empty());
    }

    fn to_json(&self) -> Value {
        let managed: Vec<Value> = self
            .managers
            .iter()
            .map(|m| {
                let fields: Map<String, Value> = m
                    .fields
                    .iter()
                    .map(|f| (format!("f:{f}"), json!({})))
                    .collect();
                json!({
                    "manager": m.name,
                    "operation": match m.operation {
                        Operation::Apply => "Apply",
                        Operation::Update => "Update",
                    },
                    "apiVersion": "coordination.k8s.io/v1",
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": { "f:spec": fields },
                })
            })
            .collect();
        json!({
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": self.resource_version.to_string(),
                "creationTimestamp": self.created,
                "managedFields": managed,
            },
            "spec": self.spec,
        })
    }
}

fn spec_of(object: &Value) -> Map<String, Value> {
    object["spec"].as_object().cloned().unwrap_or_default()
}

/// The manager of an update: the `fieldManager` parameter, else the client's
/// user agent up to its first `/`, as the API server names it.
fn manager_name(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.clone();
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    agent.split('/').next().unwrap_or(agent).to_owned()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn not_found(name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("leases.coordination.k8s.io \"{name}\" not found"),
        details(name, &[]),
    )
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, Value::Null)
}

fn conflict(name: &str, conflicts: &[(String, String)]) -> Response {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, field)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\""),
                "field": format!(".spec.{field}"),
            })
        })
        .collect();
    let listed: Vec<String> = conflicts
        .iter()
        .map(|(manager, field)| format!("conflict with \"{manager}\": .spec.{field}"))
        .collect();
    let plural = if conflicts.len() == 1 { "" } else { "s" };
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Apply failed with {} conflict{plural}: {}",
            conflicts.len(),
            listed.join("\n")
        ),
        details(name, &causes),
    )
}

fn details(name: &str, causes: &[Value]) -> Value {
    let mut details = json!({
        "name": name,
        "group": "coordination.k8s.io",
        "kind": "leases",
    });
    if !causes.is_empty() {
        details["causes"] = Value::from(causes);
    }
    details
}

/// A `Status` object, as the API server answers every failed request.
fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if !details.is_null() {
        body["details"] = details;
    }
    (code, axum::Json(body)).into_response()
}
