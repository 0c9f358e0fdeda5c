//! The command line as operators expect it (issue 25): `veer completions bash` loads in
//! bash (`complete -p veer`), `veer man` renders with `man -l`, and every option of every
//! subcommand has a description in `--help`.

use std::process::Command;

fn veer(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_veer")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "veer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("VEER_REQUIRE_TOOLS").is_none(),
            "{tool} missing with VEER_REQUIRE_TOOLS set"
        );
        eprintln!("SKIPPED: {tool} not installed (CI installs it)");
    }
    ok
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    if !have("bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("veer.bash");
    std::fs::write(&script, veer(&["completions", "bash"])).unwrap();
    // Loaded, the function completes `veer c` to the subcommands starting with c.
    let probe = format!(
        "source {}; complete -p veer; COMP_WORDS=(veer c); COMP_CWORD=1; _veer veer c veer; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("complete ") && l.ends_with(" veer")),
        "{text}"
    );
    let words: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    for sub in ["check", "ctl", "completions"] {
        assert!(words.contains(&sub), "{sub} not offered: {words:?}");
    }
    // zsh and fish scripts are produced too.
    assert!(veer(&["completions", "zsh"]).starts_with("#compdef veer"));
    assert!(veer(&["completions", "fish"]).contains("complete -c veer"));
}

#[test]
fn the_man_page_renders() {
    if !have("man") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("veer.1");
    std::fs::write(&page, veer(&["man"])).unwrap();
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2012}'], "-");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "NAME",
        "veer - An L4/L7 load balancer",
        "SUBCOMMANDS",
        "veer-run",
        "veer-ctl",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
}

#[test]
fn every_option_of_every_subcommand_is_described() {
    for sub in ["run", "check", "demo", "ctl", "completions", "man"] {
        let help = veer(&[sub, "--help"]);
        let options = help.split("Options:").nth(1).unwrap_or("");
        let lines: Vec<&str> = options.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with('-') {
                continue;
            }
            // `  -c, --config <CONFIG>  The config file …`: a flag column, then words; or,
            // when a flag is too wide for a column (clap's next-line layout), the words on
            // the next line, indented deeper.
            let inline = line.trim().split("  ").filter(|p| !p.is_empty()).count() >= 2;
            let indent = |l: &str| l.len() - l.trim_start().len();
            let next_line = lines.get(i + 1).is_some_and(|next| {
                !next.trim().is_empty() && !next.trim_start().starts_with('-') && indent(next) > indent(line)
            });
            assert!(inline || next_line, "veer {sub}: {line:?} has no description");
        }
    }
}
