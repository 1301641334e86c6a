//! Applying the order rules: load the order, [`decide`], save the new
//! status, emit the event — for saga events (the [`Handler`] impl),
//! `order-requests` commands, HTTP requests and the deadline timer alike.
//!
//! Every operation runs inside a caller's [`UnitOfWork`], so the status
//! change, the timeline rows and the emitted event commit together (and,
//! for consumed events, with the inbox entry). [`Orders`] also keeps a
//! `watch` channel that ticks on every status change in this process, for
//! the HTTP long-poll.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use choreo_bus::{Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    contract, AnyEvent, Event, EventMetadata, InventoryEvent, OrderCancelled, OrderConfirmed,
    OrderPlaced, OrderRequest, PaymentsEvent, PlaceOrder, ShipmentsEvent,
};
use choreo_outbox::{Db, UnitOfWork};

use crate::config::SERVICE;
use crate::deadline::Clock;
use crate::domain::{decide, Effect, FieldErrors, Input, OrderDraft, OrderId, Status};
use crate::storage::{self, OrderRecord, TimelineEntry};

/// Why an operation on an order did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Invalid(FieldErrors),
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// The idempotency key (or order id) was used before for an order with
    /// another body; the first order stands, the new body is refused.
    #[error("{what} was already used for order {order_id} with a different body")]
    KeyReused { what: String, order_id: String },
    /// Another transaction changed the order between our read and write
    /// (only possible if row locks are bypassed); trying again is safe.
    #[error("order {0} changed concurrently")]
    Conflict(String),
    /// The order's rows or the unit of work around them.
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    #[error("emitting: {0}")]
    Emit(#[from] choreo_bus::Error),
}

impl OrderError {
    /// True when a later attempt of the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            OrderError::Invalid(_) | OrderError::UnknownOrder(_) | OrderError::KeyReused { .. } => {
                false
            }
            OrderError::Conflict(_) => true,
            OrderError::Storage(e) => e.is_retryable(),
            OrderError::Emit(e) => e.is_retryable(),
        }
    }
}

/// A handler's `?` turns an [`OrderError`] into the [`HandlerError`] its
/// own classification says, keeping it as the source.
impl choreo_bus::Classify for OrderError {
    fn is_retryable(&self) -> bool {
        OrderError::is_retryable(self)
    }
}

/// An event this service consumed, as the timeline and the metadata of
/// what it causes need it.
#[derive(Debug, Clone, Copy)]
pub struct Consumed<'a> {
    pub metadata: &'a EventMetadata,
    pub event_type: &'a str,
    pub topic: &'a str,
}

impl Consumed<'_> {
    fn timeline_entry(&self) -> TimelineEntry {
        TimelineEntry {
            event_type: self.event_type.to_owned(),
            topic: self.topic.to_owned(),
            event_id: self.metadata.event_id.clone(),
            occurred_at: self.metadata.occurred_at,
        }
    }
}

/// What started an operation: an event (whose metadata the emitted event
/// points back to) or something outside the bus (HTTP, the timer).
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    Event(Consumed<'a>),
    Customer,
    Deadline,
}

/// A request to create an order.
#[derive(Debug, Clone)]
pub struct PlaceCommand<'a> {
    pub order_id: OrderId,
    pub idempotency_key: Option<String>,
    pub draft: OrderDraft,
    /// The `PlaceOrder` command, when it came from `order-requests`.
    pub cause: Option<Consumed<'a>>,
}

/// The result of [`Orders::place`].
#[derive(Debug, Clone)]
pub enum Placed {
    /// A new order; `OrderPlaced` is in the outbox.
    Created(OrderRecord),
    /// The id or idempotency key was already taken by this order; nothing
    /// was written.
    Existing(OrderRecord),
}

impl Placed {
    pub fn order(&self) -> &OrderRecord {
        match self {
            Placed::Created(order) | Placed::Existing(order) => order,
        }
    }
}

/// The result of [`Orders::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub before: Status,
    pub after: Status,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// The order service's operations, shared by the consumer, HTTP and the
/// deadline timer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Orders {
    db: Db,
    emitter: Emitter,
    deadline: Duration,
    clock: Clock,
    changes: watch::Sender<u64>,
}

impl Orders {
    pub fn new(db: Db, emitter: Emitter, deadline: Duration) -> Self {
        Orders {
            db,
            emitter,
            deadline,
            clock: Clock::System,
            changes: watch::Sender::new(0),
        }
    }

