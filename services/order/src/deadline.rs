//! Order deadlines: the clock the order rules read, and the timer that
//! cancels every open order whose deadline has passed. Deadlines live in
//! the database (`orders.deadline_at`), so orders placed before a restart
//! still expire after it; the clock is passed in, so tests and the
//! simulation move time instead of sleeping.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::domain::Input;
use crate::handlers::{Cause, OrderError, Orders};
use crate::storage;

/// Where the order rules read the time (creation, status changes, which
/// deadlines have passed): the wall clock, or a clock its owner sets — the
/// simulation moves time itself instead of sleeping.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Milliseconds since the Unix epoch, as last [`set`](Clock::set).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock showing `now_ms`.
    pub fn manual(now_ms: i64) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(now_ms)))
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock to `now_ms` (every clone sees it); the system
    /// clock cannot be set and ignores it.
    pub fn set(&self, now_ms: i64) {
        if let Clock::Manual(now) = self {
            now.store(now_ms, Ordering::SeqCst);
        }
    }
}

impl Orders {
    /// Cancels every open order whose deadline has passed, one unit of work
    /// each; returns how many were cancelled. Failures are logged and left
    /// for the next call: the order is still due then.
    pub async fn expire_due(&self) -> Result<usize, OrderError> {
        const BATCH: i64 = 100;
        let mut cancelled = 0;
        loop {
            // The pooled connection is released before any unit of work
            // begins: SQLite has only one.
            let due = {
                let mut conn = self.connection().await?;
                storage::due(&mut conn, self.clock().now_ms(), BATCH).await?
            };
            let batch_len = due.len();
            let mut progressed = false;
            for (order_id, trace_context) in due {
                let span = choreo_bus::trace::deadline_span(&order_id, trace_context.as_deref());
                match self.expire_one(&order_id).instrument(span).await {
                    Ok(true) => {
                        cancelled += 1;
                        progressed = true;
                    }
                    Ok(false) => progressed = true,
                    Err(e) => warn!(%order_id, error = %e, "deadline cancel failed; will retry"),
                }
            }
            if (batch_len as i64) < BATCH || !progressed {
                return Ok(cancelled);
            }
        }
    }

    async fn expire_one(&self, order_id: &str) -> Result<bool, OrderError> {
        let mut uow = self.db().begin().await?;
        let applied = self
            .apply(&mut uow, order_id, &Input::DeadlinePassed, Cause::Deadline)
            .await?;
        uow.commit().await?;
        if applied.changed() {
            self.notify_changed();
        }
        Ok(applied.changed())
    }

    /// The deadline timer: [`expire_due`](Self::expire_due) every `tick`
    /// until `shutdown`. Deadlines live in the database, so orders placed
    /// before a restart still expire after it.
    pub async fn run_deadline_timer(self, tick: Duration, shutdown: CancellationToken) {
        info!(tick_ms = tick.as_millis() as u64, "deadline timer started");
        loop {
            match self.expire_due().await {
                Ok(0) => {}
                Ok(n) => info!(cancelled = n, "orders past their deadline cancelled"),
                Err(e) => warn!(error = %e, "deadline scan failed; retrying next tick"),
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        info!("deadline timer stopped");
    }
}
