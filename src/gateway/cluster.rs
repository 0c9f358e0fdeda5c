//! `veer run --gateway`: the same kinds the directory holds, watched on the Kubernetes API
//! server (kube-runtime watchers feeding reflector stores). Every change after the first
//! full list ticks [`Cluster::changed`]; the control plane debounces the ticks and reloads,
//! reading the stores through [`Cluster::objects`].
//!
//! With `--namespaces` each namespaced kind is watched in those namespaces only (one
//! watch each, so RBAC can be Roles there instead of a ClusterRole); Secrets are watched
//! only in `--certificate-namespaces` when given, so veer can be denied every other Secret.
//!
//! Outages: the watchers retry with backoff and relist when the server answers
//! `410 Gone`; meanwhile the stores keep the last state they had, so veer keeps serving it.
//! One line is logged when the server becomes unreachable and one when it is back, not one
//! per retry.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use gateway_api::tlsroutes::TlsRoute;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::NamespaceResourceScope;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;

use super::objects::{Located, Objects, Origin, DEFAULT_NAMESPACE};
use super::status::Status;

/// How to reach the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterOptions {
    /// A kubeconfig file; without one, the in-cluster service account (or `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL, overriding any kubeconfig (tests: a fake server on loopback).
    pub server: Option<http::Uri>,
    /// Only objects of these namespaces are watched (cluster-scoped GatewayClasses always
    /// are); empty = all.
    pub namespaces: Vec<String>,
    /// Secrets (HTTPS listeners' certificates) are watched only in these namespaces;
    /// empty = as `namespaces`.
    pub certificate_namespaces: Vec<String>,
    /// Who this instance is in the status-writer Lease; default `$POD_NAME` (else the
    /// host name) and the process id.
    pub identity: Option<String>,
    /// The Lease's namespace; default `$POD_NAMESPACE`, else `default`.
    pub lease_namespace: Option<String>,
    /// How long a writer's Lease lasts unrenewed; zero = [`LEASE_DURATION`].
    pub lease_duration: Duration,
    /// Also watch the experimental channel's TCPRoutes.
    pub experimental: bool,
}

/// The Lease naming the one instance that writes status.
pub const LEASE_NAME: &str = "veer-gateway-status";
/// Client-go's default: a dead writer is replaced within this long.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// The watched objects and the change signal.
pub struct Cluster {
    classes: Stores<GatewayClass>,
    gateways: Stores<Gateway>,
    routes: Stores<HttpRoute>,
    grpc_routes: Stores<GrpcRoute>,
    tls_routes: Stores<TlsRoute>,
    /// `None` unless `experimental`.
    tcp_routes: Option<Stores<TcpRoute>>,
    grants: Stores<ReferenceGrant>,
    services: Stores<Service>,
    slices: Stores<EndpointSlice>,
    secrets: Stores<Secret>,
    changed: Arc<Notify>,
    /// As connected with (a binary upgrade connects the same way).
    options: ClusterOptions,
    /// The latest translation's conditions, for the status writer.
    status: tokio::sync::watch::Sender<Option<(Status, String)>>,
    /// Ends the watchers, the Lease and the writer.
    stop: tokio_util::sync::CancellationToken,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("options", &self.options).finish()
    }
}

