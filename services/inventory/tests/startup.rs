//! `Application::build`: migrations, the seed rule and the bound port.

use std::path::Path;

use choreo_bus::ServiceSettings;
use choreo_inventory::{storage, Application, Settings};

fn settings(data_dir: &Path, seed: &Path) -> Settings {
    let vars = [
        ("CHOREO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("CHOREO_DATA_DIR", data_dir.display().to_string()),
        ("CHOREO_STOCK_SEED_FILE", seed.display().to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    Settings::from_vars(&vars).unwrap()
}

#[tokio::test]
async fn build_seeds_an_empty_stock_table_once_and_binds_port_zero() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("stock.json");
    std::fs::write(
        &seed,
        r#"[{"sku": "B-2", "available": 5}, {"sku": "A-1", "available": 0}]"#,
    )
    .unwrap();
    let app = Application::build(settings(&dir.path().join("data"), &seed))
        .await
        .unwrap();
    assert_ne!(app.port(), 0);
    let rows = storage::list_stock(app.db().pool()).await.unwrap();
    let got: Vec<(&str, i64)> = rows.iter().map(|r| (r.sku.as_str(), r.available)).collect();
    assert_eq!(got, [("A-1", 0), ("B-2", 5)]);
    drop(app);

    // Restarting with stock in place needs no seed file at all.
    std::fs::remove_file(&seed).unwrap();
    let app = Application::build(settings(&dir.path().join("data"), &seed))
        .await
        .unwrap();
    assert_eq!(storage::list_stock(app.db().pool()).await.unwrap().len(), 2);
}

#[tokio::test]
async fn missing_or_bad_seed_file_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = Application::build(settings(&dir.path().join("d1"), &missing))
        .await
        .unwrap_err();
    let err = choreo_bus::cause_chain(&err);
    assert!(err.contains("missing.json"), "{err}");

    for (i, bad) in [
        r#"{"sku": "A"}"#,
        r#"[{"sku": "A", "available": -1}]"#,
        r#"[{"sku": "A", "available": 1}, {"sku": "A", "available": 2}]"#,
        r#"[{"sku": "has space", "available": 1}]"#,
        r#"[{"sku": "A", "qty": 1}]"#,
    ]
    .iter()
    .enumerate()
    {
        let seed = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&seed, bad).unwrap();
        let result = Application::build(settings(&dir.path().join(format!("db{i}")), &seed)).await;
        assert!(result.is_err(), "{bad} was accepted");
    }
}
