//! The two statements every service's storage makes over its own rows,
//! written once: reading the row a saga step decides on (locked where the
//! backend needs it, [`Table::load`]) and a guarded write that must change
//! exactly one row ([`changed_one`], [`change_one`]). Which rows and which
//! guards stay in each service's storage module.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use crate::{Error, Locking, Result};

/// A table read by its key.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// The key column (`order_id`, `customer_id`).
    pub key: &'static str,
    /// The columns a read returns, comma-separated.
    pub columns: &'static str,
    /// What a failed read was doing, for its error ("reading a shipment").
    pub reading: &'static str,
}

impl Table {
    /// `name` read by its `key` column, returning `columns`; `reading` says
    /// what a failed read was doing.
    pub const fn new(
        name: &'static str,
        key: &'static str,
        columns: &'static str,
        reading: &'static str,
    ) -> Self {
        Self {
            name,
            key,
            columns,
            reading,
        }
    }

    /// The row keyed `key`, if there is one, locked for the rest of the
    /// transaction when `locking` says so (PostgreSQL: a concurrent step for
    /// the same key waits, then sees this one's result).
    pub async fn load(
        &self,
        conn: &mut AnyConnection,
        locking: impl Into<Locking>,
        key: &str,
    ) -> Result<Option<AnyRow>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1{}",
            self.columns,
            self.name,
            self.key,
            locking.into().clause()
        );
        sqlx::query(&sql)
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(Error::sql(self.reading))
    }
}

/// Runs a guarded write (an insert that does nothing on conflict, an update
/// whose `WHERE` holds the expected state): `true` when it changed exactly
/// one row, `false` when the guard did not hold.
pub async fn changed_one<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    conn: &mut AnyConnection,
    doing: &'static str,
) -> Result<bool> {
    let changed = query
        .execute(conn)
        .await
        .map_err(Error::sql(doing))?
        .rows_affected();
    Ok(changed == 1)
}

/// Like [`changed_one`], for a write whose guard must hold: when it changes
/// no row, the error is the one `otherwise` builds (a [`Error::Conflict`]
/// to retry, an [`Error::Inconsistent`] for a human).
pub async fn change_one<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    conn: &mut AnyConnection,
    doing: &'static str,
    otherwise: impl FnOnce() -> Error,
) -> Result<()> {
    if changed_one(query, conn, doing).await? {
        Ok(())
    } else {
        Err(otherwise())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, Db};

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(db.pool())
            .await
            .unwrap();
        (dir, db)
    }

    const THINGS: Table = Table::new("things", "id", "id, n", "reading a thing");

    #[tokio::test]
    async fn load_finds_the_row_by_key_or_nothing() {
        let (_dir, db) = db().await;
        let mut conn = db.pool().acquire().await.unwrap();
        let insert = |id: &'static str| sqlx::query("INSERT INTO things VALUES ($1, 7)").bind(id);
        assert!(changed_one(insert("a"), &mut conn, "inserting")
            .await
            .unwrap());

        let row = THINGS.load(&mut conn, Backend::Sqlite, "a").await.unwrap();
        let n: i64 = sqlx::Row::try_get(&row.unwrap(), "n").unwrap();
        assert_eq!(n, 7);
        assert!(THINGS
            .load(&mut conn, Backend::Sqlite, "b")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_guard_that_does_not_hold_changes_nothing_and_says_so() {
        let (_dir, db) = db().await;
        let mut conn = db.pool().acquire().await.unwrap();
        let insert = || {
            sqlx::query("INSERT INTO things VALUES ($1, 1) ON CONFLICT (id) DO NOTHING").bind("a")
        };
        assert!(changed_one(insert(), &mut conn, "inserting").await.unwrap());
        assert!(!changed_one(insert(), &mut conn, "inserting").await.unwrap());

        let bump = |from: i64| {
            sqlx::query("UPDATE things SET n = n + 1 WHERE id = $1 AND n = $2")
                .bind("a")
                .bind(from)
        };
        change_one(bump(1), &mut conn, "bumping", || unreachable!())
            .await
            .unwrap();
        let err = change_one(bump(1), &mut conn, "bumping", || Error::Conflict {
            table: "things",
            key: "a".into(),
            doing: "bumping from 1".into(),
        })
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    table: "things",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_statement_says_what_it_was_doing() {
        let (_dir, db) = db().await;
        let mut conn = db.pool().acquire().await.unwrap();
        let missing = Table {
            name: "nothing_here",
            ..THINGS
        };
        let Err(err) = missing.load(&mut conn, Locking::None, "a").await else {
            panic!("a read of a missing table succeeded");
        };
        assert!(err.to_string().contains("reading a thing"), "{err}");
    }
}
