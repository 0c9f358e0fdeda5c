//! Gateway API objects → veer's config model: each Gateway port a listener (HTTPS ones with
//! their Secrets' certificates; TLS Passthrough and TCP ones relaying bytes), each route
//! rule a backend whose groups are its `backendRefs` (so `weight` is the group split and a
//! weight change keeps every server's state), each match a route, ordered by the spec's
//! precedence; Service + EndpointSlice endpoints the servers. GRPCRoutes, TLSRoutes and
//! TCPRoutes are read as the HTTPRoutes they mean and go through the same code.
//!
//! Pure: objects in, listeners + backends + problems + status conditions out. An object
//! that cannot be used is a [`Problem`] (with the condition reason the status writer sets)
//! and is left out; it never takes the rest down.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From, GatewayListenersTlsMode,
};
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
use gateway_api::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::objects::{Located, Objects, Origin, Problem, GATEWAY_GROUP};
use super::options::Options;
use super::status::{self, ListenerStatus, ParentStatus, RouteStatus, Status, Verdict};
use crate::config::tls::build::PemPair;
use crate::config::{
    AdminState, BackendSpec, GroupSpec, HeaderEdits, ListenerSpec, MirrorSpec, Numbering, PathMatch, PathRewrite,
    Protocol, Redirect, Rewrite, RouteFilters, RouteSpec, ServerSpec,
};

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// An HTTPRoute annotation naming the cookie that makes its rules' backends sticky.
pub const STICKY_ANNOTATION: &str = "veer.dev/sticky-cookie";
/// veer's group weights run 0..=1000; Gateway API's 0..=1,000,000 are scaled into them.
const MAX_GROUP_WEIGHT: u64 = 1000;

/// What the directory (or cluster) translates into.
#[derive(Debug, Default)]
pub struct Translation {
    pub listeners: Vec<ListenerSpec>,
    pub backends: Vec<BackendSpec>,
    pub problems: Vec<Problem>,
    /// The conditions to report on each object veer serves.
    pub status: Status,
    /// Identifies the objects translated ([`super::objects::Objects::digest`]).
    pub digest: u64,
    /// Listeners whose TLS could not be built: left out once routes are placed.
    broken: Vec<String>,
}

/// One Gateway listener routes may attach to.
struct Attach<'a> {
    gateway: &'a Located<Gateway>,
    listener: &'a GatewayListeners,
    /// Index into `Translation::listeners` of the veer listener serving its port.
    veer: usize,
    /// (gateway, listener) in `Translation::status.gateways`: routes attached are counted.
    status: (usize, usize),
}

/// A route before ordering: its place in the spec's precedence and what it becomes.
struct Ranked {
    key: Precedence,
    spec: RouteSpec,
}

/// The HTTPRoute precedence, compared field by field (smaller first): the most specific
/// hostname, then the match itself ([`MatchRank`]), then the oldest route, then by
/// `namespace/name`, then rule and match order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    /// Exact host 0, wildcard 1 (longer first), none 2.
    host: (u8, Reverse<usize>),
    rank: MatchRank,
    created: Option<k8s_openapi::jiff::Timestamp>,
    name: String,
    rule: usize,
    matched: usize,
}

/// Within a hostname: an exact path before a prefix, a longer prefix first, then a method
/// match, then more header matches, then more query matches.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone)]
struct MatchRank {
    path: (u8, Reverse<usize>),
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
}

pub fn translate(objects: &Objects, opts: &Options) -> Translation {
    let mut t = Translation::default();
    let attach = listeners(objects, opts, &mut t);
    let mut ranked: Vec<Vec<Ranked>> = t.listeners.iter().map(|_| Vec::new()).collect();
    let grpc: Vec<Located<HttpRoute>> = objects
        .grpc_routes
        .iter()
        .filter_map(|g| match as_http_route(g) {
            Ok(route) => Some(route),
            Err(why) => {
                t.problems.push(Problem {
                    at: g.at.clone(),
                    reason: "UnsupportedValue",
                    message: why,
                });
                None
            }
        })
        .collect();
    let tls: Vec<Located<HttpRoute>> = objects
        .tls_routes
        .iter()
        .filter_map(|r| as_http(r, &mut t.problems))
        .collect();
    let tcp: Vec<Located<HttpRoute>> = match opts.experimental {
        true => objects
            .tcp_routes
            .iter()
            .filter_map(|r| as_http(r, &mut t.problems))
            .collect(),
        false => {
            for r in &objects.tcp_routes {
                t.problems.push(Problem {
                    at: r.at.clone(),
                    reason: "UnsupportedValue",
                    message: "TCPRoute is from the experimental channel: veer reads it with --gateway-experimental"
                        .into(),
                });
            }
            Vec::new()
        }
    };
    for route in objects.routes.iter().chain(&grpc).chain(&tls).chain(&tcp) {
        http_route(objects, route, &attach, &mut ranked, &mut t);
    }
    for (listener, mut routes) in t.listeners.iter_mut().zip(ranked) {
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        listener.routes = routes.into_iter().map(|r| r.spec).collect();
    }
    let broken = std::mem::take(&mut t.broken);
    t.listeners.retain(|l| !broken.contains(&l.name));
    t
}

// === Gateways → listeners ===

