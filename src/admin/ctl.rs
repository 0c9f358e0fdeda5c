//! `veer ctl`: a client of the admin socket. With a command it sends the line (each
//! `;`-separated command wrapped in `json`, so errors are known), prints the answers and exits
//! non-zero on an error; without one it opens an interactive (`prompt`) session. With
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
        return interactive(stream);
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
                let text = v["output"].as_str().unwrap_or("");
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

fn interactive(mut stream: UnixStream) -> ExitCode {
    if stream.write_all(b"prompt\n").is_err() {
        return ExitCode::from(2);
    }
    let Ok(mut reader) = stream.try_clone() else {
        return ExitCode::from(2);
    };
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if stream.write_all(format!("{line}\n").as_bytes()).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = printer.join();
    ExitCode::SUCCESS
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
        let text = a["output"].as_str().unwrap_or("");
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
