//! Test helpers (feature `testing`): a fresh database per test, so storage
//! scenarios can be written once and run on SQLite and PostgreSQL.
//!
//! PostgreSQL: connects to the admin URL (`CHOREO_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), creates
//! `choreo_test_<uuid>` and returns its URL with a guard that drops it. The
//! helpers panic on failure: a test that silently skips cannot fail.

use std::path::Path;

use sqlx::{Connection, Executor, PgConnection};

/// Overrides the server the PostgreSQL helpers use.
pub const POSTGRES_URL_ENV: &str = "CHOREO_TEST_POSTGRES_URL";
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A `sqlite://` URL for a database file inside `dir` (e.g. a tempdir).
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("choreo.db").display())
}

/// Creates a fresh PostgreSQL database; returns its URL and the guard that
/// drops it. Keep the guard alive for as long as the database is used.
pub async fn fresh_postgres_url() -> (String, TestDatabase) {
    let db = fresh_postgres().await;
    (db.url.clone(), db)
}

/// Creates a fresh PostgreSQL database, dropped with the returned guard.
pub async fn fresh_postgres() -> TestDatabase {
    let admin_url = admin_url();
    let name = format!("choreo_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("cannot reach the test PostgreSQL server (set {POSTGRES_URL_ENV}): {e}")
    });
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = admin.close().await;
    TestDatabase {
        url: with_database(&admin_url, &name),
        name,
        admin_url,
        dropped: false,
    }
}

/// A database created by [`fresh_postgres`]. Dropped (with `FORCE`, so open
/// pools do not block it) by [`TestDatabase::drop_database`] or, failing
/// that, when the guard goes out of scope, even if the test panicked.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
    dropped: bool,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now.
    pub async fn drop_database(mut self) {
        self.dropped = true;
        drop_db(&self.admin_url, &self.name).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await, and we may be inside a runtime: use a thread
        // with its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let joined = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database")
                .block_on(drop_db(&admin_url, &name));
        })
        .join();
        if joined.is_err() {
            tracing::warn!(database = %self.name, "could not drop test database");
        }
    }
}

async fn drop_db(admin_url: &str, name: &str) {
    let result = async {
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
            .await?;
        admin.close().await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, database = name, "could not drop test database");
    }
}

fn admin_url() -> String {
    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `admin_url` with its database path replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
