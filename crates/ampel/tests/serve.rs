//! The `ampel` binary as an administrator runs it: first start, the admin token, the client
//! commands, and state that survives `kill -9` right after a write was acknowledged.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use support::{ampel, serve, serve_on};

fn call(base: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method, format!("{base}{path}")).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

#[test]
fn acknowledged_state_survives_kill_9_and_the_admin_token_is_private() {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(data.path());
    let token_file = data.path().join("admin.token");
    let admin = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert!(
        server.first_lines.iter().any(|l| l == &admin),
        "the token is printed once at first start"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let base = server.base.clone();
    let (ok, out) =
        ampel(&["user", "add", "alice@example.com", "--name", "Alice Example"], &base, &admin);
    assert!(ok, "{out}");
    let (ok, alice) = ampel(&["user", "token", "alice@example.com"], &base, &admin);
    assert!(ok, "{alice}");
    let alice = alice.trim().to_owned();
    let (status, _) = call(
        &base,
        "POST",
        "/api/v1/users/alice@example.com/sessions",
        &alice,
        Some(json!({"device": "Laptop"})),
    );
    assert_eq!(status, 201);
    let (ok, out) = ampel(
        &["set", "alice@example.com", "busy", "--note", "Kundentermin", "--until", "2h"],
        &base,
        &alice,
    );
    assert!(ok && out.contains("busy"), "{out}");

    server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.child.wait().unwrap();

    let server = serve(data.path());
    assert!(
        !server.first_lines.iter().any(|l| l.contains(&admin)),
        "the token is not printed again"
    );
    let (ok, out) = ampel(&["status", "alice@example.com"], &server.base, &alice);
    assert!(ok, "{out}");
    assert!(
        out.contains("alice@example.com  red busy until ") && out.contains("\"Kundentermin\""),
        "{out}"
    );
    let (ok, out) = ampel(&["status", "alice@example.com", "--json"], &server.base, &alice);
    let json: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{ok} {out}"));
    assert!(json["until"].is_string());
}

#[test]
fn a_missing_argument_is_named_alone_though_server_and_token_come_from_the_environment() {
    // `ampel` runs with AMPEL_SERVER and AMPEL_TOKEN set, as the README has them exported.
    let (ok, out) = ampel(&["user", "add", "alice@example.com"], "http://127.0.0.1:9", "token");
    assert!(!ok, "{out}");
    let usage: Vec<&str> = out.lines().filter(|l| l.starts_with("Usage:")).collect();
    assert_eq!(usage, ["Usage: ampel user add --name <NAME> <ID>"], "{out}");
    assert!(out.contains("required arguments were not provided:\n  --name <NAME>\n"), "{out}");

    let (ok, help) = ampel(&["user", "add", "--help"], "http://127.0.0.1:9", "token-never-shown");
    assert!(ok, "{help}");
    assert!(help.contains("Usage: ampel user add [OPTIONS] --name <NAME> <ID>\n"), "{help}");
    // Help is wrapped to the terminal's width: an option's notes may go on the next line.
    let about = |flag: &str, next: &str| {
        let text = &help[help.find(flag).unwrap()..help.find(next).unwrap()];
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert!(
        about("--server <URL>", "--token").ends_with(
            "The server's base URL [env: AMPEL_SERVER] [default: http://127.0.0.1:8080]"
        ),
        "{help}"
    );
    assert!(about("--token <TOKEN>", "--json").ends_with("[env: AMPEL_TOKEN]"), "{help}");
    assert!(!help.contains("token-never-shown"), "{help}");
}

#[test]
fn policy_commands_check_render_and_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[dynamics]\nidle_after = \"soon\"\n").unwrap();
    let (ok, out) = ampel(&["policy", "check", bad.to_str().unwrap()], "", "");
    assert!(!ok);
    assert!(out.contains("line 2, column 14"), "{out}");

    let (ok, out) = ampel(&["policy", "render", "--lang", "de"], "", "");
    assert!(ok, "{out}");
    assert!(
        out.contains("Wenn Sie telefonieren, werden Sie als „Beschäftigt (im Gespräch)“ angezeigt"),
        "{out}"
    );

    let timeline = dir.path().join("timeline.jsonl");
    std::fs::write(
        &timeline,
        concat!(
            r#"{"at": "2026-12-03T09:00:00Z", "user": "alice@example.com", "put": {"source": "session", "key": "laptop", "state": {"kind": "device", "state": "active"}}}"#,
            "\n",
            r#"{"at": "2026-12-03T09:01:00Z", "user": "alice@example.com", "put": {"source": "manual", "key": "status", "state": {"kind": "status", "availability": "busy"}, "ends": "2026-12-03T09:02:00Z"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let (ok, out) =
        ampel(&["simulate", timeline.to_str().unwrap(), "--until", "2026-12-03T09:03:00Z"], "", "");
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("available/available  [devices]"), "{out}");
    assert!(lines[1].contains("busy/busy until 2026-12-03T09:02:00Z  [manual]"), "{out}");
    assert!(
        lines[2].starts_with("2026-12-03T09:02:00Z") && lines[2].contains("available/available"),
        "{out}"
    );
}

#[test]
fn watch_prints_each_change_once_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    // The first start takes a port of the system's choosing; the restart takes the same one.
    let server = serve(data.path());
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap().trim().to_owned();
    let base = server.base.clone();
    assert!(ampel(&["user", "add", "alice@example.com", "--name", "Alice"], &base, &admin).0);
    assert!(ampel(&["set", "alice@example.com", "busy", "--note", "Review"], &base, &admin).0);

    let watch = Command::new(env!("CARGO_BIN_EXE_ampel"))
        .args(["watch", "alice@example.com"])
        .env("AMPEL_SERVER", &base)
        .env("AMPEL_TOKEN", &admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watch = Reaped(watch);
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the snapshot").unwrap();
    assert!(
        first.contains("alice@example.com  red busy") && first.contains("\"Review\""),
        "{first}"
    );
    watching(&base, 1);

    // kill -9, and the same data on the same address: the state is the same, and so is the
    // snapshot the watcher gets once it is connected again.
    drop(server);
    let server = serve_on(data.path(), &addr);
    watching(&server.base, 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(ampel(&["clear", "alice@example.com"], &server.base, &admin).0);
    let change = lines.next().expect("the change").unwrap();
    assert!(change.contains("alice@example.com  grey offline"), "{change}");

    watch.0.kill().unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest, Vec::<String>::new(), "nothing else: not the unchanged state again");
}

/// Waits until the server at `base` has `count` watching connections.
fn watching(base: &str, count: i64) {
    let line = format!("ampel_watch_connections {count}");
    for _ in 0..100 {
        let (_, metrics) = get_text(base, "/metrics");
        if metrics.lines().any(|l| l == line) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no {line} within 10 s");
}

fn get_text(base: &str, path: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

/// A child process that is killed and reaped however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
