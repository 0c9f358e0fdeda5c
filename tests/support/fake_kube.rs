//! A fake Kubernetes API server on loopback for veer's real kube client: list and watch
//! (newline-delimited events from a resourceVersion, history replayed, `410 Gone` for a
//! version older than the last restart, as after etcd compaction), for the kinds the
//! Gateway source watches. Tests change objects with [`FakeKube::apply`] and
//! [`FakeKube::delete`], and take the server down and up with [`FakeKube::stop`] and
//! [`FakeKube::restart`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// (kind, API path prefix of its collection, namespaced).
const KINDS: [(&str, &str, bool); 10] = [
    (
        "GatewayClass",
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
        false,
    ),
    ("Gateway", "/apis/gateway.networking.k8s.io/v1/gateways", true),
    ("HTTPRoute", "/apis/gateway.networking.k8s.io/v1/httproutes", true),
    ("GRPCRoute", "/apis/gateway.networking.k8s.io/v1/grpcroutes", true),
    ("TLSRoute", "/apis/gateway.networking.k8s.io/v1/tlsroutes", true),
    ("TCPRoute", "/apis/gateway.networking.k8s.io/v1alpha2/tcproutes", true),
    (
        "ReferenceGrant",
        "/apis/gateway.networking.k8s.io/v1/referencegrants",
        true,
    ),
    ("Service", "/api/v1/services", true),
    ("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices", true),
    ("Secret", "/api/v1/secrets", true),
];

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches from before this version get 410 Gone (the history was "compacted").
    oldest: u64,
    /// (collection, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// (version, collection, event) since `oldest`.
    history: Vec<(u64, String, Value)>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<(String, Value)>,
    /// The accept loop and every connection: aborted by `stop`.
    tasks: Mutex<Vec<AbortHandle>>,
    /// Requests served, per path (without the query).
    requests: Mutex<Vec<String>>,
    /// Status writes: (kind/namespace/name, fieldManager).
    status_writes: Mutex<Vec<(String, String)>>,
}

