//! `Application::build`: migrations, routing settings and the bound port.

use choreo_bus::ServiceSettings;
use choreo_courier::{Application, Settings};

#[tokio::test]
async fn build_migrates_and_binds_port_zero() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("CHOREO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("CHOREO_DATA_DIR", dir.path().display().to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let app = Application::build(Settings::from_vars(&vars).unwrap())
        .await
        .unwrap();
    assert_ne!(app.port(), 0);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shipments")
        .fetch_one(app.db().pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
}