fn listeners<'a>(objects: &'a Objects, opts: &Options, t: &mut Translation) -> Vec<Attach<'a>> {
    let ours = |class: &str| {
        class == opts.class
            && objects
                .classes
                .iter()
                .filter(|c| c.at.name == class)
                .all(|c| c.obj.spec.controller_name == opts.controller)
    };
    for class in objects.classes.iter().filter(|c| c.at.name == opts.class) {
        if class.obj.spec.controller_name == opts.controller {
            t.status.classes.push(status_object(class));
        } else {
            t.problems.push(Problem {
                at: class.at.clone(),
                reason: "InvalidParameters",
                message: format!(
                    "names controller {:?}, not veer's {:?}: its Gateways are left alone",
                    class.obj.spec.controller_name, opts.controller
                ),
            });
        }
    }
    let mut attach = Vec::new();
    // Port → (veer listener index, the Gateway holding it, its protocol).
    let mut ports: HashMap<u16, (usize, &Origin, &str)> = HashMap::new();
    // Per veer listener: the certificates its HTTPS Gateway listeners name.
    let mut certs: HashMap<usize, Vec<PemPair>> = HashMap::new();
    for gw in objects.gateways.iter().filter(|g| ours(&g.obj.spec.gateway_class_name)) {
        let gi = t.status.gateways.len();
        t.status.gateways.push(status::GatewayStatus {
            object: status_object(gw),
            listeners: Vec::new(),
        });
        for l in &gw.obj.spec.listeners {
            let li = t.status.gateways[gi].listeners.len();
            let port = u16::try_from(l.port).ok();
            let taken = port.and_then(|p| ports.get(&p));
            let https = l.protocol == "HTTPS";
            let tls = if https {
                listener_certs(objects, gw, l)
            } else {
                Ok(Vec::new())
            };
            let passthrough = matches!(
                l.tls.as_ref().and_then(|t| t.mode.as_ref()),
                Some(GatewayListenersTlsMode::Passthrough)
            );
            let tcp = l.protocol == "TCP" && opts.experimental;
            let refused: Option<(&'static str, String)> = if !(matches!(l.protocol.as_str(), "HTTP" | "HTTPS" | "TLS")
                || tcp)
            {
                Some((
                    "UnsupportedProtocol",
                    format!(
                        "protocol {} is not supported by veer's Gateway API translation (HTTP, HTTPS, TLS Passthrough; TCP with --gateway-experimental)",
                        l.protocol
                    ),
                ))
            } else if l.protocol == "TLS" && !passthrough {
                Some((
                    "UnsupportedValue",
                    "a TLS listener must be `tls.mode: Passthrough` (veer terminates TLS on HTTPS listeners)".into(),
                ))
            } else if port.is_none() {
                Some(("Invalid", format!("port {} is out of range", l.port)))
            } else if let Some((_, holder, _)) = taken.filter(|(_, holder, _)| *holder != &gw.at) {
                let message = format!(
                    "port {} is served by {} {}/{} already",
                    l.port, holder.kind, holder.namespace, holder.name
                );
                Some(("PortUnavailable", message))
            } else if let Some((_, _, proto)) = taken.filter(|(_, _, proto)| *proto != l.protocol) {
                Some((
                    "ProtocolConflict",
                    format!("port {} is an {proto} listener of this Gateway", l.port),
                ))
            } else {
                tls.as_ref().err().cloned()
            };
            t.status.gateways[gi].listeners.push(ListenerStatus {
                name: l.name.clone(),
                attached: 0,
                verdict: refused.clone().map_or(Ok(()), Err),
            });
            let (Some(port), None, Ok(tls)) = (port, refused, tls) else {
                if let Some((reason, message)) = t.status.gateways[gi].listeners[li].verdict.clone().err() {
                    t.problems.push(Problem {
                        at: gw.at.clone(),
                        reason,
                        message: format!("listener {:?}: {message}", l.name),
                    });
                }
                continue;
            };
            let veer = match ports.get(&port) {
                Some(&(i, ..)) => i,
                None => {
                    t.listeners.push(ListenerSpec {
                        name: format!("{}:{}:{port}", gw.at.namespace, gw.at.name),
                        bind: SocketAddr::new(opts.address, port),
                        // TLS Passthrough (by the ClientHello's server name) and TCP: bytes relayed.
                        protocol: if matches!(l.protocol.as_str(), "TLS" | "TCP") {
                            Protocol::Tcp
                        } else {
                            Protocol::Http
                        },
                        routes: Vec::new(),
                        backend: None,
                        tls: None,
                        redirect_https: false,
                        hsts: None,
                        accept_proxy: false,
                        max_connections: 0,
                        max_body: 0,
                        idle_timeout: opts.idle_timeout,
                        bind_at: format!("{}:{}", gw.at.file.display(), gw.at.line),
                    });
                    ports.insert(port, (t.listeners.len() - 1, &gw.at, l.protocol.as_str()));
                    t.listeners.len() - 1
                }
            };
            if https {
                certs.entry(veer).or_default().extend(tls);
            }
            attach.push(Attach {
                gateway: gw,
                listener: l,
                veer,
                status: (gi, li),
            });
        }
    }
    // Several HTTPS listeners on one port (one per hostname, say): one TLS setting holding
    // every certificate, chosen by SNI.
    for (veer, pairs) in certs {
        match crate::config::tls::build::server_tls_from_pem(&pairs) {
            Ok(tls) => t.listeners[veer].tls = Some(tls),
            // Each pair loaded on its own already (`listener_certs`); refused anyway, the
            // port must not serve HTTPS in the clear.
            Err(e) => {
                tracing::warn!(listener = %t.listeners[veer].name, error = %e, "TLS listener left out");
                t.broken.push(t.listeners[veer].name.clone());
            }
        }
    }
    attach
}