/// One watched cluster is itself: options compare equal only for the same connection.
impl PartialEq for Cluster {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

/// How long the first full list of every kind may take before `--gateway` gives up.
const FIRST_SYNC: Duration = Duration::from_secs(30);

impl Cluster {
    /// Connects, starts a watcher per kind and waits for each one's first full list.
    pub async fn connect(opts: &ClusterOptions) -> Result<Arc<Cluster>, String> {
        let config = match (&opts.server, &opts.kubeconfig) {
            (Some(url), _) => kube::Config::new(url.clone()),
            (None, Some(path)) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            (None, None) => kube::Config::infer()
                .await
                .map_err(|e| format!("no Kubernetes configuration (in-cluster or kubeconfig): {e}"))?,
        };
        let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
        let changed = Arc::new(Notify::new());
        let outage = Arc::new(Outage::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let status = tokio::sync::watch::Sender::new(None);
        tokio::spawn(write_status(
            client.clone(),
            opts.clone(),
            status.subscribe(),
            stop.clone(),
        ));
        let w = Watching {
            client,
            changed: changed.clone(),
            outage,
            stop: stop.clone(),
        };
        let ns = &opts.namespaces[..];
        let certificates = match &opts.certificate_namespaces[..] {
            [] => ns,
            given => given,
        };
        let cluster = Cluster {
            classes: Stores(vec![w.watch(Api::all(w.client.clone()))]),
            gateways: w.watch_in(ns),
            routes: w.watch_in(ns),
            grpc_routes: w.watch_in(ns),
            tls_routes: w.watch_in(ns),
            tcp_routes: opts.experimental.then(|| w.watch_in(ns)),
            grants: w.watch_in(ns),
            services: w.watch_in(ns),
            slices: w.watch_in(ns),
            secrets: w.watch_in(certificates),
            changed,
            options: opts.clone(),
            status,
            stop,
        };
        let ready = async {
            cluster.classes.ready().await;
            cluster.gateways.ready().await;
            cluster.routes.ready().await;
            cluster.grpc_routes.ready().await;
            cluster.tls_routes.ready().await;
            if let Some(tcp) = &cluster.tcp_routes {
                tcp.ready().await;
            }
            cluster.grants.ready().await;
            cluster.services.ready().await;
            cluster.slices.ready().await;
            cluster.secrets.ready().await;
        };
        tokio::time::timeout(FIRST_SYNC, ready)
            .await
            .map_err(|_| format!("the Kubernetes API server did not list every kind within {FIRST_SYNC:?}"))?;
        Ok(Arc::new(cluster))
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Hands the latest translation's conditions to the status writer (which writes what
    /// changed, while this instance holds the Lease). `controller`: veer's controllerName.
    pub fn publish(&self, status: Status, controller: &str) {
        self.status.send_replace(Some((status, controller.to_string())));
    }

    /// Stops watching and writing (the Lease is left to expire, as a crashed writer's).
    pub fn close(&self) {
        self.stop.cancel();
    }

    /// Resolves at the next change of any watched object.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Everything the stores hold now, in the form the directory reader produces.
    pub fn objects(&self) -> Objects {
        let mut digest = 0u64;
        let mut o = Objects {
            classes: self.located(&self.classes, &mut digest),
            gateways: self.located(&self.gateways, &mut digest),
            routes: self.located(&self.routes, &mut digest),
            grpc_routes: self.located(&self.grpc_routes, &mut digest),
            tls_routes: self.located(&self.tls_routes, &mut digest),
            tcp_routes: (self.tcp_routes.as_ref())
                .map(|s| self.located(s, &mut digest))
                .unwrap_or_default(),
            grants: self.located(&self.grants, &mut digest),
            services: self.located(&self.services, &mut digest),
            slices: self.located(&self.slices, &mut digest),
            secrets: self.located(&self.secrets, &mut digest),
            digest: 0,
        };
        o.digest = digest;
        o
    }

    fn located<K>(&self, stores: &Stores<K>, digest: &mut u64) -> Vec<Located<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut out: Vec<Located<K>> = stores
            .0
            .iter()
            .flat_map(Store::state)
            .map(|k| {
                // The resource version changes with every write: it stands for the content.
                let version = k.resource_version().unwrap_or_default();
                *digest = xxhash_rust::xxh3::xxh3_64_with_seed(version.as_bytes(), *digest);
                Located {
                    at: Origin {
                        file: PathBuf::new(),
                        line: 0,
                        kind: K::kind(&()).into_owned(),
                        namespace: k.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
                        name: k.name_any(),
                    },
                    obj: (*k).clone(),
                }
            })
            .collect();
        // Stores are hash maps: a stable order keeps translations (and their digest) stable.
        out.sort_by(|a, b| (&a.at.namespace, &a.at.name).cmp(&(&b.at.namespace, &b.at.name)));
        out
    }
}

/// One log line per outage, whichever watcher notices first, and one when it ends. The
/// watchers share it, and one's failure can be reported after another's success (an
/// attempt begun before the server came back): a failure is logged only once failures have
/// lasted [`Outage::GRACE`] without a success between, so such a straggler (or a blip) logs
/// nothing, and "reachable again" only follows a logged outage.
#[derive(Default)]
struct Outage {
    state: std::sync::Mutex<OutageState>,
}

#[derive(Default)]
struct OutageState {
    /// When the failures began; `None` while the server answers.
    since: Option<std::time::Instant>,
    logged: bool,
}

impl Outage {
    const GRACE: Duration = Duration::from_secs(2);

    fn failed(&self, kind: &str, e: &watcher::Error) {
        // A `410 Gone` is the server answering (its history was compacted): the watcher
        // lists again; nothing is down.
        if matches!(e, watcher::Error::WatchError(status) if status.code == 410) {
            return self.recovered();
        }
        let Ok(mut st) = self.state.lock() else { return };
        let since = *st.since.get_or_insert_with(std::time::Instant::now);
        if !st.logged && since.elapsed() >= Self::GRACE {
            st.logged = true;
            tracing::warn!(kind, error = %e,
                "Kubernetes API server unreachable; serving the last state seen, retrying with backoff");
        }
    }

