//! Storage scenarios, each written once and run on SQLite (a file in a
//! tempdir) and on PostgreSQL (a fresh database per test).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_outbox::testing::{fresh_postgres, sqlite_url, TestDatabase};
use choreo_outbox::{Backend, Db, DbOptions, OutboxMessage, Result};
use sqlx::migrate::Migrator;

static SQLITE_SERVICE_MIGRATOR: Migrator = sqlx::migrate!("./tests/fixtures/migrations/sqlite");
static POSTGRES_SERVICE_MIGRATOR: Migrator = sqlx::migrate!("./tests/fixtures/migrations/postgres");

/// Where a scenario runs; keeps the tempdir / database alive.
enum Target {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Target::Sqlite(dir) => sqlite_url(&dir.path().join("nested/dirs")),
            Target::Postgres(db) => db.url().to_owned(),
        }
    }

    async fn finish(self) {
        if let Target::Postgres(db) = self {
            db.drop_database().await;
        }
    }
}

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let target = Target::Sqlite(tempfile::tempdir().unwrap());
    scenario(target.url()).await.unwrap();
    target.finish().await;
}

async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let target = Target::Postgres(fresh_postgres().await);
    scenario(target.url()).await.unwrap();
    target.finish().await;
}

/// Runs `scenario` as two tests, `sqlite` and `postgres`, in a module named
/// after it.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::on_sqlite(super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::on_postgres(super::$scenario).await;
            }
        }
    )*};
}

on_both!(
    inbox_dedup_is_all_or_nothing,
    append_commit_read_mark,
    crash_after_commit_before_publish,
    purge_removes_only_old_rows,
    commit_wakes_the_relay,
    errors_are_classified,
    before_commit_work_runs_once_or_rolls_back,
    inbox_many_reports_each_new_event_once,
);

// --- helpers -------------------------------------------------------------

async fn connect(url: &str) -> Result<Db> {
    let db = Db::connect(url).await?;
    db.migrate(service_migrator(&db)).await?;
    Ok(db)
}

fn service_migrator(db: &Db) -> &'static Migrator {
    match db.backend() {
        Backend::Sqlite => &SQLITE_SERVICE_MIGRATOR,
        Backend::Postgres => &POSTGRES_SERVICE_MIGRATOR,
    }
}

fn msg(key: &str, payload: &[u8]) -> OutboxMessage {
    OutboxMessage {
        topic: "orders".into(),
        key: key.into(),
        payload: payload.to_vec(),
        headers: vec![("traceparent".into(), format!("tp-{key}"))],
    }
}

async fn count(db: &Db, sql: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(db.pool()).await?)
}

async fn test_state(db: &Db, id: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM test_state WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await?,
    )
}

// --- scenarios -----------------------------------------------------------

/// A batch's inbox entries in one statement: old ids and repeats within the
/// batch are not new; a rolled-back batch leaves nothing.
async fn inbox_many_reports_each_new_event_once(url: String) -> Result<()> {
    let db = connect(&url).await?;
    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("order", "c").await?);
    uow.commit().await?;

    let mut uow = db.begin().await?;
    let fresh = uow
        .record_inbox_many("order", &["a", "b", "a", "c"])
        .await?;
    assert_eq!(fresh, HashSet::from(["a".to_owned(), "b".to_owned()]));
    uow.rollback().await?;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 1);

    // More ids than one statement takes; other consumers are separate.
    let ids: Vec<String> = (0..700).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut uow = db.begin().await?;
    assert_eq!(uow.record_inbox_many("order", &refs).await?.len(), 700);
    assert_eq!(
        uow.record_inbox_many("payment", &refs[..10]).await?.len(),
        10
    );
    assert!(uow.record_inbox_many("order", &refs[..5]).await?.is_empty());
    uow.commit().await?;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 711);
    Ok(())
}