/// An HTTPS listener's certificates from the Secrets its `certificateRefs` name (a
/// cross-namespace one needs a ReferenceGrant from Gateways). Each is loaded on its own,
/// so a bad one is named.
fn listener_certs(
    objects: &Objects,
    gw: &Located<Gateway>,
    l: &GatewayListeners,
) -> Result<Vec<PemPair>, (&'static str, String)> {
    let tls = l.tls.as_ref();
    if matches!(
        tls.and_then(|t| t.mode.as_ref()),
        Some(GatewayListenersTlsMode::Passthrough)
    ) {
        return Err(("UnsupportedValue", "TLS Passthrough is not supported yet".into()));
    }
    let refs = tls.and_then(|t| t.certificate_refs.as_deref()).unwrap_or(&[]);
    if refs.is_empty() {
        return Err((
            "InvalidCertificateRef",
            "an HTTPS listener needs a certificateRef".into(),
        ));
    }
    let mut out = Vec::new();
    for r in refs {
        if !r.group.as_deref().unwrap_or("").is_empty() || r.kind.as_deref().unwrap_or("Secret") != "Secret" {
            return Err((
                "InvalidCertificateRef",
                format!("certificateRef {}: only Secrets are supported", r.name),
            ));
        }
        let ns = r.namespace.as_deref().unwrap_or(&gw.at.namespace);
        if ns != gw.at.namespace && !granted(objects, ("Gateway", &gw.at.namespace), (ns, "Secret", &r.name)) {
            return Err((
                "RefNotPermitted",
                format!(
                    "certificateRef to Secret {ns}/{} needs a ReferenceGrant in {ns}",
                    r.name
                ),
            ));
        }
        let Some(secret) = objects
            .secrets
            .iter()
            .find(|s| s.at.namespace == ns && s.at.name == r.name)
        else {
            return Err(("InvalidCertificateRef", format!("Secret {ns}/{} not found", r.name)));
        };
        // `data` as the API server keeps it; `stringData` as a manifest may write it.
        let o = &secret.obj;
        let field = |k: &str| {
            let data = o.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone());
            data.or_else(|| {
                o.string_data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|v| v.clone().into_bytes())
            })
        };
        let (Some(crt), Some(key)) = (field("tls.crt"), field("tls.key")) else {
            return Err((
                "InvalidCertificateRef",
                format!("Secret {ns}/{} has no tls.crt and tls.key", r.name),
            ));
        };
        let pair = (format!("secret {ns}/{}", r.name), crt, key);
        crate::config::tls::build::server_tls_from_pem(std::slice::from_ref(&pair))
            .map_err(|e| ("InvalidCertificateRef", e))?;
        out.push(pair);
    }
    Ok(out)
}

fn status_object<K: kube::Resource>(o: &Located<K>) -> status::Object {
    status::Object {
        namespace: o.at.namespace.clone(),
        name: o.at.name.clone(),
        generation: o.obj.meta().generation,
    }
}

// === HTTPRoutes → routes and backends ===

