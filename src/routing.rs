//! The HTTP route table of one listener, built once per snapshot.
//!
//! Semantics: routes are evaluated in file order and the first match wins. To stay fast with
//! thousands of routes, the table is bucketed by host: exact hosts in a hash map, `*.suffix`
//! wildcards in a second map keyed by the suffix, and host-less routes in a list. A request
//! only scans the buckets its host can match; each bucket keeps file order, so the first
//! match of each bucket is found by a short scan and the lowest file index among those wins.

use std::collections::HashMap;

use http::HeaderMap;

use crate::config::{PathMatch, RouteFilters, RouteSpec};

/// One compiled route: its match conditions and the index of its backend in the snapshot.
#[derive(Debug)]
pub struct Route {
    pub name: std::sync::Arc<str>,
    pub backend: usize,
    /// Gateway API filters: header edits, redirect, rewrite (none for the file's routes).
    pub filters: Option<std::sync::Arc<RouteFilters>>,
    index: usize,
    path: Option<PathMatch>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    query: Vec<(String, String)>,
    method: Option<http::Method>,
}

impl Route {
    /// The origin-form target a redirect or rewrite filter makes of `path_and_query` (the
    /// part this route's path condition matched is what a prefix rewrite replaces).
    pub fn new_target(&self, path_and_query: &str) -> Option<String> {
        let f = self.filters.as_deref()?;
        let redirect = f.redirect.as_ref().and_then(|r| r.path.as_ref());
        let path = redirect.or(f.rewrite.as_ref().and_then(|w| w.path.as_ref()))?;
        Some(path.apply(self.path.as_ref(), path_and_query))
    }

    fn matches(&self, method: &str, path: &str, query: &str, headers: &impl Headers) -> bool {
        self.method.as_ref().is_none_or(|m| m.as_str() == method)
            && self.path.as_ref().is_none_or(|p| path_matches(p, path))
            && self.headers.iter().all(|(n, v)| headers.has(n, v.as_bytes()))
            && self
                .query
                .iter()
                .all(|(n, v)| query_value(query, n) == Some(v.as_str()))
    }
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        PathMatch::Exact(p) => path == p,
        // Element by element: `/abc` (or `/abc/`) matches `/abc`, `/abc/` and `/abc/def`,
        // never `/abcd` (built without the trailing slash, see `RouteTable::build`).
        PathMatch::Segments(p) => path
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.ends_with('/')),
    }
}

/// The value of the first `name` parameter of a query string (compared as sent: Gateway
/// API leaves decoding to the implementation, and a byte match cannot be fooled by a
/// second, differently encoded copy).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
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
                filters: r.filters.clone(),
                index,
                path: r.path.clone().and_then(|p| match p {
                    // Every path starts with "/": no condition at all.
                    PathMatch::Prefix(p) | PathMatch::Segments(p) if p == "/" => None,
                    PathMatch::Segments(p) => Some(PathMatch::Segments(p.trim_end_matches('/').to_string())),
                    other => Some(other),
                }),
                headers: r.headers.clone(),
                query: r.query.clone(),
                method: r.method.clone(),
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
    /// and without port (see [`normalize_host`]); `target` is the origin-form path with
    /// its query.
    pub fn find<'a>(&'a self, host: &str, method: &str, target: &str, headers: &impl Headers) -> Option<&'a Route> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let first = |bucket: &'a [Route]| bucket.iter().find(|r| r.matches(method, path, query, headers));
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
        // (bytes: `rsplit_once` with a char pattern walks UTF-8 backwards.)
        memchr::memrchr(b':', raw.as_bytes()).map_or(raw, |i| &raw[..i])
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
            path: path.map(|p| PathMatch::Prefix(p.into())),
            backend: backend.into(),
            ..RouteSpec::default()
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
        assert_eq!(t.find("a.example.com", "GET", "/admin/x", &h).unwrap().backend, 0);
        assert_eq!(t.find("a.example.com", "GET", "/", &h).unwrap().backend, 1);
        assert_eq!(t.find("x.y.example.com", "GET", "/", &h).unwrap().backend, 1);
        assert_eq!(t.find("example.com", "GET", "/", &h).unwrap().backend, 3);
    }

    #[test]
    fn exact_segment_method_header_and_query_matches() {
        let mut exact = spec(None, None, "0");
        exact.path = Some(PathMatch::Exact("/v1".into()));
        let mut segments = spec(None, None, "1");
        segments.path = Some(PathMatch::Segments("/abc/".into()));
        let mut method = spec(None, None, "2");
        method.method = Some(http::Method::POST);
        let mut both = spec(None, None, "3");
        both.headers = vec![
            (
                http::HeaderName::from_static("x-a"),
                http::HeaderValue::from_static("1"),
            ),
            (
                http::HeaderName::from_static("x-b"),
                http::HeaderValue::from_static("2"),
            ),
        ];
        let mut query = spec(None, None, "4");
        query.query = vec![("v".into(), "2".into())];
        let t = RouteTable::build(&[exact, segments, method, both, query], |b| b.parse().unwrap());
        let none = HeaderMap::new();
        let find = |m, target, h: &HeaderMap| t.find("h", m, target, h).map(|r| r.backend);
        assert_eq!(find("GET", "/v1", &none), Some(0));
        assert_eq!(find("GET", "/v1?x=1", &none), Some(0));
        assert_eq!(find("GET", "/v1/", &none), None);
        assert_eq!(find("GET", "/abc", &none), Some(1));
        assert_eq!(find("GET", "/abc/", &none), Some(1));
        assert_eq!(find("GET", "/abc/def", &none), Some(1));
        assert_eq!(find("GET", "/abcd", &none), None);
        assert_eq!(find("POST", "/x", &none), Some(2));
        let mut one = HeaderMap::new();
        one.insert("x-a", http::HeaderValue::from_static("1"));
        assert_eq!(find("GET", "/x", &one), None, "every header must match");
        one.insert("x-b", http::HeaderValue::from_static("2"));
        assert_eq!(find("GET", "/x", &one), Some(3));
        assert_eq!(find("GET", "/x?a=1&v=2", &none), Some(4));
        assert_eq!(find("GET", "/x?v=2&v=3", &none), Some(4));
        assert_eq!(find("GET", "/x?v=3&v=2", &none), None, "the first value counts");
        assert_eq!(find("GET", "/x?vv=2", &none), None);
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("Shop.Example.com:8080"), "shop.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("a.b."), "a.b");
    }
}
