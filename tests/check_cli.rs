//! `veer check`: exit 64 naming file:line:col for every fixture in config/invalid/ (each
//! fixture's first line says what it expects), exit 0 on the shipped configs.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_invalid_fixture_exits_64_and_names_the_location() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("fixture header");
        let (code, stderr) = check(&path);
        assert_eq!(code, 64, "{}: {stderr}", path.display());
        let (loc, message) = expect.split_once(": ").expect("`line:col: message`");
        let prefix = format!("{}:{loc}: ", path.display());
        let line = stderr.lines().find(|l| l.starts_with(&prefix));
        assert!(
            line.is_some_and(|l| l.contains(message)),
            "{}: expected `{prefix}…{message}…` in\n{stderr}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} fixtures");
}

#[test]
fn every_error_in_a_file_is_reported() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invalid/many-errors.toml");
    let (code, stderr) = check(&path);
    assert_eq!(code, 64);
    for loc in ["5:8", "9:13", "13:11", "15:51", "16:12"] {
        assert!(
            stderr.contains(&format!("many-errors.toml:{loc}: ")),
            "{loc} missing in\n{stderr}"
        );
    }
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["demo.toml", "example.toml", "container.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name);
        let (code, stderr) = check(&path);
        assert_eq!(code, 0, "{name}: {stderr}");
    }
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_veer"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("veer {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn values_of_the_wrong_type_do_not_stop_the_check_and_read_plainly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/invalid/type-errors.toml");
    let (code, stderr) = check(&path);
    assert_eq!(code, 64);
    for (loc, message) in [
        ("5:12", "unknown variant `htp`, expected `http` or `tcp`"),
        ("7:13", "unknown backend \"nope\""),
        ("11:11", "expected an integer, found the string \"two\""),
        (
            "12:19",
            "expected a duration like \"2s\" or \"500ms\" (a string), found the number 5",
        ),
        ("13:58", "expected an integer, found the string \"x\""),
        ("13:86", "expected a string, found the number 7"),
    ] {
        assert!(
            stderr.contains(&format!("type-errors.toml:{loc}: {message}")),
            "{loc} {message} missing in\n{stderr}"
        );
    }
    // Nothing about the placeholders veer checked the rest with.
    assert!(stderr.contains(": 6 error(s)"), "{stderr}");
}
