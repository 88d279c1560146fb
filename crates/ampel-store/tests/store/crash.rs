//! A batch acknowledged by `apply` survives the process being killed with SIGKILL at once.
//!
//! The test runs itself a second time as a child process (the same test binary, filtered to
//! this one test, with an environment variable set). The child applies some batches, says so
//! on stdout, and sleeps; the parent kills it the moment it reads that line, so the child
//! never closes the database, never checkpoints, and leaves its commits in the WAL file only.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ampel_core::Availability;
use ampel_core::fact::DeviceState;
use ampel_store::{DB_FILE, Op, Store};
use jiff::Timestamp;

use crate::support::{TempDir, device, entry, token, user};

const CHILD_DIR: &str = "AMPEL_STORE_CRASH_CHILD_DIR";
const APPLIED: &str = "ampel-store crash child: applied";
const THIS_TEST: &str = "crash::a_batch_survives_sigkill_right_after_apply_returned";

/// Kills the child if the parent's test fails first, so that no sleeper is left behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn batches() -> Vec<Vec<Op>> {
    let users = (0..3).map(|b| {
        let id = format!("user{b}@example.com");
        let mut batch = vec![
            Op::PutUser(user(&id, "Crash Test")),
            Op::PutToken(token(&format!("secret-{b}"), Some(&id))),
            Op::AppendHistory(entry(&id, b, Availability::Busy)),
        ];
        let facts = (0..200).map(|k| Op::PutFact {
            user: id.clone(),
            fact: device(&format!("device-{k:03}"), DeviceState::Active, k),
        });
        batch.extend(facts);
        batch
    });
    users.collect()
}

fn child(dir: &Path) -> ! {
    let mut store = Store::open(dir).unwrap();
    for batch in batches() {
        store.apply(&batch).unwrap();
    }
    // On a line of its own: the test harness has already written half a line ("test ... ").
    let mut out = std::io::stdout();
    writeln!(out, "\n{APPLIED}").unwrap();
    out.flush().unwrap();

    // The parent kills this process now. Should it fail to, the child gives up on its own, so
    // that the parent sees the end of the output instead of waiting for ever.
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(3)
}

#[test]
fn a_batch_survives_sigkill_right_after_apply_returned() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
    }
    let dir = TempDir::new("crash");
    let spawned = Command::new(std::env::current_exe().unwrap())
        .args([THIS_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(spawned);

    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let said_applied = stdout.lines().map(Result::unwrap).any(|line| line == APPLIED);
    assert!(said_applied, "the child exited without applying its batches");
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
    #[cfg(not(unix))]
    assert!(!status.success());

    let wal = std::fs::metadata(dir.path().join(format!("{DB_FILE}-wal"))).unwrap();
    assert!(wal.len() > 0, "the commits should still be in the WAL, not checkpointed");
    assert_everything_is_there(&Store::open(dir.path()).unwrap());
}

fn assert_everything_is_there(store: &Store) {
    let users: Vec<String> = store.users().unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(users, ["user0@example.com", "user1@example.com", "user2@example.com"]);
    assert_eq!(store.tokens().unwrap().len(), 3);

    let facts = store.facts().unwrap();
    assert_eq!(facts.len(), 600);
    assert_eq!(
        facts[599],
        ("user2@example.com".into(), device("device-199", DeviceState::Active, 199))
    );

    let history = store.history("user2@example.com", Timestamp::MIN, Timestamp::MAX, 10).unwrap();
    assert_eq!(history, [entry("user2@example.com", 2, Availability::Busy)]);
}
