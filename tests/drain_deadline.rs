//! The drain deadline on tokio's paused clock: a draining server keeps its sticky clients
//! until `drain_timeout` has passed since it entered drain, then they are re-picked; it
//! never takes new clients. (Picking only: no sockets, so the paused clock is exact.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use veer::balance::{pick, Affinity, Via};
use veer::snapshot::Snapshot;
use veer::state::Registry;

fn config(blue1_state: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
[[backend]]
name = "shop"
drain_timeout = "90s"
sticky = {{ cookie = "VEER_SRV" }}
servers = [
  {{ name = "blue-1", addr = "127.0.0.1:9001", state = "{blue1_state}" }},
  {{ name = "blue-2", addr = "127.0.0.1:9002" }},
]
"#
    )
}

#[tokio::test(start_paused = true)]
async fn sticky_clients_follow_the_drain_deadline() {
    let mut registry = Registry::default();
    let build = |registry: &mut Registry, state: &str| {
        let spec = veer::config::parse(Path::new("t.toml"), &config(state)).unwrap();
        Snapshot::build(Arc::new(spec), registry, 1).0
    };
    let ready = build(&mut registry, "ready");
    let blue1 = ready.backend("shop").unwrap().groups[0].servers[0].sticky_id;
    let sticky = Affinity {
        sticky: Some(blue1),
        ..Affinity::default()
    };

    // Entering drain starts the clock; a later rebuild (any reload) keeps the deadline.
    let draining = build(&mut registry, "drain");
    tokio::time::advance(Duration::from_secs(60)).await;
    let draining = {
        drop(draining);
        build(&mut registry, "drain")
    };
    let b = draining.backend("shop").unwrap();
    let (s, via) = pick(b, &sticky, &[]).unwrap();
    assert_eq!((&*s.name, via), ("blue-1", Via::Sticky));
    for _ in 0..10 {
        assert_eq!(
            &*pick(b, &Affinity::default(), &[]).unwrap().0.name,
            "blue-2",
            "new client on a draining server"
        );
    }

    tokio::time::advance(Duration::from_secs(31)).await;
    let (s, via) = pick(b, &sticky, &[]).unwrap();
    assert_eq!(
        (&*s.name, via),
        ("blue-2", Via::Balance),
        "sticky honoured past the drain deadline"
    );

    // Back to ready: stickiness to blue-1 works again, and a new drain starts a new clock.
    let ready = build(&mut registry, "ready");
    assert_eq!(
        pick(ready.backend("shop").unwrap(), &sticky, &[]).unwrap().1,
        Via::Sticky
    );
    let draining = build(&mut registry, "drain");
    assert_eq!(
        pick(draining.backend("shop").unwrap(), &sticky, &[]).unwrap().1,
        Via::Sticky
    );
}
