//! Gateways → veer listeners: one per port, HTTPS ones with their Secrets' certificates,
//! TLS Passthrough and TCP ones relaying bytes; the listeners routes may attach to.

use super::backends::granted;
use super::model::*;

pub(super) fn listeners<'a>(objects: &'a Objects, opts: &Options, t: &mut Translation) -> Vec<Attach<'a>> {
    let ours = |class: &str| {
        class == opts.class
            && objects
                .classes
                .iter()
                .filter(|c| c.at.name == class)
                .all(|c| c.obj.spec.controller_name == opts.controller)
    };
    for class in objects.classes.iter().filter(|c| c.at.name == opts.class) {
        if class.obj.spec.controller_name == opts.controller {
            t.status.classes.push(status_object(class));
        } else {
            t.problems.push(Problem {
                at: class.at.clone(),
                reason: "InvalidParameters",
                message: format!(
                    "names controller {:?}, not veer's {:?}: its Gateways are left alone",
                    class.obj.spec.controller_name, opts.controller
                ),
            });
        }
    }
    let mut attach = Vec::new();
    // Port → (veer listener index, the Gateway holding it, its protocol).
    let mut ports: HashMap<u16, (usize, &Origin, &str)> = HashMap::new();
    // Per veer listener: the certificates its HTTPS Gateway listeners name.
    let mut certs: HashMap<usize, Vec<PemPair>> = HashMap::new();
    for gw in objects.gateways.iter().filter(|g| ours(&g.obj.spec.gateway_class_name)) {
        let gi = t.status.gateways.len();
        t.status.gateways.push(status::GatewayStatus {
            object: status_object(gw),
            listeners: Vec::new(),
        });
        for l in &gw.obj.spec.listeners {
            let li = t.status.gateways[gi].listeners.len();
            let port = u16::try_from(l.port).ok();
            let taken = port.and_then(|p| ports.get(&p));
            let https = l.protocol == "HTTPS";
            let tls = if https {
                listener_certs(objects, gw, l)
            } else {
                Ok(Vec::new())
            };
            let passthrough = matches!(
                l.tls.as_ref().and_then(|t| t.mode.as_ref()),
                Some(GatewayListenersTlsMode::Passthrough)
            );
            let tcp = l.protocol == "TCP" && opts.experimental;
            let refused: Option<(&'static str, String)> = if !(matches!(l.protocol.as_str(), "HTTP" | "HTTPS" | "TLS")
                || tcp)
            {
                Some((
                    "UnsupportedProtocol",
                    format!(
                        "protocol {} is not supported by veer's Gateway API translation (HTTP, HTTPS, TLS Passthrough; TCP with --gateway-experimental)",
                        l.protocol
                    ),
                ))
            } else if l.protocol == "TLS" && !passthrough {
                Some((
                    "UnsupportedValue",
                    "a TLS listener must be `tls.mode: Passthrough` (veer terminates TLS on HTTPS listeners)".into(),
                ))
            } else if port.is_none() {
                Some(("Invalid", format!("port {} is out of range", l.port)))
            } else if let Some((_, holder, _)) = taken.filter(|(_, holder, _)| *holder != &gw.at) {
                let message = format!(
                    "port {} is served by {} {}/{} already",
                    l.port, holder.kind, holder.namespace, holder.name
                );
                Some(("PortUnavailable", message))
            } else if let Some((_, _, proto)) = taken.filter(|(_, _, proto)| *proto != l.protocol) {
                Some((
                    "ProtocolConflict",
                    format!("port {} is an {proto} listener of this Gateway", l.port),
                ))
            } else {
                tls.as_ref().err().cloned()
            };
            t.status.gateways[gi].listeners.push(ListenerStatus {
                name: l.name.clone(),
                attached: 0,
                verdict: refused.clone().map_or(Ok(()), Err),
            });
            let (Some(port), None, Ok(tls)) = (port, refused, tls) else {
                if let Some((reason, message)) = t.status.gateways[gi].listeners[li].verdict.clone().err() {
                    t.problems.push(Problem {
                        at: gw.at.clone(),
                        reason,
                        message: format!("listener {:?}: {message}", l.name),
                    });
                }
                continue;
            };
            let veer = match ports.get(&port) {
                Some(&(i, ..)) => i,
                None => {
                    t.listeners.push(ListenerSpec {
                        name: format!("{}:{}:{port}", gw.at.namespace, gw.at.name),
                        bind: SocketAddr::new(opts.address, port),
                        // TLS Passthrough (by the ClientHello's server name) and TCP: bytes relayed.
                        protocol: if matches!(l.protocol.as_str(), "TLS" | "TCP") {
                            Protocol::Tcp
                        } else {
                            Protocol::Http
                        },
                        routes: Vec::new(),
                        backend: None,
                        tls: None,
                        redirect_https: false,
                        hsts: None,
                        accept_proxy: false,
                        max_connections: 0,
                        max_body: 0,
                        idle_timeout: opts.idle_timeout,
                        bind_at: format!("{}:{}", gw.at.file.display(), gw.at.line),
                    });
                    ports.insert(port, (t.listeners.len() - 1, &gw.at, l.protocol.as_str()));
                    t.listeners.len() - 1
                }
            };
            if https {
                certs.entry(veer).or_default().extend(tls);
            }
            attach.push(Attach {
                gateway: gw,
                listener: l,
                veer,
                status: (gi, li),
            });
        }
    }
    // Several HTTPS listeners on one port (one per hostname, say): one TLS setting holding
    // every certificate, chosen by SNI.
    for (veer, pairs) in certs {
        match crate::config::tls::build::server_tls_from_pem(&pairs) {
            Ok(tls) => t.listeners[veer].tls = Some(tls),
            // Each pair loaded on its own already (`listener_certs`); refused anyway, the
            // port must not serve HTTPS in the clear.
            Err(e) => {
                tracing::warn!(listener = %t.listeners[veer].name, error = %e, "TLS listener left out");
                t.broken.push(t.listeners[veer].name.clone());
            }
        }
    }
    attach
}