fn http_route(
    objects: &Objects,
    route: &Located<HttpRoute>,
    attach: &[Attach<'_>],
    ranked: &mut [Vec<Ranked>],
    t: &mut Translation,
) {
    let at = &route.at;
    let spec = &route.obj.spec;
    let problem = |reason, message: String| Problem {
        at: at.clone(),
        reason,
        message,
    };
    let hostnames: Vec<String> = spec
        .hostnames
        .iter()
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    // (veer listener, the hosts this route answers there).
    let mut targets: Vec<(usize, Vec<Option<String>>)> = Vec::new();
    // One per parentRef naming a Gateway of veer's: what its status will say.
    let mut parents: Vec<ParentStatus> = Vec::new();
    for parent in spec.parent_refs.iter().flatten() {
        if parent.group.as_deref().unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP
            || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let ns = parent.namespace.as_deref().unwrap_or(&at.namespace);
        let ours = attach
            .iter()
            .any(|a| a.gateway.at.namespace == ns && a.gateway.at.name == parent.name);
        let candidates: Vec<&Attach<'_>> = attach
            .iter()
            .filter(|a| a.gateway.at.namespace == ns && a.gateway.at.name == parent.name)
            .filter(|a| parent.section_name.as_ref().is_none_or(|s| *s == a.listener.name))
            .filter(|a| parent.port.is_none_or(|p| p == a.listener.port))
            .collect();
        let mut verdict: Verdict = Ok(());
        let mut accepted = false;
        let mut refusal = None;
        if candidates.is_empty() {
            refusal = Some((
                "NoMatchingParent",
                format!("parentRef {ns}/{} matches no listener of a veer Gateway", parent.name),
            ));
        }
        for a in candidates {
            if let Err(why) = allowed(a, &at.kind, &at.namespace) {
                refusal = Some(("NotAllowedByListeners", why));
                continue;
            }
            match intersect(a.listener.hostname.as_deref(), &hostnames) {
                Some(hosts) => {
                    accepted = true;
                    t.status.gateways[a.status.0].listeners[a.status.1].attached += 1;
                    match targets.iter_mut().find(|(v, _)| *v == a.veer) {
                        Some((_, known)) => {
                            for h in hosts {
                                if !known.contains(&h) {
                                    known.push(h);
                                }
                            }
                        }
                        None => targets.push((a.veer, hosts)),
                    }
                }
                None => {
                    refusal = Some((
                        "NoMatchingListenerHostname",
                        format!(
                            "no hostname of the route matches listener {:?} ({})",
                            a.listener.name,
                            a.listener.hostname.as_deref().unwrap_or("*")
                        ),
                    ))
                }
            }
        }
        if let (false, Some((reason, why))) = (accepted, refusal) {
            verdict = Err((reason, why.clone()));
            t.problems.push(problem(reason, why));
        }
        // Only a Gateway of veer's gets veer's word on the route.
        if ours {
            parents.push(ParentStatus {
                parent: serde_json::to_value(parent).unwrap_or_default(),
                accepted: verdict,
                resolved: Ok(()),
            });
        }
    }
    let record = |t: &mut Translation, parents: Vec<ParentStatus>| {
        if !parents.is_empty() {
            t.status.routes.push(RouteStatus {
                kind: match route.at.kind.as_str() {
                    "GRPCRoute" => "GRPCRoute",
                    "TLSRoute" => "TLSRoute",
                    "TCPRoute" => "TCPRoute",
                    _ => "HTTPRoute",
                },
                object: status_object(route),
                parents,
            });
        }
    };
    if targets.is_empty() {
        record(t, parents);
        return;
    }
    // Problems with the rules: the first unusable rule makes the route not (fully)
    // accepted; the first unresolved reference makes ResolvedRefs false.
    let before = t.problems.len();
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        if rule
            .backend_refs
            .iter()
            .flatten()
            .any(|b| b.filters.as_ref().is_some_and(|f| !f.is_empty()))
        {
            t.problems.push(problem(
                "UnsupportedValue",
                format!("rule {r}: filters on a backendRef are not supported; the rule is left out"),
            ));
            continue;
        }
        let (filters, mirror) = match rule_filters(rule.filters.as_deref().unwrap_or(&[])) {
            Ok(found) => found,
            Err(why) => {
                t.problems.push(problem(
                    "UnsupportedValue",
                    format!("rule {r}: {why}; the rule is left out"),
                ));
                continue;
            }
        };
        let rule_name = rule.name.clone().unwrap_or_else(|| r.to_string());
        // A GRPCRoute may share its name with an HTTPRoute: its backends are told apart.
        let kind = match at.kind.as_str() {
            "GRPCRoute" => "grpc:",
            "TLSRoute" => "tls:",
            "TCPRoute" => "tcp:",
            _ => "",
        };
        let backend_name = format!("{kind}{}:{}:{rule_name}", at.namespace, at.name);
        let mut backend = rule_backend(objects, route, (r, rule), &backend_name, &mut t.problems);
        if let Some((mirror_ref, percent)) = mirror {
            mirror_group(objects, route, (r, &mirror_ref, percent), &mut backend, &mut t.problems);
        }
        let default_match = [HttpRouteRulesMatches::default()];
        let matches = rule
            .matches
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_match);
        for (m, matched) in matches.iter().enumerate() {
            let (spec, rank) = match route_match(matched, &backend_name) {
                Ok(found) => found,
                Err(why) => {
                    t.problems.push(problem(
                        "UnsupportedValue",
                        format!("rule {r} match {m}: {why}; the match is left out"),
                    ));
                    continue;
                }
            };
            for (veer, hosts) in &targets {
                for host in hosts {
                    let host_rank = match host.as_deref() {
                        Some(h) if h.starts_with('*') => (1, Reverse(h.len())),
                        Some(_) => (0, Reverse(0)),
                        None => (2, Reverse(0)),
                    };
                    let created = route.obj.metadata.creation_timestamp.as_ref().map(|t| t.0);
                    ranked[*veer].push(Ranked {
                        key: Precedence {
                            host: host_rank,
                            rank: rank.clone(),
                            created,
                            name: format!("{}/{}", at.namespace, at.name),
                            rule: r,
                            matched: m,
                        },
                        spec: if matches!(at.kind.as_str(), "TLSRoute" | "TCPRoute") {
                            // Matched by the ClientHello's server name (TLSRoute), or every
                            // connection (TCPRoute: no hostnames, so no name).
                            RouteSpec {
                                name: format!("{backend_name}:{m}"),
                                sni: host.clone(),
                                backend: spec.backend.clone(),
                                ..RouteSpec::default()
                            }
                        } else {
                            RouteSpec {
                                name: format!("{backend_name}:{m}"),
                                host: host.clone(),
                                filters: filters.clone(),
                                ..spec.clone()
                            }
                        },
                    });
                }
            }
        }
        t.backends.push(backend);
    }
    let found = &t.problems[before..];
    let unresolved = ["BackendNotFound", "RefNotPermitted", "InvalidKind"];
    let resolved: Verdict = match found.iter().find(|p| unresolved.contains(&p.reason)) {
        Some(p) => Err((p.reason, p.message.clone())),
        None => Ok(()),
    };
    let unusable = found.iter().find(|p| !unresolved.contains(&p.reason));
    for p in &mut parents {
        p.resolved = resolved.clone();
        if let (Ok(()), Some(u)) = (&p.accepted, unusable) {
            p.accepted = Err((u.reason, u.message.clone()));
        }
    }
    record(t, parents);
}