    fn recovered(&self) {
        let Ok(mut st) = self.state.lock() else { return };
        if st.since.take().is_some() && std::mem::take(&mut st.logged) {
            tracing::info!("Kubernetes API server reachable again; catching up");
        }
    }
}

/// One kind's objects: a reflector store per watched namespace, or one for all.
struct Stores<K: Resource<DynamicType = ()> + 'static>(Vec<Store<K>>);

impl<K: Resource<DynamicType = ()> + Clone + 'static> Stores<K> {
    /// Until every store has had its first full list.
    async fn ready(&self) {
        for store in &self.0 {
            let _ = store.wait_until_ready().await;
        }
    }
}

/// What every watcher shares: the client, the change signal, the outage log, the stop.
struct Watching {
    client: Client,
    changed: Arc<Notify>,
    outage: Arc<Outage>,
    stop: tokio_util::sync::CancellationToken,
}

impl Watching {
    /// A namespaced kind in each of `namespaces`, or cluster-wide when there are none.
    fn watch_in<K>(&self, namespaces: &[String]) -> Stores<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        if namespaces.is_empty() {
            return Stores(vec![self.watch(Api::all(self.client.clone()))]);
        }
        Stores(
            namespaces
                .iter()
                .map(|ns| self.watch(Api::namespaced(self.client.clone(), ns)))
                .collect(),
        )
    }

    /// A reflector store for `api`, fed by a watcher task that lives until `stop`.
    fn watch<K>(&self, api: Api<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store();
        // Secrets: only TLS ones, the kind a Gateway's certificateRefs name.
        let config = match K::kind(&()).as_ref() {
            "Secret" => watcher::Config::default().fields("type=kubernetes.io/tls"),
            _ => watcher::Config::default(),
        };
        let stream = watcher(api, config.any_semantic())
            .backoff(Retry::default())
            .reflect(writer);
        let (changed, outage, stop) = (self.changed.clone(), self.outage.clone(), self.stop.clone());
        let kind = K::kind(&()).into_owned();
        tokio::spawn(async move {
            futures_util::pin_mut!(stream);
            while let Some(event) = tokio::select! {
                e = stream.next() => e,
                _ = stop.cancelled() => None,
            } {
                match event {
                    // A (re)list in progress: the store swaps at InitDone.
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => outage.recovered(),
                    Ok(_) => {
                        outage.recovered();
                        changed.notify_one();
                    }
                    Err(e) => outage.failed(&kind, &e),
                }
            }
        });
        store
    }
}

/// The watchers' reconnection delays: 250 ms doubling to at most 5 s, each stretched by up
/// to a quarter at random so a fleet does not retry in step. (client-go's 30 s maximum,
/// kube-runtime's default, left a restarted API server unseen for up to a minute in the
/// scenario suite; ten watches retrying every 5 s are little load for one.)
struct Retry {
    next: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for Retry {
    fn default() -> Self {
        Retry { next: Self::FIRST }
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        let spread = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        ) % 256;
        Some(delay + delay * u32::try_from(spread).unwrap_or(0) / 1024)
    }
}

impl kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

// === the status writer ===

