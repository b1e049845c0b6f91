//! Event sourcing under stress and faults, on real PostgreSQL, Kafka (tansu)
//! and Redis: optimistic concurrency, the outbox across a broker outage,
//! consumer restarts, projection rebuilds, and the envelope on the topic.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Gatehouse, TestDb, free_port, unique};
use gatehouse_proto::v1::{Envelope, UserCreated};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use reqwest::Method;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    rows(db, sql).await[0].try_get_by_index::<i64>(0).unwrap()
}

/// Reads `topic` from the beginning and returns every envelope seen until
/// `done` says enough, or the deadline passes.
async fn consume(
    brokers: &str,
    topic: &str,
    secs: u64,
    done: impl Fn(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("test-reader-"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !done(&seen) {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            seen.push(Envelope::decode(m.payload().unwrap_or_default()).unwrap());
        }
    }
    seen
}

#[tokio::test]
async fn concurrent_patches_are_applied_or_refused_never_lost() {
    let g = Gatehouse::production().await;
    let t = g.tenant().await;
    let u = g.create_user(&t.dev.key, "race@example.com").await;
    let id = u["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url, key) = (
            g.client.clone(),
            g.url(&format!("/v1/users/{id}")),
            t.dev.key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let res = client
                .patch(url)
                .bearer_auth(key)
                .json(&json!({ "first_name": format!("writer-{i}"), "public_metadata": { "writer": i } }))
                .send()
                .await
                .unwrap();
            (i, res.status().as_u16())
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        let (i, status) = t.await.unwrap();
        assert!(status == 200 || status == 409, "writer {i}: {status}");
        if status == 200 {
            applied.push(i);
        }
    }
    let db = g.db.as_ref().unwrap().connect().await;
    let versions: Vec<i64> = rows(&db, &format!("SELECT stream_version FROM authz_events WHERE stream_id = '{id}' ORDER BY stream_version"))
        .await
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(
        versions, expected,
        "stream versions are unique and gap-free"
    );
    assert_eq!(
        versions.len(),
        1 + applied.len(),
        "every 200 is exactly one event; no 409 left one"
    );
    // The last event is the current state; every applied writer is in the stream.
    let events = rows(&db, &format!("SELECT payload FROM authz_events WHERE stream_id = '{id}' AND event_type = 'user.updated' ORDER BY stream_version")).await;
    let writers: HashSet<String> = events
        .iter()
        .map(|r| {
            let p: Vec<u8> = r.try_get_by_index(0).unwrap();
            gatehouse_proto::v1::UserUpdated::decode(p.as_slice())
                .unwrap()
                .user
                .unwrap()
                .first_name
                .unwrap()
        })
        .collect();
    let want: HashSet<String> = applied.iter().map(|i| format!("writer-{i}")).collect();
    assert_eq!(writers, want);
    let (_, now) = g
        .call(&t.dev.key, Method::GET, &format!("/v1/users/{id}"), None)
        .await;
    let last: Vec<u8> = events.last().unwrap().try_get_by_index(0).unwrap();
    let last = gatehouse_proto::v1::UserUpdated::decode(last.as_slice())
        .unwrap()
        .user
        .unwrap();
    assert_eq!(now["first_name"], last.first_name.unwrap().as_str());
    assert!(!applied.is_empty());
}

#[tokio::test]
async fn user_events_reach_kafka_in_the_envelope() {
    let g = Gatehouse::production().await;
    let t = g.tenant().await;
    let u = g.create_user(&t.dev.key, "env@example.com").await;
    let id = u["id"].as_str().unwrap().to_owned();
    g.call(
        &t.dev.key,
        Method::PATCH,
        &format!("/v1/users/{id}"),
        Some(json!({ "first_name": "E" })),
    )
    .await;
    g.call(
        &t.dev.key,
        Method::POST,
        &format!("/v1/users/{id}/ban"),
        None,
    )
    .await;
    g.call(&t.dev.key, Method::DELETE, &format!("/v1/users/{id}"), None)
        .await;
    let topic = format!("{}gatehouse.identity", g.topic_prefix);
    let seen = consume(&g.brokers, &topic, 30, |s| s.len() >= 4).await;
    let types: Vec<&str> = seen.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "user.created",
            "user.updated",
            "user.banned",
            "user.deleted"
        ]
    );
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.stream_id, id);
        assert_eq!(e.stream_type, "user");
        assert_eq!(e.stream_version, i as u64 + 1);
        assert_eq!(e.instance_id, t.dev.id);
        assert_eq!(e.tenant_id, t.id);
        assert!(e.actor.starts_with("secret_key:ak_"));
        assert!(!e.trace_id.is_empty());
        assert!(e.occurred_at_ms > 0);
    }
    let created = UserCreated::decode(seen[0].payload.as_slice())
        .unwrap()
        .user
        .unwrap();
    assert_eq!(created.email_addresses[0].email_address, "env@example.com");
}

