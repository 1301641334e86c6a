//! The courier saga step on the bus: an incoming event → the order's
//! shipment from storage → [`decide`] → persisted state → emitted events,
//! all inside the consumer's unit of work.
//!
//! [`apply`] does everything but the emitting and returns the stamped
//! events, so storage tests can drive a real transaction without a schema
//! registry; [`CourierHandler`] adds the emitting.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use rand::Rng as _;
use tracing::{debug, info, warn};

use choreo_bus::{Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    contract, AnyEvent, Event, EventMetadata, InventoryEvent, OrdersEvent, PaymentsEvent,
    ShipmentCancelled, ShipmentManifestFailed, ShipmentManifested,
};
use choreo_outbox::{Backend, UnitOfWork};

use crate::domain::{
    decide, Consignment, Currency, Emit, FreshIds, Input, Money, OrderId, Routing, Status,
};
use crate::storage::{self, Locking};
use crate::SERVICE;

/// The service's [`Handler`].
#[derive(Debug, Clone)]
pub struct CourierHandler {
    emitter: Emitter,
    courier: Courier,
}

impl CourierHandler {
    pub fn new(emitter: Emitter, backend: Backend, routing: Routing) -> Self {
        Self {
            emitter,
            courier: Courier::new(backend, routing),
        }
    }
}

impl Handler for CourierHandler {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        for event in self.courier.apply(uow, msg, fresh_ids()).await? {
            self.emitter.emit_any(uow, &event).await?;
        }
        Ok(())
    }
}

/// Everything the step needs besides the emitter.
#[derive(Debug, Clone)]
pub struct Courier {
    locking: Locking,
    routing: Routing,
}

impl Courier {
    pub fn new(backend: Backend, routing: Routing) -> Self {
        Self {
            locking: Locking::for_backend(backend),
            routing,
        }
    }

    /// Loads, decides and persists one incoming event in `uow`; returns the
    /// events to emit, metadata stamped (caused by `msg`). `fresh` is used
    /// only if a shipment is manifested.
    pub async fn apply(
        &self,
        uow: &mut UnitOfWork<'_>,
        msg: &Incoming,
        fresh: FreshIds,
    ) -> Result<Vec<AnyEvent>, HandlerError> {
        let Some(input) = input_of(&msg.event) else {
            debug!("not a courier input; ignored");
            return Ok(Vec::new());
        };
        let cause = msg.event.metadata();
        let order_id = OrderId::parse(&cause.order_id).map_err(HandlerError::permanent)?;
        let conn = uow.conn();

        let state = storage::load_shipment(conn, self.locking, &order_id).await?;
        let decision = decide(&state, &input, &self.routing, &fresh);
        let event_type = msg.event.event_type();
        if decision.is_noop(&state) {
            info!(%order_id, event_type, status = state.status().map(Status::as_str), "nothing to do in this state");
            return Ok(Vec::new());
        }

        let saved = match state.status() {
            None => storage::insert_shipment(conn, &order_id, &decision.state).await,
            Some(from) => storage::update_shipment(conn, &order_id, from, &decision.state).await,
        }?;
        if !saved {
            return Err(HandlerError::retryable(format!(
                "shipment of order {order_id} changed concurrently"
            )));
        }
        info!(
            %order_id,
            event_type,
            from = state.status().map(Status::as_str),
            to = decision.state.status().map(Status::as_str),
            shipment_id = decision.state.manifest().map(|m| m.shipment_id.as_str()),
            emits = decision.emit.len(),
            "shipment decided"
        );
        Ok(decision
            .emit
            .into_iter()
            .map(|emit| stamp(emit, cause))
            .collect())
    }
}

/// A new shipment id (UUID v4) and tracking number (`CH` + 10 digits).
pub fn fresh_ids() -> FreshIds {
    let digits: u64 = rand::thread_rng().gen_range(0..10_000_000_000);
    FreshIds {
        shipment_id: uuid::Uuid::new_v4().to_string(),
        tracking_number: format!("CH{digits:010}"),
    }
}

/// The domain input of an event, `None` for events courier does not react
/// to. A `StockReserved` that breaks the field contract becomes
/// [`Input::InvalidConsignment`]; a valid country courier does not serve is
/// a business answer (`NO_ROUTE`), not a contract matter.
pub fn input_of(event: &AnyEvent) -> Option<Input> {
    Some(match event {
        AnyEvent::Inventory(InventoryEvent::StockReserved(reserved)) => {
            let country = reserved
                .shipping_address
                .country
                .trim()
                .to_ascii_uppercase();
            // What courier acts on and passes on to payment; the lines
            // are inventory's business and were checked there.
            let mut v = contract::Violations::new();
            v.check("customer_id", contract::check_id(&reserved.customer_id));
            v.check("total_minor", contract::check_money(reserved.total_minor));
            v.check("currency", contract::check_currency(&reserved.currency));
            // Checked as courier reads it: the country normalised, which
            // courier has always tolerated.
            let address = choreo_events::Address {
                country: country.clone(),
                ..reserved.shipping_address.clone()
            };
            contract::check_address(&mut v, "shipping_address", &address);
            let violations = v.into_vec();
            // The currency was checked with the rest: it fails to parse
            // only with a violation reported.
            match (violations.is_empty(), Currency::parse(&reserved.currency)) {
                (true, Ok(currency)) => Input::StockReserved(Consignment {
                    country,
                    customer_id: reserved.customer_id.clone(),
                    amount: Money::new(reserved.total_minor, currency),
                }),
                (_, currency) => {
                    let problems = match currency {
                        Err(e) if violations.is_empty() => e.to_string(),
                        _ => contract::describe(&violations),
                    };
                    warn!(order_id = ?reserved.metadata.order_id, %problems,
                        "StockReserved breaks the field contract; shipment fails");
                    Input::InvalidConsignment { country }
                }
            }
        }
        AnyEvent::Payments(PaymentsEvent::PaymentFailed(_)) => Input::PaymentFailed,
        AnyEvent::Orders(OrdersEvent::OrderCancelled(cancelled)) => Input::OrderCancelled {
            reason: cancelled.reason.clone(),
        },
        _ => return None,
    })
}

/// The typed event for `emit`, caused by `cause`.
fn stamp(emit: Emit, cause: &EventMetadata) -> AnyEvent {
    let metadata = EventMetadata::caused_by(cause, SERVICE);
    match emit {
        Emit::ShipmentManifested {
            manifest,
            customer_id,
            amount,
        } => ShipmentManifested {
            metadata,
            shipment_id: manifest.shipment_id,
            carrier: manifest.carrier,
            tracking_number: manifest.tracking_number,
            customer_id,
            amount_minor: amount.minor,
            currency: amount.currency.to_string(),
        }
        .into_any(),
        Emit::ShipmentManifestFailed { reason } => {
            ShipmentManifestFailed { metadata, reason }.into_any()
        }
        Emit::ShipmentCancelled {
            shipment_id,
            reason,
        } => ShipmentCancelled {
            metadata,
            shipment_id,
            reason,
        }
        .into_any(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_have_the_documented_shape() {
        let a = fresh_ids();
        let b = fresh_ids();
        assert_eq!(
            uuid::Uuid::parse_str(&a.shipment_id)
                .unwrap()
                .get_version_num(),
            4
        );
        assert_ne!(a.shipment_id, b.shipment_id);
        assert_eq!(a.tracking_number.len(), 12);
        assert!(a.tracking_number.starts_with("CH"));
        assert!(a.tracking_number[2..].bytes().all(|c| c.is_ascii_digit()));
    }
}
