//! The inventory saga step on the bus: an incoming event → the order's
//! reservation (and stock) from storage → [`decide`] → persisted effects →
//! emitted events, all inside the consumer's unit of work.
//!
//! [`apply`] does everything but the emitting and returns the stamped
//! events, so storage tests can drive a real transaction without a schema
//! registry; [`InventoryHandler`] adds the emitting.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use tracing::{debug, info, warn};

use choreo_bus::{Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    contract, AnyEvent, Event, EventMetadata, OrdersEvent, ShipmentsEvent, StockReleased,
    StockReservationFailed, StockReserved,
};
use choreo_outbox::{Backend, UnitOfWork};

use crate::domain::{
    decide, totals, Currency, Emit, Input, Line, Money, OrderId, PlacedOrder, Reservation, Status,
    StockLevels, StockMove,
};
use crate::storage::{self, Locking};
use crate::SERVICE;

/// The service's [`Handler`].
#[derive(Debug, Clone)]
pub struct InventoryHandler {
    emitter: Emitter,
    locking: Locking,
}

impl InventoryHandler {
    pub fn new(emitter: Emitter, backend: Backend) -> Self {
        Self {
            emitter,
            locking: Locking::for_backend(backend),
        }
    }
}

impl Handler for InventoryHandler {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        for event in apply(uow, self.locking, msg).await? {
            self.emitter.emit_any(uow, &event).await?;
        }
        Ok(())
    }
}

/// Loads, decides and persists one incoming event in `uow`; returns the
/// events to emit, metadata stamped (caused by `msg`).
pub async fn apply(
    uow: &mut UnitOfWork<'_>,
    locking: Locking,
    msg: &Incoming,
) -> Result<Vec<AnyEvent>, HandlerError> {
    let Some(input) = input_of(&msg.event)? else {
        debug!("not an inventory input; ignored");
        return Ok(Vec::new());
    };
    let cause = msg.event.metadata();
    let order_id = OrderId::parse(&cause.order_id).map_err(HandlerError::permanent)?;
    let conn = uow.conn();

    // Lock order everywhere: the reservation row first, then stock rows in
    // SKU order. Same order in every transaction → no deadlock cycles.
    let state = storage::load_reservation(conn, locking, &order_id).await?;
    let stock = match (&state, &input) {
        (Reservation::Absent, Input::OrderPlaced(order)) => {
            storage::load_available(conn, locking, totals(&order.lines).keys()).await?
        }
        _ => StockLevels::new(),
    };

    let decision = decide(&state, &input, &stock);
    let event_type = msg.event.event_type();
    if decision.is_noop(&state) {
        info!(%order_id, event_type, status = state.status().map(Status::as_str), "nothing to do in this state");
        return Ok(Vec::new());
    }

    let saved = match state.status() {
        None => storage::insert_reservation(conn, &order_id, &decision.state).await,
        Some(from) => storage::update_reservation(conn, &order_id, from, &decision.state).await,
    }?;
    if !saved {
        return Err(HandlerError::retryable(format!(
            "reservation of order {order_id} changed concurrently"
        )));
    }
    for mv in &decision.stock {
        if !storage::apply_move(conn, mv).await? {
            // Only a reservation can lose a race (another order took the
            // stock since we read it, or someone lowered it via HTTP);
            // deciding again on fresh stock is the right answer. Releases
            // and commits move what this order holds, so a failed guard
            // there means the rows disagree with the reservation.
            return Err(match mv {
                StockMove::Reserve { sku, .. } => HandlerError::retryable(format!(
                    "stock of {sku} changed while reserving order {order_id}"
                )),
                other => HandlerError::permanent(format!(
                    "stock rows disagree with reservation of order {order_id}: {other:?}"
                )),
            });
        }
    }
    info!(
        %order_id,
        event_type,
        from = state.status().map(Status::as_str),
        to = decision.state.status().map(Status::as_str),
        emits = decision.emit.len(),
        "reservation decided"
    );
    Ok(decision
        .emit
        .into_iter()
        .map(|emit| stamp(emit, cause))
        .collect())
}

/// The domain input of an event, `None` for events inventory does not
/// react to. Invalid data in a relevant event is permanent.
pub fn input_of(event: &AnyEvent) -> Result<Option<Input>, HandlerError> {
    Ok(Some(match event {
        AnyEvent::Orders(OrdersEvent::OrderPlaced(placed)) => {
            // The same contract Order enforced; an event that breaks it
            // (hand-produced, or from an older producer) fails the step.
            let violations = contract::check_order(&contract::OrderFields {
                order_id: &placed.metadata.order_id,
                customer_id: &placed.customer_id,
                customer_email: &placed.customer_email,
                items: &placed.items,
                total_minor: placed.total_minor,
                currency: &placed.currency,
                shipping_address: &placed.shipping_address,
            });
            let lines = placed
                .items
                .iter()
                .map(Line::parse)
                .collect::<Result<Vec<_>, _>>();
            // The contract check covers the currency: it fails to parse
            // only with a violation reported.
            let currency = Currency::parse(&placed.currency);
            match (violations.is_empty(), lines, currency) {
                (true, Ok(lines), Ok(currency)) => Input::OrderPlaced(PlacedOrder {
                    lines,
                    customer_id: placed.customer_id.clone(),
                    customer_email: placed.customer_email.clone(),
                    total: Money::new(placed.total_minor, currency),
                    shipping_address: placed.shipping_address.clone(),
                }),
                (_, lines, currency) => {
                    let mut problems = contract::describe(&violations);
                    if problems.is_empty() {
                        if let Err(e) = lines {
                            problems = e.to_string();
                        } else if let Err(e) = currency {
                            problems = e.to_string();
                        }
                    }
                    warn!(order_id = ?placed.metadata.order_id, %problems,
                        "OrderPlaced breaks the field contract; reservation fails");
                    Input::InvalidOrder { problems }
                }
            }
        }
        AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)) => Input::OrderConfirmed,
        AnyEvent::Orders(OrdersEvent::OrderCancelled(cancelled)) => Input::OrderCancelled {
            reason: cancelled.reason.clone(),
        },
        AnyEvent::Shipments(ShipmentsEvent::ShipmentManifestFailed(_)) => {
            Input::ShipmentManifestFailed
        }
        AnyEvent::Shipments(ShipmentsEvent::ShipmentCancelled(cancelled)) => {
            Input::ShipmentCancelled {
                reason: cancelled.reason.clone(),
            }
        }
        _ => return Ok(None),
    }))
}

/// The typed event for `emit`, caused by `cause`.
fn stamp(emit: Emit, cause: &EventMetadata) -> AnyEvent {
    let metadata = EventMetadata::caused_by(cause, SERVICE);
    match emit {
        Emit::StockReserved(order) => StockReserved {
            metadata,
            items: order.lines.iter().map(Line::to_order_line).collect(),
            customer_id: order.customer_id,
            customer_email: order.customer_email,
            total_minor: order.total.minor,
            currency: order.total.currency.to_string(),
            shipping_address: order.shipping_address,
        }
        .into_any(),
        Emit::StockReservationFailed {
            reason,
            missing_skus,
        } => StockReservationFailed {
            metadata,
            reason,
            missing_skus: missing_skus.into_iter().map(String::from).collect(),
        }
        .into_any(),
        Emit::StockReleased { reason, lines } => StockReleased {
            metadata,
            reason,
            items: lines.iter().map(Line::to_order_line).collect(),
        }
        .into_any(),
    }
}