/// Whether the listener lets a route of `namespace` attach (`allowedRoutes`).
fn allowed(a: &Attach<'_>, kind: &str, namespace: &str) -> Result<(), String> {
    // What the listener's protocol carries at all.
    let fits = match a.listener.protocol.as_str() {
        "TLS" => kind == "TLSRoute",
        "TCP" => kind == "TCPRoute",
        _ => !matches!(kind, "TLSRoute" | "TCPRoute"),
    };
    if !fits {
        return Err(format!(
            "listener {:?} ({}) does not carry {kind}s",
            a.listener.name, a.listener.protocol
        ));
    }
    let rules = a.listener.allowed_routes.as_ref();
    if let Some(kinds) = rules.and_then(|r| r.kinds.as_ref()).filter(|k| !k.is_empty()) {
        if !kinds
            .iter()
            .any(|k| k.kind == kind && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP)
        {
            return Err(format!("listener {:?} does not allow {kind}s", a.listener.name));
        }
    }
    let from = rules
        .and_then(|r| r.namespaces.as_ref())
        .and_then(|n| n.from.clone())
        .unwrap_or(From::Same);
    match from {
        From::All => Ok(()),
        From::Same if namespace == a.gateway.at.namespace => Ok(()),
        From::Same => Err(format!(
            "listener {:?} allows routes from namespace {} only",
            a.listener.name, a.gateway.at.namespace
        )),
        From::Selector => Err(format!(
            "listener {:?} selects namespaces by label, which veer cannot read from a directory",
            a.listener.name
        )),
    }
}

/// The hosts a route answers on a listener (Gateway API hostname intersection): `None`
/// when they share none; `[None]` when neither restricts.
fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<Option<String>>> {
    let listener = listener.map(str::to_ascii_lowercase);
    let Some(l) = listener else {
        return Some(if route.is_empty() {
            vec![None]
        } else {
            route.iter().cloned().map(Some).collect()
        });
    };
    if route.is_empty() {
        return Some(vec![Some(l)]);
    }
    let covers = |wild: &str, host: &str| {
        // `*.example.com` covers `a.example.com` and `*.a.example.com`, not `example.com`.
        wild.strip_prefix('*')
            .is_some_and(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
    };
    let hosts: Vec<Option<String>> = route
        .iter()
        .filter_map(|r| {
            if *r == l || covers(&l, r) {
                Some(r.clone())
            } else if covers(r, &l) {
                Some(l.clone())
            } else {
                None
            }
        })
        .map(Some)
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

/// One match → a route (without host) and its rank within a host. `Err` says what veer
/// cannot match (regular expressions, a header name or value HTTP cannot carry).
fn route_match(m: &HttpRouteRulesMatches, backend: &str) -> Result<(RouteSpec, MatchRank), String> {
    let regex = |what: &str| Err(format!("{what} RegularExpression matches are not supported"));
    let (path, path_rank) = match &m.path {
        None => (None, (1, Reverse(1))),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            match p.r#type.clone().unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix) {
                HttpRouteRulesMatchesPathType::Exact => {
                    let len = value.len();
                    (Some(PathMatch::Exact(value)), (0, Reverse(len)))
                }
                HttpRouteRulesMatchesPathType::PathPrefix => {
                    let len = value.trim_end_matches('/').len().max(1);
                    (Some(PathMatch::Segments(value)), (1, Reverse(len)))
                }
                HttpRouteRulesMatchesPathType::RegularExpression => return regex("path"),
            }
        }
    };
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        if matches!(h.r#type, Some(HttpRouteRulesMatchesHeadersType::RegularExpression)) {
            return regex("header");
        }
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_str(&h.value),
        ) else {
            return Err(format!(
                "header match {:?}: {:?} is not a valid header field",
                h.name, h.value
            ));
        };
        // "Only the first entry with an equivalent name MUST be considered".
        if !headers.iter().any(|(x, _)| *x == n) {
            headers.push((n, v));
        }
    }
    let mut query: Vec<(String, String)> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if matches!(q.r#type, Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression)) {
            return regex("query parameter");
        }
        if !query.iter().any(|(n, _)| *n == q.name) {
            query.push((q.name.clone(), q.value.clone()));
        }
    }
    let method = m
        .method
        .as_ref()
        .and_then(|m| serde_json::to_value(m).ok())
        .and_then(|v| v.as_str().and_then(|s| http::Method::from_bytes(s.as_bytes()).ok()));
    let rank = MatchRank {
        path: path_rank,
        no_method: method.is_none(),
        headers: Reverse(headers.len()),
        query: Reverse(query.len()),
    };
    Ok((
        RouteSpec {
            path,
            headers,
            query,
            method,
            backend: backend.to_string(),
            ..RouteSpec::default()
        },
        rank,
    ))
}

// === GRPCRoute ===

