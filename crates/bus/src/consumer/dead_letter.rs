//! The dead-letter writer: the original message's bytes, key and headers
//! to `dlq.<service>` with the reason and source coordinates, fitted to
//! `message.max.bytes`, retried until the broker takes it. The copy
//! ([`DeadLetter`]) is the relay's too.
// Everything here handles bytes from the broker: no unwrap, expect or
// indexing may turn one of them into a panic of the loop.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::*;

impl<H: Handler> Consumer<H> {
    /// Sends the original message to the dead-letter topic. Retryable
    /// produce errors are retried until the broker takes it: skipping a
    /// message without a trace is the one thing this loop must never do.
    /// A copy too large is truncated to fit; a permanent produce error is
    /// retried once as a bare reference, then the loss is logged and
    /// counted and the partition goes on — a message no copy of which Kafka
    /// accepts must not stop every message behind it.
    pub(super) async fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        reason: &str,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Outcome {
        error!(
            service = %self.spec.service,
            topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
            ?reason, "permanent failure; sending to {}", self.dlq_topic
        );
        let mut letter = DeadLetter {
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            original: msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            choreo: vec![
                (headers::ERROR, reason.to_owned()),
                (headers::SOURCE_TOPIC, msg.topic().to_owned()),
                (headers::SOURCE_PARTITION, msg.partition().to_string()),
                (headers::SOURCE_OFFSET, msg.offset().to_string()),
                (headers::ATTEMPTS, attempts.to_string()),
                (headers::SERVICE, self.spec.service.clone()),
                (headers::FAILED_AT, now_ms().to_string()),
            ],
        };
        let mut backoff = BACKOFF.first;
        loop {
            match send_dead_letter(&self.dlq, &self.dlq_topic, letter, self.dlq_limit).await {
                Sent::Delivered { truncated, .. } => {
                    metrics::counter!("choreo_dead_lettered_total", "service" => self.spec.service.clone()).increment(1);
                    if truncated {
                        warn!(
                            service = %self.spec.service,
                            topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                            "dead-letter copy truncated to fit message.max.bytes"
                        );
                    }
                    return Outcome::Done;
                }
                Sent::Lost(e) => {
                    metrics::counter!("choreo_dead_letter_lost_total", "service" => self.spec.service.clone()).increment(1);
                    error!(
                        service = %self.spec.service,
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        ?reason, error = %e,
                        "{} refuses even a reference to this message; moving on without a dead letter",
                        self.dlq_topic
                    );
                    return Outcome::Done;
                }
                Sent::Retry(e, again) => {
                    warn!(error = %e, "dead-letter produce failed; retrying");
                    letter = again;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return Outcome::Interrupted,
                    }
                    backoff = (backoff * 2).min(BACKOFF.max);
                }
            }
        }
    }
}

/// Headers a dead letter carries besides the ones of [`headers`].
pub mod dlq_headers {
    /// `true` when the payload (or, see [`HEADERS_DROPPED`], more) was cut
    /// so the copy fits `message.max.bytes`.
    pub const TRUNCATED: &str = "choreo.truncated";
    /// Size in bytes of the original payload, when the copy is truncated.
    pub const ORIGINAL_SIZE: &str = "choreo.original.size";
    /// How many of the original headers were left off the copy.
    pub const HEADERS_DROPPED: &str = "choreo.headers.dropped";
    /// `true` when the original key was left off (it alone was too large).
    pub const KEY_DROPPED: &str = "choreo.key.dropped";
    /// The outbox `seq` of a row the relay could not publish.
    pub const OUTBOX_SEQ: &str = "choreo.outbox.seq";
}

/// Longest `choreo.error` reason kept; a reason quoting hostile input must
/// not be what makes the copy too large.
const MAX_REASON: usize = 4096;

/// A dead-letter copy before it is produced: the original key, payload and
/// headers, and the `choreo.*` headers saying why and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The original message's headers, in order.
    pub original: Vec<(String, Option<Vec<u8>>)>,
    /// The dead-letter headers, written after the original ones.
    pub choreo: Vec<(&'static str, String)>,
}

impl DeadLetter {
    /// Upper bound of the copy's size as a Kafka record.
    pub fn record_size(&self) -> usize {
        choreo_outbox::record_size_bound(
            self.key.as_ref().map_or(0, Vec::len),
            self.payload.as_ref().map_or(0, Vec::len),
            self.original
                .iter()
                .map(|(k, v)| (k.len(), v.as_ref().map_or(0, Vec::len)))
                .chain(self.choreo.iter().map(|(k, v)| (k.len(), v.len()))),
        )
    }

    fn is_truncated(&self) -> bool {
        self.choreo
            .iter()
            .any(|(k, _)| *k == dlq_headers::TRUNCATED)
    }

