//! How the Gateway API source is read: where, which class is veer's, where listeners bind.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::Cluster;

/// The GatewayClass name veer serves by default.
pub const DEFAULT_CLASS: &str = "veer";
/// The `controllerName` a GatewayClass names veer by (domain-prefixed, as the spec asks).
pub const DEFAULT_CONTROLLER: &str = "veer.dev/gateway-controller";

/// Where the objects are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub dir: PathBuf,
    /// Every Gateway listener port binds on this address.
    pub address: IpAddr,
    /// Gateways of this class are veer's.
    pub class: String,
    /// …when the class (if defined in the directory) names this controller.
    pub controller: String,
    /// Listeners' idle timeout (the base config's `[runtime] idle_timeout`).
    pub idle_timeout: Duration,
    /// `--gateway-experimental`: also the experimental channel's kinds (TCPRoute).
    pub experimental: bool,
    /// `--gateway`: the objects come from this API server connection, not from `dir`.
    pub cluster: Option<Arc<Cluster>>,
}

impl Options {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            address: IpAddr::from([0, 0, 0, 0]),
            class: DEFAULT_CLASS.into(),
            controller: DEFAULT_CONTROLLER.into(),
            idle_timeout: crate::config::RuntimeSpec::default().idle_timeout,
            experimental: false,
            cluster: None,
        }
    }
}
