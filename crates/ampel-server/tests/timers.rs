//! Changes that happen by themselves, on tokio's paused clock: a device goes idle and then
//! away, a session whose heartbeats stop expires, a manual status ends and the state before it
//! comes back. Each reaches a watcher without any request arriving.

use std::sync::Arc;

use ampel_core::fact::DeviceState;
use ampel_core::{Fact, FactState, Policy, Source};
use ampel_server::auth::Principal;
use ampel_server::clock::{Clock, TokioClock};
use ampel_server::hub::watch::Conn;
use ampel_server::hub::{Change, Hub};
use ampel_server::metrics::Metrics;
use ampel_server::persist::Persist;
use ampel_store::{Store, UserRecord};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

fn start() -> (Arc<Hub>, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> =
        Arc::new(TokioClock::starting_at("2026-12-03T09:00:00Z".parse().unwrap()));
    let metrics = Arc::new(Metrics::default());
    let persist = Persist::start(Store::open_in_memory().unwrap(), Arc::clone(&metrics));
    let users = ["alice@example.com", "bob@example.com"]
        .map(|id| UserRecord {
            id: id.into(),
            name: id.into(),
            phone: None,
            lang: None,
            tz: None,
            groups: vec!["team".into()],
            delegates: vec![],
            blocked: vec![],
            created: clock.now(),
        })
        .to_vec();
    let hub = Arc::new(Hub::new(
        Policy::default(),
        Arc::clone(&clock),
        metrics,
        persist,
        users,
        vec![],
        vec![],
    ));
    hub.spawn_timers();
    (hub, clock)
}

fn watch(hub: &Hub, user: &str) -> Arc<Conn> {
    let conn = Arc::new(Conn::new(Principal::User("bob@example.com".into())));
    hub.watch(&conn, &hub.user(user).unwrap());
    conn
}

/// Waits (on the paused clock) for the next update and returns it with the time it arrived.
async fn next(conn: &Conn, clock: &Arc<dyn Clock>) -> (Timestamp, Value) {
    let mut batch = Vec::new();
    conn.next_batch(&mut batch).await.expect("the connection is open");
    assert_eq!(batch.len(), 1);
    (clock.now(), serde_json::from_slice(&batch[0]).unwrap())
}

fn assert_near(got: Timestamp, want: Timestamp) {
    let late = got.duration_since(want);
    assert!(
        late >= SignedDuration::ZERO && late < SignedDuration::from_millis(50),
        "{got} is not {want}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unused_device_goes_idle_then_away_then_its_session_expires() {
    let (hub, clock) = start();
    let conn = watch(&hub, "alice@example.com");
    assert_eq!(next(&conn, &clock).await.1["availability"], "offline");

    let t0 = clock.now();
    let fact = Fact::new(Source::Session, "s1", FactState::device(DeviceState::Active), t0);
    drop(hub.update(&hub.user("alice@example.com").unwrap(), vec![Change::Put(fact)]));
    let (_, p) = next(&conn, &clock).await;
    assert_eq!((p["availability"].as_str(), p["idle"].as_bool()), (Some("available"), Some(false)));

    let (at, p) = next(&conn, &clock).await;
    assert_near(at, t0 + SignedDuration::from_mins(5));
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str(), p["idle"].as_bool()),
        (Some("available"), Some("inactive"), Some(true))
    );

    let (at, p) = next(&conn, &clock).await;
    assert_near(at, t0 + SignedDuration::from_mins(15));
    assert_eq!(p["availability"], "away");

    let (at, p) = next(&conn, &clock).await;
    assert_near(at, t0 + SignedDuration::from_hours(1));
    assert_eq!(p["availability"], "offline");
    assert!(
        hub.facts(&hub.user("alice@example.com").unwrap()).is_empty(),
        "the expired session is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_device_active_and_the_timer_heap_small() {
    let (hub, clock) = start();
    let alice = hub.user("alice@example.com").unwrap();
    let conn = watch(&hub, "alice@example.com");
    next(&conn, &clock).await;
    let fact =
        Fact::new(Source::Session, "s1", FactState::device(DeviceState::Active), clock.now());
    drop(hub.update(&alice, vec![Change::Put(fact)]));
    assert_eq!(next(&conn, &clock).await.1["availability"], "available");

    for _ in 0..120 {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let touched =
            hub.touch(&alice, Source::Session, "s1", FactState::device(DeviceState::Active));
        drop(touched.expect("the session is alive"));
    }
    let mut batch = Vec::new();
    let waited =
        tokio::time::timeout(std::time::Duration::from_millis(10), conn.next_batch(&mut batch))
            .await;
    assert!(waited.is_err(), "two hours of heartbeats change nothing: {batch:?}");
}