    fn original_size(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }

    /// The copy as it can be produced under `limit` bytes
    /// (`message.max.bytes`), cut as little as possible:
    ///
    /// 1. as it is, if it fits (the reason capped at 4 KiB regardless);
    /// 2. else the payload cut to what fits, headed `choreo.truncated=true`
    ///    and `choreo.original.size`;
    /// 3. else (the original headers or key alone are too large) a
    ///    reference: no payload, no original headers, and no key if even
    ///    that does not fit — the `choreo.*` coordinates still say which
    ///    message it was.
    pub fn fitted(mut self, limit: usize) -> DeadLetter {
        for (k, v) in &mut self.choreo {
            if *k == headers::ERROR && v.len() > MAX_REASON {
                let mut end = MAX_REASON;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v.truncate(end);
                v.push('…');
            }
        }
        if self.record_size() <= limit {
            return self;
        }
        let original_size = self.original_size();
        let mut cut = self.clone();
        cut.choreo.push((dlq_headers::TRUNCATED, "true".into()));
        cut.choreo
            .push((dlq_headers::ORIGINAL_SIZE, original_size.to_string()));
        let without_payload = DeadLetter {
            payload: None,
            ..cut.clone()
        }
        .record_size();
        if let Some(room) = limit.checked_sub(without_payload) {
            if let Some(p) = &mut cut.payload {
                p.truncate(room);
            }
            return cut;
        }
        self.reference(limit)
    }

    /// The least copy that still identifies the message: its key (if that
    /// fits), no payload, no original headers.
    pub fn reference(mut self, limit: usize) -> DeadLetter {
        // A copy already truncated knows the size of the original.
        let original_size = self
            .choreo
            .iter()
            .find(|(k, _)| *k == dlq_headers::ORIGINAL_SIZE)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| self.original_size());
        let dropped = self.original.len();
        self.payload = None;
        self.original.clear();
        self.choreo.retain(|(k, _)| {
            ![
                dlq_headers::TRUNCATED,
                dlq_headers::ORIGINAL_SIZE,
                dlq_headers::HEADERS_DROPPED,
            ]
            .contains(k)
        });
        self.choreo.push((dlq_headers::TRUNCATED, "true".into()));
        self.choreo
            .push((dlq_headers::ORIGINAL_SIZE, original_size.to_string()));
        self.choreo
            .push((dlq_headers::HEADERS_DROPPED, dropped.to_string()));
        if self.record_size() > limit && self.key.is_some() {
            self.key = None;
            self.choreo.push((dlq_headers::KEY_DROPPED, "true".into()));
        }
        self
    }

    fn is_reference(&self) -> bool {
        self.choreo
            .iter()
            .any(|(k, _)| *k == dlq_headers::HEADERS_DROPPED)
    }
}

/// How a dead-letter send ended.
pub(crate) enum Sent {
    /// On the topic at `partition`/`offset`.
    Delivered {
        partition: i32,
        offset: i64,
        truncated: bool,
    },
    /// Not even a reference was accepted, for a reason retrying cannot fix.
    Lost(KafkaError),
    /// A retryable failure: send this letter again later.
    Retry(KafkaError, DeadLetter),
}