/// A GRPCRoute as the HTTPRoute it means: a method match is a path (`/service/method`
/// exactly, or every method of `/service/`), header matches, backendRefs and the filters
/// both kinds share carry over unchanged (same fields), and the result is translated by
/// the same code — its backends speak HTTP/2 (h2c).
fn as_http_route(g: &Located<GrpcRoute>) -> Result<Located<HttpRoute>, String> {
    use serde_json::{json, Value};
    let mut spec = serde_json::to_value(&g.obj.spec).map_err(|e| e.to_string())?;
    for rule in spec["rules"].as_array_mut().into_iter().flatten() {
        for m in rule["matches"].as_array_mut().into_iter().flatten() {
            let method = m
                .as_object_mut()
                .and_then(|o| o.remove("method"))
                .unwrap_or(Value::Null);
            if method.is_null() {
                continue;
            }
            if method["type"].as_str().is_some_and(|t| t != "Exact") {
                return Err("GRPCRoute RegularExpression method matches are not supported".into());
            }
            let path = match (method["service"].as_str(), method["method"].as_str()) {
                (Some(s), Some(m)) => json!({"type": "Exact", "value": format!("/{s}/{m}")}),
                (Some(s), None) => json!({"type": "PathPrefix", "value": format!("/{s}/")}),
                (None, Some(_)) => return Err("a GRPCRoute method match without a service is not supported".into()),
                (None, None) => continue,
            };
            m["path"] = path;
        }
    }
    let spec = serde_json::from_value(spec).map_err(|e| format!("GRPCRoute as HTTPRoute: {e}"))?;
    Ok(Located {
        at: g.at.clone(),
        obj: HttpRoute {
            metadata: g.obj.metadata.clone(),
            spec,
            status: None,
        },
    })
}

/// A TLSRoute or TCPRoute as an HTTPRoute with no matches (SNI hostnames and weighted
/// backendRefs are the same fields); its routes match the server name only, or every
/// connection (see `http_route`).
fn as_http<K>(r: &Located<K>, problems: &mut Vec<Problem>) -> Option<Located<HttpRoute>>
where
    K: kube::Resource + HasSpec,
{
    let spec = serde_json::from_value(r.obj.spec_value());
    match spec {
        Ok(spec) => Some(Located {
            at: r.at.clone(),
            obj: HttpRoute {
                metadata: r.obj.meta().clone(),
                spec,
                status: None,
            },
        }),
        Err(e) => {
            problems.push(Problem {
                at: r.at.clone(),
                reason: "UnsupportedValue",
                message: format!("{} as HTTPRoute: {e}", r.at.kind),
            });
            None
        }
    }
}

/// The route kinds read as HTTPRoutes: their spec as JSON.
trait HasSpec {
    fn spec_value(&self) -> serde_json::Value;
}

