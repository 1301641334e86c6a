//! Applying what the loop received: one message or a batch, through the
//! apply step ([`crate::apply`]), retried in place while the failure is
//! retryable; a batch that fails is rolled back and applied again one
//! message at a time, where a permanent failure dead-letters only its own
//! message.
// Everything here handles bytes from the broker: no unwrap, expect or
// indexing may turn one of them into a panic of the loop.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::*;

/// How applying a message or a batch ended.
pub(super) enum Outcome {
    Done,
    Interrupted,
}

impl<H: Handler> Consumer<H> {
    pub(super) async fn process(
        &self,
        msg: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let mut attempts: u32 = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            attempts += 1;
            let started = Instant::now();
            let result = self.try_process(msg).await;
            metrics::histogram!("choreo_handler_seconds", "service" => self.spec.service.clone())
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    metrics::counter!("choreo_consumed_total", "service" => self.spec.service.clone(), "topic" => msg.topic().to_owned()).increment(1);
                    return Outcome::Done;
                }
                Err(e) if !e.is_retryable() => {
                    return self.dead_letter(msg, e.reason(), attempts, shutdown).await;
                }
                Err(e) => {
                    let reason = e.reason();
                    metrics::counter!("choreo_retried_total", "service" => self.spec.service.clone()).increment(1);
                    warn!(
                        service = %self.spec.service,
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        attempts, ?reason, "retryable failure; retrying in place"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return Outcome::Interrupted,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Decodes a message into what a handler sees, with its trace context.
    async fn incoming(
        &self,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(Incoming, TraceContext), HandlerError> {
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        // A decoder that panics on hostile bytes is a permanent error of
        // those bytes, not the end of the consumer.
        let event = AssertUnwindSafe(self.codec.decode(msg.topic(), &source, msg.payload()))
            .catch_unwind()
            .await
            .map_err(|panic| {
                HandlerError::permanent(format!("decoder panicked: {}", panic_message(&*panic)))
            })??;
        let incoming = Incoming {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            event,
        };
        let trace_ctx = header(msg, headers::TRACEPARENT)
            .and_then(|h| TraceContext::parse(&h))
            .unwrap_or_else(TraceContext::new_root);
        Ok((incoming, trace_ctx))
    }

    async fn try_process(&self, msg: &BorrowedMessage<'_>) -> Result<(), HandlerError> {
        let (incoming, trace_ctx) = self.incoming(msg).await?;
        apply::apply(
            &self.spec.service,
            &self.db,
            &*self.handler,
            &incoming,
            trace_ctx,
        )
        .await
        .map(drop)
    }

    /// Several messages, one transaction. Any failure rolls the whole batch
    /// back and replays it one message at a time, where retries and the
    /// dead-letter topic apply per message exactly as without batching.
    pub(super) async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &CancellationToken,
    ) -> Outcome {
        let started = Instant::now();
        match self.try_batch(batch).await {
            Ok(()) => {
                metrics::histogram!("choreo_batch_seconds", "service" => self.spec.service.clone())
                    .record(started.elapsed().as_secs_f64());
                for msg in batch {
                    metrics::counter!("choreo_consumed_total", "service" => self.spec.service.clone(), "topic" => msg.topic().to_owned()).increment(1);
                }
                Outcome::Done
            }
            Err(e) => {
                debug!(service = %self.spec.service, size = batch.len(), error = %e, "batch failed; one message at a time");
                for msg in batch {
                    if let Outcome::Interrupted = self.process(msg, shutdown).await {
                        return Outcome::Interrupted;
                    }
                }
                Outcome::Done
            }
        }
    }

    async fn try_batch(&self, batch: &[BorrowedMessage<'_>]) -> Result<(), HandlerError> {
        // Decoding (and any registry lookup) happens before the transaction.
        let mut decoded = Vec::with_capacity(batch.len());
        for msg in batch {
            decoded.push(self.incoming(msg).await?);
        }
        let mut uow = self.db.begin().await?;
        let result = async {
            // Every inbox entry of the batch in one statement; an event id
            // is new at most once, so a repeat inside the batch is a
            // duplicate like any other.
            let ids: Vec<&str> = decoded
                .iter()
                .map(|(i, _)| i.event.metadata().event_id.as_str())
                .collect();
            let mut fresh = uow.record_inbox_many(&self.spec.service, &ids).await?;
            for (incoming, trace_ctx) in decoded {
                if fresh.remove(&incoming.event.metadata().event_id) {
                    apply::handle(
                        &mut uow,
                        &self.spec.service,
                        &*self.handler,
                        &incoming,
                        trace_ctx,
                    )
                    .await?;
                } else {
                    apply::note_duplicate(&self.spec.service, &incoming);
                }
            }
            Ok::<_, HandlerError>(())
        }
        .await;
        if let Err(e) = result {
            if let Err(rb) = uow.rollback().await {
                warn!(error = %rb, "rollback failed");
            }
            return Err(e);
        }
        uow.commit().await?;
        Ok(())
    }
}
