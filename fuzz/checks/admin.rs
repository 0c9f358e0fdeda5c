//! Invariant of the admin command line on any text, executed against a running veer (a
//! listener, a backend of two groups and four servers, every runtime change persisted): a
//! reply, never a panic, and a command that answers with an error changes nothing — the
//! snapshot, the overlay of runtime changes, the split and the servers' state are what
//! they were. Each `;`-separated command is executed as the socket executes it.

use std::sync::OnceLock;

use veer::admin::commands::{execute, Peer, Reply};
use veer::admin::socket::split_commands;
use veer::Veer;

struct Bed {
    rt: tokio::runtime::Runtime,
    veer: Veer,
    _dir: tempfile::TempDir,
}

fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("veer.toml");
        std::fs::write(
            &config,
            format!(
                r#"[admin]
state_file = "{}/state.json"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "app"

[[backend]]
name = "app"
sticky = {{ cookie = "SRV" }}
groups = [
  {{ name = "blue", weight = 100, servers = [ {{ name = "b1", addr = "127.0.0.1:9" }}, {{ name = "b2", addr = "127.0.0.1:9" }} ] }},
  {{ name = "green", weight = 0, servers = [ {{ name = "g1", addr = "127.0.0.1:9" }}, {{ name = "g2", addr = "127.0.0.1:9" }} ] }},
]
"#,
                dir.path().display()
            ),
        )
        .expect("config");
        // A paused clock: `wait 1h …` or a rollout's steps take no real time.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let veer = rt.block_on(Veer::start(config)).expect("veer starts");
        Bed { rt, veer, _dir: dir }
    })
}

async fn say(veer: &Veer, command: &str) -> Option<(bool, String)> {
    let peer = Peer {
        via: "fuzz",
        uid: None,
        pid: None,
        addr: None,
    };
    match execute(veer, command, &peer).await {
        Reply::Answer(a) => Some((a.ok, a.text)),
        Reply::Prompt | Reply::Quit | Reply::Subscribe => None,
    }
}

/// What a failed command must leave as it was.
async fn state(veer: &Veer) -> (u64, Vec<String>) {
    let mut out = vec![];
    for line in ["show overlay", "show split app", "show backend"] {
        out.push(say(veer, line).await.map(|(_, t)| t).unwrap_or_default());
    }
    // `show servers state` without its timer column (seconds since the last change).
    let servers = say(veer, "show servers state")
        .await
        .map(|(_, t)| t)
        .unwrap_or_default();
    for row in servers.lines() {
        let f: Vec<&str> = row.split_whitespace().collect();
        out.push(
            f.iter()
                .enumerate()
                .filter(|(i, _)| *i != 9)
                .map(|(_, w)| *w)
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    (veer.snapshot().generation, out)
}

pub fn check(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if line.len() > 4096 || line.contains('\n') {
        return; // the socket reads one line of at most MAX_LINE bytes
    }
    let bed = bed();
    bed.rt.block_on(async {
        for command in split_commands(line) {
            let before = state(&bed.veer).await;
            let Some((ok, text)) = say(&bed.veer, &command).await else {
                continue;
            };
            if !ok {
                let after = state(&bed.veer).await;
                assert_eq!(before, after, "{command:?} failed ({text:?}) and changed the state");
            }
        }
    });
}
