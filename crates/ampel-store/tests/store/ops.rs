//! Every op, written to a file, read back after reopening it.

use ampel_core::fact::DeviceState;
use ampel_core::{Availability, Source};
use ampel_store::{HistoryEntry, Op, SettingRecord, Store, StoreError, TokenRecord, token_hash};
use jiff::Timestamp;

use crate::support::{TempDir, at, device, entry, manual, token, user};

fn reopen(dir: &TempDir) -> Store {
    Store::open(dir.path()).unwrap()
}

fn fact_keys(store: &Store) -> Vec<String> {
    let facts = store.facts().unwrap();
    facts.iter().map(|(user, f)| format!("{user} {} {}", f.source, f.key)).collect()
}

fn all_of(store: &Store, user: &str) -> Vec<HistoryEntry> {
    store.history(user, Timestamp::MIN, Timestamp::MAX, usize::MAX).unwrap()
}

#[test]
fn every_record_survives_reopening_the_file_unchanged() {
    let dir = TempDir::new("reopen");
    let alice = user("alice@example.com", "Alice Example");
    let bob = user("bob@example.com", "Bob Example");
    let laptop = device("laptop", DeviceState::Idle, 10);
    let status = manual(Availability::DoNotDisturb, "Fokuszeit", 11);
    let admin = token("admin-secret", None);
    let alices = token("alice-secret", Some("alice@example.com"));
    let seen = entry("alice@example.com", 12, Availability::Away);

    let mut store = reopen(&dir);
    store
        .apply(&[
            Op::PutUser(bob.clone()),
            Op::PutUser(alice.clone()),
            Op::PutToken(alices.clone()),
            Op::PutToken(admin.clone()),
            Op::PutFact { user: "alice@example.com".into(), fact: status.clone() },
            Op::PutFact { user: "alice@example.com".into(), fact: laptop.clone() },
            Op::AppendHistory(seen.clone()),
        ])
        .unwrap();
    drop(store);

    let store = reopen(&dir);
    assert_eq!(store.users().unwrap(), [alice, bob]);
    assert_eq!(store.tokens().unwrap(), [admin, alices]);
    assert_eq!(
        store.facts().unwrap(),
        [("alice@example.com".to_owned(), status), ("alice@example.com".to_owned(), laptop)]
    );
    let history = store.history("alice@example.com", at(0), at(100), 10).unwrap();
    assert_eq!(history, [seen]);
}

#[test]
fn put_user_replaces_by_id_and_stores_it_lowercase() {
    let dir = TempDir::new("put-user");
    let mut store = reopen(&dir);
    store.apply(&[Op::PutUser(user("Alice@Example.COM", "Alice"))]).unwrap();

    let mut renamed = user("alice@example.com", "Alice Beispiel");
    renamed.phone = None;
    renamed.groups = vec!["support".into()];
    renamed.blocked = vec!["mallory@example.com".into()];
    store.apply(&[Op::PutUser(renamed.clone())]).unwrap();
    drop(store);

    assert_eq!(reopen(&dir).users().unwrap(), [renamed]);
}

#[test]
fn revoke_tokens_removes_only_that_users_tokens() {
    let dir = TempDir::new("revoke");
    let mut store = reopen(&dir);
    let admin = token("admin", None);
    let bobs = token("bob-1", Some("bob@example.com"));
    store
        .apply(&[
            Op::PutToken(admin.clone()),
            Op::PutToken(token("alice-1", Some("alice@example.com"))),
            Op::PutToken(token("alice-2", Some("alice@example.com"))),
            Op::PutToken(bobs.clone()),
        ])
        .unwrap();
    store.apply(&[Op::RevokeTokens { user: "ALICE@example.com".into() }]).unwrap();
    drop(store);

    assert_eq!(reopen(&dir).tokens().unwrap(), [admin, bobs]);
}

