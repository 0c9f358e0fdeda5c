//! What a command answers ([`Answer`]), what the transport does next ([`Reply`]) and who
//! asked ([`Peer`]): the types every command family and every transport share.

use std::net::SocketAddr;

use serde_json::json;

/// What a command printed, and whether it is an error (for `veer ctl`'s exit code and JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    /// Lines, each ending in '\n'; never an empty line (the transport adds the terminator).
    pub text: String,
}

impl Answer {
    pub fn ok(text: impl Into<String>) -> Answer {
        Answer {
            ok: true,
            text: text.into(),
        }
    }

    /// Success that prints nothing (HAProxy's convention for mutations).
    pub fn done() -> Answer {
        Answer::ok("")
    }

    pub fn err(text: impl Into<String>) -> Answer {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Answer { ok: false, text }
    }

    /// `{"ok":…,"output":…}` on one line; a success that prints nothing is `{"ok":true}`,
    /// so a client that gave up early (and read nothing) can never mistake that for success.
    pub fn to_json(&self) -> String {
        if self.ok && self.text.is_empty() {
            return json!({"ok": true}).to_string();
        }
        // An answer that is JSON itself (`show split … json`) is embedded as JSON, not as
        // a string holding it.
        match self.as_json() {
            Some(v) => json!({"ok": true, "output": v}).to_string(),
            None => json!({"ok": self.ok, "output": self.text}).to_string(),
        }
    }

    /// The answer as JSON, when it is a successful one that is a JSON object or array.
    pub fn as_json(&self) -> Option<serde_json::Value> {
        let trimmed = self.text.trim();
        let looks = trimmed.starts_with('{') || trimmed.starts_with('[');
        (self.ok && looks).then(|| serde_json::from_str(trimmed).ok()).flatten()
    }
}

/// What the transport does after a command.
#[derive(Debug)]
pub enum Reply {
    Answer(Answer),
    /// Switch the session to interactive mode.
    Prompt,
    /// Close the session.
    Quit,
    /// Stream events until the client goes away.
    Subscribe,
}

/// Who sent a command, for the audit log.
#[derive(Debug, Clone)]
pub struct Peer {
    pub via: &'static str,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub addr: Option<SocketAddr>,
}

impl Peer {
    /// Who this is, for history and notifications: `uid 1000 (alice)` on the socket, the
    /// address on HTTP.
    pub fn who(&self) -> String {
        match (self.uid, self.addr) {
            (Some(uid), _) => match user_name(uid) {
                Some(name) => format!("uid {uid} ({name})"),
                None => format!("uid {uid}"),
            },
            (None, Some(addr)) => format!("{} {addr}", self.via),
            (None, None) => self.via.to_string(),
        }
    }
}

/// The login name of `uid`, through the system's name service (getpwuid: /etc/passwd,
/// LDAP, SSSD). A name is a courtesy; the uid is the record.
fn user_name(uid: u32) -> Option<String> {
    uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
}

impl From<Result<(), String>> for Answer {
    fn from(r: Result<(), String>) -> Answer {
        match r {
            Ok(()) => Answer::done(),
            Err(e) => Answer::err(e),
        }
    }
}
