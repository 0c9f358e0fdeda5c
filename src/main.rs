//! The `veer` command line: run, check, demo, ctl. Exits 64 (EX_USAGE) on a bad config.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veer",
    version,
    about = "An L4/L7 load balancer and traffic shifter for zero-downtime deploys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The Gateway API source (Envoy Gateway's standalone mode: manifests from a directory).
#[derive(clap::Args)]
struct GatewayArgs {
    /// A directory of Kubernetes manifests (Gateway, HTTPRoute, ReferenceGrant, Service,
    /// EndpointSlice; multi-document YAML, as `kubectl apply -f DIR` reads them), watched
    /// and translated into listeners and backends beside the config file's.
    #[arg(long, value_name = "DIR", conflicts_with = "gateway")]
    gateway_dir: Option<PathBuf>,
    /// Watch the same kinds on the Kubernetes API server (in-cluster service account, or
    /// --kubeconfig / $KUBECONFIG).
    #[arg(long)]
    gateway: bool,
    /// With --gateway: the kubeconfig file to use.
    #[arg(long, value_name = "PATH", requires = "gateway")]
    kubeconfig: Option<PathBuf>,
    /// With --gateway: only objects of these namespaces (comma-separated); default all.
    #[arg(long, value_name = "NS,...", value_delimiter = ',', requires = "gateway")]
    namespaces: Vec<String>,
    /// With --gateway: watch Secrets (HTTPS listeners' certificates) only in these
    /// namespaces, so RBAC can deny veer every other Secret; default as --namespaces.
    #[arg(long, value_name = "NS,...", value_delimiter = ',', requires = "gateway")]
    certificate_namespaces: Vec<String>,
    /// The address every Gateway listener port binds on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    gateway_address: std::net::IpAddr,
    /// Also the experimental channel: TCP listeners and TCPRoutes (v1alpha2).
    #[arg(long)]
    gateway_experimental: bool,
    /// Gateways of this GatewayClass are veer's.
    #[arg(long, value_name = "NAME", default_value = veer::gateway::DEFAULT_CLASS)]
    gateway_class: String,
    /// The controllerName a GatewayClass names veer by.
    #[arg(long, value_name = "NAME", default_value = veer::gateway::DEFAULT_CONTROLLER)]
    controller_name: String,
}

impl GatewayArgs {
    /// `--gateway`: how to reach the API server.
    fn cluster(&self) -> Option<veer::gateway::cluster::ClusterOptions> {
        self.gateway.then(|| veer::gateway::cluster::ClusterOptions {
            kubeconfig: self.kubeconfig.clone(),
            namespaces: self.namespaces.clone(),
            certificate_namespaces: self.certificate_namespaces.clone(),
            experimental: self.gateway_experimental,
            ..Default::default()
        })
    }