impl HasSpec for TlsRoute {
    fn spec_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

impl HasSpec for TcpRoute {
    fn spec_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

// === filters ===

/// A `RequestMirror`'s Service and the percentage of requests copied to it.
type Mirror = (HttpRouteRulesBackendRefs, u32);

/// A rule's filters → what its routes do, and where its requests are mirrored. `Err`
/// names a filter veer cannot apply.
fn rule_filters(filters: &[HttpRouteRulesFilters]) -> Result<(Option<Arc<RouteFilters>>, Option<Mirror>), String> {
    let mut out = RouteFilters::default();
    let mut mirror = None;
    for f in filters {
        if let Some(m) = &f.request_header_modifier {
            edits(
                &mut out.request_headers,
                m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                m.remove.iter().flatten(),
            )?;
        } else if let Some(m) = &f.response_header_modifier {
            edits(
                &mut out.response_headers,
                m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                m.remove.iter().flatten(),
            )?;
        } else if let Some(r) = &f.request_redirect {
            let status = r.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(format!("redirect status {status} is not a redirect"));
            }
            out.redirect = Some(Redirect {
                scheme: r.scheme.as_ref().map(|s| match s {
                    HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".to_string(),
                    HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".to_string(),
                }),
                hostname: r.hostname.clone(),
                port: r
                    .port
                    .map(|p| u16::try_from(p).map_err(|_| format!("redirect port {p} is out of range")))
                    .transpose()?,
                path: r
                    .path
                    .as_ref()
                    .map(|p| {
                        path_rewrite(
                            p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                            &p.replace_full_path,
                            &p.replace_prefix_match,
                        )
                    })
                    .transpose()?,
                status: status as u16,
            });
        } else if let Some(w) = &f.url_rewrite {
            out.rewrite = Some(Rewrite {
                hostname: w.hostname.clone(),
                path: w
                    .path
                    .as_ref()
                    .map(|p| {
                        path_rewrite(
                            p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath,
                            &p.replace_full_path,
                            &p.replace_prefix_match,
                        )
                    })
                    .transpose()?,
            });
        } else if let Some(m) = &f.request_mirror {
            let percent = match (&m.percent, &m.fraction) {
                (Some(p), _) => (*p).clamp(0, 100) as u32,
                (None, Some(f)) => {
                    let d = f.denominator.unwrap_or(100).max(1) as i64;
                    (i64::from(f.numerator) * 100 / d).clamp(0, 100) as u32
                }
                (None, None) => 100,
            };
            let b = &m.backend_ref;
            mirror = Some((
                HttpRouteRulesBackendRefs {
                    group: b.group.clone(),
                    kind: b.kind.clone(),
                    name: b.name.clone(),
                    namespace: b.namespace.clone(),
                    port: b.port,
                    ..HttpRouteRulesBackendRefs::default()
                },
                percent,
            ));
        } else {
            return Err(format!("filter {:?} is not supported", f.r#type));
        }
    }
    let any = !out.request_headers.is_empty()
        || !out.response_headers.is_empty()
        || out.redirect.is_some()
        || out.rewrite.is_some();
    Ok((any.then(|| Arc::new(out)), mirror))
}

fn edits<'a>(
    into: &mut HeaderEdits,
    set: impl Iterator<Item = (&'a String, &'a String)>,
    add: impl Iterator<Item = (&'a String, &'a String)>,
    remove: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    let field = |(n, v): (&String, &String)| match (
        http::HeaderName::from_bytes(n.as_bytes()),
        http::HeaderValue::from_str(v),
    ) {
        (Ok(n), Ok(v)) => Ok((n, v)),
        _ => Err(format!("header {n:?}: {v:?} is not a valid header field")),
    };
    for f in set {
        into.set.push(field(f)?);
    }
    for f in add {
        into.add.push(field(f)?);
    }
    for n in remove {
        into.remove
            .push(http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{n:?} is not a header name"))?);
    }
    Ok(())
}

fn path_rewrite(full: bool, full_path: &Option<String>, prefix: &Option<String>) -> Result<PathRewrite, String> {
    match (full, full_path, prefix) {
        (true, Some(p), _) => Ok(PathRewrite::Full(p.clone())),
        (false, _, Some(p)) => Ok(PathRewrite::Prefix(p.clone())),
        _ => Err("a path rewrite names no path".into()),
    }
}

/// `RequestMirror`: the mirrored Service becomes a weight-0 group of the rule's backend
/// (it takes no traffic of its own) and the backend's mirror target.
fn mirror_group(
    objects: &Objects,
    route: &Located<HttpRoute>,
    (index, r, percent): (usize, &HttpRouteRulesBackendRefs, u32),
    backend: &mut BackendSpec,
    problems: &mut Vec<Problem>,
) {
    match backend_ref(objects, route, r) {
        Ok((name, servers)) => {
            let name = format!("mirror:{name}");
            backend.groups.push(GroupSpec {
                name: name.clone(),
                weight: 0,
                meta: BTreeMap::new(),
                servers,
            });
            backend.mirror = Some(MirrorSpec {
                group: name,
                percent,
                max_body: 64 * 1024,
            });
            backend.number_servers(Numbering::FilePosition);
        }
        Err((reason, message)) => problems.push(Problem {
            at: route.at.clone(),
            reason,
            message: format!("rule {index}: mirror: {message}"),
        }),
    }
}

// === backendRefs → groups and servers ===

fn rule_backend(
    objects: &Objects,
    route: &Located<HttpRoute>,
    (index, rule): (usize, &HttpRouteRules),
    name: &str,
    problems: &mut Vec<Problem>,
) -> BackendSpec {
    let mut backend = BackendSpec::defaults();
    backend.name = name.to_string();
    // gRPC is HTTP/2 end to end: a GRPCRoute's Services speak it in the clear.
    if route.at.kind == "GRPCRoute" {
        backend.protocol = crate::config::UpstreamProtocol::H2c;
    }
    // Sticky sessions (the standard channel has no field for them; `sessionPersistence` is
    // experimental): the route's annotation names veer's cookie, and a client keeps its
    // server across weight changes until that server drains, as in the file.
    let sticky = route
        .obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STICKY_ANNOTATION));
    let token = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|x| x.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(x))
    };
    if let Some(bad) = sticky.filter(|c| !token(c)) {
        problems.push(Problem {
            at: route.at.clone(),
            reason: "UnsupportedValue",
            message: format!("{STICKY_ANNOTATION} {bad:?} is not a cookie name; the rule is not sticky"),
        });
    }
    if let Some(cookie) = sticky.filter(|c| token(c)) {
        backend.sticky = Some(crate::config::StickySpec {
            cookie: cookie.clone(),
            max_age: None,
            http_only: true,
            secure: false,
            same_site: None,
            path: "/".into(),
        });
    }
    if let Some(t) = &rule.timeouts {
        let parse = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| s.parse::<gateway_api::Duration>().ok())
                .map(|d| Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX)))
                .filter(|d| !d.is_zero())
        };
        // The wait for the response head: the backend's own bound, or the whole request's.
        if let Some(d) = parse(&t.backend_request).or_else(|| parse(&t.request)) {
            backend.timeout = d;
        }
    }
    let refs = rule.backend_refs.as_deref().unwrap_or(&[]);
    let max = refs
        .iter()
        .map(|r| r.weight.unwrap_or(1).max(0) as u64)
        .max()
        .unwrap_or(0);
    for r in refs {
        let weight = r.weight.unwrap_or(1).max(0) as u64;
        let weight = if max <= MAX_GROUP_WEIGHT {
            weight
        } else {
            // Scaled, but a non-zero weight never rounds to nothing.
            (weight * MAX_GROUP_WEIGHT / max).max(u64::from(weight > 0))
        };
        let (group, servers) = match backend_ref(objects, route, r) {
            Ok(found) => found,
            Err((reason, message)) => {
                problems.push(Problem {
                    at: route.at.clone(),
                    reason,
                    message: format!("rule {index}: {message}"),
                });
                // The ref keeps its share of requests, answered 500 (the spec: an invalid
                // ref's traffic fails, the others' is unaffected).
                backend.refused_groups.push(ref_group_name(route, r));
                (ref_group_name(route, r), Vec::new())
            }
        };
        match backend.groups.iter_mut().find(|g| g.name == group) {
            Some(g) => g.weight = (u64::from(g.weight) + weight).min(MAX_GROUP_WEIGHT) as u32,
            None => backend.groups.push(GroupSpec {
                name: group,
                weight: weight as u32,
                meta: BTreeMap::new(),
                servers,
            }),
        }
    }
    backend.number_servers(Numbering::FilePosition);
    backend
}

