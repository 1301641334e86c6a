//! Typed events → outbox rows, inside the caller's transaction.
//!
//! This is the only way a service publishes: the event is encoded (so a bad
//! event fails the transaction, not the relay) and appended to the outbox in
//! the same unit of work as the state change that caused it.

use std::sync::Arc;

use choreo_events::{AnyEvent, Event};
use choreo_outbox::{OutboxMessage, UnitOfWork};

use crate::codec::Codec;
use crate::{headers, trace};

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
        uow.append(message(
            E::TOPIC.name(),
            &event.metadata().order_id,
            E::EVENT_TYPE,
            payload,
        ))
        .await?;
        Ok(())
    }

    /// Like [`emit`](Self::emit), for an event whose type is known only at
    /// run time.
    pub async fn emit_any(
        &self,
        uow: &mut UnitOfWork<'_>,
        event: &AnyEvent,
    ) -> Result<(), crate::Error> {
        let payload = self.codec.encode_any(event).await?;
        uow.append(message(
            event.topic().name(),
            &event.metadata().order_id,
            event.event_type(),
            payload,
        ))
        .await?;
        Ok(())
    }
}

fn message(topic: &str, key: &str, event_type: &str, payload: Vec<u8>) -> OutboxMessage {
    OutboxMessage {
        topic: topic.to_owned(),
        key: key.to_owned(),
        payload,
        headers: vec![
            (headers::TRACEPARENT.to_owned(), trace::outgoing().header()),
            (headers::EVENT_TYPE.to_owned(), event_type.to_owned()),
        ],
    }
}
