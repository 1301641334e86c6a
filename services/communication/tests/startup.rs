//! `Application::build`: binds port 0 with the file transport, and refuses
//! an SMTP URL it cannot use.

use choreo_bus::ServiceSettings;
use choreo_communication::{Application, Settings};

fn settings(dir: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("CHOREO_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("CHOREO_DATA_DIR".to_owned(), dir.display().to_string()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::from_vars(&vars).unwrap()
}

#[tokio::test]
async fn builds_on_a_free_port() {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(settings(dir.path(), &[])).await.unwrap();
    assert_ne!(app.port(), 0);
    assert_eq!(
        choreo_communication::storage::count_replica(app.db())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_unusable_smtp_url_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &[("CHOREO_SMTP_URL", "smtps://u:secret@mail:465")],
    );
    let err = choreo_bus::cause_chain(&Application::build(s).await.unwrap_err());
    assert!(
        err.contains("CHOREO_SMTP_URL") && !err.contains("secret"),
        "{err}"
    );
}
