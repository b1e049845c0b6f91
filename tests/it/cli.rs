//! The operator contract: start-up errors name what is missing or
//! unreachable; the embedded default keeps its data across restarts.

use std::process::Command;

use crate::common::{BIN, CODE_SECRET, Gatehouse, TestDb, free_port, kafka_brokers, redis_url};
use reqwest::Method;

fn serve(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env("GATEHOUSE_OAUTH_CODE_SECRET", CODE_SECRET)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serve_names_missing_and_unreachable_dependencies() {
    let (ok, err) = serve(&["authz"]);
    assert!(!ok);
    assert!(
        err.contains("--database-url (or the DATABASE_URL environment variable) is required"),
        "{err}"
    );

    let db = TestDb::create().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let (ok, err) = serve(&[
        "authz",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        "x",
        "--redis-url",
        "redis://x",
    ]);
    assert!(!ok);
    assert!(
        err.contains("pending migration") && err.contains("gatehouse migrate"),
        "{err}"
    );
    assert!(
        Command::new(BIN)
            .args(["migrate", "--database-url", &db.url])
            .status()
            .unwrap()
            .success()
    );

    let (ok, err) = serve(&["authz", "--database-url", &db.url]);
    assert!(!ok);
    assert!(
        err.contains("--kafka-brokers (or the KAFKA_BROKERS environment variable) is required"),
        "{err}"
    );
    let (ok, err) = serve(&[
        "authz",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        &kafka_brokers(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("--redis-url (or the REDIS_URL environment variable) is required"),
        "{err}"
    );

    let full = [
        "authz",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        &kafka_brokers(),
        "--redis-url",
        &redis_url(),
    ];
    let (ok, err) = serve(&[&full[..], &["--oauth-code-secret", "short"]].concat());
    assert!(!ok);
    assert!(err.contains("at least 32 characters"), "{err}");
    let out = Command::new(BIN)
        .arg("serve")
        .args(full)
        .env_remove("GATEHOUSE_OAUTH_CODE_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--oauth-code-secret (or the GATEHOUSE_OAUTH_CODE_SECRET environment variable) is required"),
        "{err}"
    );

    let (ok, err) = serve(&[
        "authz",
        "--database-url",
        &format!("postgres://postgres@{dead}/nope"),
        "--kafka-brokers",
        &kafka_brokers(),
        "--redis-url",
        &redis_url(),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot reach the database"), "{err}");
    let (ok, err) = serve(&[
        "authz",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        &dead,
        "--redis-url",
        &redis_url(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot reach Kafka at {dead}")),
        "{err}"
    );
    let (ok, err) = serve(&[
        "authz",
        "--database-url",
        &db.url,
        "--kafka-brokers",
        &kafka_brokers(),
        "--redis-url",
        &format!("redis://{dead}"),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot reach Redis"), "{err}");
    let (ok, err) = serve(&[
        "authz",
        "--database-url",
        "mysql://x/y",
        "--kafka-brokers",
        "k",
        "--redis-url",
        "redis://r",
    ]);
    assert!(!ok);
    assert!(err.contains("unsupported database URL"), "{err}");
    let (ok, err) = serve(&["billing", "--database-url", &db.url]);
    assert!(!ok);
    assert!(err.contains("not part of this build yet"), "{err}");

    // Environment fallbacks work like the flags.
    let out = Command::new(BIN)
        .args(["serve", "authz"])
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BROKERS", &dead)
        .env("REDIS_URL", redis_url())
        .env("GATEHOUSE_OAUTH_CODE_SECRET", CODE_SECRET)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach Kafka at {dead}")),
        "{err}"
    );
}

#[tokio::test]
async fn embedded_bootstraps_once_and_keeps_data_across_restarts() {
    let mut g = Gatehouse::embedded().await;
    let dir = g.data_dir.clone().unwrap();
    let boot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bootstrap.json")).unwrap())
            .unwrap();
    let dev = boot["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["environment"] == "development")
        .unwrap();
    let key = dev["secret_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_test_"));
    let prod = boot["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["environment"] == "production")
        .unwrap();
    assert!(prod["secret_key"].as_str().unwrap().starts_with("sk_live_"));
    let u = g.create_user(&key, "keep@example.com").await;
    // A second process on the same data directory is refused, clearly.
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another gatehouse process is using"), "{err}");
    g.kill();
    g.spawn().await;
    let (s, again) = g
        .call(
            &key,
            Method::GET,
            &format!("/v1/users/{}", u["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(again, u);
    let (_, tenants) = g.admin(Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(
        tenants["total_count"], 1,
        "bootstrap runs only on the first start"
    );
    let log = g.log_text();
    assert!(log.contains(&key), "every start prints the development key");
    // Migrations are one summary line, not one line each.
    assert_eq!(log.matches("database migrated").count(), 1, "{log}");
    assert!(!log.contains("Applying migration"), "{log}");
}
