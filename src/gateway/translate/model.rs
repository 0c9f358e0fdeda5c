//! What the translation is made of: its result, the listeners routes attach to, the
//! routes' precedence, and the names every part shares (the crates' types among them).

pub(super) use std::cmp::Reverse;
pub(super) use std::collections::{BTreeMap, HashMap};
pub(super) use std::net::{IpAddr, SocketAddr};
pub(super) use std::sync::Arc;
pub(super) use std::time::Duration;

pub(super) use gateway_api::experimental::tcproutes::TcpRoute;
pub(super) use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From, GatewayListenersTlsMode,
};
pub(super) use gateway_api::grpcroutes::GrpcRoute;
pub(super) use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
};
pub(super) use gateway_api::tlsroutes::TlsRoute;
pub(super) use k8s_openapi::api::core::v1::{Service, ServicePort};
pub(super) use k8s_openapi::api::discovery::v1::EndpointSlice;

pub(super) use crate::config::tls::build::PemPair;
pub(super) use crate::config::{
    AdminState, BackendSpec, GroupSpec, HeaderEdits, ListenerSpec, MirrorSpec, Numbering, PathMatch, PathRewrite,
    Protocol, Redirect, Rewrite, RouteFilters, RouteSpec, ServerSpec,
};
pub(super) use crate::gateway::objects::{Located, Objects, Origin, Problem, GATEWAY_GROUP};
pub(super) use crate::gateway::options::Options;
pub(super) use crate::gateway::status::{self, ListenerStatus, ParentStatus, RouteStatus, Status, Verdict};

/// The label an EndpointSlice names its Service by.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// An HTTPRoute annotation naming the cookie that makes its rules' backends sticky.
pub const STICKY_ANNOTATION: &str = "veer.dev/sticky-cookie";
/// veer's group weights run 0..=1000; Gateway API's 0..=1,000,000 are scaled into them.
pub(super) const MAX_GROUP_WEIGHT: u64 = 1000;

/// What the directory (or cluster) translates into.
#[derive(Debug, Default)]
pub struct Translation {
    pub listeners: Vec<ListenerSpec>,
    pub backends: Vec<BackendSpec>,
    pub problems: Vec<Problem>,
    /// The conditions to report on each object veer serves.
    pub status: Status,
    /// Identifies the objects translated ([`crate::gateway::objects::Objects::digest`]).
    pub digest: u64,
    /// Listeners whose TLS could not be built: left out once routes are placed.
    pub(super) broken: Vec<String>,
}

/// One Gateway listener routes may attach to.
pub(super) struct Attach<'a> {
    pub(super) gateway: &'a Located<Gateway>,
    pub(super) listener: &'a GatewayListeners,
    /// Index into `Translation::listeners` of the veer listener serving its port.
    pub(super) veer: usize,
    /// (gateway, listener) in `Translation::status.gateways`: routes attached are counted.
    pub(super) status: (usize, usize),
}

/// A route before ordering: its place in the spec's precedence and what it becomes.
pub(super) struct Ranked {
    pub(super) key: Precedence,
    pub(super) spec: RouteSpec,
}

/// The HTTPRoute precedence, compared field by field (smaller first): the most specific
/// hostname, then the match itself ([`MatchRank`]), then the oldest route, then by
/// `namespace/name`, then rule and match order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Precedence {
    /// Exact host 0, wildcard 1 (longer first), none 2.
    pub(super) host: (u8, Reverse<usize>),
    pub(super) rank: MatchRank,
    pub(super) created: Option<k8s_openapi::jiff::Timestamp>,
    pub(super) name: String,
    pub(super) rule: usize,
    pub(super) matched: usize,
}

/// Within a hostname: an exact path before a prefix, a longer prefix first, then a method
/// match, then more header matches, then more query matches.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone)]
pub(super) struct MatchRank {
    pub(super) path: (u8, Reverse<usize>),
    pub(super) no_method: bool,
    pub(super) headers: Reverse<usize>,
    pub(super) query: Reverse<usize>,
}