#[test]
fn put_fact_replaces_the_fact_with_the_same_user_source_and_key() {
    let dir = TempDir::new("upsert");
    let mut store = reopen(&dir);
    let alice = || "alice@example.com".to_owned();
    store
        .apply(&[
            Op::PutFact { user: alice(), fact: device("laptop", DeviceState::Active, 1) },
            Op::PutFact { user: alice(), fact: device("phone", DeviceState::Active, 1) },
            Op::PutFact {
                user: "bob@example.com".into(),
                fact: device("laptop", DeviceState::Active, 1),
            },
        ])
        .unwrap();

    let newer = device("laptop", DeviceState::Away, 2);
    store.apply(&[Op::PutFact { user: "Alice@Example.com".into(), fact: newer.clone() }]).unwrap();
    drop(store);

    let store = reopen(&dir);
    let facts = store.facts().unwrap();
    assert_eq!(facts.len(), 3);
    assert_eq!(facts[0], (alice(), newer));
    assert_eq!(facts[1], (alice(), device("phone", DeviceState::Active, 1)));
    assert_eq!(facts[2], ("bob@example.com".into(), device("laptop", DeviceState::Active, 1)));
}

#[test]
fn remove_fact_removes_exactly_one_fact() {
    let dir = TempDir::new("remove-fact");
    let mut store = reopen(&dir);
    let alice = || "alice@example.com".to_owned();
    store
        .apply(&[
            Op::PutFact { user: alice(), fact: device("laptop", DeviceState::Active, 1) },
            Op::PutFact { user: alice(), fact: device("phone", DeviceState::Active, 1) },
            Op::PutFact { user: alice(), fact: manual(Availability::Busy, "Termin", 1) },
        ])
        .unwrap();
    store
        .apply(&[Op::RemoveFact { user: alice(), source: Source::Session, key: "laptop".into() }])
        .unwrap();
    // Removing what is not there is not an error: a session may end twice.
    store
        .apply(&[Op::RemoveFact { user: alice(), source: Source::Manual, key: "laptop".into() }])
        .unwrap();
    drop(store);

    let store = reopen(&dir);
    assert_eq!(
        fact_keys(&store),
        ["alice@example.com manual status", "alice@example.com session phone"]
    );
}

#[test]
fn remove_facts_takes_the_prefix_literally() {
    let dir = TempDir::new("remove-facts");
    let mut store = reopen(&dir);
    let put = |user: &str, key: &str| Op::PutFact {
        user: user.to_owned(),
        fact: device(key, DeviceState::Active, 1),
    };
    store
        .apply(&[
            put("alice@example.com", "s1/busy"),
            put("alice@example.com", "s1/device"),
            put("alice@example.com", "s10/device"),
            put("alice@example.com", "S1/device"),
            put("alice@example.com", "s1%x"),
            put("bob@example.com", "s1/device"),
            Op::PutFact {
                user: "alice@example.com".into(),
                fact: manual(Availability::Busy, "x", 1),
            },
        ])
        .unwrap();

    let remove = |prefix: &str| Op::RemoveFacts {
        user: "alice@example.com".into(),
        source: Source::Session,
        key_prefix: prefix.to_owned(),
    };
    store.apply(&[remove("s1/")]).unwrap();
    drop(store);

    let store = reopen(&dir);
    assert_eq!(
        fact_keys(&store),
        [
            "alice@example.com manual status",
            "alice@example.com session S1/device",
            "alice@example.com session s1%x",
            "alice@example.com session s10/device",
            "bob@example.com session s1/device",
        ]
    );

    // `%` and `_` are no wildcards, and an empty prefix means the whole source.
    let mut store = store;
    store.apply(&[remove("s_"), remove("s1%")]).unwrap();
    assert_eq!(fact_keys(&store).len(), 4);
    store.apply(&[remove("")]).unwrap();
    assert_eq!(
        fact_keys(&store),
        ["alice@example.com manual status", "bob@example.com session s1/device"]
    );
}

#[test]
fn history_range_is_half_open_oldest_first_and_limited() {
    let dir = TempDir::new("history");
    let mut store = reopen(&dir);
    let ops: Vec<Op> = [10, 30, 20, 40]
        .into_iter()
        .map(|s| Op::AppendHistory(entry("alice@example.com", s, Availability::Busy)))
        .chain([Op::AppendHistory(entry("bob@example.com", 20, Availability::Away))])
        .collect();
    store.apply(&ops).unwrap();
    drop(store);

    let store = reopen(&dir);
    let seconds = |from: i64, to: i64, limit: usize| -> Vec<Timestamp> {
        let got = store.history("Alice@example.com", at(from), at(to), limit).unwrap();
        assert!(got.iter().all(|e| e.user == "alice@example.com"));
        got.into_iter().map(|e| e.at).collect()
    };
    assert_eq!(seconds(10, 40, 100), [at(10), at(20), at(30)]);
    assert_eq!(seconds(11, 41, 100), [at(20), at(30), at(40)]);
    assert_eq!(seconds(0, 100, 2), [at(10), at(20)]);
    assert_eq!(seconds(0, 100, 0), []);

    let all = store.history("alice@example.com", Timestamp::MIN, Timestamp::MAX, usize::MAX);
    assert_eq!(all.unwrap().len(), 4);
    let bobs = store.history("bob@example.com", Timestamp::MIN, Timestamp::MAX, 10).unwrap();
    assert_eq!(bobs, [entry("bob@example.com", 20, Availability::Away)]);
}

