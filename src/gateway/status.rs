//! What the translation found, per object, in the Gateway API's status form: GatewayClass
//! `Accepted`; Gateway `Accepted`/`Programmed` and per listener `Accepted`/`Programmed`/
//! `ResolvedRefs` with `attachedRoutes`; HTTPRoute `status.parents[]` `Accepted` and
//! `ResolvedRefs` — each with the spec's reason and `observedGeneration`. Pure data: the
//! cluster source writes it ([`super::cluster`]).

use serde_json::{json, Value};

/// `Ok`: the condition holds; `Err((reason, message))`: it does not, and why.
pub type Verdict = Result<(), (&'static str, String)>;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub classes: Vec<Object>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
}

/// Which object, at which generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayStatus {
    pub object: Object,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached: i32,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    /// `HTTPRoute`, `GRPCRoute` or `TLSRoute`.
    pub kind: &'static str,
    pub object: Object,
    pub parents: Vec<ParentStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParentStatus {
    /// The parentRef as the route wrote it.
    pub parent: Value,
    pub accepted: Verdict,
    pub resolved: Verdict,
}

/// A status subresource to write: kind, namespace (empty for a GatewayClass), name, body.
pub type Document = (&'static str, String, String, Value);

impl Status {
    /// Every object's `status`, as written to its status subresource. `now` stamps
    /// `lastTransitionTime` (RFC 3339).
    pub fn documents(&self, controller: &str, now: &str) -> Vec<Document> {
        let mut out = Vec::new();
        for c in &self.classes {
            let conditions = vec![condition("Accepted", &Ok(()), "Accepted", c.generation, now)];
            out.push((
                "GatewayClass",
                String::new(),
                c.name.clone(),
                json!({"conditions": conditions}),
            ));
        }
        for g in &self.gateways {
            let listeners: Vec<Value> = g
                .listeners
                .iter()
                .map(|l| {
                    let refs = match &l.verdict {
                        Err(("InvalidCertificateRef", m)) => Err(("InvalidCertificateRef", m.clone())),
                        _ => Ok(()),
                    };
                    json!({
                        "name": l.name,
                        "attachedRoutes": l.attached,
                        "supportedKinds": [
                            {"group": super::objects::GATEWAY_GROUP, "kind": "HTTPRoute"},
                            {"group": super::objects::GATEWAY_GROUP, "kind": "GRPCRoute"},
                        ],
                        "conditions": [
                            condition("Accepted", &l.verdict, "Accepted", g.object.generation, now),
                            condition("Programmed", &l.verdict, "Programmed", g.object.generation, now),
                            condition("ResolvedRefs", &refs, "ResolvedRefs", g.object.generation, now),
                        ],
                    })
                })
                .collect();
            // The Gateway is accepted when one listener is; programmed the same.
            let any: Verdict = if g.listeners.iter().any(|l| l.verdict.is_ok()) {
                Ok(())
            } else {
                Err(("ListenersNotValid", "no listener veer can serve".into()))
            };
            let programmed: Verdict = any
                .clone()
                .map_err(|_| ("Invalid", "no listener veer can serve".to_string()));
            out.push((
                "Gateway",
                g.object.namespace.clone(),
                g.object.name.clone(),
                json!({
                    "conditions": [
                        condition("Accepted", &any, "Accepted", g.object.generation, now),
                        condition("Programmed", &programmed, "Programmed", g.object.generation, now),
                    ],
                    "listeners": listeners,
                }),
            ));
        }
        for r in &self.routes {
            let parents: Vec<Value> = r
                .parents
                .iter()
                .map(|p| {
                    json!({
                        "parentRef": p.parent,
                        "controllerName": controller,
                        "conditions": [
                            condition("Accepted", &p.accepted, "Accepted", r.object.generation, now),
                            condition("ResolvedRefs", &p.resolved, "ResolvedRefs", r.object.generation, now),
                        ],
                    })
                })
                .collect();
            out.push((
                r.kind,
                r.object.namespace.clone(),
                r.object.name.clone(),
                json!({"parents": parents}),
            ));
        }
        out
    }
}

fn condition(kind: &str, verdict: &Verdict, ok: &str, generation: Option<i64>, now: &str) -> Value {
    let (status, reason, message) = match verdict {
        Ok(()) => ("True", ok, String::new()),
        Err((reason, message)) => ("False", *reason, message.clone()),
    };
    let mut c =
        json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now});
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}
