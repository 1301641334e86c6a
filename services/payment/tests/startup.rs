//! `Application::build`: seeds on a fresh database, binds port 0, and
//! refuses to start without a usable seed file.

use choreo_bus::ServiceSettings;
use choreo_payment::{Application, Settings};

fn settings(dir: &std::path::Path, seed: &str) -> Settings {
    Settings::from_vars(&[
        ("CHOREO_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("CHOREO_DATA_DIR".into(), dir.display().to_string()),
        ("CHOREO_ACCOUNTS_SEED_FILE".into(), seed.into()),
    ])
    .unwrap()
}

#[tokio::test]
async fn builds_with_the_seed_on_a_free_port() {
    let dir = tempfile::tempdir().unwrap();
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/seed/accounts.json"
    );
    let app = Application::build(settings(dir.path(), seed))
        .await
        .unwrap();
    assert_ne!(app.port(), 0);
    let alice = choreo_payment::storage::get_account(
        app.db(),
        &choreo_payment::domain::CustomerId::parse("alice").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(alice.unwrap().balance.minor, 1_000_000);
}

#[tokio::test]
async fn a_missing_seed_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = Application::build(settings(dir.path(), &missing.display().to_string()))
        .await
        .unwrap_err();
    let message = choreo_bus::cause_chain(&err);
    assert!(
        message.contains("nope.json") && message.contains("seed"),
        "{message}"
    );
}