/// Produces `letter` (fitted to `limit`) to `topic` and waits for the
/// acknowledgement. A permanent refusal of the full copy is retried at once
/// as a reference — a topic whose own `max.message.bytes` is smaller than
/// the producer's limit refuses a copy that fits `limit` — and a refused
/// reference is [`Sent::Lost`].
pub(crate) async fn send_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    letter: DeadLetter,
    limit: usize,
) -> Sent {
    let mut letter = letter.fitted(limit);
    loop {
        let mut hdrs = OwnedHeaders::new_with_capacity(letter.original.len() + letter.choreo.len());
        for (k, v) in &letter.original {
            hdrs = hdrs.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        for (k, v) in &letter.choreo {
            hdrs = hdrs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(hdrs);
        if let Some(k) = &letter.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &letter.payload {
            record = record.payload(p.as_slice());
        }
        let result = producer.send(record, Duration::from_secs(10)).await;
        match result {
            Ok(delivery) => {
                return Sent::Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                    truncated: letter.is_truncated(),
                }
            }
            Err((e, _)) => match produce_failure(&e) {
                ProduceFailure::Retryable => return Sent::Retry(e, letter),
                ProduceFailure::Permanent if letter.is_reference() => return Sent::Lost(e),
                ProduceFailure::Permanent => {
                    warn!(%topic, error = %e, "dead-letter copy refused; sending a reference");
                    letter = letter.reference(limit);
                }
            },
        }
    }
}

/// The text of a caught panic (`panic!("...")` payloads are `&str` or
/// `String`).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// Milliseconds since the Unix epoch, for the dead letter's timestamp.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: usize) -> DeadLetter {
        DeadLetter {
            key: Some(b"order-1".to_vec()),
            payload: Some(vec![7; payload]),
            original: vec![("traceparent".into(), Some(b"00-abc-def-01".to_vec()))],
            choreo: vec![
                (headers::ERROR, "bad bytes".into()),
                (headers::SOURCE_TOPIC, "orders".into()),
                (headers::SOURCE_OFFSET, "42".into()),
            ],
        }
    }

    fn header<'a>(l: &'a DeadLetter, name: &str) -> Option<&'a str> {
        l.choreo
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_copy_that_fits_is_sent_whole() {
        let l = letter(1000);
        assert_eq!(l.clone().fitted(1_000_000), l);
    }

    #[test]
    fn a_copy_over_the_limit_is_truncated_to_fit_and_says_so() {
        let limit = 1_000_000;
        // The original fitted the limit; the dead-letter headers tip it over.
        let l = letter(limit - 150);
        assert!(l.record_size() > limit, "precondition: {}", l.record_size());
        let fitted = l.fitted(limit);
        assert!(fitted.record_size() <= limit, "{}", fitted.record_size());
        assert_eq!(header(&fitted, dlq_headers::TRUNCATED), Some("true"));
        assert_eq!(
            header(&fitted, dlq_headers::ORIGINAL_SIZE),
            Some((limit - 150).to_string().as_str())
        );
        let kept = fitted.payload.as_ref().map_or(0, Vec::len);
        assert!(
            kept > limit - 1000,
            "cut as little as possible: kept {kept}"
        );
        assert_eq!(fitted.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(fitted.original.len(), 1, "original headers kept");
        assert_eq!(header(&fitted, headers::ERROR), Some("bad bytes"));
    }

    #[test]
    fn huge_headers_leave_a_reference() {
        let mut l = letter(10);
        l.original.push(("junk".into(), Some(vec![b'x'; 5000])));
        let fitted = l.fitted(2000);
        assert!(fitted.record_size() <= 2000, "{}", fitted.record_size());
        assert_eq!(fitted.payload, None);
        assert!(fitted.original.is_empty());
        assert_eq!(header(&fitted, dlq_headers::HEADERS_DROPPED), Some("2"));
        assert_eq!(header(&fitted, dlq_headers::ORIGINAL_SIZE), Some("10"));
        assert_eq!(header(&fitted, headers::SOURCE_OFFSET), Some("42"));
        assert_eq!(fitted.key.as_deref(), Some(&b"order-1"[..]));
    }

    #[test]
    fn a_huge_key_is_dropped_from_a_reference() {
        let mut l = letter(10);
        l.key = Some(vec![b'k'; 5000]);
        let fitted = l.fitted(2000);
        assert!(fitted.record_size() <= 2000);
        assert_eq!(fitted.key, None);
        assert_eq!(header(&fitted, dlq_headers::KEY_DROPPED), Some("true"));
    }

    #[test]
    fn a_long_reason_is_capped_on_a_char_boundary() {
        let mut l = letter(10);
        if let Some((_, v)) = l.choreo.iter_mut().find(|(k, _)| *k == headers::ERROR) {
            *v = "é".repeat(10_000);
        }
        let fitted = l.fitted(1_000_000);
        let reason = header(&fitted, headers::ERROR).unwrap_or_default();
        assert!(
            reason.len() <= MAX_REASON + '…'.len_utf8(),
            "{}",
            reason.len()
        );
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn a_reference_keeps_the_original_size() {
        let once = letter(100).reference(1000);
        let twice = once.clone().reference(1000);
        assert_eq!(header(&twice, dlq_headers::HEADERS_DROPPED), Some("0"));
        assert_eq!(header(&once, dlq_headers::ORIGINAL_SIZE), Some("100"));
        assert_eq!(header(&twice, dlq_headers::ORIGINAL_SIZE), Some("100"));
        assert_eq!(header(&twice, dlq_headers::TRUNCATED), Some("true"));
        // A truncated copy refused by the broker: its reference still names
        // the size of the original, not of the truncated payload.
        let truncated = letter(5000).fitted(2000);
        assert_eq!(header(&truncated, dlq_headers::ORIGINAL_SIZE), Some("5000"));
        let reference = truncated.reference(2000);
        assert_eq!(header(&reference, dlq_headers::ORIGINAL_SIZE), Some("5000"));
        assert_eq!(reference.payload, None);
    }

    #[test]
    fn panic_payloads_become_reasons() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*caught), "boom 1");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*caught), "static");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(panic_message(&*caught), "a non-string panic payload");
    }
}