struct Broker(Child);

impl Broker {
    async fn start(port: u16) -> Self {
        let bin = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "tansu did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn outbox_survives_a_broker_outage() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let mut broker = Broker::start(port).await;
    let g = Gatehouse::production_with(TestDb::create().await, brokers.clone()).await;
    let t = g.tenant().await;
    g.create_user(&t.dev.key, "before@outage.example").await;
    let dev = t.dev.id.clone();
    g.eventually("the pipeline to flow before the outage", 30, || async {
        g.usage(&dev).await == 1
    })
    .await;

    broker.stop();
    // The API keeps accepting writes: the event store is the outbox.
    let mut ids = Vec::new();
    for i in 0..500 {
        let u = g
            .create_user(&t.dev.key, &format!("during-{i}@outage.example"))
            .await;
        ids.push(u["id"].as_str().unwrap().to_owned());
    }
    for id in ids.iter().take(100) {
        let (s, _) = g
            .call(
                &t.dev.key,
                Method::PATCH,
                &format!("/v1/users/{id}"),
                Some(json!({ "first_name": "after" })),
            )
            .await;
        assert_eq!(s, 200);
    }
    let (s, r) = g.call("", Method::GET, "/readyz", None).await;
    assert_eq!(s, 503, "readiness reports the broker down: {r}");

    let _broker = Broker::start(port).await;
    let topic = format!("{}gatehouse.identity", g.topic_prefix);
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let seen = consume(&brokers, &topic, 90, |s| {
        let mut created = HashSet::new();
        let mut updated = 0;
        for e in s {
            if wanted.contains(e.stream_id.as_str()) {
                match e.event_type.as_str() {
                    "user.created" => {
                        created.insert(e.stream_id.as_str());
                    }
                    "user.updated" => updated += 1,
                    _ => {}
                }
            }
        }
        created.len() == 500 && updated >= 100
    })
    .await;
    // Exactly once after dedupe by event id, in per-user order.
    let mut unique_events = HashMap::new();
    let mut order: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &seen {
        if !wanted.contains(e.stream_id.as_str()) {
            continue;
        }
        if unique_events
            .insert(e.event_id.clone(), e.stream_version)
            .is_none()
        {
            order
                .entry(e.stream_id.clone())
                .or_default()
                .push(e.stream_version);
        }
    }
    assert_eq!(
        unique_events.len(),
        600,
        "500 creates + 100 updates, each once after dedupe"
    );
    assert_eq!(order.len(), 500);
    for (stream, versions) in &order {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, &expected, "per-user order of {stream}");
    }
    // The platform's own consumer converges too, without double counting.
    g.eventually("usage to count every user once", 60, || async {
        g.usage(&dev).await == 501
    })
    .await;
}

#[tokio::test]
async fn consumer_restart_reprocesses_nothing_twice() {
    let mut g = Gatehouse::production().await;
    let t = g.tenant().await;
    let mut n = 0;
    for i in 0..300 {
        g.create_user(&t.dev.key, &format!("r{i}@restart.example"))
            .await;
        n += 1;
    }
    // Crash while the consumer is working through the stream.
    g.kill();
    g.spawn().await;
    for i in 300..350 {
        g.create_user(&t.dev.key, &format!("r{i}@restart.example"))
            .await;
        n += 1;
    }
    let dev = t.dev.id.clone();
    g.eventually("usage to catch up", 60, || async {
        g.usage(&dev).await == n
    })
    .await;
    let db = g.db.as_ref().unwrap().connect().await;
    let applied = scalar(
        &db,
        &format!("SELECT events_applied FROM tenancy_instance_usage WHERE instance_id = '{dev}'"),
    )
    .await;
    assert_eq!(applied, n, "each user.created applied exactly once");
    let processed = scalar(
        &db,
        "SELECT COUNT(*) FROM platform_processed_events WHERE consumer = 'tenancy.instance_usage'",
    )
    .await;
    let events = scalar(&db, "SELECT COUNT(*) FROM authz_events").await;
    assert_eq!(processed, events, "one dedupe row per identity event");
    // Once more: a restart after catching up changes nothing.
    g.kill();
    g.spawn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(g.usage(&dev).await, n);
}

