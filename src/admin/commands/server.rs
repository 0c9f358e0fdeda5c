//! Server commands: state, weight and address changes (HAProxy's `set server`, `set
//! weight`, `enable`/`disable`), adding and deleting servers, closing their sessions. Each
//! edits the overlay through [`Veer::mutate`]; HAProxy's exact answers and errors.

use std::net::{IpAddr, SocketAddr};

use super::answer::Answer;
use super::lookup::{active, backend_index, live_server, locate, mutate_server};
use crate::config::AdminState;
use crate::control::overlay::AddedServer;
use crate::control::Veer;

pub async fn set_state(veer: &Veer, target: Option<&str>, state: AdminState) -> Answer {
    mutate_server(veer, target, move |o, at| {
        o.server_mut(&at.id).state = Some(state);
        Ok(())
    })
    .await
}

/// HAProxy's weight parser: `<n>` absolute (0..=256) or `<n>%` of the initial weight,
/// with its exact error strings.
pub fn parse_weight(input: Option<&str>, initial: u32) -> Result<u32, &'static str> {
    let input = input.unwrap_or("");
    if input.is_empty() {
        return Err("Require <weight> or <weight%>.");
    }
    let sign_len = input.starts_with(['-', '+']) as usize;
    let digits = input[sign_len..].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("Empty weight string empty or preceded by garbage");
    }
    let (number, rest) = input.split_at(sign_len + digits);
    // strtol saturates; so does this.
    let w: i64 = number
        .parse()
        .unwrap_or(if number.starts_with('-') { i64::MIN } else { i64::MAX });
    if rest == "%" {
        if w < 0 {
            return Err("Relative weight must be positive.");
        }
        return Ok((initial as i64 * w.min(25_600) / 100).min(256) as u32);
    }
    if !(0..=256).contains(&w) {
        return Err("Absolute weight can only be between 0 and 256 inclusive.");
    }
    if !rest.is_empty() {
        return Err("Trailing garbage in weight string");
    }
    Ok(w as u32)
}

pub async fn set_weight(veer: &Veer, target: Option<&str>, weight: Option<&str>) -> Answer {
    let weight = weight.map(str::to_owned);
    let target = target.map(str::to_owned);
    let result = veer
        .mutate(move |spec, o| {
            let at = locate(spec, target.as_deref())?;
            let w = parse_weight(weight.as_deref(), at.server.initial_weight)?;
            o.server_mut(&at.id).weight = Some(w);
            Ok(())
        })
        .await;
    result.into()
}

