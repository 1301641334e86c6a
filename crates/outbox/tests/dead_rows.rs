//! Poison rows: the outbox refuses what can never be published, and a row
//! the relay sets aside leaves the queue with its reason while the rows
//! behind it go on. Each scenario runs on SQLite and on PostgreSQL.

use std::future::Future;
use std::time::Duration;

use choreo_outbox::testing::{fresh_postgres, sqlite_url};
use choreo_outbox::{Db, Error, OutboxMessage, Result, SetAside, DEFAULT_MAX_MESSAGE_BYTES};

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().unwrap();
    scenario(sqlite_url(dir.path())).await.unwrap();
}

async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let db = fresh_postgres().await;
    scenario(db.url().to_owned()).await.unwrap();
    db.drop_database().await;
}

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
    a_message_too_large_is_never_written,
    a_set_aside_row_leaves_the_queue_with_its_reason,
);

fn msg(key: &str, payload_len: usize) -> OutboxMessage {
    OutboxMessage {
        topic: "orders".into(),
        key: key.into(),
        payload: vec![b'x'; payload_len],
        headers: vec![("traceparent".into(), format!("tp-{key}"))],
    }
}

async fn unpublished(db: &Db) -> Result<Vec<String>> {
    let batch = db.next_batch(100).await?;
    let keys = batch.rows().iter().map(|r| r.key.clone()).collect();
    batch.release().await?;
    Ok(keys)
}

async fn a_message_too_large_is_never_written(url: String) -> Result<()> {
    let db = Db::connect(&url).await?;
    assert_eq!(db.max_message_bytes(), DEFAULT_MAX_MESSAGE_BYTES);

    // Just under librdkafka's default fits; one byte more of payload does
    // not, counted as the Kafka record it will become.
    let fits = msg("a", 0);
    let room = DEFAULT_MAX_MESSAGE_BYTES - fits.record_size();
    let mut uow = db.begin().await?;
    uow.append(msg("a", room)).await?;
    let err = uow.append(msg("b", room + 1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::MessageTooLarge { topic, key, size, limit }
            if topic == "orders" && key == "b" && *size == DEFAULT_MAX_MESSAGE_BYTES + 1
                && *limit == DEFAULT_MAX_MESSAGE_BYTES),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    uow.commit().await?;
    assert_eq!(
        unpublished(&db).await?,
        ["a"],
        "the refused one is not written"
    );

    // The relay sets its producer's limit on the handle; every clone sees it.
    let clone = db.clone();
    db.set_max_message_bytes(2000);
    let mut uow = clone.begin().await?;
    let err = uow.append(msg("c", 5000)).await.unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { limit: 2000, .. }),
        "{err:?}"
    );
    uow.append(msg("d", 100)).await?;
    uow.commit().await?;
    assert_eq!(unpublished(&db).await?, ["a", "d"]);
    Ok(())
}

async fn a_set_aside_row_leaves_the_queue_with_its_reason(url: String) -> Result<()> {
    let db = Db::connect(&url).await?;
    let mut uow = db.begin().await?;
    for key in ["a", "poison", "b", "lost"] {
        uow.append(msg(key, 10)).await?;
    }
    uow.commit().await?;

    let batch = db.next_batch(100).await?;
    let seqs: Vec<i64> = batch.rows().iter().map(|r| r.seq).collect();
    let [a, poison, _b, lost] = seqs.as_slice() else {
        panic!("four rows expected, got {seqs:?}");
    };
    // `a` published, `poison` copied to the DLQ, `lost` without a copy, `b`
    // not settled (its produce failed retryably).
    batch
        .settle(
            &[*a],
            &[
                SetAside {
                    seq: *poison,
                    reason: "Broker: Message size too large".into(),
                    dead_letter: Some("dlq.order/0/7".into()),
                },
                SetAside {
                    seq: *lost,
                    reason: "Broker: Invalid record".into(),
                    dead_letter: None,
                },
            ],
        )
        .await?;
    assert_eq!(
        unpublished(&db).await?,
        ["b"],
        "only the unsettled row comes back"
    );

    let dead = db.dead_rows().await?;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].seq, *poison);
    assert_eq!(dead[0].key, "poison");
    assert_eq!(dead[0].reason, "Broker: Message size too large");
    assert_eq!(dead[0].dead_letter.as_deref(), Some("dlq.order/0/7"));
    assert_eq!(dead[0].payload_len, 10);
    assert!(dead[0].set_aside_at_ms > 0);
    assert_eq!(dead[1].seq, *lost);
    assert_eq!(dead[1].dead_letter, None);

    // Retention purges the published row and the copied one, never the row
    // that is the only record of its event.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (outbox, _) = db.purge(Duration::ZERO, Duration::from_secs(3600)).await?;
    assert_eq!(outbox, 2);
    let left: Vec<i64> = db.dead_rows().await?.iter().map(|d| d.seq).collect();
    assert_eq!(left, [*lost]);
    assert_eq!(unpublished(&db).await?, ["b"]);
    Ok(())
}