    /// A pooled connection for reads outside a unit of work. Drop it before
    /// beginning one: SQLite has a single connection.
    pub async fn connection(
        &self,
    ) -> Result<choreo_outbox::sqlx::pool::PoolConnection<choreo_outbox::sqlx::Any>, storage::Error>
    {
        self.db
            .pool()
            .acquire()
            .await
            .map_err(storage::Error::sql("acquiring a connection"))
    }

    /// The clock the order rules read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The same operations reading the time from `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        Orders { clock, ..self }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Ticks whenever an order's status changes in this process.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes long-polls; they re-read the database, so a spurious tick
    /// costs one query.
    pub fn notify_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Creates the order unless its id or idempotency key exists already,
    /// then emits `OrderPlaced`.
    pub async fn place(
        &self,
        uow: &mut UnitOfWork<'_>,
        cmd: PlaceCommand<'_>,
    ) -> Result<Placed, OrderError> {
        let order_id = cmd.order_id.as_str();
        let request_hash = cmd.draft.fingerprint();
        // Existing first: replaying an old command is a no-op even if the
        // rules have since become stricter.
        if let Some(existing) = self
            .existing(uow, order_id, cmd.idempotency_key.as_deref())
            .await?
        {
            same_body(&existing, &request_hash, cmd.idempotency_key.as_deref())?;
            if let Some(cause) = &cmd.cause {
                storage::add_timeline(uow.conn(), &existing.order_id, &cause.timeline_entry())
                    .await?;
            }
            info!(order_id = %existing.order_id, "order exists already; nothing placed");
            return Ok(Placed::Existing(existing));
        }
        let valid = cmd.draft.validate().map_err(OrderError::Invalid)?;
        let now = self.clock.now_ms();
        let record = OrderRecord {
            order_id: order_id.to_owned(),
            idempotency_key: cmd.idempotency_key.clone(),
            request_hash: Some(request_hash.clone()),
            status: Status::Pending,
            customer_id: valid.customer_id.clone(),
            customer_email: valid.customer_email.clone(),
            items: valid.items.clone(),
            total_minor: valid.total.minor,
            currency: valid.total.currency.as_str().to_owned(),
            shipping_address: valid.shipping_address.clone(),
            created_at: now,
            updated_at: now,
            deadline_at: now
                .saturating_add(i64::try_from(self.deadline.as_millis()).unwrap_or(i64::MAX)),
            trace_context: choreo_bus::trace::current_traceparent(),
        };
        if !storage::insert(uow.conn(), &record).await? {
            // A concurrent request with the same id or key won the insert.
            return match self
                .existing(uow, order_id, cmd.idempotency_key.as_deref())
                .await?
            {
                Some(existing) => {
                    same_body(&existing, &request_hash, cmd.idempotency_key.as_deref())?;
                    Ok(Placed::Existing(existing))
                }
                None => Err(OrderError::Conflict(order_id.to_owned())),
            };
        }
        let metadata = match &cmd.cause {
            Some(cause) => {
                storage::add_timeline(uow.conn(), order_id, &cause.timeline_entry()).await?;
                EventMetadata::caused_by(cause.metadata, SERVICE)
            }
            None => EventMetadata::new(order_id, SERVICE, None),
        };
        let placed = OrderPlaced {
            metadata,
            customer_id: valid.customer_id,
            customer_email: valid.customer_email,
            items: valid.items,
            total_minor: valid.total.minor,
            currency: valid.total.currency.as_str().to_owned(),
            shipping_address: valid.shipping_address,
        };
        self.emit(uow, &placed).await?;
        info!(
            order_id,
            total_minor = placed.total_minor,
            currency = %placed.currency,
            "order placed"
        );
        Ok(Placed::Created(record))
    }

    async fn existing(
        &self,
        uow: &mut UnitOfWork<'_>,
        order_id: &str,
        key: Option<&str>,
    ) -> Result<Option<OrderRecord>, OrderError> {
        if let Some(key) = key {
            if let Some(order) = storage::find_by_key(uow.conn(), key).await? {
                return Ok(Some(order));
            }
        }
        Ok(storage::find(uow.conn(), order_id).await?)
    }

