//! `veer ctl`: a client of the admin socket. With a command it sends the line (each
//! `;`-separated command wrapped in `json`, so errors are known), prints the answers and exits
//! non-zero on an error; without one it opens an interactive session (line editing,
//! history, the last command's status as the exit status). With
//! `--http` it speaks to the HTTP admin listener instead, sending what that listener asks of
//! a state-changing command (see [`super::http`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use super::socket::split_commands;

pub fn run(socket: &Path, command: &[String]) -> ExitCode {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veer ctl: cannot connect to {}: {e}", socket.display());
            return ExitCode::from(2);
        }
    };
    if command.is_empty() {
        return interactive(stream, socket);
    }
    let parts = split_commands(&command.join(" "));
    let line: Vec<String> = parts
        .iter()
        .map(|p| {
            if p.trim() == "subscribe" {
                p.clone()
            } else {
                format!("json {}", p.replace(';', "\\;"))
            }
        })
        .collect();
    if let Err(e) = stream.write_all(format!("{}\n", line.join(";")).as_bytes()) {
        eprintln!("veer ctl: {e}");
        return ExitCode::from(2);
    }
    let mut ok = true;
    let stdout = std::io::stdout();
    for l in BufReader::new(stream).lines() {
        let Ok(l) = l else { break };
        if l.is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&l) {
            Ok(v) if v.get("ok").is_some() => {
                ok &= v["ok"].as_bool().unwrap_or(false);
                let text = output(&v);
                if v["ok"].as_bool() == Some(false) {
                    eprint!("{text}");
                } else {
                    print!("{text}");
                }
            }
            // Event lines from `subscribe` pass through as they are.
            _ => {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{l}");
                let _ = out.flush();
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The interactive session: line editing and history (rustyline; `~/.veer_history`), each
/// line's commands sent as `veer ctl <line>` would send them; `quit`, `exit` or Ctrl-D
/// ends it. The exit status is the last command's: 0, or 1 when it failed (so a script
/// piping commands in learns whether its last one held).
fn interactive(stream: UnixStream, socket: &Path) -> ExitCode {
    drop(stream);
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("veer ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let history = std::env::var_os("HOME").map(|h| Path::new(&h).join(".veer_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut last_ok = true;
    loop {
        let line = match editor.readline("> ") {
            Ok(line) => line,
            // Ctrl-C drops the line being typed, as a shell does.
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("veer ctl: {e}");
                last_ok = false;
                break;
            }
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if matches!(line, "quit" | "exit") {
            break;
        }
        let _ = editor.add_history_entry(line);
        for part in split_commands(line) {
            last_ok = match call(socket, &part) {
                Ok((true, text)) => {
                    print!("{text}");
                    true
                }
                Ok((false, text)) => {
                    eprint!("{text}");
                    false
                }
                Err(e) => {
                    eprintln!("veer ctl: {e}");
                    false
                }
            };
        }
        let _ = std::io::stdout().flush();
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if last_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `veer ctl --http ADDR [--token-file F] COMMAND`: one `POST /command`, answers printed as
/// with the socket; exit 1 on an error answer, 2 when veer cannot be reached.
pub fn run_http(addr: std::net::SocketAddr, token_file: Option<&Path>, command: &[String]) -> ExitCode {
    if command.is_empty() {
        eprintln!("veer ctl: --http needs a command (interactive sessions use the socket)");
        return ExitCode::from(2);
    }
    let token = match token_file.map(std::fs::read_to_string).transpose() {
        Ok(t) => t.map(|t| t.trim().to_string()),
        Err(e) => {
            eprintln!("veer ctl: token file: {e}");
            return ExitCode::from(2);
        }
    };
    let body = command.join(" ");
    let mut request = format!(
        "POST /command HTTP/1.1\r\nHost: {addr}\r\n{}: 1\r\nAccept: application/json\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        super::http::ADMIN_HEADER,
        body.len()
    );
    if let Some(t) = &token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let response = std::net::TcpStream::connect(addr).and_then(|mut s| {
        s.write_all(request.as_bytes())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    });
    let response = match response {
        Ok(r) => String::from_utf8_lossy(&r).into_owned(),
        Err(e) => {
            eprintln!("veer ctl: cannot reach {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body.trim()) else {
        // Refused before any command ran (401, 403, 413): the listener's own words.
        eprintln!("veer ctl: {}\n{}", head.lines().next().unwrap_or(""), body.trim_end());
        return ExitCode::from(1);
    };
    let answers = match v.get("results").and_then(|r| r.as_array()) {
        Some(many) => many.clone(),
        None => vec![v.clone()],
    };
    for a in &answers {
        let text = output(a);
        if a["ok"].as_bool() == Some(false) {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    if v["ok"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The text of a `{"ok":…,"output":…}` answer: the string, or the JSON an answer that is
/// JSON itself carries, on one line.
fn output(v: &serde_json::Value) -> String {
    match &v["output"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => format!("{other}\n"),
    }
}

/// One command over a fresh socket connection, answered as `json`: (ok, output).
fn call(socket: &Path, command: &str) -> Result<(bool, String), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    stream
        .write_all(format!("json {command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|_| format!("unexpected answer: {line}"))?;
    Ok((v["ok"].as_bool().unwrap_or(false), output(&v)))
}

const ROLLOUT_USAGE: &str = "usage: veer ctl rollout <backend> --to <group> [--steps 10,25,50,100] [--pause 30s] \
[--max-error-rate 1%] [--max-p99 500ms] [--min-requests 100] [--then drain|keep] [--no-tty]\n       \
veer ctl rollout <backend> --wait [--no-tty]";

/// True for `veer ctl rollout <backend> --…` (the follow mode), not the admin command
/// `rollout start|pause|resume|abort|promote …`, which passes through as any command.
pub fn is_rollout_follow(command: &[String]) -> bool {
    matches!(command, [r, b, ..] if r == "rollout" && !matches!(b.as_str(), "start" | "pause" | "resume" | "abort" | "promote"))
}

/// `veer ctl rollout <backend> --to <group> …`: starts the rollout inside veer, then follows
/// it with a progress bar (or one line per change with `--no-tty` or without a terminal)
/// until it ends: exit 0 promoted, 2 rolled back, 1 aborted or an error. Ctrl-C detaches;
/// the rollout goes on inside veer.
pub fn rollout(socket: &Path, args: &[String]) -> ExitCode {
    let [_, backend, flags @ ..] = args else {
        eprintln!("{ROLLOUT_USAGE}");
        return ExitCode::from(1);
    };
    let (mut start, mut wait, mut tty) = (format!("rollout start {backend}"), false, true);
    let mut to = None;
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let key = flag.trim_start_matches("--");
        match key {
            "wait" => wait = true,
            "no-tty" => tty = false,
            "to" | "steps" | "pause" | "max-error-rate" | "max-p99" | "min-requests" | "then" => {
                let Some(value) = it.next() else {
                    eprintln!("veer ctl: {flag} needs a value\n{ROLLOUT_USAGE}");
                    return ExitCode::from(1);
                };
                if key == "to" {
                    to = Some(value.clone());
                } else {
                    start.push_str(&format!(" {key} {value}"));
                }
            }
            _ => {
                eprintln!("veer ctl: unknown option {flag}\n{ROLLOUT_USAGE}");
                return ExitCode::from(1);
            }
        }
    }
    if !wait {
        let Some(to) = to else {
            eprintln!("veer ctl: --to <group> or --wait is needed\n{ROLLOUT_USAGE}");
            return ExitCode::from(1);
        };
        let command = start.replacen(
            &format!("rollout start {backend}"),
            &format!("rollout start {backend} to {to}"),
            1,
        );
        match call(socket, &command) {
            Ok((true, text)) => print!("{text}"),
            Ok((false, text)) => {
                eprint!("veer ctl: {text}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("veer ctl: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let tty = tty && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("veer ctl: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(follow(socket, backend, tty))
}

/// One line of a rollout's state: step, split, and each group's window.
fn progress_line(v: &serde_json::Value) -> String {
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    let split: Vec<String> = groups
        .iter()
        .map(|g| format!("{}={}", g["name"].as_str().unwrap_or(""), g["weight"]))
        .collect();
    let figures: Vec<String> = groups
        .iter()
        .filter(|g| g["weight"].as_u64() != Some(0) || g["requests"].as_u64() != Some(0))
        .map(|g| {
            format!(
                "{} {} req {:.2}% err p99 {}",
                g["name"].as_str().unwrap_or(""),
                g["requests"],
                g["error_rate"].as_f64().unwrap_or(0.0),
                g["p99_ms"].as_f64().map_or("-".into(), |p| format!("{p:.0}ms"))
            )
        })
        .collect();
    format!(
        "step {}/{} {}% [{}] {} | {} | {}",
        v["step"],
        v["steps"].as_array().map_or(0, Vec::len),
        v["percent"],
        v["phase"].as_str().unwrap_or(""),
        split.join(" "),
        figures.join(" | "),
        v["verdict"].as_str().unwrap_or("")
    )
}

async fn follow(socket: &Path, backend: &str, tty: bool) -> ExitCode {
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last = String::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let status = match call(socket, &format!("show rollout {backend} json")) {
            Ok((true, text)) => serde_json::from_str::<serde_json::Value>(text.trim()).unwrap_or_default(),
            Ok((false, text)) => {
                eprint!("veer ctl: {text}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("veer ctl: {e}");
                return ExitCode::from(1);
            }
        };
        if status.is_null() {
            eprintln!("veer ctl: no rollout for backend '{backend}'");
            return ExitCode::from(1);
        }
        let line = progress_line(&status);
        match &bar {
            Some(bar) => {
                bar.set_position(status["percent"].as_u64().unwrap_or(0));
                bar.set_message(line.clone());
                bar.tick();
            }
            // Line mode: one line per step or phase change (not per changing figure).
            None => {
                let key = format!("{} {} {}", status["step"], status["phase"], status["verdict"]);
                if key != last {
                    println!("{line}");
                    last = key;
                }
            }
        }
        let phase = status["phase"].as_str().unwrap_or("");
        let code = match phase {
            "promoted" => Some(0),
            "rolled-back" => Some(2),
            "aborted" => Some(1),
            _ => None,
        };
        if let Some(code) = code {
            if let Some(bar) = &bar {
                bar.finish_with_message(line.clone());
            }
            let reason = status["reason"].as_str().unwrap_or("");
            println!("rollout of {backend} {phase}: {reason}");
            return ExitCode::from(code);
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                eprintln!(
                    "\nDetached: the rollout goes on inside veer.\n  follow: veer ctl rollout {backend} --wait\n  \
                     abort:  veer ctl rollout abort {backend}"
                );
                return ExitCode::from(1);
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}
