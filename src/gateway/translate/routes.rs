//! HTTPRoutes → routes: which listeners a route attaches to (allowedRoutes, hostnames), its
//! matches and their precedence.

use super::backends::rule_backend;
use super::filters::{mirror_group, rule_filters};
use super::gateways::status_object;
use super::model::*;

pub(super) fn http_route(
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
pub(super) fn allowed(a: &Attach<'_>, kind: &str, namespace: &str) -> Result<(), String> {
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
pub(super) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<Option<String>>> {
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
pub(super) fn route_match(m: &HttpRouteRulesMatches, backend: &str) -> Result<(RouteSpec, MatchRank), String> {
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
