//! Event → payment decision → effects, inside the consumer's unit of work:
//! read (and lock) the order's payment and the customer's account, call
//! [`domain::decide`], write the new state and the balance movement, and
//! emit the resulting events through the outbox — all in one transaction.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use choreo_bus::{Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    contract, reasons, AnyEvent, EventMetadata, OrdersEvent, PaymentCompleted, PaymentFailed,
    PaymentRefunded, ShipmentsEvent,
};
use choreo_outbox::{Backend, UnitOfWork};
use tracing::{debug, info, warn};

use crate::config::SERVICE;
use crate::domain::{self, CustomerId, Emit, Input, Ledger, Money, OrderId, PaymentId};
use crate::storage;

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
    /// A charge request whose data breaks the field contract: nothing can
    /// be charged, so the payment fails at once (`PaymentFailed`
    /// `INVALID_DATA`) and the saga compensates, instead of the event
    /// sitting in the DLQ while the order waits for its deadline.
    Refuse {
        violations: String,
    },
    Cancel {
        reason: String,
    },
}

fn trigger(event: &AnyEvent) -> Option<Trigger> {
    match event {
        AnyEvent::Shipments(ShipmentsEvent::ShipmentManifested(e)) => {
            let mut v = contract::Violations::new();
            v.check("amount_minor", contract::check_money(e.amount_minor));
            let customer_id = CustomerId::parse(e.customer_id.clone());
            let amount = domain::money("amount_minor", e.amount_minor, &e.currency);
            if let Err(e) = &customer_id {
                v.add(e.field, e.message.clone());
            }
            if let Err(e) = &amount {
                v.add(e.field, e.message.clone());
            }
            Some(match (v.into_result(), customer_id, amount) {
                (Ok(()), Ok(customer_id), Ok(amount)) => Trigger::Charge {
                    customer_id,
                    amount,
                },
                (violations, _, _) => Trigger::Refuse {
                    violations: violations
                        .err()
                        .map(|v| contract::describe(&v))
                        .unwrap_or_default(),
                },
            })
        }
        AnyEvent::Orders(OrdersEvent::OrderCancelled(e)) => Some(Trigger::Cancel {
            reason: e.reason.clone(),
        }),
        _ => None,
    }
}

impl PaymentHandler {
    /// Fails the payment of an order whose charge request breaks the
    /// contract: records it as VOID (a later `ShipmentManifested` charges
    /// nothing, a later `OrderCancelled` has nothing to undo) and emits
    /// `PaymentFailed(INVALID_DATA)`. Nothing is charged.
    async fn refuse(
        &self,
        uow: &mut UnitOfWork<'_>,
        event: &AnyEvent,
        order_id: &OrderId,
        current: &domain::PaymentState,
        violations: &str,
    ) -> Result<(), HandlerError> {
        if *current != domain::PaymentState::None {
            info!(%order_id, status = current.status(),
                "invalid charge request for a settled payment; nothing to do");
            return Ok(());
        }
        warn!(%order_id, violations, "charge request breaks the field contract; payment failed");
        storage::save_payment(uow.conn(), order_id, current, &domain::PaymentState::Void).await?;
        let failed = PaymentFailed {
            metadata: EventMetadata::caused_by(event.metadata(), SERVICE),
            reason: reasons::INVALID_DATA.to_owned(),
        };
        self.emitter.emit(uow, &failed).await?;
        Ok(())
    }
}

impl Handler for PaymentHandler {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let event = &msg.event;
        let Some(trigger) = trigger(event) else {
            debug!(event_type = event.event_type(), "not for payment; ignored");
            return Ok(());
        };
        let order_id = OrderId::parse(event.order_id())
            .map_err(|e| HandlerError::permanent(format!("invalid event: {e}")))?;

        let current = storage::lock_payment(uow.conn(), self.backend, &order_id).await?;
        if let Trigger::Refuse { violations } = &trigger {
            return self
                .refuse(uow, event, &order_id, &current, violations)
                .await;
        }
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
                        .map_err(|e| HandlerError::permanent(format!("payment id: {e}")))?,
                }
            }
            Trigger::Cancel { reason } => Input::OrderCancelled { reason },
            // Handled above.
            Trigger::Refuse { .. } => return Ok(()),
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
