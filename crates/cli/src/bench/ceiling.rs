//! The broker's own ceiling (raw produce → consume on the same broker
//! and client settings) and the consumer groups' lag.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use choreo_bus::KafkaSettings;

pub(super) struct Ceiling {
    pub(super) messages_per_second: f64,
    pub(super) produce_per_second: f64,
}

/// Raw produce→consume on the same broker with the same client settings:
/// what the bus allows before any service logic runs.
pub(super) async fn bus_ceiling(brokers: &str, messages: u64) -> anyhow::Result<Ceiling> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let kafka = KafkaSettings::new(brokers);
    let topic = format!("bench.ceiling.{}", uuid::Uuid::new_v4().simple());
    let admin: AdminClient<_> = kafka.admin_config().create()?;
    admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                choreo_events::Topic::PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?;
    // Clients must see the new topic fully formed before they use it.
    let brokers_owned = brokers.to_owned();
    let topic_owned = topic.clone();
    tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = KafkaSettings::new(&brokers_owned)
            .reader_config()
            .create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let md = probe.fetch_metadata(Some(&topic_owned), Duration::from_secs(5))?;
            let ready = md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == choreo_events::Topic::PARTITIONS as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok::<_, anyhow::Error>(());
            }
            if Instant::now() > deadline {
                bail!("topic {topic_owned} never became ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await??;
    eprintln!("measuring the bus ceiling with {messages} messages …");
    // The size of a typical encoded event.
    let payload = vec![7u8; 220];
    let producer: FutureProducer = kafka.producer_config().create()?;
    let consumer: StreamConsumer = kafka.reader_config().create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..choreo_events::Topic::PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let consume = async {
        let mut n = 0u64;
        while n < messages {
            match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
                Ok(r) => {
                    r?;
                    n += 1;
                }
                Err(_) => bail!("bus ceiling: consumed {n} of {messages}, then nothing for 30 s"),
            }
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let produce = async {
        // Windows of sends, each awaited before the next: the producer's
        // queue never fills, so no record is ever handed back for a retry.
        const WINDOW: u64 = 10_000;
        let mut failed = 0u64;
        let mut sent = 0u64;
        while sent < messages {
            let end = (sent + WINDOW).min(messages);
            let mut deliveries = Vec::with_capacity((end - sent) as usize);
            for i in sent..end {
                let key = (i % 1024).to_string();
                let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                match producer.send_result(record) {
                    Ok(d) => deliveries.push(d),
                    Err((e, _)) => bail!("bus ceiling: enqueue failed: {e}"),
                }
            }
            for d in deliveries {
                if !matches!(d.await, Ok(Ok(_))) {
                    failed += 1;
                }
            }
            sent = end;
        }
        if failed > 0 {
            bail!("bus ceiling: {failed} of {messages} messages were not delivered");
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let (produced, consumed) = tokio::try_join!(produce, consume)?;
    Ok(Ceiling {
        messages_per_second: messages as f64 / consumed.as_secs_f64(),
        produce_per_second: messages as f64 / produced.as_secs_f64(),
    })
}

/// Lag per service group over the topics it consumes.
pub(super) async fn consumer_lag(brokers: &str) -> anyhow::Result<HashMap<String, i64>> {
    let kafka = KafkaSettings::new(brokers);
    tokio::task::spawn_blocking(move || {
        let mut lag = HashMap::new();
        for (group, topics) in choreo_events::CONSUMERS {
            lag.insert(
                group.to_owned(),
                choreo_bus::lag::group_lag(&kafka, group, topics)?,
            );
        }
        Ok(lag)
    })
    .await?
}