/// Before-commit work runs once per key, before the commit; when it fails
/// the unit rolls back and the error is retryable.
async fn before_commit_work_runs_once_or_rolls_back(url: String) -> Result<()> {
    let db = connect(&url).await?;
    let runs = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("communication", "e1").await?);
    for _ in 0..3 {
        let runs = runs.clone();
        uow.before_commit("flush", async move {
            runs.lock().unwrap().push("flush");
            Ok(())
        });
    }
    let later = runs.clone();
    uow.before_commit("other", async move {
        later.lock().unwrap().push("other");
        Ok(())
    });
    assert!(
        runs.lock().unwrap().is_empty(),
        "nothing runs before commit"
    );
    uow.commit().await?;
    assert_eq!(*runs.lock().unwrap(), vec!["flush", "other"]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 1);

    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("communication", "e2").await?);
    uow.append(msg("order-2", b"notified")).await?;
    uow.before_commit("flush", async { Err("disk full".to_owned()) });
    let err = uow
        .commit()
        .await
        .expect_err("failed work stops the commit");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await?, 0);

    // Work registered on a unit that rolls back never runs.
    let mut uow = db.begin().await?;
    let never = runs.clone();
    uow.before_commit("flush", async move {
        never.lock().unwrap().push("rolled back");
        Ok(())
    });
    uow.rollback().await?;
    assert_eq!(runs.lock().unwrap().len(), 2);
    Ok(())
}

/// Scenario 1: the inbox deduplicates, and a unit of work applies all of
/// its writes (state, inbox, outbox) or none.
async fn inbox_dedup_is_all_or_nothing(url: String) -> Result<()> {
    let db = connect(&url).await?;

    // First delivery of e1: state change + event, committed.
    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("inventory", "e1").await?);
    sqlx::query("INSERT INTO test_state (id, value) VALUES ($1, $2)")
        .bind("order-1")
        .bind(1_i64)
        .execute(uow.conn())
        .await?;
    uow.append(msg("order-1", b"reserved")).await?;
    uow.commit().await?;

    // Redelivery of e1: this handler writes first and checks the inbox
    // last; on `false` it rolls back and none of its writes survive.
    let mut uow = db.begin().await?;
    sqlx::query("UPDATE test_state SET value = value + 1 WHERE id = $1")
        .bind("order-1")
        .execute(uow.conn())
        .await?;
    uow.append(msg("order-1", b"reserved again")).await?;
    assert!(!uow.record_inbox("inventory", "e1").await?);
    uow.rollback().await?;

    assert_eq!(test_state(&db, "order-1").await?, Some(1));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await?, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 1);

    // The same event id is new for another consumer.
    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("payment", "e1").await?);
    uow.rollback().await?;

    // A new event whose unit of work appends and then rolls back (or is
    // dropped, e.g. the handler returned an error) leaves nothing behind...
    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("inventory", "e2").await?);
    uow.append(msg("order-2", b"x")).await?;
    uow.rollback().await?;
    {
        let mut uow = db.begin().await?;
        assert!(uow.record_inbox("inventory", "e3").await?);
        uow.append(msg("order-3", b"y")).await?;
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await?, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 1);
    assert_eq!(db.outbox_backlog().await?, 1);

    // ...so its redelivery is processed as new.
    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("inventory", "e2").await?);
    assert!(uow.record_inbox("inventory", "e3").await?);
    uow.commit().await?;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await?, 3);
    Ok(())
}

/// Scenario 2: committed rows come out in seq order with their content;
/// marked rows do not come out again; the backlog follows.
async fn append_commit_read_mark(url: String) -> Result<()> {
    let db = connect(&url).await?;
    assert!(db.next_batch(10).await?.is_empty());
    assert_eq!(db.outbox_backlog().await?, 0);

    let mut uow = db.begin().await?;
    uow.append(msg("k1", b"one")).await?;
    uow.append(msg("k2", b"two")).await?;
    uow.commit().await?;
    let mut uow = db.begin().await?;
    uow.append(OutboxMessage {
        topic: "payments".into(),
        key: "k1".into(),
        payload: Vec::new(), // empty payloads survive the round trip
        headers: vec![
            ("a".into(), "1".into()),
            ("a".into(), "2 \"quoted\" ü".into()),
        ],
    })
    .await?;
    assert_eq!(uow.appended(), 1);
    uow.commit().await?;
    assert_eq!(db.outbox_backlog().await?, 3);

    let all = db.next_batch(10).await?;
    let rows = all.rows().to_vec();
    assert_eq!(rows.len(), 3);
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "{rows:?}");
    assert_eq!(
        rows.iter()
            .map(|r| (r.key.as_str(), r.payload.as_slice()))
            .collect::<Vec<_>>(),
        [
            ("k1", b"one".as_slice()),
            ("k2", b"two".as_slice()),
            ("k1", b"".as_slice())
        ]
    );
    assert_eq!(rows[0].topic, "orders");
    assert_eq!(
        rows[0].headers,
        [("traceparent".to_string(), "tp-k1".to_string())]
    );
    assert_eq!(rows[2].topic, "payments");
    assert_eq!(
        rows[2].headers,
        [
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2 \"quoted\" ü".to_string())
        ]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(rows.iter().all(|r| (now - r.created_at_ms).abs() < 60_000));

    // PostgreSQL: the held batch is the lease; a second read gets nothing.
    // SQLite: nothing is held, a second read sees the same rows.
    let second = db.next_batch(10).await?;
    match db.backend() {
        Backend::Postgres => assert!(second.is_empty()),
        Backend::Sqlite => assert_eq!(second.rows(), rows.as_slice()),
    }
    drop(second);
    // Publishing failed: release unmarked, the rows come back.
    all.release().await?;

    let first_two = db.next_batch(2).await?;
    assert_eq!(first_two.rows(), &rows[..2]);
    first_two.mark_published().await?;
    assert_eq!(db.outbox_backlog().await?, 1);

    let rest = db.next_batch(10).await?;
    assert_eq!(rest.rows(), &rows[2..]);
    rest.mark_published().await?;
    assert!(db.next_batch(10).await?.is_empty());
    assert_eq!(db.outbox_backlog().await?, 0);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL"
        )
        .await?,
        3
    );

    // New rows after a purge-free history keep growing seqs.
    let mut uow = db.begin().await?;
    uow.append(msg("k3", b"three")).await?;
    uow.commit().await?;
    let batch = db.next_batch(10).await?;
    assert_eq!(batch.len(), 1);
    assert!(batch.rows()[0].seq > rows[2].seq);
    batch.mark_published().await?;
    Ok(())
}