#[test]
fn purge_history_deletes_every_users_entries_before_the_cutoff() {
    let dir = TempDir::new("purge");
    let mut store = reopen(&dir);
    store
        .apply(&[
            Op::AppendHistory(entry("alice@example.com", 10, Availability::Busy)),
            Op::AppendHistory(entry("alice@example.com", 20, Availability::Available)),
            Op::AppendHistory(entry("bob@example.com", 15, Availability::Away)),
            Op::AppendHistory(entry("bob@example.com", 25, Availability::Offline)),
        ])
        .unwrap();
    store.apply(&[Op::PurgeHistory { before: at(20) }]).unwrap();
    drop(store);

    let store = reopen(&dir);
    let all = |user| all_of(&store, user);
    assert_eq!(all("alice@example.com"), [entry("alice@example.com", 20, Availability::Available)]);
    assert_eq!(all("bob@example.com"), [entry("bob@example.com", 25, Availability::Offline)]);

    // A cut-off beyond what can be stored purges everything rather than failing.
    let mut store = store;
    store.apply(&[Op::PurgeHistory { before: Timestamp::MAX }]).unwrap();
    assert_eq!(all_of(&store, "bob@example.com"), []);
}

#[test]
fn delete_user_erases_everything_kept_about_them() {
    let dir = TempDir::new("delete-user");
    let mut store = reopen(&dir);
    let bob = user("bob@example.com", "Bob");
    let bobs_token = token("bob", Some("bob@example.com"));
    let bobs_fact = device("desk", DeviceState::Active, 1);
    let bobs_entry = entry("bob@example.com", 5, Availability::Available);
    let alice = "alice@example.com";
    let batch = [
        Op::PutUser(bob.clone()),
        Op::PutToken(bobs_token.clone()),
        Op::PutFact { user: "bob@example.com".into(), fact: bobs_fact.clone() },
        Op::AppendHistory(bobs_entry.clone()),
        Op::PutUser(user(alice, "Alice")),
        Op::PutToken(token("alice", Some(alice))),
        Op::PutFact { user: alice.into(), fact: device("desk", DeviceState::Active, 1) },
        Op::AppendHistory(entry(alice, 5, Availability::Busy)),
    ];
    store.apply(&batch).unwrap();
    store.apply(&[Op::DeleteUser { id: "Alice@Example.com".into() }]).unwrap();
    drop(store);

    let store = reopen(&dir);
    assert_eq!(store.users().unwrap(), [bob]);
    assert_eq!(store.tokens().unwrap(), [bobs_token]);
    assert_eq!(store.facts().unwrap(), [("bob@example.com".to_owned(), bobs_fact)]);
    let alices = store.history(alice, Timestamp::MIN, Timestamp::MAX, 10).unwrap();
    assert_eq!(alices, []);
    let bobs = store.history("bob@example.com", Timestamp::MIN, Timestamp::MAX, 10).unwrap();
    assert_eq!(bobs, [bobs_entry]);
}

