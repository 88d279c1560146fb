//! `ampel route`, `ampel lookup` and `ampel policy check` for routing rules, as an
//! administrator runs them against `ampel serve`.

mod support;

use support::{ampel, serve};

#[test]
fn route_explains_a_busy_callee_and_lookup_names_the_caller() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let admin = admin.trim();
    let run = |args: &[&str]| ampel(args, &server.base, admin);

    let (ok, out) = run(&["user", "add", "alice@example.com", "--name", "Alice Example"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["user", "add", "bob@example.com", "--name", "Bob Builder"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["route", "--from", "bob@example.com", "--to", "alice@example.com"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("ring  (rule default)\n"), "{out}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = runtime.block_on(async {
        let body =
            serde_json::json!({"user": "alice@example.com", "call_id": "c1", "state": "connected"});
        let url = format!("{}/api/v1/telephony/events", server.base);
        reqwest::Client::new()
            .post(url)
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 204);
    let (ok, out) = run(&["route", "--from", "030 1234567", "--to", "alice@example.com"]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "busy  (rule in-a-call)\nrule `in-a-call` matched: alice@example.com is in-a-call, busy; the \
         rule forwards to the busy-target, which alice@example.com has not set; the call is \
         rejected as busy.\n"
    );

    let (ok, out) = run(&["route", "--from", "not a number", "--to", "alice@example.com"]);
    assert!(!ok);
    assert!(out.contains("422") && out.contains("(field from)"), "{out}");
    let (ok, out) = run(&["lookup", "+49 30 1234567"]);
    assert!(ok, "{out}");
    assert_eq!(out, "+49301234567  unknown\n");
}

#[test]
fn policy_check_rejects_routing_rules_that_name_unknown_lists_and_teams() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[[routing.rule]]\nname = \"x\"\naction = \"forward\"\ntarget = \"team:sales\"\n",
    )
    .unwrap();
    let (ok, out) = ampel(&["policy", "check", file.to_str().unwrap()], "", "");
    assert!(!ok);
    assert!(out.contains("line 4, column 10: routing rule `x` forwards to team `sales`"), "{out}");

    std::fs::write(&file, "[routing.teams]\nsales = \"sip:sales@example.com\"\n[[routing.rule]]\nname = \"x\"\naction = \"forward\"\ntarget = \"team:sales\"\n").unwrap();
    let (ok, out) = ampel(&["policy", "check", file.to_str().unwrap()], "", "");
    assert!(ok, "{out}");
}
