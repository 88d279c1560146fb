//! Creating the schema from nothing, and refusing files this build does not understand.

use ampel_store::{DB_FILE, Op, Store, StoreError};
use expect_test::expect;
use rusqlite::Connection;

use crate::support::{TempDir, user};

fn raw(dir: &TempDir) -> Connection {
    Connection::open(dir.path().join(DB_FILE)).unwrap()
}

fn user_version(conn: &Connection) -> i64 {
    conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
}

#[test]
fn an_empty_file_is_migrated_to_the_current_schema() {
    let dir = TempDir::new("empty-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join(DB_FILE), b"").unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    store.apply(&[Op::PutUser(user("alice@example.com", "Alice"))]).unwrap();

    let conn = raw(&dir);
    assert_eq!(user_version(&conn), 2);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let mut stmt = conn.prepare("SELECT type, name FROM sqlite_schema ORDER BY name").unwrap();
    let objects: Vec<String> = stmt
        .query_map([], |row| {
            Ok(format!("{} {}", row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    expect![[r#"
        [
            "table facts",
            "table history",
            "index history_by_time",
            "index history_by_user",
            "table settings",
            "index sqlite_autoindex_tokens_1",
            "index sqlite_autoindex_users_1",
            "table tokens",
            "index tokens_by_user",
            "table users",
        ]
    "#]]
    .assert_debug_eq(&objects);
}

#[test]
fn opening_a_current_file_again_migrates_nothing_and_keeps_the_data() {
    let dir = TempDir::new("second-open");
    let alice = user("alice@example.com", "Alice");
    Store::open(dir.path()).unwrap().apply(&[Op::PutUser(alice.clone())]).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.users().unwrap(), [alice]);
    assert_eq!(user_version(&raw(&dir)), 2);
}

#[test]
fn a_file_from_a_newer_version_is_refused_untouched() {
    let dir = TempDir::new("newer");
    drop(Store::open(dir.path()).unwrap());
    raw(&dir).pragma_update(None, "user_version", 7).unwrap();

    let err = Store::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::SchemaVersion { found: 7, supported: 2 }), "{err:?}");
    assert_eq!(err.to_string(), "database schema version 7 is unknown, this build knows 0 to 2");
    assert_eq!(user_version(&raw(&dir)), 7);
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_not_a_panic() {
    let dir = TempDir::new("not-a-db");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join(DB_FILE), [0x5a_u8; 4096]).unwrap();

    let err = Store::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[test]
fn a_stored_fact_that_does_not_decode_is_reported_with_its_key() {
    let dir = TempDir::new("corrupt");
    drop(Store::open(dir.path()).unwrap());
    raw(&dir)
        .execute(
            "INSERT INTO facts VALUES ('alice@example.com', 'session', 'laptop', '{\"oops\":1}')",
            [],
        )
        .unwrap();

    let err = Store::open(dir.path()).unwrap().facts().unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { what, .. }
        if what == "fact session/laptop of user alice@example.com"),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_created_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let dir = TempDir::new("private");
    let nested = dir.path().join("var").join("ampel");
    drop(Store::open(&nested).unwrap());

    let mode = std::fs::metadata(&nested).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(nested.join(DB_FILE).is_file());
}

#[test]
fn a_directory_that_cannot_be_created_is_an_io_error() {
    let dir = TempDir::new("blocked");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();

    let err = Store::open(&file.join("data")).err().unwrap();
    assert!(matches!(&err, StoreError::Io { path, .. } if *path == file.join("data")), "{err:?}");
}
