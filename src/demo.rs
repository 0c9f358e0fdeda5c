//! `veer demo`: two built-in upstreams, "blue" and "green", each answering with its name and
//! colour, and veer in front of them with config/demo.toml (embedded in the binary, written
//! to a temp dir so the user can edit it and watch traffic shift). With `--tls`, also an
//! https listener whose certificate (for localhost) is made on the spot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The demo upstreams: name, colour (ANSI), and the address config/demo.toml names (the
/// demo binds them on free ports and writes those into its copy).
pub const UPSTREAMS: [(&str, &str, &str); 2] = [
    ("blue", "\x1b[34m", "127.0.0.1:9001"),
    ("green", "\x1b[32m", "127.0.0.1:9002"),
];

/// Where the demo listens; `veer demo --help` shows the defaults.
pub struct Options {
    pub tls: bool,
    /// The proxy's HTTP listener (config/demo.toml says 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// The admin HTTP listener and status page (127.0.0.1:9901).
    pub admin_http: SocketAddr,
    /// The admin socket; the editable config is written next to it.
    pub socket: PathBuf,
    /// The https listener with `tls` (127.0.0.1:8443).
    pub tls_listen: SocketAddr,
}

/// The default admin socket of the demo: `<temp dir>/veer-demo/admin.sock`.
pub fn default_socket() -> PathBuf {
    std::env::temp_dir().join("veer-demo").join("admin.sock")
}

/// config/demo.toml with the addresses and paths of `opts` and the upstreams.
fn render(opts: &Options, upstreams: &[(&str, SocketAddr)]) -> Result<String, String> {
    let mut config = DEMO_CONFIG.to_string();
    let mut swap = |from: &str, to: String| {
        if !config.contains(from) {
            return Err(format!("config/demo.toml no longer says {from}"));
        }
        config = config.replace(from, &to);
        Ok(())
    };
    swap(
        "\"/tmp/veer-demo/admin.sock\"",
        format!("{:?}", opts.socket.display().to_string()),
    )?;
    swap("\"127.0.0.1:9901\"", format!("\"{}\"", opts.admin_http))?;
    swap("\"127.0.0.1:8080\"", format!("\"{}\"", opts.listen))?;
    for ((_, _, configured), (_, actual)) in UPSTREAMS.iter().zip(upstreams) {
        swap(&format!("\"{configured}\""), format!("\"{actual}\""))?;
    }
    if opts.tls {
        config.push_str(&TLS_LISTENER.replace("127.0.0.1:8443", &opts.tls_listen.to_string()));
    }
    Ok(config)
}

/// Serves a tiny HTTP upstream that answers every request with `name` in `colour`.
pub async fn upstream(listener: TcpListener, name: &'static str, colour: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                let body = format!(
                    "{colour}{name}\x1b[0m: hello from the {name} version (path {})\n",
                    req.uri().path()
                );
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "text/plain; charset=utf-8")
                        .header("x-demo-version", name)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default(),
                )
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The https listener `--tls` adds, serving the same routes.
const TLS_LISTENER: &str = r#"
# Added by `veer demo --tls`: https with a certificate made for localhost (demo.pem).
[[listener]]
name = "web-tls"
bind = "127.0.0.1:8443"
protocol = "http"
hsts = "max-age=300"
  [listener.tls]
  certs = [ { cert = "demo.pem", key = "demo.key" } ]
  [[listener.route]]
  path_prefix = "/"
  backend = "app"
"#;

/// A self-signed certificate for localhost and 127.0.0.1, written next to the config.
fn make_certificate(dir: &std::path::Path) -> Result<(), String> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    write("demo.pem", cert.cert.pem())?;
    write("demo.key", cert.signing_key.serialize_pem())
}

/// Runs the demo until Ctrl-C.
pub async fn run(opts: Options) -> Result<(), String> {
    let tls = opts.tls;
    // The upstreams take free ports: a busy 9001 does not stop the demo.
    let mut upstreams = Vec::new();
    for (name, colour, _) in UPSTREAMS {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("demo upstream {name} cannot bind a port on 127.0.0.1: {e}"))?;
        upstreams.push((name, l.local_addr().map_err(|e| e.to_string())?));
        tokio::spawn(upstream(l, name, colour));
    }
    let dir = opts.socket.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("demo.toml");
    let config = render(&opts, &upstreams)?;
    if tls {
        make_certificate(&dir)?;
    }
    std::fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let veer = crate::runtime::Veer::start(&path).await.map_err(|e| e.to_string())?;
    veer.spawn_watcher().map_err(|e| e.to_string())?;
    let web = veer
        .listener_addr("web")
        .await
        .ok_or("demo config has no `web` listener")?;
    let socket = veer.snapshot().spec.admin.socket.clone().unwrap_or_default();
    let admin_http = veer.admin_http_addr().map(|a| a.to_string()).unwrap_or_default();
    println!(
        "veer demo is running.\n\n\
         Watch it in a browser (the split, every server, live): http://{admin_http}/\n\n\
         Try it:\n  for i in $(seq 10); do curl -s http://{web}/; done\n\n\
         Traffic is split between the blue and green versions by group weight (80/20).\n\n\
         Shift it at runtime through the admin socket (atomic, HAProxy-compatible):\n\
         \x20 cargo run --release -- ctl -s {sock} set split app blue=0 green=100\n\
         \x20 cargo run --release -- ctl -s {sock} show split app\n\
         \x20 cargo run --release -- ctl -s {sock} set server app/blue-1 state drain\n\
         \x20 echo 'show stat' | socat -t 5 stdio UNIX-CONNECT:{sock}\n\
         \x20 echo 'wait 30s group-drained app/blue' | socat -t 35 stdio UNIX-CONNECT:{sock}\n\
         \x20 curl -s --data 'show split app' http://{admin_http}/command\n\
         \x20 curl -s -H 'X-Veer-Admin: 1' --data 'set split app blue=50 green=50' http://{admin_http}/command\n\n\
         Deploy green with a metric-gated rollout (it rolls back by itself on errors):\n\
         \x20 cargo run --release -- ctl -s {sock} rollout app --to green --steps 10,50,100 --pause 10s\n\
         \x20 scripts/zdd.sh --socket {sock} --backend app --from blue --to green --pause 10\n\n\
         Or edit {path} (set blue's weight to 0 and green's to 100) and save: veer\n\
         reloads on save without dropping a request; a typo is reported with its line and\n\
         column and the running config keeps serving. (Runtime changes win over the file\n\
         until `ctl clear overlay`.)\n\n\
         Ctrl-C to stop.",
        sock = socket.display(),
        path = path.display()
    );
    if tls {
        println!(
            "\nhttps (TLS 1.3, HTTP/2 or HTTP/1.1 by ALPN) with a certificate made for localhost:\n\
             \x20 curl -s --cacert {pem} https://localhost:{port}/\n\
             \x20 cargo run --release -- ctl -s {sock} show ssl cert",
            pem = path.with_file_name("demo.pem").display(),
            port = opts.tls_listen.port(),
            sock = socket.display(),
        );
    }
    crate::runtime::wait_for_stop_signal().await;
    veer.shutdown().await;
    Ok(())
}
