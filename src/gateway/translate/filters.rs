//! A rule's filters: header edits, redirects, URL rewrites, mirrors.

use super::backends::backend_ref;
use super::model::*;

/// A `RequestMirror`'s Service and the percentage of requests copied to it.
type Mirror = (HttpRouteRulesBackendRefs, u32);

/// A rule's filters → what its routes do, and where its requests are mirrored. `Err`
/// names a filter veer cannot apply.
pub(super) fn rule_filters(
    filters: &[HttpRouteRulesFilters],
) -> Result<(Option<Arc<RouteFilters>>, Option<Mirror>), String> {
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

pub(super) fn edits<'a>(
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

pub(super) fn path_rewrite(
    full: bool,
    full_path: &Option<String>,
    prefix: &Option<String>,
) -> Result<PathRewrite, String> {
    match (full, full_path, prefix) {
        (true, Some(p), _) => Ok(PathRewrite::Full(p.clone())),
        (false, _, Some(p)) => Ok(PathRewrite::Prefix(p.clone())),
        _ => Err("a path rewrite names no path".into()),
    }
}

/// `RequestMirror`: the mirrored Service becomes a weight-0 group of the rule's backend
/// (it takes no traffic of its own) and the backend's mirror target.
pub(super) fn mirror_group(
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