    /// Applies `input` to an existing order: records the cause in the
    /// timeline, decides, saves the new status and emits what the decision
    /// says. Does not notify long-polls (the caller knows when it commits).
    pub async fn apply(
        &self,
        uow: &mut UnitOfWork<'_>,
        order_id: &str,
        input: &Input,
        cause: Cause<'_>,
    ) -> Result<Applied, OrderError> {
        let record = storage::find_for_update(uow.conn(), self.db.backend(), order_id)
            .await?
            .ok_or_else(|| OrderError::UnknownOrder(order_id.to_owned()))?;
        if let Cause::Event(consumed) = &cause {
            storage::add_timeline(uow.conn(), order_id, &consumed.timeline_entry()).await?;
        }
        let state = record.state()?;
        let decision = decide(&state, input);
        let applied = Applied {
            before: state.status.clone(),
            after: decision.status.clone(),
        };
        if applied.changed()
            && !storage::set_status(
                uow.conn(),
                order_id,
                &state.status,
                &decision.status,
                self.clock.now_ms(),
            )
            .await?
        {
            return Err(OrderError::Conflict(order_id.to_owned()));
        }
        let metadata = match &cause {
            Cause::Event(consumed) => EventMetadata::caused_by(consumed.metadata, SERVICE),
            Cause::Customer | Cause::Deadline => EventMetadata::new(order_id, SERVICE, None),
        };
        match decision.emit {
            Some(Effect::Confirm { total }) => {
                let event = OrderConfirmed {
                    metadata,
                    total_minor: total.minor,
                    currency: total.currency.as_str().to_owned(),
                };
                self.emit(uow, &event).await?;
            }
            Some(Effect::Cancel { reason, detail }) => {
                let event = OrderCancelled {
                    metadata,
                    reason,
                    detail,
                };
                self.emit(uow, &event).await?;
            }
            None => {}
        }
        if applied.changed() {
            info!(
                order_id,
                from = applied.before.name(),
                to = applied.after.name(),
                reason = applied.after.reason(),
                "order status changed"
            );
        } else {
            info!(
                order_id,
                status = applied.before.name(),
                ?input,
                "no change"
            );
        }
        Ok(applied)
    }

    /// The customer cancels `order_id` (HTTP `DELETE /orders/{id}`), in a
    /// unit of work of its own. An order that has already finished is left
    /// as it is and returned in `before`, for the caller to refuse.
    pub async fn cancel(&self, order_id: &str) -> Result<Applied, OrderError> {
        let mut uow = self.db.begin().await?;
        let applied = self
            .apply(
                &mut uow,
                order_id,
                &Input::CustomerCancelled { detail: None },
                Cause::Customer,
            )
            .await?;
        if applied.before.is_terminal() {
            uow.rollback().await?;
            return Ok(applied);
        }
        uow.commit().await?;
        self.notify_changed();
        Ok(applied)
    }

    /// Emits `event` through the outbox and records it in the timeline.
    async fn emit<E: Event>(&self, uow: &mut UnitOfWork<'_>, event: &E) -> Result<(), OrderError> {
        self.emitter.emit(uow, event).await?;
        let metadata = event.metadata();
        let entry = TimelineEntry {
            event_type: E::EVENT_TYPE.to_owned(),
            topic: E::TOPIC.name().to_owned(),
            event_id: metadata.event_id.clone(),
            occurred_at: metadata.occurred_at,
        };
        storage::add_timeline(uow.conn(), &metadata.order_id, &entry).await?;
        Ok(())
    }

    async fn handle_place(
        &self,
        uow: &mut UnitOfWork<'_>,
        cmd: &PlaceOrder,
        consumed: Consumed<'_>,
    ) -> Result<(), OrderError> {
        let order_id = OrderId::parse(&cmd.metadata.order_id).map_err(|e| {
            let mut errors = std::collections::BTreeMap::new();
            errors.insert("order_id".to_owned(), e.problem);
            OrderError::Invalid(FieldErrors(errors))
        })?;
        if let Some(key) = cmd.request_id.as_deref().filter(|k| !k.is_empty()) {
            if let Err(problem) = contract::check_idempotency_key(key) {
                let mut errors = std::collections::BTreeMap::new();
                errors.insert("request_id".to_owned(), problem);
                return Err(OrderError::Invalid(FieldErrors(errors)));
            }
        }
        let draft = OrderDraft {
            customer_id: cmd.customer_id.clone(),
            customer_email: cmd.customer_email.clone(),
            items: cmd.items.iter().map(Into::into).collect(),
            currency: cmd.currency.clone(),
            shipping_address: (&cmd.shipping_address).into(),
        };
        let placed = self
            .place(
                uow,
                PlaceCommand {
                    order_id,
                    idempotency_key: cmd.request_id.clone().filter(|k| !k.is_empty()),
                    draft,
                    cause: Some(consumed),
                },
            )
            .await?;
        if let Placed::Created(_) = placed {
            self.notify_changed();
        }
        Ok(())
    }
}

