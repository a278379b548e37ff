//! One conformance suite, run against both engines: an SQLite file in a temp dir and a
//! throw-away PostgreSQL server (`switchboard_testkit::PostgresServer`).
//!
//! Every case is written once against `Store` and instantiated per engine by the
//! `conformance!` macro at the end, so a behaviour difference between the engines shows up
//! as one test failing on one side.
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchboard_store::sqlx;
use switchboard_store::sqlx::migrate::{Migration, MigrationType, Migrator};
use switchboard_store::{Backend, Error, Store};
use switchboard_testkit::PostgresServer;

static CONFORMANCE_SQLITE: Migrator = sqlx::migrate!("tests/migrations/conformance/sqlite");
static CONFORMANCE_POSTGRES: Migrator = sqlx::migrate!("tests/migrations/conformance/postgres");
static OTHER_SQLITE: Migrator = sqlx::migrate!("tests/migrations/other/sqlite");
static OTHER_POSTGRES: Migrator = sqlx::migrate!("tests/migrations/other/postgres");

/// Runs `$body` with `$pool` bound to whichever pool `$store` holds. Both arms are
/// type-checked separately, so the same SQL text runs on both engines (`$1` placeholders
/// work in SQLite too).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// Where a test's database lives; dropping it deletes the database.
struct Fixture {
    url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<Arc<PostgresServer>>,
}

impl Fixture {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nested/store.db").display());
        Self { url, _sqlite_dir: Some(dir), _postgres: None }
    }

    /// A fresh database on a PostgreSQL server shared by the tests running at the same time
    /// (starting a cluster costs a second or two); the server stops when the last one ends.
    fn postgres() -> Self {
        static SHARED: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
        static NEXT_DB: AtomicUsize = AtomicUsize::new(0);
        let server = {
            let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
            shared.upgrade().unwrap_or_else(|| {
                let server = Arc::new(PostgresServer::start());
                *shared = Arc::downgrade(&server);
                server
            })
        };
        let url = server.create_database(&format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed)));
        Self { url, _sqlite_dir: None, _postgres: Some(server) }
    }

    async fn open(&self) -> Store {
        let store = Store::connect(&self.url).await.unwrap();
        store.migrate(&CONFORMANCE_SQLITE, &CONFORMANCE_POSTGRES).await.unwrap();
        store
    }
}

async fn count_items(store: &Store) -> i64 {
    on_pool!(store, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM conformance_items")
        .fetch_one(p)
        .await
        .unwrap())
}

