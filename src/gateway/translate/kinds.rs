//! GRPCRoutes, TLSRoutes and TCPRoutes, read as the HTTPRoutes they mean.

use super::model::*;

/// A GRPCRoute as the HTTPRoute it means: a method match is a path (`/service/method`
/// exactly, or every method of `/service/`), header matches, backendRefs and the filters
/// both kinds share carry over unchanged (same fields), and the result is translated by
/// the same code — its backends speak HTTP/2 (h2c).
pub(super) fn as_http_route(g: &Located<GrpcRoute>) -> Result<Located<HttpRoute>, String> {
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
pub(super) fn as_http<K>(r: &Located<K>, problems: &mut Vec<Problem>) -> Option<Located<HttpRoute>>
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
pub(super) trait HasSpec {
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
