//! Ports for the real peers the tests start: sipp, baresip, Radicale, ChromeDriver.
//!
//! A port the system hands out for `:0` and takes back is free only until the next outgoing
//! connection takes it, because outgoing connections draw their ports from the same ephemeral
//! range, and the tests open many. Ports here come from below that range, each one at most once
//! per test program, and each is checked free for both UDP and TCP before it is handed out.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The ports handed out: 20000 to 31999, below Linux's default ephemeral range (32768 up).
const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

static TAKEN: AtomicU32 = AtomicU32::new(0);

/// A loopback port free for UDP and TCP that no other caller in this program gets.
pub fn free_port() -> u16 {
    // Programs that run side by side start in different places of the span.
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN - 1);
}
