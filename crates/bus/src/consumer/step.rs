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
    /// One message: decoded and applied, retried in place while the failure
    /// is retryable, dead-lettered when it is permanent.
    pub(super) async fn process(
        &self,
        msg: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let started = Instant::now();
        let what = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        let outcome = apply::with_retries(&self.spec.service, &what, BACKOFF, shutdown, || {
            self.try_process(msg)
        })
        .await;
        metrics::histogram!("choreo_handler_seconds", "service" => self.spec.service.clone())
            .record(started.elapsed().as_secs_f64());
        self.settle(msg, outcome, shutdown).await
    }

    /// Counts a message done, or dead-letters it.
    async fn settle<T>(
        &self,
        msg: &BorrowedMessage<'_>,
        outcome: apply::Outcome<T>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        match outcome {
            apply::Outcome::Done { .. } => {
                metrics::counter!("choreo_consumed_total", "service" => self.spec.service.clone(), "topic" => msg.topic().to_owned()).increment(1);
                Outcome::Done
            }
            apply::Outcome::DeadLetter { error, attempts } => {
                self.dead_letter(msg, error.reason(), attempts, shutdown)
                    .await
            }
            apply::Outcome::Interrupted => Outcome::Interrupted,
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
        let trace_ctx = TraceContext::from_headers(msg.headers());
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

    /// Several messages: decoded, then [`apply::apply_all`] — one
    /// transaction, or on its failure one message at a time, where retries
    /// and the dead-letter topic apply per message exactly as without
    /// batching. A message that cannot be decoded sends the whole batch
    /// down the one-at-a-time path, where its own error is handled.
    pub(super) async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &CancellationToken,
    ) -> Outcome {
        let started = Instant::now();
        // Decoding (and any registry lookup) happens before the transaction.
        let mut decoded = Vec::with_capacity(batch.len());
        for msg in batch {
            match self.incoming(msg).await {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    debug!(service = %self.spec.service, size = batch.len(), error = %e, "undecodable message in the batch; one message at a time");
                    for msg in batch {
                        if let Outcome::Interrupted = self.process(msg, shutdown).await {
                            return Outcome::Interrupted;
                        }
                    }
                    return Outcome::Done;
                }
            }
        }
        let outcomes = apply::apply_all(
            &self.spec.service,
            &self.db,
            &*self.handler,
            &decoded,
            BACKOFF,
            shutdown,
        )
        .await;
        metrics::histogram!("choreo_batch_seconds", "service" => self.spec.service.clone())
            .record(started.elapsed().as_secs_f64());
        for (msg, outcome) in batch.iter().zip(outcomes) {
            if let Outcome::Interrupted = self.settle(msg, outcome, shutdown).await {
                return Outcome::Interrupted;
            }
        }
        Outcome::Done
    }
}
