//! nanomsg's own command-line tool, `nanocat` (Debian's `nanomsg-utils`), as the SP peer not
//! written here for the survey-protocol interop tests: a RESPONDENT, SURVEYOR, PUB or SUB
//! socket on loopback whose received messages are read line by line from its stdout.
//!
//! [`nanocat_available`] follows the Go peers' rule: where nanocat is missing a test skips
//! with a message, but never in CI (`CI` set to anything but empty, `0` or `false`): there a
//! missing nanocat fails the test. The process is killed when the [`Nanocat`] is dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use crate::go_peer::ci_is_on;

/// Where Debian puts nanocat (`$NANOCAT` overrides it).
pub const NANOCAT: &str = "/usr/bin/nanocat";

fn nanocat_path() -> String {
    std::env::var("NANOCAT").unwrap_or_else(|_| NANOCAT.to_owned())
}

/// Whether nanocat can run here; prints why not. Panics in CI when it cannot.
#[must_use]
pub fn nanocat_available() -> bool {
    let path = nanocat_path();
    match Command::new(&path).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => true,
        Err(error) if ci_is_on() => {
            panic!("nanocat ({path}) is required in CI (apt-get install nanomsg-utils): {error}")
        }
        Err(error) => {
            eprintln!("skipping a nanocat interop test: {path}: {error}");
            false
        }
    }
}

/// A running nanocat; its stdout lines are collected as they come.
pub struct Nanocat {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    command: String,
}

impl Nanocat {
    /// Starts `nanocat ARGS…`, with `--ascii` (each received message printed on a line) for
    /// the socket types that receive (nanocat refuses it for `--pub`).
    ///
    /// # Panics
    /// When it cannot be started.
    #[must_use]
    pub fn start(args: &[&str]) -> Nanocat {
        let path = nanocat_path();
        let mut child = Command::new(&path)
            .args(args)
            .args(if args.contains(&"--pub") { None } else { Some("--ascii") })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {path}: {error}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(line);
            }
        });
        Nanocat { child, lines, command: format!("nanocat {}", args.join(" ")) }
    }

    /// The lines it printed so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Its command line, for reports.
    #[must_use]
    pub fn command(&self) -> &str {
        &self.command
    }
}

impl Drop for Nanocat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
