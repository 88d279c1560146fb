//! `ampel calendar check` and `ampel calendar busy` on the recorded calendar cases.

use std::path::PathBuf;
use std::process::Command;

fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ampel-calendar/tests/cases").join(name)
}

fn ampel(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ampel")).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn check_says_busy_until_the_end_in_the_given_zone() {
    let file = case("C01-windows-tzid.ics");
    let at = "2026-03-30T09:15:00+02:00";
    let (ok, out, _) = ampel(&[
        "calendar",
        "check",
        file.to_str().unwrap(),
        "--at",
        at,
        "--tz",
        "Europe/Berlin",
        "--json",
    ]);
    assert!(ok);
    assert_eq!(out.trim(), r#"{"calendar":"busy","until":"2026-03-30T10:00:00+02:00"}"#);
}

#[test]
fn busy_lists_intervals_and_warns_about_lenient_reads() {
    let file = case("C03-bytes-bom-fold.ics");
    let (ok, out, err) = ampel(&[
        "calendar",
        "busy",
        file.to_str().unwrap(),
        "--from",
        "2026-05-01T00:00:00Z",
        "--to",
        "2026-06-01T00:00:00Z",
        "--tz",
        "UTC",
        "--json",
    ]);
    assert!(ok, "{err}");
    let want = r#"{"intervals":[{"start":"2026-05-05T12:00:00Z","end":"2026-05-05T13:00:00Z","status":"busy","uid":"c03@example.com"}]}"#;
    assert_eq!(out.trim(), want);
    assert!(err.contains("warning: bytes not in UTF-8 were read as Windows-1252: 1"), "{err}");
}

#[test]
fn a_file_that_is_not_icalendar_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("login.ics");
    std::fs::write(&file, "<html>Login</html>").unwrap();
    let (ok, _, err) =
        ampel(&["calendar", "check", file.to_str().unwrap(), "--at", "2026-05-05T12:00:00Z"]);
    assert!(!ok);
    assert!(err.contains("not iCalendar"), "{err}");
}
