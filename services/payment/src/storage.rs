//! The payment service's tables — `accounts` and `payments` — and the
//! account seed. Queries run on a unit of work's connection (handler) or on
//! the pool (HTTP), with `$n` placeholders that work on both backends.
//!
//! Several replicas may share one PostgreSQL database, and the two topics
//! payment consumes land on different partitions, so two transactions can
//! touch one order or one account at once. Money stays conserved because:
//! - the payment row is read `FOR UPDATE` and written compare-and-set
//!   (insert only if absent, update only from the status that was read);
//! - the account row is read `FOR UPDATE` before a charge, and the debit is
//!   conditional (`balance_minor >= amount`);
//!
//! and any write that finds the world changed under it reports
//! [`Error::Conflict`], which is retried. SQLite has a
//! single connection, so transactions never overlap there.

use std::path::Path;

use choreo_outbox::{change_one, Backend, Db, Table};
use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::domain::{
    self, Account, Capture, CustomerId, FailReason, Failure, Invalid, Money, OrderId, PaymentId,
    PaymentState,
};

choreo_outbox::service_migrations!();

/// The workspace's one storage error: a lost compare-and-set is
/// [`Error::Conflict`] (retryable); a row that cannot be read back
/// ([`Error::Corrupt`]) or a refund whose account is gone
/// ([`Error::Inconsistent`]) is permanent. Retryable errors are retried in
/// place by the consumer and answered 503 by the API.
pub use choreo_outbox::{Error, Result};

/// Why the seed could not be loaded; fatal at start.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read accounts seed file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("accounts seed file {path} is not a JSON array of accounts: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("accounts seed file {path}, entry {index}: {source}")]
    Invalid {
        path: String,
        index: usize,
        source: Invalid,
    },
    #[error("loading the accounts seed: {0}")]
    Storage(#[from] Error),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------- accounts

const ACCOUNT_COLUMNS: &str = "customer_id, balance_minor, currency, blocked";

const ACCOUNTS: Table = Table::new(
    "accounts",
    "customer_id",
    ACCOUNT_COLUMNS,
    "reading an account",
);

fn account_from_row(row: &AnyRow) -> Result<Account> {
    let customer_id: String = row.try_get("customer_id")?;
    let balance_minor: i64 = row.try_get("balance_minor")?;
    let currency: String = row.try_get("currency")?;
    let blocked = row.try_get::<i64, _>("blocked")? != 0;
    let corrupt = |e: Invalid| Error::corrupt("accounts", &customer_id)(e.to_string());
    Ok(Account {
        customer_id: CustomerId::parse(customer_id.clone()).map_err(corrupt)?,
        balance: domain::money("balance_minor", balance_minor, &currency).map_err(corrupt)?,
        blocked,
    })
}

/// The account, locked until the transaction ends on PostgreSQL.
pub async fn lock_account(
    conn: &mut AnyConnection,
    backend: Backend,
    customer_id: &CustomerId,
) -> Result<Option<Account>> {
    let row = ACCOUNTS.load(conn, backend, customer_id.as_str()).await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Takes `amount` from the account, only if it still holds that much in
/// that currency.
pub async fn debit(
    conn: &mut AnyConnection,
    customer_id: &CustomerId,
    amount: &Money,
) -> Result<()> {
    let debit = sqlx::query(
        "UPDATE accounts SET balance_minor = balance_minor - $1 \
         WHERE customer_id = $2 AND currency = $3 AND balance_minor >= $1 AND blocked = 0",
    )
    .bind(amount.minor)
    .bind(customer_id.as_str())
    .bind(amount.currency.as_str());
    change_one(debit, conn, "debiting an account", || Error::Conflict {
        table: "accounts",
        key: customer_id.to_string(),
        doing: format!("debiting {amount}"),
    })
    .await
}

/// Gives `amount` back. The account must still be in the currency it was
/// charged in; if an operator re-created it in another one, the refund
/// needs a human.
pub async fn credit(
    conn: &mut AnyConnection,
    customer_id: &CustomerId,
    amount: &Money,
) -> Result<()> {
    let credit = sqlx::query(
        "UPDATE accounts SET balance_minor = balance_minor + $1 \
         WHERE customer_id = $2 AND currency = $3",
    )
    .bind(amount.minor)
    .bind(customer_id.as_str())
    .bind(amount.currency.as_str());
    change_one(credit, conn, "crediting an account", || {
        Error::Inconsistent {
            table: "accounts",
            key: customer_id.to_string(),
            problem: format!(
                "cannot refund {amount}: the account is gone or no longer in {}",
                amount.currency
            ),
        }
    })
    .await
}

/// One account, for the HTTP API.
pub async fn get_account(db: &Db, customer_id: &CustomerId) -> Result<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE customer_id = $1");
    let row = sqlx::query(&sql)
        .bind(customer_id.as_str())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Creates or replaces an account; returns `true` when it was created.
pub async fn put_account(db: &Db, account: &Account) -> Result<bool> {
    let mut tx = db.pool().begin().await?;
    let existed = sqlx::query("SELECT customer_id FROM accounts WHERE customer_id = $1")
        .bind(account.customer_id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    sqlx::query(
        "INSERT INTO accounts (customer_id, balance_minor, currency, blocked) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id) DO UPDATE SET balance_minor = excluded.balance_minor, \
         currency = excluded.currency, blocked = excluded.blocked",
    )
    .bind(account.customer_id.as_str())
    .bind(account.balance.minor)
    .bind(account.balance.currency.as_str())
    .bind(i64::from(account.blocked))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(!existed)
}

/// One entry of the seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedAccount {
    customer_id: String,
    balance_minor: i64,
    currency: String,
    #[serde(default)]
    blocked: bool,
}

/// Parses and validates a seed file's content.
pub fn parse_seed(path: &Path, bytes: &[u8]) -> Result<Vec<Account>, SeedError> {
    let path = path.display().to_string();
    let entries: Vec<SeedAccount> =
        serde_json::from_slice(bytes).map_err(|source| SeedError::Parse {
            path: path.clone(),
            source,
        })?;
    entries
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let invalid = |source| SeedError::Invalid {
                path: path.clone(),
                index,
                source,
            };
            Ok(Account {
                customer_id: CustomerId::parse(e.customer_id).map_err(invalid)?,
                balance: domain::money("balance_minor", e.balance_minor, &e.currency)
                    .map_err(invalid)?,
                blocked: e.blocked,
            })
        })
        .collect()
}