#[test]
fn a_failing_op_rolls_back_the_ops_before_it_in_the_batch() {
    let dir = TempDir::new("rollback");
    let mut store = reopen(&dir);
    let kept = token("kept", None);
    store.apply(&[Op::PutToken(kept.clone())]).unwrap();

    let err = store
        .apply(&[
            Op::PutUser(user("alice@example.com", "Alice")),
            Op::PutFact {
                user: "alice@example.com".into(),
                fact: device("laptop", DeviceState::Active, 1),
            },
            Op::RevokeTokens { user: "alice@example.com".into() },
            Op::AppendHistory(entry("alice@example.com", 1, Availability::Available)),
            Op::PutToken(kept.clone()),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    assert!(err.to_string().contains("UNIQUE constraint failed: tokens.hash"), "{err}");

    // A failure found before SQL is reached rolls back just the same.
    let far = entry("alice@example.com", 0, Availability::Busy);
    let far = HistoryEntry { at: Timestamp::MAX, ..far };
    let err = store
        .apply(&[Op::PutUser(user("alice@example.com", "Alice")), Op::AppendHistory(far)])
        .unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { at } if at == Timestamp::MAX), "{err:?}");
    drop(store);

    let store = reopen(&dir);
    assert_eq!(store.users().unwrap(), []);
    assert_eq!(store.facts().unwrap(), []);
    assert_eq!(store.tokens().unwrap(), [kept]);
    let history = store.history("alice@example.com", Timestamp::MIN, Timestamp::MAX, 10).unwrap();
    assert_eq!(history, []);
}

#[test]
fn the_store_is_usable_after_a_failed_batch() {
    let mut store = Store::open_in_memory().unwrap();
    let dup = TokenRecord { hash: token_hash("same"), user: None, created: at(0) };
    store.apply(&[Op::PutToken(dup.clone()), Op::PutToken(dup.clone())]).unwrap_err();
    store.apply(&[Op::PutToken(dup.clone())]).unwrap();
    assert_eq!(store.tokens().unwrap(), [dup]);
}

#[test]
fn an_empty_batch_changes_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    store.apply(&[]).unwrap();
    assert_eq!(store.users().unwrap(), []);
}

#[test]
fn token_hash_is_sha256_of_the_token() {
    let hex: String = token_hash("abc").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn latest_history_is_each_users_newest_entry() {
    let dir = TempDir::new("latest");
    let mut store = reopen(&dir);
    let users = ["alice@example.com", "bob@example.com", "carol@example.com"];
    store.apply(&users.map(|id| Op::PutUser(user(id, id)))).unwrap();
    let batches = [
        vec![
            entry("alice@example.com", 10, Availability::Busy),
            entry("bob@example.com", 15, Availability::Away),
            entry("dave@example.com", 40, Availability::Busy),
        ],
        vec![
            entry("alice@example.com", 30, Availability::Available),
            entry("alice@example.com", 20, Availability::Away),
        ],
    ];
    for batch in &batches {
        store
            .apply_all(batch.iter().cloned().map(Op::AppendHistory).collect::<Vec<_>>().iter())
            .unwrap();
    }
    drop(store);

    // Carol has no history yet, and Dave's is left of a user who does not exist.
    let latest = reopen(&dir).latest_history().unwrap();
    assert_eq!(
        latest,
        [
            entry("alice@example.com", 30, Availability::Available),
            entry("bob@example.com", 15, Availability::Away)
        ]
    );
}

#[test]
fn settings_are_kept_per_user_and_area_and_erased_with_the_user() {
    let dir = TempDir::new("settings");
    let mut store = reopen(&dir);
    let setting = |user: &str, area: &str, key: &str, value: &str| SettingRecord {
        user: user.into(),
        area: area.into(),
        key: key.into(),
        value: value.into(),
    };
    let company = setting("", "sip", "realm", r#""example.com""#);
    let bobs = setting("bob@example.com", "calendar", "work", r#"{"url":"https://a"}"#);
    store
        .apply(&[
            Op::PutSetting(company.clone()),
            Op::PutSetting(setting("bob@example.com", "calendar", "work", "{}")),
            Op::PutSetting(bobs.clone()),
            Op::PutSetting(setting("alice@example.com", "sip", "digest", "{}")),
            Op::PutSetting(setting("alice@example.com", "calendar", "a", "{}")),
            Op::PutSetting(setting("alice@example.com", "calendar", "b", "{}")),
            Op::RemoveSetting {
                user: "Alice@example.com".into(),
                area: "calendar".into(),
                key: "".into(),
            },
        ])
        .unwrap();
    drop(store);
    let mut store = reopen(&dir);
    let alices = setting("alice@example.com", "sip", "digest", "{}");
    assert_eq!(store.settings().unwrap(), [company.clone(), alices, bobs.clone()]);

    store.apply(&[Op::DeleteUser { id: "alice@example.com".into() }]).unwrap();
    assert_eq!(store.settings().unwrap(), [company, bobs]);
}