/// Refuses a replay whose body differs from the one `existing` was placed
/// with. Orders stored before hashes were kept (`None`) are taken as equal.
fn same_body(existing: &OrderRecord, hash: &str, key: Option<&str>) -> Result<(), OrderError> {
    match existing.request_hash.as_deref() {
        Some(stored) if stored != hash => Err(OrderError::KeyReused {
            what: match (key, existing.idempotency_key.as_deref()) {
                (Some(key), Some(stored_key)) if key == stored_key => {
                    "the idempotency key".to_owned()
                }
                _ => "the order id".to_owned(),
            },
            order_id: existing.order_id.clone(),
        }),
        _ => Ok(()),
    }
}

/// Maps a consumed event to the input it is for the order rules; `None`
/// for events this service does not subscribe to.
fn input_of(event: &AnyEvent) -> Option<Input> {
    Some(match event {
        AnyEvent::Inventory(InventoryEvent::StockReservationFailed(e)) => {
            Input::StockReservationFailed {
                missing_skus: e.missing_skus.clone(),
            }
        }
        AnyEvent::Inventory(InventoryEvent::StockReleased(e)) => Input::StockReleased {
            reason: e.reason.clone(),
        },
        AnyEvent::Shipments(ShipmentsEvent::ShipmentManifestFailed(e)) => {
            Input::ShipmentManifestFailed {
                reason: e.reason.clone(),
            }
        }
        AnyEvent::Payments(PaymentsEvent::PaymentFailed(e)) => Input::PaymentFailed {
            reason: e.reason.clone(),
        },
        AnyEvent::Payments(PaymentsEvent::PaymentCompleted(_)) => Input::PaymentCompleted,
        AnyEvent::Request(OrderRequest::CancelOrder(c)) => Input::CustomerCancelled {
            detail: c.reason.clone(),
        },
        AnyEvent::Inventory(InventoryEvent::StockReserved(_))
        | AnyEvent::Shipments(
            ShipmentsEvent::ShipmentManifested(_) | ShipmentsEvent::ShipmentCancelled(_),
        )
        | AnyEvent::Payments(PaymentsEvent::PaymentRefunded(_)) => Input::Observed,
        AnyEvent::Request(OrderRequest::PlaceOrder(_))
        | AnyEvent::Orders(_)
        | AnyEvent::Notifications(_) => return None,
    })
}

impl Handler for Orders {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let event = &msg.event;
        let consumed = Consumed {
            metadata: event.metadata(),
            event_type: event.event_type(),
            topic: &msg.topic,
        };
        if let AnyEvent::Request(OrderRequest::PlaceOrder(cmd)) = event {
            return Ok(self.handle_place(uow, cmd, consumed).await?);
        }
        if let AnyEvent::Request(OrderRequest::CancelOrder(cmd)) = event {
            // A command from outside: held to the contract like PlaceOrder,
            // so its reason never reaches a mail or a log unchecked.
            let mut v = contract::Violations::new();
            v.check("order_id", contract::check_id(&cmd.metadata.order_id));
            if let Some(reason) = &cmd.reason {
                v.check("reason", contract::check_text(reason));
            }
            if let Err(violations) = v.into_result() {
                return Err(OrderError::Invalid(FieldErrors::from(violations)).into());
            }
        }
        let Some(input) = input_of(event) else {
            // Not on a topic we subscribe to; nothing to undo, nothing to do.
            warn!(event_type = event.event_type(), topic = %msg.topic, "unexpected event ignored");
            return Ok(());
        };
        let applied = self
            .apply(uow, event.order_id(), &input, Cause::Event(consumed))
            .await?;
        if matches!(input, Input::CustomerCancelled { .. }) && applied.before.is_terminal() {
            info!(
                order_id = event.order_id(),
                status = applied.before.name(),
                "CancelOrder for a finished order ignored"
            );
        }
        if applied.changed() {
            // Before the consumer commits: a long-poll woken now may read
            // the old row on PostgreSQL, so it re-reads shortly after a
            // wake-up (see http::wait_for_terminal).
            self.notify_changed();
        }
        Ok(())
    }
}