/// While this instance holds the Lease, writes each object's status when it differs from
/// what this instance last wrote (a new holder writes everything once).
async fn write_status(
    client: Client,
    opts: ClusterOptions,
    mut status: tokio::sync::watch::Receiver<Option<(Status, String)>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let identity = opts.identity.clone().unwrap_or_else(default_identity);
    let namespace = opts
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let duration = if opts.lease_duration.is_zero() {
        LEASE_DURATION
    } else {
        opts.lease_duration
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let mut written: std::collections::HashMap<(&'static str, String, String), serde_json::Value> = Default::default();
    let mut leader = false;
    loop {
        let now_leader = acquire(&leases, &identity, duration).await;
        if now_leader != leader {
            tracing::info!(
                identity,
                leader = now_leader,
                "Gateway status writer Lease {}",
                if now_leader { "acquired" } else { "lost" }
            );
            written.clear();
            leader = now_leader;
        }
        if leader {
            let current = status.borrow_and_update().clone();
            if let Some((s, controller)) = current {
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                for (kind, ns, name, body) in s.documents(&controller, &now) {
                    let key = (kind, ns.clone(), name.clone());
                    let same = without_times(&body);
                    if written.get(&key) == Some(&same) {
                        continue;
                    }
                    match patch_status(&client, kind, &ns, &name, body, &identity, &controller).await {
                        Ok(()) => {
                            written.insert(key, same);
                        }
                        Err(e) => tracing::debug!(kind, ns, name, error = %e, "status not written; retried"),
                    }
                }
            }
        }
        // Renew at a third of the Lease, sooner when there is something new to write.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(duration / 3) => {}
            _ = status.changed(), if leader => {}
        }
    }
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_else(|| "veer".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// Takes or renews the Lease (optimistic concurrency: a replace with the version read; a
/// competing writer's makes it fail). `true` while this identity holds it.
async fn acquire(leases: &Api<Lease>, me: &str, duration: Duration) -> bool {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let now = k8s_openapi::jiff::Timestamp::now();
    let secs = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let fresh = |lease: &mut Lease| {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(me) {
            spec.holder_identity = Some(me.into());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(secs);
    };
    match leases.get_opt(LEASE_NAME).await {
        Err(_) => false,
        Ok(None) => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(LEASE_NAME.into());
            fresh(&mut lease);
            leases.create(&Default::default(), &lease).await.is_ok()
        }
        Ok(Some(mut lease)) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let held_by_other = spec.holder_identity.as_deref().is_some_and(|h| h != me);
            let expires = spec.renew_time.map(|t| {
                t.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                    spec.lease_duration_seconds.unwrap_or(secs),
                )))
                .unwrap_or(t.0)
            });
            if held_by_other && expires.is_some_and(|e| e > now) {
                return false;
            }
            fresh(&mut lease);
            leases.replace(LEASE_NAME, &Default::default(), &lease).await.is_ok()
        }
    }
}

/// The status with its timestamps blanked: what decides whether it changed.
fn without_times(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("lastTransitionTime");
                m.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Writes one object's status subresource. A route's `parents` entries of other
/// controllers are kept.
async fn patch_status(
    client: &Client,
    kind: &str,
    ns: &str,
    name: &str,
    body: serde_json::Value,
    identity: &str,
    controller: &str,
) -> Result<(), kube::Error> {
    let params = kube::api::PatchParams {
        field_manager: Some(identity.into()),
        ..Default::default()
    };
    let c = client.clone();
    match kind {
        "GatewayClass" => write(Api::<GatewayClass>::all(c), name, &params, body, None).await,
        "Gateway" => write(Api::<Gateway>::namespaced(c, ns), name, &params, body, None).await,
        "GRPCRoute" => {
            write(
                Api::<GrpcRoute>::namespaced(c, ns),
                name,
                &params,
                body,
                Some(controller),
            )
            .await
        }
        "TLSRoute" => {
            write(
                Api::<TlsRoute>::namespaced(c, ns),
                name,
                &params,
                body,
                Some(controller),
            )
            .await
        }
        "TCPRoute" => {
            write(
                Api::<TcpRoute>::namespaced(c, ns),
                name,
                &params,
                body,
                Some(controller),
            )
            .await
        }
        _ => {
            write(
                Api::<HttpRoute>::namespaced(c, ns),
                name,
                &params,
                body,
                Some(controller),
            )
            .await
        }
    }
}

/// A merge patch of `status`; for a route (`controller` given) the other controllers'
/// `parents` entries, read first, are written back with veer's.
async fn write<K>(
    api: Api<K>,
    name: &str,
    params: &kube::api::PatchParams,
    mut body: serde_json::Value,
    controller: Option<&str>,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    if let Some(controller) = controller {
        let current = serde_json::to_value(api.get_status(name).await?).unwrap_or_default();
        let others = current["status"]["parents"].as_array().cloned().unwrap_or_default();
        let others = others.into_iter().filter(|p| p["controllerName"] != controller);
        if let Some(ours) = body["parents"].as_array_mut() {
            ours.extend(others);
        }
    }
    let patch = kube::api::Patch::Merge(serde_json::json!({"status": body}));
    api.patch_status(name, params, &patch).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn reconnects_start_fast_and_never_wait_more_than_five_seconds_and_a_quarter() {
        let mut r = Retry::default();
        let delays: Vec<Duration> = r.by_ref().take(12).collect();
        assert!(
            delays[0] >= Retry::FIRST && delays[0] <= Retry::FIRST * 5 / 4,
            "{delays:?}"
        );
        assert!(delays[1] >= Retry::FIRST * 2, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Retry::MAX * 5 / 4), "{delays:?}");
        assert!(delays[11] >= Retry::MAX, "{delays:?}");
        r.reset();
        assert!(r.next().is_some_and(|d| d <= Retry::FIRST * 5 / 4));
    }
}
