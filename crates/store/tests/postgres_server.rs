//! The PostgreSQL harness itself, and the store's behaviour when that server goes away:
//! parallel servers are isolated, a `kill -9` loses no committed row, a pool recovers after
//! the server comes back, and `connect` waits for a server that is still starting.
use std::time::Duration;

use switchboard_store::{Store, sqlx};
use switchboard_testkit::PostgresServer;

async fn pg_count(store: &Store, sql: &str) -> i64 {
    let pool = store.postgres().expect("a PostgreSQL store");
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn pg_exec(store: &Store, sql: &str) {
    let pool = store.postgres().expect("a PostgreSQL store");
    sqlx::query(sql).execute(pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_servers_are_isolated() {
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(PostgresServer::start),
        tokio::task::spawn_blocking(PostgresServer::start),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port, b.port);
    assert!(a.url.starts_with("postgres://postgres@127.0.0.1:"), "{}", a.url);

    let sa = Store::connect(&a.url).await.unwrap();
    let sb = Store::connect(&b.url).await.unwrap();
    pg_exec(&sa, "CREATE TABLE only_in_a (x INT)").await;
    let in_b = "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'only_in_a'";
    assert_eq!(pg_count(&sb, in_b).await, 0);
    assert_eq!(pg_count(&sa, in_b).await, 1);

    let data_dir = a.data_dir();
    sa.close().await;
    drop(a);
    assert!(!data_dir.exists(), "drop deletes the cluster");
    sb.ping().await.expect("the other server is unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_committed_row_and_the_pool_recovers() {
    let mut pg = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap();
    let store = Store::connect(&pg.url).await.unwrap();
    pg_exec(&store, "CREATE TABLE t (x INT)").await;
    pg_exec(&store, "INSERT INTO t SELECT generate_series(1, 500)").await;

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.kill9();
        pg
    })
    .await
    .unwrap();
    // The server is gone. (Not `store.ping()`: the pool would retry until its acquire timeout.)
    let refused = Store::connect_within(&pg.url, Duration::ZERO).await;
    assert!(refused.is_err(), "the server is gone");

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    // `restart` returned: the server accepts connections now, without any waiting.
    let fresh = Store::connect_within(&pg.url, Duration::ZERO).await;
    fresh.expect("accepting connections once restart returns").close().await;
    // Same pool: its dead connections are detected and replaced.
    assert_eq!(pg_count(&store, "SELECT COUNT(*) FROM t").await, 500);
    store.close().await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_server_that_is_starting() {
    let mut pg = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap();
    pg.stop();
    let url = pg.url.clone();
    // The connect starts while nothing listens; the restart (a second or more) comes after.
    let connecting =
        tokio::spawn(async move { Store::connect_within(&url, Duration::from_secs(60)).await });
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    let store = connecting.await.unwrap().expect("connect retried until the server was up");
    store.ping().await.unwrap();
    store.close().await;
    drop(pg);
}

/// A replica that vanishes in the middle of a transaction (partitioned, frozen) must not hold
/// its row locks for ever: the server ends a session idle in a transaction, so the others go
/// on. Found cutting a tracker worker off the network under load (scripts/deploy-test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_idle_releases_its_locks() {
    let pg = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap();
    let store = Store::connect(&pg.url).await.unwrap();
    let pool = store.postgres().unwrap();
    pg_exec(&store, "CREATE TABLE hot (k INT PRIMARY KEY, n INT)").await;
    pg_exec(&store, "INSERT INTO hot VALUES (1, 0)").await;
    let limit: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(limit, "15s");

    // The "vanished" replica: locks the row, then sends nothing more.
    let mut stuck = pool.begin().await.unwrap();
    sqlx::query("UPDATE hot SET n = n + 1 WHERE k = 1").execute(&mut *stuck).await.unwrap();

    let started = std::time::Instant::now();
    let other = tokio::time::timeout(
        Duration::from_secs(60),
        sqlx::query("UPDATE hot SET n = n + 10 WHERE k = 1").execute(pool),
    )
    .await
    .expect("the lock is released once the server ends the idle session")
    .unwrap();
    assert_eq!(other.rows_affected(), 1);
    assert!(started.elapsed() >= Duration::from_secs(10), "it waited for the timeout");
    assert!(stuck.commit().await.is_err(), "the idle transaction was ended by the server");
    assert_eq!(pg_count(&store, "SELECT n::BIGINT FROM hot WHERE k = 1").await, 10);
}