fn ref_group_name(route: &Located<HttpRoute>, r: &HttpRouteRulesBackendRefs) -> String {
    let ns = r.namespace.as_deref().unwrap_or(&route.at.namespace);
    let port = r.port.map(|p| p.to_string()).unwrap_or_default();
    if ns == route.at.namespace {
        format!("{}:{port}", r.name)
    } else {
        format!("{ns}:{}:{port}", r.name)
    }
}

type RefError = (&'static str, String);

fn backend_ref(
    objects: &Objects,
    route: &Located<HttpRoute>,
    r: &HttpRouteRulesBackendRefs,
) -> Result<(String, Vec<ServerSpec>), RefError> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("backendRef {group}/{kind} {}: only Services are supported", r.name),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(&route.at.namespace);
    if ns != route.at.namespace && !granted(objects, (&route.at.kind, &route.at.namespace), (ns, "Service", &r.name)) {
        return Err((
            "RefNotPermitted",
            format!(
                "backendRef to Service {ns}/{} needs a ReferenceGrant in {ns} from HTTPRoutes of {}",
                r.name, route.at.namespace
            ),
        ));
    }
    let Some(port) = r.port else {
        return Err((
            "UnsupportedValue",
            format!("backendRef to Service {ns}/{} names no port", r.name),
        ));
    };
    let Some(svc) = objects
        .services
        .iter()
        .find(|s| s.at.namespace == ns && s.at.name == r.name)
    else {
        return Err(("BackendNotFound", format!("Service {ns}/{} not found", r.name)));
    };
    let Some(sp) = svc
        .obj
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == port))
    else {
        return Err(("BackendNotFound", format!("Service {ns}/{} has no port {port}", r.name)));
    };
    Ok((ref_group_name(route, r), servers(objects, &svc.obj, ns, sp)))
}

/// Whether a ReferenceGrant in the target's namespace lets objects of kind `from.0` in
/// namespace `from.1` name the core object `to` = (namespace, kind, name).
fn granted(objects: &Objects, from: (&str, &str), to: (&str, &str, &str)) -> bool {
    let ((from_kind, from_ns), (to_ns, to_kind, name)) = (from, to);
    objects.grants.iter().filter(|g| g.at.namespace == to_ns).any(|g| {
        g.obj
            .spec
            .from
            .iter()
            .any(|f| f.group == GATEWAY_GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.obj
                .spec
                .to
                .iter()
                .any(|t| t.group.is_empty() && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == name))
    })
}

/// The Service port's endpoints, from its EndpointSlices: ready ones serve, terminating
/// ones that still serve drain (their in-flight and sticky clients finish), the rest are
/// in maintenance. Without any EndpointSlice, a Service with a cluster IP is one server.
fn servers(objects: &Objects, svc: &Service, ns: &str, sp: &ServicePort) -> Vec<ServerSpec> {
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let slices: Vec<&EndpointSlice> = objects
        .slices
        .iter()
        .filter(|s| s.at.namespace == ns)
        .filter(|s| {
            s.obj
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|n| n == name)
        })
        .map(|s| &s.obj)
        .collect();
    let mut out: Vec<ServerSpec> = Vec::new();
    let mut add = |ip: IpAddr, port: u16, state: AdminState, zone: &Option<String>| {
        let addr = SocketAddr::new(ip, port);
        if out.iter().any(|s| s.addr == addr) {
            return;
        }
        out.push(ServerSpec {
            name: format!("{ip}:{port}"),
            id: 0,
            addr,
            weight: 1,
            initial_weight: 1,
            state,
            checks_disabled: false,
            maxconn: 0,
            dns: None,
            zone: zone.clone(),
        });
    };
    if slices.is_empty() {
        let ip = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        if let (Some(ip), Ok(port)) = (ip, u16::try_from(sp.port)) {
            add(ip, port, AdminState::Ready, &None);
        }
        return out;
    }
    let port_name = sp.name.as_deref().unwrap_or("");
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in &slice.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            // Absent conditions mean ready (and serving), as kube-proxy reads them.
            let ready = c.ready.unwrap_or(true);
            let state = if ready {
                AdminState::Ready
            } else if c.terminating.unwrap_or(false) && c.serving.unwrap_or(false) {
                AdminState::Drain
            } else {
                AdminState::Maint
            };
            // Topology hints say which zone should consume the endpoint; else its own zone.
            let hinted = e
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .and_then(|z| z.first());
            let zone = hinted.map(|z| z.name.clone()).or_else(|| e.zone.clone());
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                add(ip, port, state, &zone);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hostname_intersection_follows_the_spec() {
        let some = |v: &[&str]| Some(v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>());
        assert_eq!(intersect(None, &[]), Some(vec![None]));
        assert_eq!(intersect(None, &hosts(&["a.com"])), some(&["a.com"]));
        assert_eq!(intersect(Some("a.com"), &[]), some(&["a.com"]));
        assert_eq!(
            intersect(Some("*.ex.com"), &hosts(&["a.ex.com", "b.org"])),
            some(&["a.ex.com"])
        );
        assert_eq!(intersect(Some("a.ex.com"), &hosts(&["*.ex.com"])), some(&["a.ex.com"]));
        assert_eq!(
            intersect(Some("*.ex.com"), &hosts(&["*.a.ex.com"])),
            some(&["*.a.ex.com"])
        );
        assert_eq!(intersect(Some("*.ex.com"), &hosts(&["ex.com"])), None);
        assert_eq!(intersect(Some("a.com"), &hosts(&["b.com"])), None);
    }
}