/// Scenario 3: rows committed before a crash are published after restart,
/// and once marked never again; a crash between publish and mark repeats
/// the publish (at least once), never loses it.
async fn crash_after_commit_before_publish(url: String) -> Result<()> {
    let db = connect(&url).await?;
    let mut uow = db.begin().await?;
    uow.append(msg("o1", b"a")).await?;
    uow.append(msg("o2", b"b")).await?;
    uow.commit().await?;
    drop(db); // crash: no close, no relay ran

    // Restart: our migrations run again next to the service's (ignore_missing
    // both ways).
    let db = connect(&url).await?;
    assert_eq!(db.outbox_backlog().await?, 2);
    let batch = db.next_batch(10).await?;
    let payloads: Vec<_> = batch.rows().iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, [b"a".to_vec(), b"b".to_vec()]);
    drop(batch);
    drop(db); // crash after publish, before mark

    let db = connect(&url).await?;
    let batch = db.next_batch(10).await?;
    assert_eq!(batch.len(), 2, "unmarked rows are published again");
    batch.mark_published().await?;
    assert!(db.next_batch(10).await?.is_empty());
    drop(db);

    let db = connect(&url).await?;
    assert!(db.next_batch(10).await?.is_empty());
    assert_eq!(db.outbox_backlog().await?, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await?, 2);
    Ok(())
}

/// Scenario 5: retention deletes old published rows and old inbox rows,
/// never unpublished rows, however old.
async fn purge_removes_only_old_rows(url: String) -> Result<()> {
    let db = connect(&url).await?;
    let mut uow = db.begin().await?;
    for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
        uow.append(msg(key, &[i as u8])).await?;
    }
    assert!(uow.record_inbox("svc", "old").await?);
    assert!(uow.record_inbox("svc", "new").await?);
    uow.commit().await?;
    db.next_batch(10).await?.mark_published().await?;
    let mut uow = db.begin().await?;
    uow.append(msg("e", b"unpublished")).await?;
    uow.commit().await?;

    let two_hours_ago = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        now - 2 * 3600 * 1000
    };
    // Age two published rows, the unpublished row and one inbox row.
    sqlx::query("UPDATE outbox SET published_at = $1 WHERE key IN ('a', 'b')")
        .bind(two_hours_ago)
        .execute(db.pool())
        .await?;
    sqlx::query("UPDATE outbox SET created_at = $1 WHERE key = 'e'")
        .bind(two_hours_ago)
        .execute(db.pool())
        .await?;
    sqlx::query("UPDATE inbox SET seen_at = $1 WHERE event_id = 'old'")
        .bind(two_hours_ago)
        .execute(db.pool())
        .await?;

    let hour = Duration::from_secs(3600);
    assert_eq!(db.purge(hour, hour).await?, (2, 1));
    assert_eq!(db.purge(hour, hour).await?, (0, 0));

    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await?;
    assert_eq!(keys, ["c", "d", "e"]);
    let events: Vec<String> = sqlx::query_scalar("SELECT event_id FROM inbox")
        .fetch_all(db.pool())
        .await?;
    assert_eq!(events, ["new"]);
    let batch = db.next_batch(10).await?;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.rows()[0].key, "e");
    batch.mark_published().await?;

    // After purging the newest rows, seqs still never go backwards.
    let max_before: i64 = count(&db, "SELECT MAX(seq) FROM outbox").await?;
    // "Older than zero" is strict: step past the millisecond of the marks.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(db.purge(Duration::ZERO, hour).await?, (3, 0));
    let mut uow = db.begin().await?;
    uow.append(msg("f", b"after purge")).await?;
    uow.commit().await?;
    let batch = db.next_batch(10).await?;
    assert!(batch.rows()[0].seq > max_before);
    batch.mark_published().await?;
    Ok(())
}

