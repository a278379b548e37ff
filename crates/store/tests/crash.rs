//! A writer process killed with SIGKILL loses no committed row, and its open transaction
//! leaves nothing behind — on SQLite (WAL, `synchronous=NORMAL`) and on PostgreSQL.
//!
//! A real process is killed, so this test has its own `main` (`harness = false`): run without
//! arguments it is the parent; it starts itself again as the writer child (`--writer <url>`),
//! waits until the child reports its commits and an open transaction, kills it with
//! SIGKILL and checks what the store kept.
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_store::Store;
use switchboard_store::sqlx::{self, migrate::Migrator};
use switchboard_testkit::PostgresServer;

static ITEMS_SQLITE: Migrator = sqlx::migrate!("tests/migrations/conformance/sqlite");
static ITEMS_POSTGRES: Migrator = sqlx::migrate!("tests/migrations/conformance/postgres");

/// Rows the child commits one by one before it opens the transaction it never ends.
const COMMITS: i64 = 200;
const INSERT: &str = "INSERT INTO conformance_items (writer, seq, body) VALUES (1, $1, $2)";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Some(pos) = args.iter().position(|a| a == "--writer") {
        runtime.block_on(writer(&args[pos + 1]));
        return;
    }
    // Enough of libtest's protocol for `cargo test <filter>`, `--list` and nextest.
    let ignored_only = args.iter().any(|a| a == "--ignored");
    if args.iter().any(|a| a == "--list") {
        if !ignored_only {
            println!("crash: test");
        }
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let selected =
        args.iter().skip(1).filter(|a| !a.starts_with('-')).all(|filter| {
            if exact { filter == "crash" } else { "crash".contains(filter.as_str()) }
        });
    if ignored_only || !selected {
        return;
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("crash.db").display());
    runtime.block_on(crash_and_check("sqlite", &sqlite));

    let pg = PostgresServer::start();
    runtime.block_on(crash_and_check("postgres", &pg.url));
    println!("crash: ok (sqlite, postgres)");
}

/// The child: commits `COMMITS` rows, reporting each, then opens a transaction with one more
/// row, reports that, and waits to be killed.
async fn writer(url: &str) {
    let store = Store::connect(url).await.expect("connect");
    store.migrate(&ITEMS_SQLITE, &ITEMS_POSTGRES).await.expect("migrate");
    let mut out = std::io::stdout().lock();
    for seq in 0..COMMITS {
        insert(&store, seq, "committed").await.expect("insert");
        writeln!(out, "committed {seq}").expect("report");
    }
    let open = async {
        match &store {
            Store::Sqlite(p) => {
                let mut tx = p.begin().await?;
                sqlx::query(INSERT).bind(COMMITS).bind("open").execute(&mut *tx).await?;
                std::mem::forget(tx); // never committed, never rolled back: the kill ends it
            }
            Store::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query(INSERT).bind(COMMITS).bind("open").execute(&mut *tx).await?;
                std::mem::forget(tx);
            }
        }
        Ok::<_, sqlx::Error>(())
    };
    open.await.expect("open transaction");
    writeln!(out, "open-transaction").expect("report");
    out.flush().expect("flush");
    drop(out);
    std::future::pending::<()>().await;
}

/// One autocommitted row.
async fn insert(store: &Store, seq: i64, body: &str) -> Result<(), sqlx::Error> {
    match store {
        Store::Sqlite(p) => sqlx::query(INSERT).bind(seq).bind(body).execute(p).await.map(drop),
        Store::Postgres(p) => sqlx::query(INSERT).bind(seq).bind(body).execute(p).await.map(drop),
    }
}

/// The parent: runs the writer on `url`, kills it at the right moment, checks the rows.
async fn crash_and_check(engine: &str, url: &str) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--writer", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped stdout");
    // Blocking reads on a dedicated thread; the line that matters is the last one.
    let reader = std::thread::spawn(move || {
        let mut committed = 0_i64;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read writer output");
            if line == "open-transaction" {
                return Some(committed);
            }
            if line.starts_with("committed ") {
                committed += 1;
            }
        }
        None
    });
    let committed = tokio::task::spawn_blocking(move || reader.join().expect("reader thread"))
        .await
        .expect("join")
        .unwrap_or_else(|| panic!("{engine}: the writer ended before opening its transaction"));
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    assert_eq!(committed, COMMITS, "{engine}: every commit was reported");

    let store = Store::connect(url).await.expect("reopen after the crash");
    let count_sql = "SELECT COUNT(*) FROM conformance_items";
    let open_sql = "SELECT COUNT(*) FROM conformance_items WHERE body = 'open'";
    let (rows, open): (i64, i64) = match &store {
        Store::Sqlite(p) => (
            sqlx::query_scalar(count_sql).fetch_one(p).await.expect("count"),
            sqlx::query_scalar(open_sql).fetch_one(p).await.expect("count open"),
        ),
        Store::Postgres(p) => (
            sqlx::query_scalar(count_sql).fetch_one(p).await.expect("count"),
            sqlx::query_scalar(open_sql).fetch_one(p).await.expect("count open"),
        ),
    };
    assert_eq!(rows, COMMITS, "{engine}: every committed row survived the kill");
    assert_eq!(open, 0, "{engine}: the open transaction left nothing");
    // PostgreSQL ends the dead client's session in the background: its locks must not block
    // new writers for long.
    let after = tokio::time::timeout(Duration::from_secs(10), insert(&store, COMMITS, "after"));
    after.await.expect("a new writer is not blocked").expect("insert after the crash");
    store.close().await;
}