    /// The Gateway source's options; with `--gateway` the cluster is connected later (it
    /// needs the runtime), and `dir` only names the source in messages.
    fn options(&self) -> Option<veer::gateway::Options> {
        let dir = match (&self.gateway_dir, self.gateway) {
            (Some(dir), _) => dir.clone(),
            (None, true) => PathBuf::from("kubernetes"),
            (None, false) => return None,
        };
        Some(veer::gateway::Options {
            address: self.gateway_address,
            class: self.gateway_class.clone(),
            controller: self.controller_name.clone(),
            experimental: self.gateway_experimental,
            ..veer::gateway::Options::new(dir)
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a config file and/or a directory of Gateway API manifests;
    /// reloads on change and on SIGHUP.
    Run {
        /// The config file (TOML); its directory is watched for changes.
        #[arg(short, long, required_unless_present_any = ["gateway_dir", "gateway"])]
        config: Option<PathBuf>,
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Prefer servers of veer's own zone (`[runtime] zone`, or $VEER_ZONE) inside each
        /// group, as `[runtime] zone_aware = true` does.
        #[arg(long)]
        zone_aware: bool,
        /// Take the listening sockets over from the veer running with this config (found
        /// through its admin socket), which then drains and exits: a hot binary upgrade.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file: prints every error as file:line:col and exits 64, or exits 0.
    Check {
        /// The config file (TOML) to check.
        #[arg(short, long, required_unless_present = "gateway_dir")]
        config: Option<PathBuf>,
        /// With --gateway-dir: every object veer cannot use is an error (file:line, kind
        /// namespace/name), exit 64.
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Also show what reloading the file would change in the veer running behind
        /// --socket: listeners, backends, groups, servers added, removed or changed (the
        /// running overlay applied, as a reload applies it). Changes nothing.
        #[arg(long)]
        diff: bool,
        /// With --diff: the running veer's admin socket.
        #[arg(short, long, env = "VEER_SOCKET", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Start two demo upstreams (blue, green) and veer in front of them.
    Demo {
        /// Also serve https (on --tls-listen) with a certificate made on the spot.
        #[arg(long)]
        tls: bool,
        /// Where the proxy listens for HTTP.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The admin HTTP listener: the status page, /metrics, POST /command.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_http: std::net::SocketAddr,
        /// The admin socket; the demo's editable config is written next to it [default:
        /// <temp dir>/veer-demo/admin.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Where https listens with --tls.
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: std::net::SocketAddr,
    },
    /// Send a command to a running veer's admin socket (interactive without a command).
    Ctl {
        /// The admin socket.
        #[arg(short, long, env = "VEER_SOCKET", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Use the HTTP admin listener at this address (ip:port) instead of the socket; sends
        /// what a state-changing command needs (X-Veer-Admin, the listener's Host).
        #[arg(long, env = "VEER_ADMIN_HTTP")]
        http: Option<std::net::SocketAddr>,
        /// With --http: the file holding the bearer token (`[admin] token_file`).
        #[arg(long, env = "VEER_TOKEN_FILE", requires = "http")]
        token_file: Option<PathBuf>,
        /// The command, e.g. `set split shop blue=0 green=100`; `;` separates commands.
        /// `rollout <backend> --to <group> [--steps 10,25,50,100] [--pause 30s]
        /// [--max-error-rate 1%] [--max-p99 500ms] [--min-requests 100] [--then drain|keep]
        /// [--wait] [--no-tty]` starts a rollout and follows it (exit 0 promoted, 2 rolled
        /// back, 1 error); `--wait` only follows a running one.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print a shell completion script: `source <(veer completions bash)`, or install it
    /// where the shell looks (e.g. /usr/share/bash-completion/completions/veer).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `veer man > veer.1; man -l veer.1`.
    Man,
}

const EX_CONFIG: u8 = 64;

/// Where `veer ctl` and `veer check --diff` find the admin socket unless told (or
/// `VEER_SOCKET`): the path the systemd unit, the container and the Kubernetes files use.
const DEFAULT_SOCKET: &str = "/run/veer/admin.sock";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "veer", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veer: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            config,
            gateway,
            diff,
            socket,
        } => {
            if gateway.gateway {
                eprintln!("veer check: --gateway-dir checks manifests; a cluster's objects are checked by the running veer (their status conditions)");
                return ExitCode::from(2);
            }
            let Some(config) = config else {
                return check_gateway(gateway.options());
            };
            if let Some(opts) = gateway.options() {
                if check_gateway(Some(opts.clone())) != ExitCode::SUCCESS {
                    return ExitCode::from(EX_CONFIG);
                }
                let source = veer::Source {
                    file: Some(config.clone()),
                    gateway: Some(opts),
                    ..Default::default()
                };
                return match source.load() {
                    Ok(_) => ExitCode::SUCCESS,
                    Err(errors) => {
                        eprintln!("{}", errors.render());
                        ExitCode::from(EX_CONFIG)
                    }
                };
            }
            match veer::config::load(&config) {
                Ok(spec) => {
                    println!(
                        "{}: ok ({} listeners, {} backends)",
                        config.display(),
                        spec.listeners.len(),
                        spec.backends.len()
                    );
                    if !diff {
                        return ExitCode::SUCCESS;
                    }
                    // The running veer reads the file itself: name it absolutely.
                    let path = std::fs::canonicalize(&config).unwrap_or(config);
                    if path.to_string_lossy().contains(|c: char| c.is_whitespace() || c == ';') {
                        eprintln!("veer check --diff: the path must not contain spaces or ';' (admin commands are split on them)");
                        return ExitCode::from(2);
                    }
                    veer::admin::ctl::run(&socket, &[format!("preview reload {}", path.display())])
                }
                Err(errors) => {
                    eprintln!("{}", errors.render());
                    eprintln!("\n{}: {} error(s)", config.display(), errors.0.len());
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Run {
            config,
            gateway,
            zone_aware,
            upgrade,
        } => {
            init_logging();
            let cluster = gateway.cluster();
            let mut source = veer::Source {
                file: config,
                gateway: gateway.options(),
                zone_aware,
            };
            // The worker count comes from the config, so read it before the runtime exists
            // (the cluster's objects can only be read once it does).
            let first = match (&cluster, &source.file) {
                (Some(_), Some(file)) => veer::config::load_base(file),
                (Some(_), None) => Ok(veer::config::Spec::default()),
                (None, _) => source.load(),
            };
            let spec = match first {
                Ok(s) => s,
                Err(errors) => {
                    eprintln!("{}", errors.render());
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let runtime = match build_runtime(spec.runtime.workers) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("veer: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let served = runtime.block_on(async move {
                if let (Some(c), Some(g)) = (cluster, source.gateway.as_mut()) {
                    let connected = veer::gateway::cluster::Cluster::connect(&c).await;
                    g.cluster = Some(connected.map_err(veer::ReloadError::Admin)?);
                }
                veer::run(source, upgrade).await
            });
            match served {
                Ok(true) => ExitCode::SUCCESS,
                // Work was cut by the shutdown timeout or a second signal.
                Ok(false) => ExitCode::from(1),
                Err(veer::ReloadError::Config(errors)) => {
                    eprintln!("{}", errors.render());
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    eprintln!("veer: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ctl {
            http: Some(addr),
            token_file,
            command,
            ..
        } => veer::admin::ctl::run_http(addr, token_file.as_deref(), &command),
        Command::Ctl { socket, command, .. } if veer::admin::ctl::is_rollout_follow(&command) => {
            veer::admin::ctl::rollout(&socket, &command)
        }
        Command::Ctl { socket, command, .. } => veer::admin::ctl::run(&socket, &command),
        Command::Demo {
            tls,
            listen,
            admin_http,
            socket,
            tls_listen,
        } => {
            init_logging();
            let opts = veer::demo::Options {
                tls,
                listen,
                admin_http,
                socket: socket.unwrap_or_else(veer::demo::default_socket),
                tls_listen,
            };
            let result = build_runtime(None)
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(veer::demo::run(opts)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("veer demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `veer check --gateway-dir`: every object veer cannot use, as `file:line: Kind
/// namespace/name: why`; exit 64 when there is one, or when nothing yields a listener.
fn check_gateway(opts: Option<veer::gateway::Options>) -> ExitCode {
    let Some(opts) = opts else {
        eprintln!("veer check: --config or --gateway-dir is required");
        return ExitCode::from(2);
    };
    match veer::gateway::load(&opts) {
        Err(e) => {
            eprintln!("veer check: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Ok(t) if !t.problems.is_empty() => {
            for p in &t.problems {
                eprintln!("error: {p} [{}]", p.reason);
            }
            eprintln!("\n{}: {} error(s)", opts.dir.display(), t.problems.len());
            ExitCode::from(EX_CONFIG)
        }
        Ok(t) if t.listeners.is_empty() => {
            eprintln!(
                "error: {}: no Gateway of class {:?} with a usable listener",
                opts.dir.display(),
                opts.class
            );
            ExitCode::from(EX_CONFIG)
        }
        Ok(t) => {
            println!(
                "{}: ok ({} listeners, {} backends, {} routes)",
                opts.dir.display(),
                t.listeners.len(),
                t.backends.len(),
                t.listeners.iter().map(|l| l.routes.len()).sum::<usize>()
            );
            ExitCode::SUCCESS
        }
    }
}

/// `TOKIO_WORKER_THREADS`, when set, wins over the config (tokio reads it itself when
/// `worker_threads` is not called), so benchmarks can pin one thread. One worker runs on
/// tokio's current-thread scheduler: no work-stealing queues or cross-thread wake-ups to pay
/// for when there is nobody to steal from.
fn build_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let from_env = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let workers = from_env.or(workers);
    let mut b = if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    b.enable_all();
    if let (Some(n), None) = (workers, from_env) {
        if n > 1 {
            b.worker_threads(n);
        }
    }
    b.build()
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube-client logs every failed request to the API server at ERROR: a line per retry
    // during an outage, which veer already reports once (gateway::cluster).
    if let Ok(quiet) = "kube_client::client::builder=off".parse() {
        filter = filter.add_directive(quiet);
    }
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