async fn insert_item(store: &Store, writer: i64, seq: i64) -> Result<u64, sqlx::Error> {
    const SQL: &str = "INSERT INTO conformance_items (writer, seq, body) VALUES ($1, $2, $3)";
    let body = format!("w{writer}-s{seq}");
    on_pool!(store, p => sqlx::query(SQL)
        .bind(writer)
        .bind(seq)
        .bind(&body)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
}

async fn applied_versions(store: &Store) -> Vec<i64> {
    const SQL: &str = "SELECT version FROM _sqlx_migrations ORDER BY version";
    on_pool!(store, p => sqlx::query_scalar::<_, i64>(SQL).fetch_all(p).await.unwrap())
}

// ---- cases -------------------------------------------------------------------------------

async fn connect_twice_is_idempotent(fx: Fixture, backend: Backend) {
    let first = Store::connect(&fx.url).await.unwrap();
    // A second pool while the first is open (two processes), then again after closing.
    let second = Store::connect(&fx.url).await.unwrap();
    assert_eq!(first.backend(), backend);
    first.ping().await.unwrap();
    second.ping().await.unwrap();
    first.close().await;
    second.close().await;
    let third = Store::connect(&fx.url).await.unwrap();
    assert_eq!(applied_versions(&third).await, vec![1001], "core migration applied once");
    let meta: i64 = on_pool!(&third, p => sqlx::query_scalar("SELECT COUNT(*) FROM store_meta")
            .fetch_one(p)
            .await
            .unwrap());
    assert_eq!(meta, 0);
}

async fn service_migrations_sit_beside_core(fx: Fixture, _: Backend) {
    let store = fx.open().await;
    store.migrate(&OTHER_SQLITE, &OTHER_POSTGRES).await.unwrap();
    // Re-running either service's migrator, and the core one (on connect), changes nothing
    // and does not trip over the versions it does not know.
    store.migrate(&CONFORMANCE_SQLITE, &CONFORMANCE_POSTGRES).await.unwrap();
    store.migrate(&OTHER_SQLITE, &OTHER_POSTGRES).await.unwrap();
    store.close().await;
    let store = Store::connect(&fx.url).await.unwrap();
    assert_eq!(applied_versions(&store).await, vec![1001, 9001, 9101]);
    assert_eq!(insert_item(&store, 1, 1).await.unwrap(), 1);
    on_pool!(&store, p => sqlx::query("INSERT INTO other_notes (note) VALUES ('hi')")
        .execute(p)
        .await
        .unwrap()
        .rows_affected());
}

async fn changed_migration_is_refused(fx: Fixture, _: Backend) {
    let store = fx.open().await;
    // Same version as the applied 9001, different SQL: someone edited a shipped migration.
    let edited = Migrator {
        migrations: Cow::Owned(vec![Migration::new(
            9001,
            "conformance items".into(),
            MigrationType::Simple,
            "CREATE TABLE conformance_items_v2 (x INTEGER)".into(),
            false,
        )]),
        ..Migrator::DEFAULT
    };
    let err = store.migrate(&edited, &edited).await.unwrap_err();
    assert!(matches!(err, Error::Migrate(_)), "{err:?}");
    let msg = switchboard_core::describe_error(&err);
    assert!(msg.contains("9001"), "the message names the version: {msg}");
}

async fn concurrent_migrators_serialize(fx: Fixture, _: Backend) {
    const MIGRATORS: usize = 6;
    // Separate pools, like separate processes starting at once against one database; the
    // barrier lines them up so they all read "not applied yet" at the same moment.
    let barrier = Arc::new(tokio::sync::Barrier::new(MIGRATORS));
    let mut stores = Vec::new();
    for _ in 0..MIGRATORS {
        stores.push(Store::connect(&fx.url).await.unwrap());
    }
    let migrations = stores.iter().cloned().map(|store| {
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            store.migrate(&CONFORMANCE_SQLITE, &CONFORMANCE_POSTGRES).await?;
            store.migrate(&OTHER_SQLITE, &OTHER_POSTGRES).await
        })
    });
    let migrations: Vec<_> = migrations.collect();
    for outcome in join_all(migrations).await {
        outcome.unwrap().unwrap();
    }
    for store in &stores {
        assert_eq!(applied_versions(store).await, vec![1001, 9001, 9101]);
    }
}

async fn concurrent_writers_lose_nothing(fx: Fixture, _: Backend) {
    const WRITERS: i64 = 8;
    const ROWS: i64 = 100;
    let store = fx.open().await;
    let writers = (0..WRITERS).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for seq in 0..ROWS {
                assert_eq!(insert_item(&store, w, seq).await.unwrap(), 1);
            }
        })
    });
    let writers: Vec<_> = writers.collect();
    for joined in join_all(writers).await {
        joined.unwrap();
    }
    assert_eq!(count_items(&store).await, WRITERS * ROWS);
    let distinct: i64 = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT DISTINCT writer, seq FROM conformance_items) AS d",
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert_eq!(distinct, WRITERS * ROWS);
}

async fn transactions_roll_back(fx: Fixture, _: Backend) {
    let store = fx.open().await;
    insert_item(&store, 0, 0).await.unwrap();
    const SQL: &str = "INSERT INTO conformance_items (writer, seq, body) VALUES ($1, $2, 'tx')";
    on_pool!(&store, p => {
        // Explicit rollback.
        let mut tx = p.begin().await.unwrap();
        sqlx::query(SQL).bind(1_i64).bind(1_i64).execute(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();

        // Dropped without commit (a task that errored out half-way).
        let mut tx = p.begin().await.unwrap();
        sqlx::query(SQL).bind(2_i64).bind(1_i64).execute(&mut *tx).await.unwrap();
        drop(tx);

        // A failing statement (duplicate key) after a good one: nothing of it stays.
        let mut tx = p.begin().await.unwrap();
        sqlx::query(SQL).bind(3_i64).bind(1_i64).execute(&mut *tx).await.unwrap();
        let dup = sqlx::query(SQL).bind(0_i64).bind(0_i64).execute(&mut *tx).await.unwrap_err();
        assert!(dup.as_database_error().is_some_and(|e| e.is_unique_violation()), "{dup}");
        tx.rollback().await.unwrap();

        // A committed one stays.
        let mut tx = p.begin().await.unwrap();
        sqlx::query(SQL).bind(4_i64).bind(1_i64).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    });
    let writers: Vec<i64> = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT writer FROM conformance_items ORDER BY writer",
    )
    .fetch_all(p)
    .await
    .unwrap());
    assert_eq!(writers, vec![0, 4]);
}

