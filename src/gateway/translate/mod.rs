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
//!
//! Here: the shared types, the precedence, and the order of the work; the Gateways in
//! [`gateways`], the routes in [`routes`] (the other kinds through [`kinds`]), their
//! filters in [`filters`], and what they point at in [`backends`].

mod backends;
mod filters;
mod gateways;
mod kinds;
mod model;
mod routes;

use gateways::listeners;
use kinds::{as_http, as_http_route};
use model::*;
pub use model::{Translation, STICKY_ANNOTATION};
use routes::http_route;

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
