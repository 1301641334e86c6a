//! Event → notification decision → effects, inside the consumer's unit of
//! work. For a mail, the order of effects is what makes it exactly-once:
//! send (idempotent by name), then record the notification row and emit
//! `CustomerNotified` in the same transaction as the inbox entry. A crash
//! anywhere before the commit redelivers the event, and the resend
//! overwrites the same file; after the commit, the row stops any resend.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use choreo_bus::{Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    AnyEvent, CustomerNotified, EventMetadata, InvalidValue, OrderPlaced, OrdersEvent,
};
use choreo_outbox::UnitOfWork;
use lettre::message::Mailbox;
use tracing::{debug, info};

use crate::config::SERVICE;
use crate::domain::{self, CancelReason, Currency, Decision, Input, Money, OrderId, OrderReplica};
use crate::mail;
use crate::storage::{self, Notification};
use crate::transport::Transport;

/// The replica row an `OrderPlaced` stands for; an id or currency outside
/// the field contract makes it none (a mail could not be written).
pub fn replica_from(event: &OrderPlaced) -> Result<OrderReplica, InvalidValue> {
    Ok(OrderReplica {
        order_id: OrderId::parse(&event.metadata.order_id)?,
        customer_id: event.customer_id.clone(),
        customer_email: event.customer_email.clone(),
        lines: event.items.clone(),
        total: Money::new(event.total_minor, Currency::parse(&event.currency)?),
        address: event.shipping_address.clone(),
        placed_at: event.metadata.occurred_at,
    })
}

/// Consumes `orders`.
#[derive(Clone, Debug)]
pub struct CommunicationHandler {
    emitter: Emitter,
    transport: Transport,
    from: Mailbox,
}

impl CommunicationHandler {
    pub fn new(emitter: Emitter, transport: Transport, from: Mailbox) -> Self {
        Self {
            emitter,
            transport,
            from,
        }
    }
}

impl Handler for CommunicationHandler {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let event = &msg.event;
        let invalid = |e: InvalidValue| HandlerError::permanent(format!("invalid event: {e}"));
        let input = match event {
            AnyEvent::Orders(OrdersEvent::OrderPlaced(e)) => {
                Input::Placed(Box::new(replica_from(e).map_err(invalid)?))
            }
            AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)) => Input::Confirmed,
            AnyEvent::Orders(OrdersEvent::OrderCancelled(e)) => Input::Cancelled(CancelReason {
                code: e.reason.clone(),
                detail: e.detail.clone(),
            }),
            _ => {
                debug!(
                    event_type = event.event_type(),
                    "not for communication; ignored"
                );
                return Ok(());
            }
        };
        let order_id = OrderId::parse(event.order_id()).map_err(invalid)?;

        let already_sent = match domain::template_for(&input) {
            Some(template) => storage::notification_exists(uow.conn(), &order_id, template).await?,
            None => false,
        };
        let replica = match &input {
            Input::Placed(_) => None,
            _ => storage::load_replica(uow.conn(), &order_id).await?,
        };

        match domain::decide(&order_id, &input, replica.as_ref(), already_sent) {
            Decision::UpsertReplica(order) => {
                storage::upsert_replica(uow.conn(), &order).await?;
                info!(%order_id, "order replica stored");
            }
            Decision::AlreadySent(template) => {
                info!(%order_id, %template, "mail already sent; nothing to do");
            }
            Decision::Reject(reason) => return Err(HandlerError::permanent(reason)),
            Decision::Send(notice) => {
                let mail = mail::render(&self.from, &notice, event.metadata().occurred_at)
                    .map_err(HandlerError::permanent)?;
                self.transport
                    .send(&mail)
                    .await
                    .map_err(HandlerError::retryable)?;
                self.transport.durable_before_commit(uow);
                let notification = Notification {
                    order_id: order_id.to_string(),
                    template: notice.template.code().to_owned(),
                    recipient: mail.recipient.clone(),
                    message_id: mail.message_id.clone(),
                    sent_at: storage::now_ms(),
                };
                storage::insert_notification(uow.conn(), &notification).await?;
                let notified = CustomerNotified {
                    metadata: EventMetadata::caused_by(event.metadata(), SERVICE),
                    template: notification.template,
                    recipient: notification.recipient,
                    message_id: notification.message_id,
                };
                self.emitter.emit(uow, &notified).await?;
                info!(%order_id, template = %notice.template, recipient = %mail.recipient,
                    message_id = %mail.message_id, "customer notified");
            }
        }
        Ok(())
    }
}