/// An HTTPS listener's certificates from the Secrets its `certificateRefs` name (a
/// cross-namespace one needs a ReferenceGrant from Gateways). Each is loaded on its own,
/// so a bad one is named.
pub(super) fn listener_certs(
    objects: &Objects,
    gw: &Located<Gateway>,
    l: &GatewayListeners,
) -> Result<Vec<PemPair>, (&'static str, String)> {
    let tls = l.tls.as_ref();
    if matches!(
        tls.and_then(|t| t.mode.as_ref()),
        Some(GatewayListenersTlsMode::Passthrough)
    ) {
        return Err(("UnsupportedValue", "TLS Passthrough is not supported yet".into()));
    }
    let refs = tls.and_then(|t| t.certificate_refs.as_deref()).unwrap_or(&[]);
    if refs.is_empty() {
        return Err((
            "InvalidCertificateRef",
            "an HTTPS listener needs a certificateRef".into(),
        ));
    }
    let mut out = Vec::new();
    for r in refs {
        if !r.group.as_deref().unwrap_or("").is_empty() || r.kind.as_deref().unwrap_or("Secret") != "Secret" {
            return Err((
                "InvalidCertificateRef",
                format!("certificateRef {}: only Secrets are supported", r.name),
            ));
        }
        let ns = r.namespace.as_deref().unwrap_or(&gw.at.namespace);
        if ns != gw.at.namespace && !granted(objects, ("Gateway", &gw.at.namespace), (ns, "Secret", &r.name)) {
            return Err((
                "RefNotPermitted",
                format!(
                    "certificateRef to Secret {ns}/{} needs a ReferenceGrant in {ns}",
                    r.name
                ),
            ));
        }
        let Some(secret) = objects
            .secrets
            .iter()
            .find(|s| s.at.namespace == ns && s.at.name == r.name)
        else {
            return Err(("InvalidCertificateRef", format!("Secret {ns}/{} not found", r.name)));
        };
        // `data` as the API server keeps it; `stringData` as a manifest may write it.
        let o = &secret.obj;
        let field = |k: &str| {
            let data = o.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone());
            data.or_else(|| {
                o.string_data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|v| v.clone().into_bytes())
            })
        };
        let (Some(crt), Some(key)) = (field("tls.crt"), field("tls.key")) else {
            return Err((
                "InvalidCertificateRef",
                format!("Secret {ns}/{} has no tls.crt and tls.key", r.name),
            ));
        };
        let pair = (format!("secret {ns}/{}", r.name), crt, key);
        crate::config::tls::build::server_tls_from_pem(std::slice::from_ref(&pair))
            .map_err(|e| ("InvalidCertificateRef", e))?;
        out.push(pair);
    }
    Ok(out)
}

pub(super) fn status_object<K: kube::Resource>(o: &Located<K>) -> status::Object {
    status::Object {
        namespace: o.at.namespace.clone(),
        name: o.at.name.clone(),
        generation: o.obj.meta().generation,
    }
}
