//! backendRefs → a backend's groups and servers: Services, their EndpointSlices, and the
//! ReferenceGrants that allow a reference across namespaces.

use super::model::*;

pub(super) fn rule_backend(
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

pub(super) fn ref_group_name(route: &Located<HttpRoute>, r: &HttpRouteRulesBackendRefs) -> String {
    let ns = r.namespace.as_deref().unwrap_or(&route.at.namespace);
    let port = r.port.map(|p| p.to_string()).unwrap_or_default();
    if ns == route.at.namespace {
        format!("{}:{port}", r.name)
    } else {
        format!("{ns}:{}:{port}", r.name)
    }
}

type RefError = (&'static str, String);

pub(super) fn backend_ref(
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
pub(super) fn granted(objects: &Objects, from: (&str, &str), to: (&str, &str, &str)) -> bool {
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
pub(super) fn servers(objects: &Objects, svc: &Service, ns: &str, sp: &ServicePort) -> Vec<ServerSpec> {
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