/// Scenario 6: committing appended rows wakes the relay; commits without
/// rows and rollbacks do not.
async fn commit_wakes_the_relay(url: String) -> Result<()> {
    let db = connect(&url).await?;
    let signal = db.outbox_signal();
    let short = Duration::from_millis(200);

    let mut uow = db.begin().await?;
    assert!(uow.record_inbox("svc", "e1").await?);
    uow.commit().await?;
    let mut uow = db.begin().await?;
    uow.append(msg("k", b"rolled back")).await?;
    uow.rollback().await?;
    assert!(
        tokio::time::timeout(short, signal.notified())
            .await
            .is_err(),
        "no rows committed, no wake-up"
    );

    let waiter = tokio::spawn({
        let signal = db.outbox_signal();
        async move { signal.notified().await }
    });
    tokio::task::yield_now().await;
    let mut uow = db.begin().await?;
    uow.append(msg("k", b"committed")).await?;
    uow.commit().await?;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the relay waiter wakes after commit")
        .unwrap();

    // A commit while the relay is busy (not waiting) is not lost.
    let mut uow = db.begin().await?;
    uow.append(msg("k", b"while busy")).await?;
    uow.commit().await?;
    tokio::time::timeout(short, signal.notified())
        .await
        .expect("the wake-up is kept for the next wait");
    Ok(())
}

/// Retry classification on real errors from each backend.
async fn errors_are_classified(url: String) -> Result<()> {
    let db = connect(&url).await?;

    let bad_sql = sqlx::query("SELEKT 1")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(!choreo_outbox::Error::from(bad_sql).is_retryable());

    let missing_table = sqlx::query("SELECT * FROM no_such_table")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(!choreo_outbox::Error::from(missing_table).is_retryable());

    let mut uow = db.begin().await?;
    let insert = "INSERT INTO test_state (id, value) VALUES ('dup', 1)";
    sqlx::query(insert).execute(uow.conn()).await?;
    let duplicate = sqlx::query(insert).execute(uow.conn()).await.unwrap_err();
    assert!(!choreo_outbox::is_retryable_sqlx(&duplicate), "{duplicate}");
    drop(uow);

    match db.backend() {
        Backend::Postgres => {
            for (code, retryable) in [
                ("40001", true),
                ("40P01", true),
                ("57P01", true),
                ("08006", true),
                ("53300", true),
                ("23505", false),
                ("22P02", false),
            ] {
                let err = sqlx::query(&format!(
                    "DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$"
                ))
                .execute(db.pool())
                .await
                .unwrap_err();
                assert_eq!(
                    choreo_outbox::Error::from(err).is_retryable(),
                    retryable,
                    "SQLSTATE {code}"
                );
            }
        }
        Backend::Sqlite => {
            // Another connection to the file holds the write lock; ours
            // (busy timeout 0 so the test is quick) gets SQLITE_BUSY.
            let other = Db::connect(&url).await?;
            let holder = other.begin().await?;
            let mut conn = db.pool().acquire().await?;
            sqlx::query("PRAGMA busy_timeout = 0")
                .execute(&mut *conn)
                .await?;
            let busy = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap_err();
            assert!(choreo_outbox::is_retryable_sqlx(&busy), "{busy}");
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&mut *conn)
                .await?;
            holder.rollback().await?;
        }
    }
    Ok(())
}

// --- backend-specific ----------------------------------------------------

