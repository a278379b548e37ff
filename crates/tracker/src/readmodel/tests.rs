//! Folding is idempotent and always equals a recount from raw events; the outbox is consumed
//! exactly once. Runs on SQLite here; `tests/postgres.rs` runs the same checks on PostgreSQL.
use switchboard_store::Store;

use super::*;
use crate::outbox;

pub(crate) const T0: i64 = 1_700_000_000_000;

pub(crate) fn ev(i: i64, action: &str, subject_type: &str, subject_id: i64, ts_ms: i64) -> Event {
    Event {
        id: format!("00000000-0000-4000-8000-{i:012}"),
        object_id: i % 7,
        object_type: if i % 2 == 0 { "user".into() } else { "bot".into() },
        action: action.into(),
        subject_id,
        subject_type: subject_type.into(),
        ts_ms,
        received_ms: ts_ms,
    }
}

/// A mix over three minutes and two days, several actions, types and subjects.
pub(crate) fn sample(n: i64) -> Vec<Event> {
    let actions = ["view", "click", "share"];
    let types = ["article", "video"];
    (0..n)
        .map(|i| {
            let ts = T0 + (i % 3) * 60_000 + if i % 5 == 0 { DAY_MS } else { 0 };
            ev(i, actions[(i % 3) as usize], types[(i % 2) as usize], i % 4, ts)
        })
        .collect()
}

pub(crate) async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (crate::open_store(&url).await.unwrap(), dir)
}

/// The shared checks, engine-independent.
pub(crate) async fn folding_is_idempotent_and_matches_recount(store: &Store) {
    let events = sample(500);
    assert_eq!(fold_batch(store, &events[..300]).await.unwrap(), 300);
    // Redelivery of an overlapping batch: only the 200 unseen events count.
    assert_eq!(fold_batch(store, &events[100..]).await.unwrap(), 200);
    assert_eq!(fold_batch(store, &events).await.unwrap(), 0);
    let a = crate::audit(store).await.unwrap();
    assert!(a.is_consistent(), "{a:?}");
    assert_eq!(a.raw_events, 500);
    assert_eq!(crate::report::total(store).await.unwrap(), 500);
}

pub(crate) async fn outbox_is_consumed_exactly_once(store: &Store) {
    let mut events = sample(250);
    // Ids of their own, so this check also runs on a store the other one filled.
    for e in &mut events {
        e.id = e.id.replace("-8000-", "-9000-");
    }
    let entries: Vec<(String, usize)> =
        events.chunks(50).map(|c| (serde_json::to_string(c).unwrap(), c.len())).collect();
    outbox::append(store, &entries, T0).await.unwrap();
    assert_eq!(outbox::pending_events(store).await.unwrap(), 250);
    let first = outbox::take_and_fold(store, 2).await.unwrap();
    assert_eq!(first, outbox::Folded { entries: 2, events: 100, fresh: 100 });
    let rest = outbox::take_and_fold(store, 100).await.unwrap();
    assert_eq!((rest.entries, rest.events), (3, 150));
    assert_eq!(outbox::take_and_fold(store, 100).await.unwrap(), outbox::Folded::default());
    assert_eq!(outbox::pending_events(store).await.unwrap(), 0);
    assert!(crate::audit(store).await.unwrap().is_consistent());
}

#[tokio::test]
async fn sqlite_folding_is_idempotent_and_matches_recount() {
    let (store, _dir) = sqlite_store().await;
    folding_is_idempotent_and_matches_recount(&store).await;
}

#[tokio::test]
async fn sqlite_outbox_is_consumed_exactly_once() {
    let (store, _dir) = sqlite_store().await;
    outbox_is_consumed_exactly_once(&store).await;
}

#[tokio::test]
async fn a_failed_fold_leaves_the_outbox_untouched() {
    let (store, _dir) = sqlite_store().await;
    let entries = vec![("not json".to_owned(), 1)];
    outbox::append(&store, &entries, T0).await.unwrap();
    assert!(outbox::take_and_fold(&store, 10).await.is_err());
    // Rolled back: the entry is still there for an operator to inspect.
    assert_eq!(outbox::pending_events(&store).await.unwrap(), 1);
}

#[tokio::test]
async fn audit_detects_a_tampered_read_model() {
    let (store, _dir) = sqlite_store().await;
    fold_batch(&store, &sample(50)).await.unwrap();
    let pool = store.sqlite().unwrap();
    sqlx::query(
        "UPDATE tracker_counts_minute SET count = count + 1 \
         WHERE minute_ms = (SELECT MIN(minute_ms) FROM tracker_counts_minute)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM tracker_objects_day WHERE day = (SELECT MIN(day) FROM tracker_objects_day) AND object_id = 0")
        .execute(pool)
        .await
        .unwrap();
    let a = crate::audit(&store).await.unwrap();
    assert!(!a.is_consistent());
    assert!(a.object_mismatches > 0 && a.minute_mismatches > 0, "{a:?}");
    assert_ne!(a.raw_events, a.counted_events);
}

#[tokio::test]
async fn postgres_folding_outbox_and_reports_match_sqlite_semantics() {
    let pg = switchboard_testkit::PostgresServer::start();
    let store = crate::open_store(&pg.url).await.unwrap();
    folding_is_idempotent_and_matches_recount(&store).await;
    outbox_is_consumed_exactly_once(&store).await;
    // Every report query runs on PostgreSQL's dialect too (types, integer division, casts).
    let f = crate::report::Filter {
        from_ms: T0 - DAY_MS,
        to_ms: T0 + 2 * DAY_MS,
        ..Default::default()
    };
    let series = crate::report::series(&store, &f, 120_000).await.unwrap();
    let top = crate::report::top(&store, &f, 3).await.unwrap();
    let breakdown = crate::report::breakdown(&store, &f).await.unwrap();
    let uniques = crate::report::uniques(&store, &f).await.unwrap();
    let total: i64 = breakdown.iter().map(|b| b.count).sum();
    assert_eq!(series.iter().map(|p| p.count).sum::<i64>(), total);
    assert_eq!(total, crate::report::total(&store).await.unwrap());
    assert_eq!(top.len(), 3);
    assert!(!uniques.is_empty());
}
