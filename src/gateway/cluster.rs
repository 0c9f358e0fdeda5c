//! `veer run --gateway`: the same kinds the directory holds, watched on the Kubernetes API
//! server (kube-runtime watchers feeding reflector stores). Every change after the first
//! full list ticks [`Cluster::changed`]; the control plane debounces the ticks and reloads,
//! reading the stores through [`Cluster::objects`].
//!
//! Outages: the watchers retry with backoff and relist when the server answers
//! `410 Gone`; meanwhile the stores keep the last state they had, so veer keeps serving it.
//! One line is logged when the server becomes unreachable and one when it is back, not one
//! per retry.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;

use super::objects::{Located, Objects, Origin, DEFAULT_NAMESPACE};

/// How to reach the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterOptions {
    /// A kubeconfig file; without one, the in-cluster service account (or `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL, overriding any kubeconfig (tests: a fake server on loopback).
    pub server: Option<http::Uri>,
    /// Only objects of these namespaces count (cluster-scoped GatewayClasses always do);
    /// empty = all.
    pub namespaces: Vec<String>,
}

/// The watched objects and the change signal.
pub struct Cluster {
    classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    routes: Store<HttpRoute>,
    grants: Store<ReferenceGrant>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Vec<String>,
    changed: Arc<Notify>,
    /// As connected with (a binary upgrade connects the same way).
    options: ClusterOptions,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("namespaces", &self.namespaces).finish()
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
        let cluster = Cluster {
            classes: watch(Api::all(client.clone()), &changed, &outage),
            gateways: watch(Api::all(client.clone()), &changed, &outage),
            routes: watch(Api::all(client.clone()), &changed, &outage),
            grants: watch(Api::all(client.clone()), &changed, &outage),
            services: watch(Api::all(client.clone()), &changed, &outage),
            slices: watch(Api::all(client), &changed, &outage),
            namespaces: opts.namespaces.clone(),
            changed,
            options: opts.clone(),
        };
        let ready = async {
            let _ = cluster.classes.wait_until_ready().await;
            let _ = cluster.gateways.wait_until_ready().await;
            let _ = cluster.routes.wait_until_ready().await;
            let _ = cluster.grants.wait_until_ready().await;
            let _ = cluster.services.wait_until_ready().await;
            let _ = cluster.slices.wait_until_ready().await;
        };
        tokio::time::timeout(FIRST_SYNC, ready)
            .await
            .map_err(|_| format!("the Kubernetes API server did not list every kind within {FIRST_SYNC:?}"))?;
        Ok(Arc::new(cluster))
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
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
            grants: self.located(&self.grants, &mut digest),
            services: self.located(&self.services, &mut digest),
            slices: self.located(&self.slices, &mut digest),
            digest: 0,
        };
        o.digest = digest;
        o
    }

    fn located<K>(&self, store: &Store<K>, digest: &mut u64) -> Vec<Located<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut out: Vec<Located<K>> = store
            .state()
            .into_iter()
            .filter(|k| {
                k.namespace()
                    .is_none_or(|ns| self.namespaces.is_empty() || self.namespaces.contains(&ns))
            })
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

/// One log line per outage, whichever watcher notices first.
#[derive(Default)]
struct Outage {
    down: AtomicBool,
}

impl Outage {
    fn failed(&self, kind: &str, e: &watcher::Error) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(kind, error = %e,
                "Kubernetes API server unreachable; serving the last state seen, retrying with backoff");
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Kubernetes API server reachable again; catching up");
        }
    }
}

/// A reflector store for `K`, fed by a watcher task that lives as long as the process.
fn watch<K>(api: Api<K>, changed: &Arc<Notify>, outage: &Arc<Outage>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    let (changed, outage) = (changed.clone(), outage.clone());
    let kind = K::kind(&()).into_owned();
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
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