/// Every row of a table, each as its JSON text (column names and values), in
/// id order: a comparable picture of a projection.
async fn table(db: &DatabaseConnection, name: &str) -> Vec<String> {
    rows(
        db,
        &format!("SELECT row_to_json(t)::text FROM (SELECT * FROM {name} ORDER BY id) t"),
    )
    .await
    .iter()
    .map(|r| r.try_get_by_index::<String>(0).unwrap())
    .collect()
}

async fn snapshot(db: &DatabaseConnection) -> (Vec<String>, Vec<String>) {
    (
        table(db, "authz_users").await,
        table(db, "authz_user_emails").await,
    )
}

#[tokio::test]
async fn rebuild_restores_an_identical_projection() {
    let g = Gatehouse::production().await;
    let t = g.tenant().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let u = g
            .create_user(
                if i % 2 == 0 { &t.dev.key } else { &t.prod.key },
                &format!("rb{i}@rebuild.example"),
            )
            .await;
        ids.push((i, u["id"].as_str().unwrap().to_owned()));
    }
    for (i, id) in &ids {
        let key = if i % 2 == 0 { &t.dev.key } else { &t.prod.key };
        match i % 5 {
            0 => {
                g.call(
                    key,
                    Method::PATCH,
                    &format!("/v1/users/{id}"),
                    Some(json!({ "first_name": "R", "public_metadata": { "i": i } })),
                )
                .await
            }
            1 => {
                g.call(key, Method::POST, &format!("/v1/users/{id}/ban"), None)
                    .await
            }
            2 => {
                g.call(key, Method::DELETE, &format!("/v1/users/{id}"), None)
                    .await
            }
            3 => {
                g.call(
                    key,
                    Method::PATCH,
                    &format!("/v1/users/{id}/metadata"),
                    Some(json!({ "private_metadata": { "k": [1, 2] } })),
                )
                .await
            }
            _ => (200, json!(null)),
        };
    }
    // OAuth applications and scopes share the event store; rebuilding users
    // must skip them.
    for (name, description) in [("read:a", "Read A"), ("write:a", "Write A")] {
        let (s, _) = g
            .call(
                &t.dev.key,
                Method::POST,
                "/v1/oauth_scopes",
                Some(json!({ "name": name, "description": description })),
            )
            .await;
        assert_eq!(s, 200);
    }
    g.call(
        &t.dev.key,
        Method::PATCH,
        "/v1/oauth_scopes/read:a",
        Some(json!({ "description": "Read all of A" })),
    )
    .await;
    g.call(&t.dev.key, Method::DELETE, "/v1/oauth_scopes/write:a", None)
        .await;
    let mut app_ids = Vec::new();
    for i in 0..4 {
        let (s, a) = g
            .call(&t.dev.key, Method::POST, "/v1/oauth_applications",
                  Some(json!({ "name": format!("app {i}"), "redirect_uris": ["https://a.example/cb"] })))
            .await;
        assert_eq!(s, 200, "{a}");
        app_ids.push(a["id"].as_str().unwrap().to_owned());
    }
    g.call(
        &t.dev.key,
        Method::PATCH,
        &format!("/v1/oauth_applications/{}", app_ids[0]),
        Some(json!({ "name": "renamed" })),
    )
    .await;
    g.call(
        &t.dev.key,
        Method::POST,
        &format!("/v1/oauth_applications/{}/rotate_secret", app_ids[1]),
        None,
    )
    .await;
    g.call(
        &t.dev.key,
        Method::DELETE,
        &format!("/v1/oauth_applications/{}", app_ids[2]),
        None,
    )
    .await;
    let db = g.db.as_ref().unwrap().connect().await;
    let apps_before = table(&db, "authz_oauth_applications").await;
    let before = snapshot(&db).await;
    assert_eq!(before.0.len(), 24);
    assert!(
        before.0.iter().any(|u| u.contains("\"banned\":true")),
        "{:?}",
        before.0
    );
    db.execute_unprepared("DELETE FROM authz_user_emails; DELETE FROM authz_users")
        .await
        .unwrap();
    assert_eq!(snapshot(&db).await.0.len(), 0);
    let out = Command::new(common::BIN)
        .args([
            "rebuild",
            "users",
            "--database-url",
            &g.db.as_ref().unwrap().url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        snapshot(&db).await,
        before,
        "rebuilt projection is identical"
    );

    db.execute_unprepared("DELETE FROM authz_oauth_applications")
        .await
        .unwrap();
    let out = Command::new(common::BIN)
        .args([
            "rebuild",
            "oauth_applications",
            "--database-url",
            &g.db.as_ref().unwrap().url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apps_after = table(&db, "authz_oauth_applications").await;
    let scopes_before = rows(
        &db,
        "SELECT row_to_json(t)::text FROM (SELECT * FROM authz_oauth_scopes ORDER BY name) t",
    )
    .await
    .len();
    db.execute_unprepared("DELETE FROM authz_oauth_scopes")
        .await
        .unwrap();
    let out = Command::new(common::BIN)
        .args([
            "rebuild",
            "oauth_scopes",
            "--database-url",
            &g.db.as_ref().unwrap().url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scopes = rows(
        &db,
        "SELECT description FROM authz_oauth_scopes ORDER BY name",
    )
    .await;
    assert_eq!(scopes.len(), scopes_before);
    assert_eq!(scopes.len(), 1);
    assert_eq!(
        scopes[0].try_get_by_index::<String>(0).unwrap(),
        "Read all of A"
    );
    assert_eq!(apps_after, apps_before);
    assert_eq!(apps_after.len(), 3);
    assert!(
        apps_after
            .iter()
            .any(|a| a.contains("\"name\":\"renamed\""))
    );

    // The tenancy projection too.
    let keys_before = table(&db, "tenancy_secret_keys").await;
    assert!(keys_before.len() >= 2 && keys_before[0].contains("key_hash"));
    let out = Command::new(common::BIN)
        .args([
            "rebuild",
            "tenancy",
            "--database-url",
            &g.db.as_ref().unwrap().url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let keys_after = table(&db, "tenancy_secret_keys").await;
    assert_eq!(keys_after, keys_before);
    for projection in [
        "sessions",
        "oauth_settings",
        "oauth_grants",
        "token_families",
    ] {
        let out = Command::new(common::BIN)
            .args([
                "rebuild",
                projection,
                "--database-url",
                &g.db.as_ref().unwrap().url,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{projection}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(common::BIN)
        .args([
            "rebuild",
            "nonsense",
            "--database-url",
            &g.db.as_ref().unwrap().url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn commit_order_tailing_never_skips_a_late_commit() {
    // A transaction that takes a position first but commits last must still
    // be published: the reader waits for it instead of moving past it.
    let g = Gatehouse::production().await;
    let db = g.db.as_ref().unwrap().connect().await;
    let slow = g.db.as_ref().unwrap().connect().await;
    use sea_orm::TransactionTrait;
    let txn = slow.begin().await.unwrap();
    txn.execute_unprepared(
        "INSERT INTO authz_events (event_id, stream_id, stream_type, stream_version, event_type, payload, metadata, instance_id, recorded_at) \
         VALUES ('late-1', 'user_late', 'user', 1, 'test.late', '\\x', '{\"tenant_id\":\"\",\"instance_id\":\"ins_x\",\"actor\":\"\",\"trace_id\":\"\"}', 'ins_x', 1)",
    )
    .await
    .unwrap();
    // Meanwhile other commands commit events with later positions.
    let t = g.tenant().await;
    for i in 0..5 {
        g.create_user(&t.dev.key, &format!("early{i}@order.example"))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    txn.commit().await.unwrap();
    let topic = format!("{}gatehouse.identity", g.topic_prefix);
    let seen = consume(&g.brokers, &topic, 30, |s| {
        s.iter().any(|e| e.event_id == "late-1") && s.len() >= 6
    })
    .await;
    assert!(
        seen.iter().any(|e| e.event_id == "late-1"),
        "the late commit was skipped"
    );
    assert_eq!(seen.len(), 6);
    let _ = scalar(&db, "SELECT 1::bigint").await;
}

#[tokio::test]
async fn consumer_projection_rebuilds_by_replaying_its_topic() {
    for mode in [common::Mode::Production, common::Mode::Embedded] {
        let g = Gatehouse::start(mode).await;
        let t = g.tenant().await;
        for i in 0..15 {
            g.create_user(&t.dev.key, &format!("cp{i}@usage.example"))
                .await;
        }
        let dev = t.dev.id.clone();
        g.eventually("usage to count 15", 30, || async {
            g.usage(&dev).await == 15
        })
        .await;
        // Break the read model, as a bug or a bad manual fix would.
        let url = match mode {
            common::Mode::Production => g.db_url.clone(),
            common::Mode::Embedded => format!(
                "sqlite:{}",
                g.data_dir.as_ref().unwrap().join("gatehouse.db").display()
            ),
        };
        let db = sea_orm::Database::connect(&url).await.unwrap();
        db.execute_unprepared("UPDATE tenancy_instance_usage SET users_total = 999")
            .await
            .unwrap();
        db.close().await.ok();
        assert_eq!(g.usage(&dev).await, 999);
        let mut cmd = Command::new(common::BIN);
        cmd.args(["rebuild", "instance_usage"]);
        match mode {
            common::Mode::Production => cmd.args(["--database-url", &g.db_url]),
            common::Mode::Embedded => cmd.arg("--data-dir").arg(g.data_dir.as_ref().unwrap()),
        };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The running process notices, replays the topic, and counts each
        // user exactly once again.
        g.eventually("usage to be replayed", 60, || async {
            g.usage(&dev).await == 15
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            g.usage(&dev).await,
            15,
            "{mode:?}: no double counting after the replay"
        );
    }
}

/// A process that dies right after an idempotent create committed, before it
/// answered: the retry under the same key, after the 60 s in which a claim
/// counts as running, gets the first response again and nothing is created
/// twice. Shown for a user and for an OAuth application, whose secret exists
/// only in that response.
async fn idempotent_creates_survive_a_crash_after_commit(mode: common::Mode) {
    let mut args = common::high_limits();
    args.push("--test-clock".to_owned());
    args.push("--test-crash-after-commit".to_owned());
    let mut g = match mode {
        common::Mode::Embedded => Gatehouse::embedded_with(args).await,
        common::Mode::Production => {
            Gatehouse::production_custom(
                TestDb::create().await,
                common::kafka_brokers(),
                common::redis_url(),
                args,
            )
            .await
        }
    };
    let t = g.tenant().await;
    let key = t.dev.key.clone();
    let idem = unique("crash-");
    let user_body = json!({ "email_address": ["crash@example.com"] });
    let app_body = json!({ "name": "crash app", "redirect_uris": ["https://app.example/cb"] });
    let post = |g: &Gatehouse, path: &str, body: &serde_json::Value| {
        g.client
            .post(g.url(path))
            .bearer_auth(&key)
            .header("Idempotency-Key", format!("{idem}{path}"))
            .json(body)
            .send()
    };
    for (path, body) in [
        ("/v1/users", &user_body),
        ("/v1/oauth_applications", &app_body),
    ] {
        let answer = post(&g, path, body).await;
        assert!(answer.is_err(), "{path}: the process died before answering");
        g.kill();
        g.spawn().await;
    }
    g.kill();
    g.extra_args.retain(|a| a != "--test-crash-after-commit");
    g.spawn().await;
    g.advance_clock(61_000).await;

    let again = post(&g, "/v1/users", &user_body).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let user: serde_json::Value = again.json().await.unwrap();
    assert_eq!(
        user["email_addresses"][0]["email_address"],
        "crash@example.com"
    );
    let (_, c) = g
        .call(
            &key,
            Method::GET,
            "/v1/users/count?email_address=crash%40example.com",
            None,
        )
        .await;
    assert_eq!(c["total_count"], 1);

    let again = post(&g, "/v1/oauth_applications", &app_body).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let app: serde_json::Value = again.json().await.unwrap();
    assert!(
        app["client_secret"].as_str().is_some_and(|s| !s.is_empty()),
        "{app}"
    );
    let (_, apps) = g
        .call(&key, Method::GET, "/v1/oauth_applications", None)
        .await;
    assert_eq!(apps["total_count"], 1, "{apps}");
    assert_eq!(apps["data"][0]["id"], app["id"]);
}

#[tokio::test]
async fn idempotent_creates_survive_a_crash_embedded() {
    idempotent_creates_survive_a_crash_after_commit(common::Mode::Embedded).await;
}

#[tokio::test]
async fn idempotent_creates_survive_a_crash_production_shape() {
    idempotent_creates_survive_a_crash_after_commit(common::Mode::Production).await;
}