/// Loads `path` into `accounts` when the table is empty; returns how many
/// accounts were inserted. The file is read only when needed, so a running
/// deployment does not depend on it. Concurrent replicas starting together
/// both insert with `ON CONFLICT DO NOTHING`, so the seed lands once.
pub async fn seed_accounts_if_empty(db: &Db, path: &Path) -> Result<usize, SeedError> {
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM accounts")
        .fetch_one(db.pool())
        .await
        .and_then(|row| row.try_get(0))
        .map_err(Error::sql("counting accounts"))?;
    if count > 0 {
        return Ok(0);
    }
    let bytes = std::fs::read(path).map_err(|source| SeedError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let accounts = parse_seed(path, &bytes)?;
    let mut uow = db.begin().await?;
    let mut inserted = 0;
    for account in &accounts {
        inserted += sqlx::query(
            "INSERT INTO accounts (customer_id, balance_minor, currency, blocked) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(account.customer_id.as_str())
        .bind(account.balance.minor)
        .bind(account.balance.currency.as_str())
        .bind(i64::from(account.blocked))
        .execute(uow.conn())
        .await
        .map_err(Error::sql("seeding an account"))?
        .rows_affected() as usize;
    }
    uow.commit().await?;
    Ok(inserted)
}

// ---------------------------------------------------------------- payments

const PAYMENT_COLUMNS: &str =
    "status, payment_id, customer_id, amount_minor, currency, refunded_minor, reason";

const PAYMENTS: Table = Table::new("payments", "order_id", PAYMENT_COLUMNS, "reading a payment");

fn payment_from_row(order_id: &OrderId, row: &AnyRow) -> Result<PaymentState> {
    let status: String = row.try_get("status")?;
    let payment_id: Option<String> = row.try_get("payment_id")?;
    let customer_id: Option<String> = row.try_get("customer_id")?;
    let amount_minor: Option<i64> = row.try_get("amount_minor")?;
    let currency: Option<String> = row.try_get("currency")?;
    let reason: Option<String> = row.try_get("reason")?;
    let row_corrupt = Error::corrupt("payments", order_id);
    let corrupt = |what: &str| row_corrupt(what.to_owned());
    let invalid = |e: Invalid| corrupt(&e.to_string());

    let customer = || -> Result<CustomerId> {
        CustomerId::parse(
            customer_id
                .clone()
                .ok_or_else(|| corrupt("no customer_id"))?,
        )
        .map_err(invalid)
    };
    let amount = || -> Result<Money> {
        let minor = amount_minor.ok_or_else(|| corrupt("no amount_minor"))?;
        let currency = currency.as_deref().ok_or_else(|| corrupt("no currency"))?;
        domain::money("amount_minor", minor, currency).map_err(invalid)
    };
    let capture = || -> Result<Capture> {
        Ok(Capture {
            payment_id: PaymentId::parse(
                payment_id.clone().ok_or_else(|| corrupt("no payment_id"))?,
            )
            .map_err(invalid)?,
            customer_id: customer()?,
            amount: amount()?,
        })
    };
    Ok(match status.as_str() {
        "CAPTURED" => PaymentState::Captured(capture()?),
        "REFUNDED" => PaymentState::Refunded {
            capture: capture()?,
            reason: reason.clone().unwrap_or_default(),
        },
        "FAILED" => PaymentState::Failed(Failure {
            customer_id: customer()?,
            amount: amount()?,
            reason: reason
                .as_deref()
                .and_then(FailReason::from_code)
                .ok_or_else(|| corrupt("unknown failure reason"))?,
        }),
        "VOID" => PaymentState::Void,
        other => return Err(corrupt(&format!("unknown status {other}"))),
    })
}

/// The order's payment state, locked until the transaction ends on
/// PostgreSQL (when the row exists; an absent row is guarded by
/// [`save_payment`]'s insert-if-absent).
pub async fn lock_payment(
    conn: &mut AnyConnection,
    backend: Backend,
    order_id: &OrderId,
) -> Result<PaymentState> {
    match PAYMENTS.load(conn, backend, order_id.as_str()).await? {
        Some(row) => payment_from_row(order_id, &row),
        None => Ok(PaymentState::None),
    }
}

/// The order's payment state, for the HTTP API.
pub async fn get_payment(db: &Db, order_id: &OrderId) -> Result<PaymentState> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1");
    let row = sqlx::query(&sql)
        .bind(order_id.as_str())
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(row) => payment_from_row(order_id, &row),
        None => Ok(PaymentState::None),
    }
}

