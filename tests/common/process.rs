//! The real `facematch serve` binary for the crash and storage tests: started on port 0 over a data directory with
//! its address and log read from its stderr, or started on a gallery it must refuse, with the reason it gives.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a start may take: loading the models on a busy two-core machine.
const START_DEADLINE: Duration = Duration::from_secs(180);

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
    /// The server's log lines up to the one that named its address.
    pub startup: Vec<String>,
    /// The server's log lines after the one that named its address.
    pub log: Receiver<String>,
}

impl ServerProcess {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server is reaped");
    }
}

/// `facematch serve` on port 0 over `data_dir`, its log on a pipe.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facematch"));
    serve_args(&mut command, data_dir);
    command
}

/// What `serve_command` passes, for a command that runs the binary through another (`unshare … facematch`).
pub fn serve_args(command: &mut Command, data_dir: &Path) {
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("FACEMATCH_RUNTIME__SESSIONS", "2")
        .env("FACEMATCH_LOG", "facematch=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
}

/// Starts `facematch serve` on port 0 over `data_dir` and reads the bound address from its log.
pub fn spawn_server(data_dir: &Path) -> ServerProcess {
    spawn(serve_command(data_dir))
}

/// Starts a serve command and reads the bound address from its log.
pub fn spawn(mut command: Command) -> ServerProcess {
    let mut child = command.spawn().expect("server binary starts");
    let lines = log_lines(&mut child);
    let mut startup = Vec::new();
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(addr) = line.contains("listening").then(|| line.split("address=").nth(1)).flatten() {
                    let addr: String = addr.chars().take_while(|c| !c.is_whitespace()).collect();
                    return ServerProcess { child, base: format!("http://{addr}"), startup, log: lines };
                }
                startup.push(line);
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait for the server");
                panic!("the server exited ({status}) before listening:\n{}", startup.join("\n"));
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the server did not listen within {START_DEADLINE:?}:\n{}", startup.join("\n"));
            }
        }
    }
}

/// Runs a serve command that must refuse to start: fails the test if it listens, returns its stderr once it exited
/// unsuccessfully.
pub fn refused_start(mut command: Command) -> String {
    let mut child = command.spawn().expect("server binary starts");
    let lines = log_lines(&mut child);
    let mut log = Vec::new();
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening") => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server started where it must refuse:\n{}\n{line}", log.join("\n"));
            }
            Ok(line) => log.push(line),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the server neither refused nor listened within {START_DEADLINE:?}:\n{}", log.join("\n"));
            }
        }
    }
    let status = child.wait().expect("wait for the server");
    let log = log.join("\n");
    assert!(!status.success(), "the refused start exits unsuccessfully: {status}\n{log}");
    log
}

/// The child's stderr, a line at a time (ANSI colours removed); the channel closes when the child closes it.
fn log_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(strip_ansi(&line)).is_err() {
                return;
            }
        }
    });
    rx
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