#[tokio::test(start_paused = true)]
async fn a_manual_status_ends_at_its_time_and_the_state_before_comes_back() {
    let (hub, clock) = start();
    let alice = hub.user("alice@example.com").unwrap();
    let conn = watch(&hub, "alice@example.com");
    next(&conn, &clock).await;

    let t0 = clock.now();
    let call = Fact::new(
        Source::Telephony,
        "c1",
        FactState::Call { state: ampel_core::fact::CallState::Connected },
        t0,
    );
    drop(hub.update(&alice, vec![Change::Put(call)]));
    assert_eq!(next(&conn, &clock).await.1["activity"], "in-a-call");

    let until = t0 + SignedDuration::from_mins(30);
    let dnd =
        FactState::Status { availability: ampel_core::Availability::DoNotDisturb, activity: None };
    drop(hub.update(
        &alice,
        vec![Change::Put(Fact::new(Source::Manual, "status", dnd, t0).ending(Some(until)))],
    ));
    let (_, p) = next(&conn, &clock).await;
    assert_eq!(p["availability"], "do-not-disturb");
    assert_eq!(p["until"].as_str().unwrap().parse::<Timestamp>().unwrap(), until);

    let (at, p) = next(&conn, &clock).await;
    assert_near(at, until);
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("busy"), Some("in-a-call"))
    );
}

#[tokio::test(start_paused = true)]
async fn history_older_than_the_retention_is_purged() {
    let (hub, clock) = start();
    let alice = hub.user("alice@example.com").unwrap();
    let busy = FactState::Status { availability: ampel_core::Availability::Busy, activity: None };
    let old = clock.now();
    hub.update(&alice, vec![Change::Put(Fact::new(Source::Manual, "status", busy, old))])
        .committed()
        .await
        .unwrap();

    tokio::time::sleep(std::time::Duration::from_secs(31 * 24 * 3600)).await;
    let away = FactState::Status { availability: ampel_core::Availability::Away, activity: None };
    let recent = clock.now();
    hub.update(&alice, vec![Change::Put(Fact::new(Source::Manual, "status", away, recent))])
        .committed()
        .await
        .unwrap();
    hub.purge_history().committed().await.unwrap();

    let history = hub
        .persist()
        .read(|store| store.history("alice@example.com", Timestamp::MIN, Timestamp::MAX, 100))
        .await
        .unwrap();
    let kept: Vec<(Timestamp, &str)> =
        history.iter().map(|e| (e.at, e.presence.availability.as_str())).collect();
    assert_eq!(kept, [(recent, "away")]);
}

#[tokio::test(start_paused = true)]
async fn statuses_that_keep_ending_earlier_do_not_grow_the_timer_heap() {
    let (hub, clock) = start();
    let alice = hub.user("alice@example.com").unwrap();
    for i in 0..5000 {
        let busy =
            FactState::Status { availability: ampel_core::Availability::Busy, activity: None };
        let until =
            clock.now() + SignedDuration::from_hours(24 * 300) - SignedDuration::from_secs(i);
        let fact = Fact::new(Source::Manual, "status", busy, clock.now()).ending(Some(until));
        drop(hub.update(&alice, vec![Change::Put(fact)]));
        if i % 500 == 0 {
            // Let the timer task run, as it does between requests.
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(hub.timer_entries() <= 2 * 2 + 1024 + 500, "{} entries", hub.timer_entries());
}
