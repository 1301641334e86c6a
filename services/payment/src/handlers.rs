//! Event → payment decision → effects, inside the consumer's unit of work:
//! read (and lock) the order's payment and the customer's account, call
//! [`domain::decide`], write the new state and the balance movement, and
//! emit the resulting events through the outbox — all in one transaction.

use choreo_bus::{Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    AnyEvent, EventMetadata, OrdersEvent, PaymentCompleted, PaymentFailed, PaymentRefunded,
    ShipmentsEvent,
};
use choreo_outbox::{Backend, UnitOfWork};
use tracing::{debug, info};

use crate::config::SERVICE;
use crate::domain::{self, CustomerId, Emit, Input, Ledger, Money, OrderId, PaymentId};
use crate::storage;

impl From<storage::Error> for HandlerError {
    fn from(e: storage::Error) -> Self {
        match e {
            // Classified like the outbox's errors, but with the driver's
            // message kept (the DLQ reason is all an operator sees).
            storage::Error::Sql(e) if choreo_outbox::is_retryable_sqlx(&e) => {
                HandlerError::retryable(format!("storage: {e}"))
            }
            storage::Error::Sql(e) => HandlerError::permanent(format!("storage: {e}")),
            storage::Error::Conflict(_) => HandlerError::retryable(e),
            storage::Error::Inconsistent(_) => HandlerError::permanent(e),
        }
    }
}

/// Consumes `shipments` and `orders`.
#[derive(Clone, Debug)]
pub struct PaymentHandler {
    emitter: Emitter,
    backend: Backend,
}

impl PaymentHandler {
    /// `backend` decides whether rows are locked with `FOR UPDATE`.
    pub fn new(emitter: Emitter, backend: Backend) -> Self {
        Self { emitter, backend }
    }
}

/// What an event asks of payment, before the account is known.
enum Trigger {
    Charge {
        customer_id: CustomerId,
        amount: Money,
    },
    Cancel {
        reason: String,
    },
}

fn trigger(event: &AnyEvent) -> Result<Option<Trigger>, HandlerError> {
    let invalid = |e: domain::Invalid| HandlerError::permanent(format!("invalid event: {e}"));
    Ok(match event {
        AnyEvent::Shipments(ShipmentsEvent::ShipmentManifested(e)) => Some(Trigger::Charge {
            customer_id: CustomerId::parse(e.customer_id.clone()).map_err(invalid)?,
            amount: Money::new("amount_minor", e.amount_minor, &e.currency).map_err(invalid)?,
        }),
        AnyEvent::Orders(OrdersEvent::OrderCancelled(e)) => Some(Trigger::Cancel {
            reason: e.reason.clone(),
        }),
        _ => None,
    })
}

impl Handler for PaymentHandler {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let event = &msg.event;
        let Some(trigger) = trigger(event)? else {
            debug!(event_type = event.event_type(), "not for payment; ignored");
            return Ok(());
        };
        let order_id = OrderId::parse(event.order_id())
            .map_err(|e| HandlerError::permanent(format!("invalid event: {e}")))?;

        let current = storage::lock_payment(uow.conn(), self.backend, &order_id).await?;
        let input = match trigger {
            Trigger::Charge {
                customer_id,
                amount,
            } => {
                // Only a first charge needs the account; locking it for a
                // duplicate would just add contention.
                let account = match current {
                    domain::PaymentState::None => {
                        storage::lock_account(uow.conn(), self.backend, &customer_id).await?
                    }
                    _ => None,
                };
                Input::ShipmentManifested {
                    customer_id,
                    amount,
                    account,
                    payment_id: PaymentId::parse(uuid::Uuid::new_v4().to_string())
                        .expect("a uuid is a valid payment id"),
                }
            }
            Trigger::Cancel { reason } => Input::OrderCancelled { reason },
        };

        let decision = domain::decide(&current, &input);
        if decision.is_noop(&current) {
            info!(%order_id, status = current.status(), event_type = event.event_type(),
                "payment already settled for this order; nothing to do");
            return Ok(());
        }
        storage::save_payment(uow.conn(), &order_id, &current, &decision.state).await?;
        match &decision.ledger {
            Some(Ledger::Debit {
                customer_id,
                amount,
            }) => storage::debit(uow.conn(), customer_id, amount).await?,
            Some(Ledger::Credit {
                customer_id,
                amount,
            }) => storage::credit(uow.conn(), customer_id, amount).await?,
            None => {}
        }
        info!(%order_id, from = current.status(), to = decision.state.status(),
            net_charge_minor = decision.state.net_charge_minor(), "payment decided");

        let cause = event.metadata();
        for emit in &decision.emit {
            let metadata = EventMetadata::caused_by(cause, SERVICE);
            match emit {
                Emit::Completed(capture) => {
                    let event = PaymentCompleted {
                        metadata,
                        payment_id: capture.payment_id.to_string(),
                        customer_id: capture.customer_id.to_string(),
                        amount_minor: capture.amount.minor,
                        currency: capture.amount.currency.to_string(),
                    };
                    self.emitter.emit(uow, &event).await?;
                }
                Emit::Failed(reason) => {
                    let event = PaymentFailed {
                        metadata,
                        reason: reason.code().to_owned(),
                    };
                    self.emitter.emit(uow, &event).await?;
                }
                Emit::Refunded { capture, reason } => {
                    let event = PaymentRefunded {
                        metadata,
                        payment_id: capture.payment_id.to_string(),
                        customer_id: capture.customer_id.to_string(),
                        amount_minor: capture.amount.minor,
                        currency: capture.amount.currency.to_string(),
                        reason: reason.clone(),
                    };
                    self.emitter.emit(uow, &event).await?;
                }
            }
        }
        Ok(())
    }
}