async fn data_survives_close_and_reopen(fx: Fixture, _: Backend) {
    let store = fx.open().await;
    for seq in 0..10 {
        insert_item(&store, 7, seq).await.unwrap();
    }
    let upsert = "INSERT INTO store_meta (key, value, updated_ms) VALUES ($1, $2, $3) \
                  ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms";
    for (value, ms) in [("a", 1_i64), ("b", 2)] {
        on_pool!(&store, p => sqlx::query(upsert)
            .bind("checkpoint")
            .bind(value)
            .bind(ms)
            .execute(p)
            .await
            .unwrap()
            .rows_affected());
    }
    store.close().await;
    assert!(store.ping().await.is_err(), "a closed store refuses queries");

    let store = fx.open().await;
    assert_eq!(count_items(&store).await, 10);
    let value: String = on_pool!(&store, p => sqlx::query_scalar(
        "SELECT value FROM store_meta WHERE key = 'checkpoint'",
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert_eq!(value, "b", "the upsert kept the last value");
}

/// Awaits every join handle, in order. Takes a `Vec` so that every task has been spawned
/// before the first is awaited (a lazy iterator would run them one after the other).
async fn join_all<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::sqlite(), super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Fixture::postgres(), super::Backend::Postgres).await;
                }
            )*
        }
    };
}

conformance!(
    connect_twice_is_idempotent,
    service_migrations_sit_beside_core,
    changed_migration_is_refused,
    concurrent_migrators_serialize,
    concurrent_writers_lose_nothing,
    transactions_roll_back,
    data_survives_close_and_reopen,
);

// ---- engine-independent ------------------------------------------------------------------

#[tokio::test]
async fn unknown_scheme_is_refused_without_leaking_the_password() {
    let err = Store::connect("mysql://admin:hunter2@db/app").await.unwrap_err();
    assert!(matches!(err, Error::UnsupportedUrl(_)), "{err:?}");
    let msg = switchboard_core::describe_error(&err);
    assert!(
        msg.contains("unsupported store url") && msg.contains("mysql://admin:***@db/app"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn unreachable_postgres_names_the_cause_and_hides_the_password() {
    let port = switchboard_testkit::free_port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/app");
    let started = std::time::Instant::now();
    let err = Store::connect_within(&url, Duration::from_millis(300)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after the wait");
    let msg = switchboard_core::describe_error(&err);
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(msg.contains(&format!("postgres://app:***@127.0.0.1:{port}/app")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "the cause is kept: {msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn malformed_postgres_url_is_a_connect_error() {
    let err = Store::connect("postgres://u@127.0.0.1:notaport/db").await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn sqlite_directory_that_cannot_exist_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let url = format!("sqlite://{}/sub/store.db", file.display());
    let err = Store::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[tokio::test]
async fn sqlite_in_memory_is_one_database_across_the_pool() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate(&CONFORMANCE_SQLITE, &CONFORMANCE_POSTGRES).await.unwrap();
    // More concurrent users than one connection: every pooled connection sees the table.
    let writers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move { insert_item(&store, w, 0).await.unwrap() })
    });
    let writers: Vec<_> = writers.collect();
    for joined in join_all(writers).await {
        joined.unwrap();
    }
    assert_eq!(count_items(&store).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wrong_database_fails_fast_with_its_name() {
    let fx = Fixture::postgres();
    let url = fx.url.rsplit_once('/').map(|(base, _)| format!("{base}/no_such_db")).unwrap();
    let started = std::time::Instant::now();
    let err = Store::connect(&url).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "not retried like a refused connection");
    assert!(err.to_string().contains("no_such_db"), "{err}");
}

/// Roles started together on one fresh SQLite file (the README's `tracker collector` and
/// `tracker worker`) all connect: the file being created and switched to WAL by one of them
/// is waited for, not reported as "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_opened_by_several_at_once_connects_them_all() {
    // Without the wait about one round in 20 failed.
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shared.db").display());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::connect(&url).await.map(|_| ()) })
            })
            .collect();
        for h in handles {
            if let Err(e) = h.await.unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}
