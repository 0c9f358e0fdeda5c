//! Hot reload under load: the config file is rewritten (write-then-rename, in place, and a
//! Kubernetes-style `..data` symlink swap) while clients run keep-alive requests → zero
//! failed requests, and requests after the reload follow the new table. An invalid config
//! is rejected with its location and the old table keeps serving. Listeners come and go
//! without disturbing the others; a bind failure rejects the whole reload.

mod support;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use veer::Veer;

fn config(server: &FakeBackend) -> String {
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
servers = [ {{ name = "{}", addr = "{}" }} ]
"#,
        server.name, server.addr
    )
}

/// Keep-alive clients hammering `url` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop, ok) = (url.clone(), stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match get(&c, &url, &[]).await {
                            Ok(a) if a.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    async fn wait_for(&self, n: usize) {
        while self.ok.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the clients; returns (successful requests, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting for {what}");
}

#[derive(Clone, Copy, Debug)]
enum Rewrite {
    Rename,
    InPlace,
    SymlinkSwap,
}

fn rewrite(path: &Path, contents: &str, how: Rewrite, step: usize) {
    let dir = path.parent().unwrap();
    match how {
        Rewrite::Rename => {
            let tmp = dir.join(".veer.toml.tmp");
            std::fs::write(&tmp, contents).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        Rewrite::InPlace => std::fs::write(path, contents).unwrap(),
        Rewrite::SymlinkSwap => {
            // What the kubelet does: a new timestamped dir, a temp symlink to it, and an
            // atomic rename of that symlink over `..data`.
            let version = dir.join(format!("..v{step}"));
            std::fs::create_dir(&version).unwrap();
            std::fs::write(version.join("veer.toml"), contents).unwrap();
            let tmp = dir.join("..data_tmp");
            std::os::unix::fs::symlink(format!("..v{step}"), &tmp).unwrap();
            std::fs::rename(&tmp, dir.join("..data")).unwrap();
        }
    }
}

/// Starts veer on a config laid out as `how` expects (a symlinked one for the swap).
async fn start(contents: &str, how: Rewrite) -> (Veer, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veer.toml");
    match how {
        Rewrite::SymlinkSwap => {
            rewrite(&path, contents, how, 0);
            std::os::unix::fs::symlink("..data/veer.toml", &path).unwrap();
        }
        _ => std::fs::write(&path, contents).unwrap(),
    }
    let veer = Veer::start(&path).await.unwrap();
    veer.spawn_watcher().unwrap();
    (veer, dir, path)
}

async fn reload_under_load(how: Rewrite) {
    let (old, new) = (FakeBackend::start("old").await, FakeBackend::start("new").await);
    let (veer, _dir, path) = start(&config(&old), how).await;
    let url = format!("http://{}", veer.listener_addr("web").await.unwrap());
    let load = Load::start(url.clone(), 4);
    load.wait_for(1000).await;

    let generation = veer.snapshot().generation;
    rewrite(&path, &config(&new), how, 1);
    wait_until("the reload", || veer.snapshot().generation > generation).await;
    let at_reload = load.ok.load(Ordering::Relaxed);
    load.wait_for(at_reload + 1000).await;
    let (ok, failures) = load.finish().await;

    assert!(
        failures.is_empty(),
        "{how:?}: {} failed requests, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(ok >= 2000, "{how:?}: only {ok} requests");
    // Requests issued after the swap follow the new table.
    let counts = tally(&client(), &url, 100).await;
    assert_eq!(counts.get("new"), Some(&100), "{how:?}: {counts:?}");
    assert!(old.hits() > 0 && new.hits() >= 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_rename_under_load() {
    reload_under_load(Rewrite::Rename).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_in_place_write_under_load() {
    reload_under_load(Rewrite::InPlace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_kubernetes_symlink_swap_under_load() {
    reload_under_load(Rewrite::SymlinkSwap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_keeps_the_old_table_under_load() {
    let old = FakeBackend::start("old").await;
    let (veer, _dir, path) = start(&config(&old), Rewrite::Rename).await;
    let url = format!("http://{}", veer.listener_addr("web").await.unwrap());
    let load = Load::start(url.clone(), 4);
    load.wait_for(1000).await;

    let generation = veer.snapshot().generation;
    let broken = config(&old).replace("name = \"shop\"", "name = \"shop\"\nbalance = \"fastest\"");
    rewrite(&path, &broken, Rewrite::Rename, 1);
    wait_until("the rejected reload", || veer.stats.failed.load(Ordering::Relaxed) > 0).await;
    let at_reject = load.ok.load(Ordering::Relaxed);
    load.wait_for(at_reject + 1000).await;
    let (ok, failures) = load.finish().await;

    assert!(
        failures.is_empty(),
        "{} failed requests, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(ok >= 2000);
    assert_eq!(
        veer.snapshot().generation,
        generation,
        "the invalid config must not be applied"
    );
    let report = veer.last_reload().expect("a reload was attempted");
    let error = report.result.expect_err("the reload failed");
    assert!(error.contains("veer.toml:11:11: unknown variant `fastest`"), "{error}");
    assert_eq!(tally(&client(), &url, 10).await.get("old"), Some(&10));
}

fn two_listeners(server: &FakeBackend, second: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
  [[listener.route]]
  backend = "shop"
{second}
[[backend]]
name = "shop"
servers = [ {{ name = "s", addr = "{}" }} ]
"#,
        server.addr
    )
}

#[tokio::test]
async fn listeners_are_added_and_removed_without_disturbing_others() {
    let s = FakeBackend::start("s").await;
    let proxy = Proxy::start(&two_listeners(&s, "")).await;
    let web = proxy.url("web").await;
    let c = client();
    assert_eq!(get(&c, &web, &[]).await.unwrap().status, 200);

    let extra = "[[listener]]\nname = \"raw\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nbackend = \"shop\"\n";
    std::fs::write(&proxy.path, two_listeners(&s, extra)).unwrap();
    assert!(matches!(
        proxy.veer.reload().await,
        Ok(veer::ReloadOutcome::Applied { .. })
    ));
    let raw = proxy.addr("raw").await;
    // The tcp listener forwards to the same HTTP server.
    assert_eq!(
        get(&client(), &format!("http://{raw}/"), &[]).await.unwrap().server(),
        "s"
    );
    // The kept listener's socket is the same one: the kept-alive connection still works.
    assert_eq!(proxy.url("web").await, web);
    assert_eq!(get(&c, &web, &[]).await.unwrap().status, 200);

    std::fs::write(&proxy.path, two_listeners(&s, "")).unwrap();
    proxy.veer.reload().await.unwrap();
    assert!(proxy.veer.listener_addr("raw").await.is_none());
    assert!(
        tokio::net::TcpStream::connect(raw).await.is_err(),
        "removed listener still accepts"
    );
    assert_eq!(get(&c, &web, &[]).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_bind_failure_rejects_the_whole_reload() {
    let (a, b) = (FakeBackend::start("a").await, FakeBackend::start("b").await);
    let proxy = Proxy::start(&two_listeners(&a, "")).await;
    let web = proxy.url("web").await;
    let generation = proxy.veer.snapshot().generation;
    // A new listener on an address that is taken, plus a server change.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let extra = format!(
        "[[listener]]\nname = \"busy\"\nbind = \"{}\"\nprotocol = \"tcp\"\nbackend = \"shop\"\n",
        taken.local_addr().unwrap()
    );
    std::fs::write(&proxy.path, two_listeners(&b, &extra)).unwrap();
    let err = proxy.veer.reload().await.unwrap_err();
    assert!(err.to_string().contains("listener \"busy\" cannot bind"), "{err}");
    assert_eq!(proxy.veer.snapshot().generation, generation);
    assert_eq!(get(&client(), &web, &[]).await.unwrap().server(), "a");
    assert_eq!(a.hits(), 1);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn server_state_survives_reload() {
    let s = FakeBackend::start("s").await;
    let proxy = Proxy::start(&config(&s)).await;
    let c = client();
    for _ in 0..5 {
        get(&c, &proxy.url("web").await, &[]).await.unwrap();
    }
    let state_before = proxy.veer.snapshot().backend("shop").unwrap().groups[0].servers[0]
        .state
        .clone();
    std::fs::write(
        &proxy.path,
        config(&s).replace("[[backend]]", "[[backend]]\nretries = 1"),
    )
    .unwrap();
    proxy.veer.reload().await.unwrap();
    let snap = proxy.veer.snapshot();
    let after = &snap.backend("shop").unwrap().groups[0].servers[0];
    assert!(
        Arc::ptr_eq(&state_before, &after.state),
        "reload replaced the server's runtime state"
    );
    assert_eq!(after.state.total.load(Ordering::Relaxed), 5);
}
