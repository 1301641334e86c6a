//! Typed events → outbox rows, inside the caller's transaction.
//!
//! This is the only way a service publishes: the event is encoded (so a bad
//! event fails the transaction, not the relay) and appended to the outbox in
//! the same unit of work as the state change that caused it.
//!
//! An event too large for the producer (`message.max.bytes`, which the
//! [`Relay`](crate::Relay) reads from its configuration and sets on the
//! database handle) fails here with [`Error::MessageTooLarge`], permanent,
//! and is never written: committed, it could only end on the dead-letter
//! path, leaving a state change whose event nobody hears.

use std::sync::Arc;

use choreo_events::{AnyEvent, Event, EventMetadata};
use choreo_outbox::{OutboxMessage, UnitOfWork};

use crate::codec::Codec;
use crate::{headers, trace, Error};

#[derive(Clone, Debug)]
pub struct Emitter {
    codec: Arc<Codec>,
}

impl Emitter {
    pub fn new(codec: Arc<Codec>) -> Self {
        Self { codec }
    }

    pub fn codec(&self) -> &Arc<Codec> {
        &self.codec
    }

    /// Appends `event` to the outbox of `uow`, keyed by its order id.
    pub async fn emit<E: Event>(
        &self,
        uow: &mut UnitOfWork<'_>,
        event: &E,
    ) -> Result<(), crate::Error> {
        let payload = self.codec.encode(event).await?;
        append(
            uow,
            message(E::TOPIC.name(), event.metadata(), E::EVENT_TYPE, payload),
            E::EVENT_TYPE,
        )
        .await
    }

    /// Like [`emit`](Self::emit), for an event whose type is known only at
    /// run time.
    pub async fn emit_any(
        &self,
        uow: &mut UnitOfWork<'_>,
        event: &AnyEvent,
    ) -> Result<(), crate::Error> {
        let payload = self.codec.encode_any(event).await?;
        append(
            uow,
            message(
                event.topic().name(),
                event.metadata(),
                event.event_type(),
                payload,
            ),
            event.event_type(),
        )
        .await
    }
}

/// Appends, naming the event in the error a too-large one gets, so the HTTP
/// layer or handler can say what was refused.
async fn append(
    uow: &mut UnitOfWork<'_>,
    msg: OutboxMessage,
    event_type: &str,
) -> Result<(), Error> {
    match uow.append(msg).await {
        Ok(()) => Ok(()),
        Err(choreo_outbox::Error::MessageTooLarge {
            topic, size, limit, ..
        }) => Err(Error::MessageTooLarge {
            topic,
            event_type: event_type.to_owned(),
            size,
            limit,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The outbox row of an event: keyed by its order id, with the context of
/// its producer span (`traceparent`) and its type in the headers.
fn message(topic: &str, meta: &EventMetadata, event_type: &str, payload: Vec<u8>) -> OutboxMessage {
    let key = &meta.order_id;
    let mut headers = trace::create_headers(topic, key, event_type, &meta.event_id);
    headers.push((headers::EVENT_TYPE.to_owned(), event_type.to_owned()));
    OutboxMessage {
        topic: topic.to_owned(),
        key: key.to_owned(),
        payload,
        headers,
    }
}
