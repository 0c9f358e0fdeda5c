//! The container image (issue 25): the Dockerfile agrees with the Kubernetes example that
//! names it and with the config it ships — the binary where the preStop hook calls it, a
//! non-root user, the healthcheck on the probe listener the config opens. .ci/run lints it
//! with hadolint; where a Docker daemon runs and can get the base images, a test builds the
//! image and runs the binary and the shipped config in it.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn the_dockerfile_matches_the_kubernetes_example_and_its_config() {
    let docker = read("Dockerfile");
    let k8s = read("config/kubernetes/sidecar.yaml");
    let line = |prefix: &str| {
        docker
            .lines()
            .rfind(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the Dockerfile"))
            .to_string()
    };
    // Multi-stage: the runtime image holds the binary, not the toolchain.
    assert!(docker.lines().filter(|l| l.starts_with("FROM ")).count() >= 2);
    assert!(docker.contains("COPY --from=build /src/target/release/veer /usr/bin/veer"));
    assert!(k8s.contains("- /usr/bin/veer"), "the preStop hook calls /usr/bin/veer");
    assert_eq!(line("ENTRYPOINT"), "ENTRYPOINT [\"/usr/bin/veer\"]");
    assert!(k8s.contains("args: [\"run\", \"-c\", \"/etc/veer/veer.toml\"]"));
    assert!(k8s.contains("image: registry.example.com/veer:0.1.0"));
    // Not root.
    let user = line("USER ");
    assert!(
        !user.contains("root") && !user.ends_with(" 0") && !user.contains(" 0:"),
        "{user}"
    );
    // The healthcheck probes the probe listener the shipped config opens, on all addresses.
    assert!(docker.contains("COPY config/container.toml /etc/veer/veer.toml"));
    let config = read("config/container.toml");
    assert!(config.contains("probe = \"0.0.0.0:9902\""), "{config}");
    assert!(docker.contains("\"http://127.0.0.1:9902/live\""));
    // The admin socket where the Kubernetes example and VEER_SOCKET look.
    assert!(config.contains("socket = \"/run/veer/admin.sock\""));
    assert!(docker.contains("ENV VEER_SOCKET=/run/veer/admin.sock"));
    assert!(k8s.contains("/run/veer/admin.sock"));
}

/// `docker …` with its output; `None` when the command cannot run at all.
fn docker(args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new("docker")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
}

#[test]
fn the_image_builds_and_runs_where_a_docker_daemon_does() {
    if !docker(&["info"]).is_some_and(|o| o.status.success()) {
        eprintln!("SKIPPED: no Docker daemon here (the Dockerfile is linted by hadolint in .ci/run)");
        return;
    }
    // The base images come from a registry; a machine that cannot reach one cannot build.
    for base in ["rust:1.95-slim-bookworm", "debian:bookworm-slim"] {
        let have = docker(&["image", "inspect", base]).is_some_and(|o| o.status.success());
        if !have && !docker(&["pull", "-q", base]).is_some_and(|o| o.status.success()) {
            eprintln!("SKIPPED: the daemon cannot get {base} (no registry reachable)");
            return;
        }
    }
    let tag = "veer-test:container-rs";
    let built = docker(&["build", "-q", "-t", tag, "."]).unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let version = docker(&["run", "--rm", tag, "--version"]).unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("veer "),
        "{version:?}"
    );
    // The shipped config checks inside the image, as the unprivileged user.
    let check = docker(&["run", "--rm", tag, "check", "-c", "/etc/veer/veer.toml"]).unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let user = docker(&["run", "--rm", "--entrypoint", "id", tag, "-u"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "10001");
    let _ = docker(&["image", "rm", "-f", tag]);
}