/// Column values of a state.
struct PaymentColumns<'a> {
    status: &'static str,
    payment_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    amount: Option<&'a Money>,
    refunded_minor: i64,
    reason: Option<&'a str>,
}

fn columns(state: &PaymentState) -> Option<PaymentColumns<'_>> {
    let status = state.status()?;
    let empty = PaymentColumns {
        status,
        payment_id: None,
        customer_id: None,
        amount: None,
        refunded_minor: 0,
        reason: None,
    };
    Some(match state {
        PaymentState::None => return None,
        PaymentState::Void => empty,
        PaymentState::Captured(c) => PaymentColumns {
            payment_id: Some(c.payment_id.as_str()),
            customer_id: Some(c.customer_id.as_str()),
            amount: Some(&c.amount),
            ..empty
        },
        PaymentState::Refunded { capture: c, reason } => PaymentColumns {
            payment_id: Some(c.payment_id.as_str()),
            customer_id: Some(c.customer_id.as_str()),
            amount: Some(&c.amount),
            refunded_minor: c.amount.minor,
            reason: Some(reason),
            ..empty
        },
        PaymentState::Failed(f) => PaymentColumns {
            customer_id: Some(f.customer_id.as_str()),
            amount: Some(&f.amount),
            reason: Some(f.reason.code()),
            ..empty
        },
    })
}

/// Moves the order's payment from `previous` (as read by
/// [`lock_payment`]) to `next`. Compare-and-set: if another transaction
/// got there first, nothing is written and [`Error::Conflict`] says so.
pub async fn save_payment(
    conn: &mut AnyConnection,
    order_id: &OrderId,
    previous: &PaymentState,
    next: &PaymentState,
) -> Result<()> {
    let Some(cols) = columns(next) else {
        return Err(Error::Inconsistent {
            table: "payments",
            key: order_id.to_string(),
            problem: "a payment cannot go back to no state".into(),
        });
    };
    // Both writes bind the columns, `updated_at` and `order_id` first; the
    // update guards on the status it read.
    let (sql, doing) = match previous.status() {
        None => (
            "INSERT INTO payments (status, payment_id, customer_id, amount_minor, currency, \
             refunded_minor, reason, updated_at, order_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_id) DO NOTHING",
            "inserting a payment",
        ),
        Some(_) => (
            "UPDATE payments SET status = $1, payment_id = $2, customer_id = $3, \
             amount_minor = $4, currency = $5, refunded_minor = $6, reason = $7, updated_at = $8 \
             WHERE order_id = $9 AND status = $10",
            "updating a payment",
        ),
    };
    let mut write = sqlx::query(sql)
        .bind(cols.status)
        .bind(cols.payment_id)
        .bind(cols.customer_id)
        .bind(cols.amount.map(|m| m.minor))
        .bind(cols.amount.map(|m| m.currency.as_str()))
        .bind(cols.refunded_minor)
        .bind(cols.reason)
        .bind(now_ms())
        .bind(order_id.as_str());
    if let Some(previous_status) = previous.status() {
        write = write.bind(previous_status);
    }
    change_one(write, conn, doing, || Error::Conflict {
        table: "payments",
        key: order_id.to_string(),
        doing: match previous.status() {
            None => format!("inserting it as {}", cols.status),
            Some(from) => format!("moving it from {from} to {}", cols.status),
        },
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_is_validated() {
        let path = Path::new("seed.json");
        let ok = br#"[{"customer_id":"alice","balance_minor":10,"currency":"EUR"}]"#;
        let accounts = parse_seed(path, ok).unwrap();
        assert_eq!(accounts.len(), 1);
        assert!(!accounts[0].blocked);

        let negative = br#"[{"customer_id":"a","balance_minor":-1,"currency":"EUR"}]"#;
        let err = parse_seed(path, negative).unwrap_err().to_string();
        assert!(
            err.contains("entry 0") && err.contains("balance_minor"),
            "{err}"
        );

        let not_json = b"{";
        assert!(matches!(
            parse_seed(path, not_json),
            Err(SeedError::Parse { .. })
        ));
    }
}