#[derive(Clone)]
pub struct FakeKube {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeKube {
            addr,
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events: broadcast::channel(4096).0,
                tasks: Mutex::new(Vec::new()),
                requests: Mutex::new(Vec::new()),
                status_writes: Mutex::new(Vec::new()),
            }),
        };
        fake.serve(listener);
        fake
    }

    pub fn url(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Creates or replaces every object of a multi-document YAML text.
    pub fn apply_yaml(&self, yaml: &str) {
        for doc in yaml.split("\n---") {
            if doc.trim().is_empty() {
                continue;
            }
            let v: Value = serde_yaml_ng::from_str(doc).unwrap();
            self.apply(v);
        }
    }

    /// Creates or replaces an object: a new resourceVersion, an ADDED or MODIFIED event.
    pub fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_string();
        let (_, collection, namespaced) = KINDS.iter().find(|(k, ..)| *k == kind).copied().unwrap();
        if namespaced && obj["metadata"]["namespace"].is_null() {
            obj["metadata"]["namespace"] = json!("default");
        }
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut s = self.inner.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{kind}-{ns}-{name}"));
        let key = (collection.to_string(), ns, name);
        // A spec change: the generation moves (status writes keep it).
        let generation = s
            .objects
            .get(&key)
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0)
            + 1;
        obj["metadata"]["generation"] = json!(generation);
        if let Some(status) = s
            .objects
            .get(&key)
            .map(|o| o["status"].clone())
            .filter(|v| !v.is_null())
        {
            obj["status"] = status;
        }
        let kind = if s.objects.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let event = json!({"type": kind, "object": obj});
        s.history.push((rv, collection.to_string(), event.clone()));
        let _ = self.inner.events.send((collection.to_string(), event));
    }

    pub fn delete(&self, kind: &str, ns: &str, name: &str) {
        let (_, collection, _) = KINDS.iter().find(|(k, ..)| *k == kind).copied().unwrap();
        let mut s = self.inner.state.lock().unwrap();
        let Some(mut obj) = s
            .objects
            .remove(&(collection.to_string(), ns.to_string(), name.to_string()))
        else {
            return;
        };
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let event = json!({"type": "DELETED", "object": obj});
        let rv = s.rv;
        s.history.push((rv, collection.to_string(), event.clone()));
        let _ = self.inner.events.send((collection.to_string(), event));
    }

    /// Goes away: the listener closes and every open watch is cut.
    pub fn stop(&self) {
        for t in self.inner.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Comes back on the same address with its history compacted: a watch from an older
    /// version gets `410 Gone` and must list again.
    pub async fn restart(&self) {
        {
            let mut s = self.inner.state.lock().unwrap();
            s.rv += 10;
            s.oldest = s.rv;
            s.history.clear();
        }
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    /// Status subresource writes so far: (`Kind/namespace/name`, the writer's fieldManager).
    pub fn status_writes(&self) -> Vec<(String, String)> {
        self.inner.status_writes.lock().unwrap().clone()
    }

    /// An object as stored now (with the status written to it).
    pub fn object(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let (_, collection, _) = KINDS.iter().find(|(k, ..)| *k == kind).copied().unwrap();
        let s = self.inner.state.lock().unwrap();
        s.objects
            .get(&(collection.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Paths of the requests served so far (`?watch` ones marked).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().unwrap().clone()
    }

    fn serve(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner2 = inner.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner2.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                inner.tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.inner.tasks.lock().unwrap().push(accept.abort_handle());
    }
}

fn full(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";

/// Status subresources (GET, PATCH) and Leases (GET, POST, PUT): the writes veer makes.
async fn write_api(inner: &Arc<Inner>, req: Request<Incoming>, path: &str) -> Option<Response<Body>> {
    let method = req.method().clone();
    let manager = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("fieldManager="))
        .unwrap_or("")
        .to_string();
    let status = |code: u16, reason: &str| {
        full(
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}),
        )
    };
    if let Some(rest) = path.strip_prefix(LEASES) {
        let parts: Vec<&str> = rest.split('/').collect();
        let body: Value =
            serde_json::from_slice(&req.into_body().collect().await.ok()?.to_bytes()).unwrap_or(Value::Null);
        let mut s = inner.state.lock().unwrap();
        let key = |name: &str| ("leases".to_string(), parts[0].to_string(), name.to_string());
        return Some(match (method.as_str(), parts.as_slice()) {
            ("GET", [_, "leases", name]) => match s.objects.get(&key(name)) {
                Some(l) => full(200, l.clone()),
                None => status(404, "NotFound"),
            },
            ("POST", [_, "leases"]) => {
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                if s.objects.contains_key(&key(&name)) {
                    status(409, "AlreadyExists")
                } else {
                    s.rv += 1;
                    let mut l = body;
                    l["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                    l["metadata"]["namespace"] = json!(parts[0]);
                    s.objects.insert(key(&name), l.clone());
                    full(201, l)
                }
            }
            ("PUT", [_, "leases", name]) => {
                let current = s
                    .objects
                    .get(&key(name))
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    status(409, "Conflict")
                } else {
                    s.rv += 1;
                    let mut l = body;
                    l["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                    s.objects.insert(key(name), l.clone());
                    full(200, l)
                }
            }
            _ => status(405, "MethodNotAllowed"),
        });
    }
    // …/namespaces/{ns}/{plural}/{name}/status, or …/gatewayclasses/{name}/status.
    let rest = path.strip_suffix("/status")?;
    let (collection, ns, name) = match rest.split_once("/namespaces/") {
        Some((prefix, tail)) => {
            let mut t = tail.splitn(3, '/');
            let (ns, plural, name) = (t.next()?, t.next()?, t.next()?);
            (format!("{prefix}/{plural}"), ns.to_string(), name.to_string())
        }
        None => {
            let (prefix, name) = rest.rsplit_once('/')?;
            (prefix.to_string(), String::new(), name.to_string())
        }
    };
    let (kind, ..) = KINDS.iter().find(|(_, c, _)| *c == collection).copied()?;
    let patch: Option<Value> = match method.as_str() {
        "PATCH" => Some(serde_json::from_slice(&req.into_body().collect().await.ok()?.to_bytes()).ok()?),
        _ => None,
    };
    let mut s = inner.state.lock().unwrap();
    let key = (collection.clone(), ns.clone(), name.clone());
    let Some(mut obj) = s.objects.get(&key).cloned() else {
        return Some(status(404, "NotFound"));
    };
    if let Some(patch) = patch {
        merge(&mut obj, &patch);
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        s.objects.insert(key, obj.clone());
        let event = json!({"type": "MODIFIED", "object": obj});
        let rv = s.rv;
        s.history.push((rv, collection.clone(), event.clone()));
        let _ = inner.events.send((collection, event));
        inner
            .status_writes
            .lock()
            .unwrap()
            .push((format!("{kind}/{ns}/{name}"), manager));
    }
    Some(full(200, obj))
}

async fn handle(inner: &Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path.ends_with("/status") || path.starts_with(LEASES) {
        inner.requests.lock().unwrap().push(format!("{} {path}", req.method()));
        return match write_api(inner, req, &path).await {
            Some(r) => r,
            None => full(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
            ),
        };
    }
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    inner
        .requests
        .lock()
        .unwrap()
        .push(if watch { format!("{path}?watch") } else { path.clone() });
    // A collection cluster-wide, or in one namespace (…/v1/namespaces/{ns}/{plural}).
    let (path, namespace) = match path.split_once("/namespaces/") {
        Some((group, rest)) => match rest.split_once('/') {
            Some((ns, plural)) if !plural.contains('/') => (format!("{group}/{plural}"), Some(ns.to_string())),
            _ => (path.clone(), None),
        },
        None => (path.clone(), None),
    };
    let in_scope = move |obj: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
    };
    let Some((kind, collection, _)) = KINDS.iter().find(|(_, c, _)| *c == path).copied() else {
        return full(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
        );
    };
    let api_version = collection
        .strip_prefix("/apis/")
        .or(collection.strip_prefix("/api/"))
        .and_then(|p| p.rsplit_once('/'))
        .map(|(gv, _)| gv.to_string())
        .unwrap();
    let s = inner.state.lock().unwrap();
    if !watch {
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((c, ..), o)| c == collection && in_scope(o))
            .map(|(_, o)| {
                let mut o = o.clone();
                o["apiVersion"] = json!(api_version);
                o
            })
            .collect();
        return full(
            200,
            json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        );
    }
    let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1024);
    let version = api_version.clone();
    let line = move |mut event: Value| {
        event["object"]["apiVersion"] = json!(version);
        Ok(Frame::data(Bytes::from(format!("{event}\n"))))
    };
    if from < s.oldest {
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410}});
        let _ = tx.try_send(Ok(Frame::data(Bytes::from(format!("{gone}\n")))));
    } else {
        for (_, _, e) in (s.history.iter()).filter(|(rv, c, e)| *rv > from && c == collection && in_scope(&e["object"]))
        {
            let _ = tx.try_send(line(e.clone()));
        }
        let mut live = inner.events.subscribe();
        let collection = collection.to_string();
        let task = tokio::spawn(async move {
            while let Ok((c, e)) = live.recv().await {
                if c == collection && in_scope(&e["object"]) && tx.send(line(e)).await.is_err() {
                    return;
                }
            }
        });
        inner.tasks.lock().unwrap().push(task.abort_handle());
    }
    drop(s);
    let body = StreamBody::new(tokio_stream_from(rx));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap()
}

/// An mpsc receiver as a stream (without another crate).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A Service `name` in `ns` on port 80 (named `http`) and its EndpointSlice pointing at
/// `backends` (each `(address, ready, serving, terminating)`).
pub fn service(ns: &str, name: &str, backends: &[(SocketAddr, bool, bool, bool)]) -> String {
    let mut endpoints = String::new();
    for (addr, ready, serving, terminating) in backends {
        endpoints += &format!(
            "- addresses: [\"{}\"]\n  conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}\n",
            addr.ip()
        );
    }
    // One slice per port number: the fake backends listen on different ports.
    let mut slices = String::new();
    for (i, (addr, ..)) in backends.iter().enumerate() {
        let one: Vec<&str> = endpoints.lines().skip(i * 2).take(2).collect();
        slices += &format!(
            r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {ns}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: {port}
endpoints:
{endpoints}
"#,
            port = addr.port(),
            endpoints = one.join("\n")
        );
    }
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
{slices}"#
    )
}
