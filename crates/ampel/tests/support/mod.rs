//! The `ampel` binary run by the tests: `ampel serve` on a port of the system's choosing, killed
//! when dropped, and client commands against it.

#![allow(dead_code)] // each test file uses a different part of this support module

#[path = "../../../ampel-server/tests/support/port.rs"]
pub mod port;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `ampel serve`, killed when dropped.
pub struct Serving {
    /// The process, for a test that kills it hard.
    pub child: Child,
    /// The base URL it says it serves on.
    pub base: String,
    /// What it printed up to that line.
    pub first_lines: Vec<String>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ampel serve` on a free port and waits until it says where it serves.
pub fn serve(data: &Path) -> Serving {
    serve_on(data, "127.0.0.1:0")
}

/// Starts `ampel serve` on `addr` and waits until it says where it serves.
#[allow(clippy::zombie_processes)] // the child moves into `Serving`, whose drop reaps it
pub fn serve_on(data: &Path, addr: &str) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ampel"))
        // SIP on a free port: the default 5060 may be taken, and tests run side by side.
        .args(["serve", "--sip", "127.0.0.1:0", "--http", addr, "--data"])
        .arg(data)
        .env("AMPEL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ampel starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first_lines = Vec::new();
    loop {
        let line = lines.next().expect("ampel prints where it serves").unwrap();
        first_lines.push(line.clone());
        if let Some(base) = line.strip_prefix("Ampel serves on ") {
            return Serving { child, base: base.to_owned(), first_lines };
        }
    }
}

/// Runs a client command against `base`; whether it succeeded, and what it printed.
pub fn ampel(args: &[&str], base: &str, token: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ampel"))
        .args(args)
        .env("AMPEL_SERVER", base)
        .env("AMPEL_TOKEN", token)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
