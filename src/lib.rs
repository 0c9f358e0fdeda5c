//! veer: an L4/L7 load balancer and traffic shifter for zero-downtime deploys.
//!
//! The house has seven floors; a module imports only from its own floor or below, and no
//! modules import each other in a loop (`tests/architecture.rs` checks both against the
//! same table):
//!
//! ```text
//! 7 assembly           runtime     builds a running veer and wires it: control plane + admin endpoints, signals, systemd
//!                      demo        `veer demo`: built-in blue/green upstreams
//! 6 admin plane        admin/      HAProxy-compatible socket, HTTP admin, `veer ctl`; commands and their output formats
//! 5 control plane      control/    the one serialized change procedure (config ⊕ overlay → snapshot → swap,
//!                                  listener reconciliation), drain and stop, the overlay and state file, events
//! 4 data plane         proxy/      the data paths: HTTP/1 engine (h1/), HTTP/2 (hyper), TCP; header rewriting
//!                      upstream    connecting, the hyper client exchange (mirroring), response-body accounting
//!                      listeners   sockets (socket2) and accept loops, reconciled on reload
//!                      health      active checks: one loop per checked server, results into its atomics
//!                      scrape      the /metrics page, read from the recorder and the live atomics
//! 3 model              snapshot    the immutable routing state: listeners' route tables, backends, groups, servers
//!                      routing     host / path / method / header / query matching, first match wins
//!                      balance/    group split, then round robin / least request / random inside the group
//!                      state/      per-server atomics and keep-alive pools, carried across snapshots
//! 2 telemetry handles  metrics     Prometheus names, the recorder, the handles snapshots carry
//!                      access_log  one line per request, written off the data path, dropped (and counted) when stalled
//! 1 base               config/     TOML → validated Spec (file:line:col errors), TLS files and rustls configs, file watch
//!                      gateway/    Gateway API objects (a --gateway-dir of manifests) → listeners and backends of a Spec
//!                      error       the one error type of a proxied exchange, its status and reason
//!                      clock       the millisecond clock the atomics use
//!                      lifecycle   binary upgrade: listening sockets handed to a new process (SCM_RIGHTS)
//!                      proxy_header  the PROXY protocol v1/v2: parse a client's, build the one sent upstream
//!                      ratelimit   one warning line per second per kind on the data path
//!                      stream      a connection, plain TCP or TLS: readiness waits, non-blocking reads, flushed sends
//! ```
//!
//! The rule that ties it together (design §2): everything routing reads lives in one
//! [`snapshot::Snapshot`]; a request loads it once and is routed entirely by it.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod health;
pub mod lifecycle;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod proxy_header;
pub mod ratelimit;
pub mod routing;
pub mod runtime;
pub mod scrape;
pub mod snapshot;
pub mod state;
pub mod stream;
pub mod upstream;

pub use control::{ReloadError, ReloadOutcome, Source, Veer};
pub use runtime::{run, wait_for_stop_signal};