pub async fn set_server(veer: &Veer, args: &[&str]) -> Answer {
    const USAGE: &str = "'set server <srv>' only supports 'agent', 'health', 'state', 'weight', 'addr', 'fqdn', \
                         'check-addr', 'check-port', 'agent-addr', 'agent-port', 'agent-send' and 'ssl'.";
    let target = args.first().copied();
    match args.get(1..).unwrap_or(&[]) {
        ["state", rest @ ..] => {
            let Some(state) = (match rest {
                [s] => AdminState::parse(s),
                _ => None,
            }) else {
                // The server is looked up first, as HAProxy does.
                if let Err(e) = locate(&veer.snapshot().spec, target) {
                    return Answer::err(e);
                }
                return Answer::err("'set server <srv> state' expects 'ready', 'drain' and 'maint'.");
            };
            set_state(veer, target, state).await
        }
        ["weight", w] => set_weight(veer, target, Some(w)).await,
        ["weight"] => set_weight(veer, target, None).await,
        ["addr", rest @ ..] => {
            let parsed = parse_addr_change(rest);
            let target = target.map(str::to_owned);
            let changed = veer
                .mutate(move |spec, o| {
                    let at = locate(spec, target.as_deref())?;
                    let (ip, port) = parsed?;
                    let old = at.server.addr;
                    // Without `port`, the server keeps its port.
                    o.server_mut(&at.id).addr = Some(SocketAddr::new(ip, port.unwrap_or(old.port())));
                    Ok(addr_changed(old, ip, port))
                })
                .await;
            match changed {
                Ok(message) => Answer::ok(message),
                Err(e) => Answer::err(e),
            }
        }
        // Forces the checks' verdict, as HAProxy does; the next checks carry on from it
        // (`rise` passes to come back, `fall` failures to go). Not persisted: health is
        // what the checks find, not configuration.
        ["health", rest @ ..] => match rest {
            [verdict @ ("up" | "down" | "stopping")] => {
                let snap = veer.snapshot();
                match locate(&snap.spec, target).and_then(|at| live_server(&snap, &at.id)) {
                    Ok(server) => {
                        server.state.check.force(*verdict != "up");
                        server
                            .state
                            .last_change
                            .store(crate::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
                        Answer::done()
                    }
                    Err(e) => Answer::err(e),
                }
            }
            _ => Answer::err("'set server <srv> health' expects 'up', 'stopping', or 'down'."),
        },
        ["agent", ..] => mutate_server(veer, target, |_, _| Ok(())).await,
        _ => match locate(&veer.snapshot().spec, target) {
            Err(e) => Answer::err(e),
            Ok(_) => Answer::err(USAGE),
        },
    }
}

/// HAProxy's answer to `set server … addr`: what changed, by whom
/// (tests/fixtures/haproxy-2.6/set_server_addr.txt).
fn addr_changed(old: SocketAddr, ip: IpAddr, port: Option<u16>) -> String {
    let mut m = if old.ip() == ip {
        "no need to change the addr".to_string()
    } else {
        format!("IP changed from '{}' to '{ip}'", old.ip())
    };
    match port {
        Some(p) if p == old.port() => m.push_str(", no need to change the port"),
        Some(p) => m.push_str(&format!(", port changed from '{}' to '{p}'", old.port())),
        None => {}
    }
    m + " by 'stats socket command'\n"
}

/// `addr <ip> [port <port>]`.
pub fn parse_addr_change(rest: &[&str]) -> Result<(IpAddr, Option<u16>), String> {
    let ip: IpAddr = match rest.first() {
        Some(ip) => ip
            .parse()
            .map_err(|_| format!("Invalid addr '{ip}' by 'stats socket command'"))?,
        None => return Err("Require <addr>.".into()),
    };
    match rest.get(1..).unwrap_or(&[]) {
        [] => Ok((ip, None)),
        // HAProxy applies the address and then reports the port; veer changes nothing.
        ["port", p] => match p.parse::<u16>() {
            Ok(p) if p > 0 => Ok((ip, Some(p))),
            _ => Err(format!(
                "problem converting port '{p}' to an int by 'stats socket command'"
            )),
        },
        _ => Err("'set server <srv> addr' expects <addr> [port <port>].".into()),
    }
}

pub async fn add_server(veer: &Veer, args: &[&str]) -> Answer {
    let Some(target) = args.first().copied() else {
        return Answer::err("Require 'backend/server'.");
    };
    let Some((b, s)) = target.split_once('/') else {
        return Answer::err("Require 'backend/server'.");
    };
    let (b, s) = (b.to_string(), s.to_string());
    let rest: Vec<String> = args[1..].iter().map(|x| x.to_string()).collect();
    let result = veer
        .mutate(move |spec, o| {
            let bi = backend_index(spec, &b).ok_or("No such backend.")?;
            let backend = &spec.backends[bi];
            let Some(addr) = rest.first() else {
                return Err("'server' expects <name> and <addr>[:<port>] as arguments.".into());
            };
            if backend.servers().any(|x| x.name == s) {
                return Err("Already exists a server with the same name in backend.".into());
            }
            if s.is_empty() {
                return Err("Require 'backend/server'.".into());
            }
            if let Some(ch) = crate::config::invalid_char(&s) {
                return Err(format!("character '{ch}' is not permitted in server name '{s}'."));
            }
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("Invalid address '{addr}': expected <ip>:<port>."))?;
            let (mut weight, mut group) = (1, backend.groups.first().map(|g| g.name.clone()));
            let mut sid = 0;
            let mut kw = rest[1..].iter();
            while let Some(k) = kw.next() {
                match (k.as_str(), kw.next()) {
                    ("weight", Some(w)) => weight = parse_weight(Some(w), 1)?,
                    // HAProxy's words; it also says where the holder is defined, veer does not.
                    ("id", Some(n)) => {
                        sid = n
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0 && *n <= i32::MAX as u32)
                            .ok_or("'id' : custom id has to be > 0.")?;
                        if let Some(other) = backend.servers().find(|x| x.id == sid) {
                            return Err(format!(
                                "'id' : custom id {sid} already used ('server {}').",
                                other.name
                            ));
                        }
                    }
                    ("id", None) => return Err("'id' : expects an integer argument.".into()),
                    ("group", Some(g)) => {
                        if !backend.groups.iter().any(|x| x.name == *g) {
                            return Err(format!("No such group '{g}' in backend '{}'.", backend.name));
                        }
                        group = Some(g.clone());
                    }
                    (k @ ("weight" | "group"), None) => return Err(format!("'{k}' expects an argument.")),
                    (k, _) => return Err(format!("unknown keyword '{k}'.")),
                }
            }
            let group = group.ok_or("No such group.")?;
            let id = format!("{}/{s}", backend.name);
            if o.deleted.remove(&id) {
                // A config server deleted earlier comes back: it keeps its config group.
                let change = o.server_mut(&id);
                change.state = Some(AdminState::Maint);
                change.weight = Some(weight);
                change.addr = Some(addr);
            } else {
                o.servers.remove(&id);
                o.added.insert(
                    id,
                    AddedServer {
                        group,
                        addr,
                        weight,
                        id: sid,
                    },
                );
            }
            Ok(())
        })
        .await;
    match result {
        Ok(()) => Answer::ok("New server registered.\n"),
        Err(e) => Answer::err(e),
    }
}

