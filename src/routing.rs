//! The HTTP route table of one listener, built once per snapshot.
//!
//! Semantics: routes are evaluated in file order and the first match wins. To stay fast with
//! thousands of routes, the table is bucketed by host: exact hosts in a hash map, `*.suffix`
//! wildcards in a second map keyed by the suffix, and host-less routes in a list. A request
//! only scans the buckets its host can match; each bucket keeps file order, so the first
//! match of each bucket is found by a short scan and the lowest file index among those wins.

use std::collections::HashMap;

use http::HeaderMap;

use crate::config::RouteSpec;

/// One compiled route: its match conditions and the index of its backend in the snapshot.
#[derive(Debug)]
pub struct Route {
    pub name: std::sync::Arc<str>,
    pub backend: usize,
    index: usize,
    path_prefix: Option<String>,
    header: Option<(http::HeaderName, http::HeaderValue)>,
}

impl Route {
    fn matches(&self, path: &str, headers: &impl Headers) -> bool {
        self.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            && self.header.as_ref().is_none_or(|(n, v)| headers.has(n, v.as_bytes()))
    }
}

/// What a route's header condition reads: the request's header fields, however they are
/// held (a `HeaderMap` for HTTP/2, the raw parsed head for HTTP/1).
pub trait Headers {
    /// True when a field `name` has exactly `value`.
    fn has(&self, name: &http::HeaderName, value: &[u8]) -> bool;
}

impl Headers for HeaderMap {
    fn has(&self, name: &http::HeaderName, value: &[u8]) -> bool {
        self.get_all(name).iter().any(|x| x.as_bytes() == value)
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Route>>,
    /// Keyed by the suffix including its leading dot: "*.example.com" → ".example.com".
    wildcard: HashMap<String, Vec<Route>>,
    any_host: Vec<Route>,
    /// Whether any wildcard exists, to skip the suffix walk entirely when not.
    has_wildcards: bool,
}

impl RouteTable {
    /// Compiles routes; `backend_index` resolves a backend name (validated to exist).
    pub fn build(routes: &[RouteSpec], backend_index: impl Fn(&str) -> usize) -> Self {
        let mut t = RouteTable::default();
        for (index, r) in routes.iter().enumerate() {
            let route = Route {
                name: r.name.as_str().into(),
                backend: backend_index(&r.backend),
                index,
                path_prefix: r.path_prefix.clone().filter(|p| p != "/"),
                header: r.header.clone(),
            };
            match r.host.as_deref() {
                None => t.any_host.push(route),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => {
                        t.has_wildcards = true;
                        t.wildcard.entry(suffix.to_string()).or_default().push(route)
                    }
                    None => t.exact.entry(h.to_string()).or_default().push(route),
                },
            }
        }
        t
    }

    /// The first route (in file order) matching the request. `host` must be lowercase
    /// and without port (see [`normalize_host`]).
    pub fn find<'a>(&'a self, host: &str, path: &str, headers: &impl Headers) -> Option<&'a Route> {
        let first = |bucket: &'a [Route]| bucket.iter().find(|r| r.matches(path, headers));
        let earlier = |a: Option<&'a Route>, b: Option<&'a Route>| match (a, b) {
            (Some(x), Some(y)) => Some(if x.index <= y.index { x } else { y }),
            (x, y) => x.or(y),
        };
        let mut best = self.exact.get(host).and_then(|b| first(b));
        if self.has_wildcards {
            // Every suffix starting at a dot, with at least one character before it.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(b) = self.wildcard.get(&host[i..]) {
                    best = earlier(best, first(b));
                }
            }
        }
        earlier(best, first(&self.any_host))
    }
}

/// Lowercases a Host/authority value and strips its port, borrowing when already lowercase.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a trailing :port.
        raw.find(']').map_or(raw, |i| &raw[..=i])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: Option<&str>, path: Option<&str>, backend: &str) -> RouteSpec {
        RouteSpec {
            name: backend.into(),
            host: host.map(Into::into),
            path_prefix: path.map(Into::into),
            header: None,
            sni: None,
            backend: backend.into(),
        }
    }

    #[test]
    fn first_match_wins_across_buckets() {
        let routes = vec![
            spec(None, Some("/admin"), "0"),
            spec(Some("*.example.com"), None, "1"),
            spec(Some("a.example.com"), None, "2"),
            spec(None, None, "3"),
        ];
        let t = RouteTable::build(&routes, |b| b.parse().unwrap());
        let h = HeaderMap::new();
        assert_eq!(t.find("a.example.com", "/admin/x", &h).unwrap().backend, 0);
        assert_eq!(t.find("a.example.com", "/", &h).unwrap().backend, 1);
        assert_eq!(t.find("x.y.example.com", "/", &h).unwrap().backend, 1);
        assert_eq!(t.find("example.com", "/", &h).unwrap().backend, 3);
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Shop.Example.com:8080"), "shop.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("a.b."), "a.b");
    }
}