/// Every SQLite connection is configured as the crate docs promise.
#[tokio::test]
async fn sqlite_connection_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect_with(
        &sqlite_url(dir.path()),
        DbOptions {
            max_connections: 8,
            ..DbOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    assert_eq!(db.pool().options().get_max_connections(), 1);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    for (pragma, expected) in [
        ("PRAGMA synchronous", 1_i64),
        ("PRAGMA busy_timeout", 5000),
        ("PRAGMA foreign_keys", 1),
    ] {
        let value: i64 = sqlx::query_scalar(pragma)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(value, expected, "{pragma}");
    }
}

/// Scenario 4: two replicas' relays race on one PostgreSQL database while
/// several writers append for overlapping keys. Every row is published by
/// exactly one relay, exactly once, and per key in seq and commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_relays_publish_each_row_once_in_key_order() {
    on_postgres(two_relays).await;
}

/// (replica, seq, key, payload) in global publish order.
type Published = (usize, i64, String, String);

async fn two_relays(url: String) -> Result<()> {
    const WRITERS: usize = 4;
    const TXS_PER_WRITER: usize = 80;
    const KEYS: usize = 5;

    let replicas = [connect(&url).await?, connect(&url).await?];
    let published: Arc<Mutex<Vec<Published>>> = Arc::default();
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let relays: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(replica, db)| {
            let (db, published, writers_done) =
                (db.clone(), published.clone(), writers_done.clone());
            tokio::spawn(async move {
                loop {
                    let finished = writers_done.load(std::sync::atomic::Ordering::SeqCst);
                    let batch = db.next_batch(7).await?;
                    if batch.is_empty() {
                        if finished && db.outbox_backlog().await? == 0 {
                            return Ok::<_, choreo_outbox::Error>(());
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    // "Publish": record in global order. The lease guarantees
                    // no other relay publishes until this batch is marked.
                    {
                        let mut out = published.lock().unwrap();
                        for row in batch.rows() {
                            let payload = String::from_utf8(row.payload.clone()).unwrap();
                            out.push((replica, row.seq, row.key.clone(), payload));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    batch.mark_published().await?;
                }
            })
        })
        .collect();

    // Writers append for overlapping keys and hold their transaction open a
    // moment, so commits of one key interleave with other keys' inserts.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = replicas[w % 2].clone();
            tokio::spawn(async move {
                for t in 0..TXS_PER_WRITER {
                    let key = format!("order-{}", (w * 7 + t * 3) % KEYS);
                    let mut uow = db.begin().await?;
                    for n in 0..(1 + t % 3) {
                        uow.append(msg(&key, format!("w{w}-t{t}-n{n}").as_bytes()))
                            .await?;
                        if t % 2 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    uow.commit().await?;
                }
                Ok::<_, choreo_outbox::Error>(())
            })
        })
        .collect();

    let appended = WRITERS * (0..TXS_PER_WRITER).map(|t| 1 + t % 3).sum::<usize>();
    for writer in writers {
        writer.await.unwrap()?;
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    for relay in relays {
        tokio::time::timeout(Duration::from_secs(60), relay)
            .await
            .expect("relays drain the outbox")
            .unwrap()?;
    }

    let published = published.lock().unwrap().clone();
    assert_eq!(
        published.len(),
        appended,
        "every row published exactly once"
    );
    let seqs: HashSet<i64> = published.iter().map(|p| p.1).collect();
    assert_eq!(seqs.len(), appended, "no row published twice");
    let payloads: HashSet<&str> = published.iter().map(|p| p.3.as_str()).collect();
    assert_eq!(payloads.len(), appended);

    let mut per_key: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for (_, seq, key, payload) in &published {
        per_key.entry(key).or_default().push((*seq, payload));
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, events) in &per_key {
        assert!(
            events.windows(2).all(|w| w[0].0 < w[1].0),
            "{key}: seqs out of order: {events:?}"
        );
        // Each writer's events for a key appear in the order it committed
        // them.
        for w in 0..WRITERS {
            let mine: Vec<(usize, usize)> = events
                .iter()
                .filter_map(|(_, p)| {
                    let rest = p.strip_prefix(&format!("w{w}-t"))?;
                    let (t, n) = rest.split_once("-n")?;
                    Some((t.parse().unwrap(), n.parse().unwrap()))
                })
                .collect();
            assert!(
                mine.windows(2).all(|p| p[0] < p[1]),
                "{key}: writer {w} out of order: {mine:?}"
            );
        }
    }
    let by_replica = |r: usize| published.iter().filter(|p| p.0 == r).count();
    eprintln!(
        "published by replica 0: {}, replica 1: {}",
        by_replica(0),
        by_replica(1)
    );
    assert_eq!(replicas[0].outbox_backlog().await?, 0);
    Ok(())
}