pub async fn del_server(veer: &Veer, target: Option<&str>) -> Answer {
    let snap = veer.snapshot();
    let target = target.map(str::to_owned);
    let result = veer
        .mutate(move |spec, o| {
            let at = locate(spec, target.as_deref())?;
            if at.server.state != AdminState::Maint {
                return Err("Only servers in maintenance mode can be deleted.".into());
            }
            if live_server(&snap, &at.id).is_ok_and(|s| active(&s) > 0) {
                return Err("Server still has connections attached to it, cannot remove it.".into());
            }
            o.servers.remove(&at.id);
            if o.added.remove(&at.id).is_none() {
                o.deleted.insert(at.id);
            }
            Ok(())
        })
        .await;
    match result {
        Ok(()) => Answer::ok("Server deleted.\n"),
        Err(e) => Answer::err(e),
    }
}

/// `enable|disable health|agent <bk>/<srv>`: recorded in the overlay (veer has no active
/// checks yet, so this changes no routing).
pub async fn toggle_check(veer: &Veer, target: Option<&str>, health: bool, off: bool) -> Answer {
    mutate_server(veer, target, move |o, at| {
        let change = o.server_mut(&at.id);
        if health {
            change.health_disabled = off.then_some(true);
        } else {
            change.agent_disabled = off.then_some(true);
        }
        Ok(())
    })
    .await
}

/// `shutdown sessions server <bk>/<srv>`: cuts its sessions and closes its idle pooled
/// connections.
pub fn shutdown_sessions(veer: &Veer, target: Option<&str>) -> Answer {
    let snap = veer.snapshot();
    match locate(&snap.spec, target).and_then(|at| live_server(&snap, &at.id)) {
        Ok(server) => {
            server.state.shutdown_sessions();
            server.pool.close_idle();
            Answer::done()
        }
        Err(e) => Answer::err(e),
    }
}

/// `get weight <bk>/<srv>`.
pub fn get_weight(veer: &Veer, target: Option<&str>) -> Answer {
    let snap = veer.snapshot();
    match locate(&snap.spec, target) {
        Ok(at) => Answer::ok(format!("{} (initial {})\n", at.server.weight, at.server.initial_weight)),
        Err(e) => Answer::err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_weight;

    #[test]
    fn weights_parse_like_haproxy() {
        assert_eq!(parse_weight(Some("10"), 1), Ok(10));
        assert_eq!(parse_weight(Some("50%"), 4), Ok(2));
        assert_eq!(parse_weight(Some("1000%"), 100), Ok(256));
        assert_eq!(
            parse_weight(Some("abc"), 1),
            Err("Empty weight string empty or preceded by garbage")
        );
        assert_eq!(
            parse_weight(Some("-1"), 1),
            Err("Absolute weight can only be between 0 and 256 inclusive.")
        );
        assert_eq!(
            parse_weight(Some("257"), 1),
            Err("Absolute weight can only be between 0 and 256 inclusive.")
        );
        assert_eq!(
            parse_weight(Some("99999999999999999999"), 1),
            Err("Absolute weight can only be between 0 and 256 inclusive.")
        );
        assert_eq!(parse_weight(Some("12x"), 1), Err("Trailing garbage in weight string"));
        assert_eq!(parse_weight(Some("-5%"), 1), Err("Relative weight must be positive."));
        assert_eq!(parse_weight(None, 1), Err("Require <weight> or <weight%>."));
    }
}
