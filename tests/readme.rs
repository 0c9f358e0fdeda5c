//! The README's examples run as written (issue 25): every fenced block marked `sh runnable`
//! runs under `bash -euo pipefail` against a `veer demo` started here, with `veer` on the
//! PATH. The demo listens on free ports and keeps its socket in a temp dir, so the block's
//! fixed addresses (127.0.0.1:8080, 127.0.0.1:9901, /tmp/veer-demo/…) are swapped for the
//! demo's own before it runs; nothing else in the text changes. The demo is stopped by PID.

mod support;

use std::path::Path;
use std::process::Command;

use support::Demo;

/// The blocks fenced as ```` ```sh runnable ````.
fn runnable_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match &mut current {
            None if line.trim() == "```sh runnable" => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn the_readmes_runnable_blocks_run_against_the_demo() {
    for tool in ["bash", "curl", "socat"] {
        let there = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !there.is_ok_and(|o| o.status.success()) {
            assert!(std::env::var_os("VEER_REQUIRE_TOOLS").is_none(), "{tool} missing");
            eprintln!("SKIPPED: {tool} not installed (CI installs it)");
            return;
        }
    }
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    assert!(blocks.len() >= 2, "runnable blocks: {}", blocks.len());

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    // `veer` on the PATH is the binary under test.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_veer"), bin.join("veer")).unwrap();
    let demo = Demo::start(&sock);
    let (admin, web) = (&demo.admin, &demo.web);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for block in blocks {
        let script = block
            .replace("127.0.0.1:8080", web)
            .replace("127.0.0.1:9901", admin)
            .replace("/tmp/veer-demo/admin.sock", &sock.display().to_string())
            .replace("/tmp/veer-demo/", &format!("{}/", dir.path().display()))
            .replace("cargo run --release --", "veer");
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this README block failed:\n{block}\nran as:\n{script}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
