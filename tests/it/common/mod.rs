//! The one test harness: start a real `gatehouse` (embedded, or `serve authz`
//! on PostgreSQL + Kafka + Redis), make tenants, get keys, call the APIs.
//! Services come from the test command (scripts/test.sh); nothing is mocked.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod browser;

/// Two tests that run `flow(mode)`: one against the embedded default, one
/// against the production shape.
#[macro_export]
macro_rules! in_both_shapes {
    ($flow:ident: $embedded:ident, $production:ident) => {
        #[tokio::test]
        async fn $embedded() {
            $flow(common::Mode::Embedded).await;
        }

        #[tokio::test]
        async fn $production() {
            $flow(common::Mode::Production).await;
        }
    };
}

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

pub fn pg_admin_url() -> String {
    std::env::var("GATEHOUSE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("GATEHOUSE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("GATEHOUSE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Idle connections are dropped before the server's 5 s keep-alive closes
/// them, so a reused connection is never one the server is closing.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A fresh PostgreSQL database for one test, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = unique("gh_test_");
        let admin = sea_orm::Database::connect(format!("{}/postgres", pg_admin_url()))
            .await
            .expect("PostgreSQL must be running on 127.0.0.1:5432 (scripts/test.sh starts it)");
        use sea_orm::ConnectionTrait;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        admin.close().await.ok();
        let url = format!("{}/{name}", pg_admin_url());
        Self { name, url }
    }

    pub async fn connect(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `node <script>` in `tests/e2e/<package>` (its `npm ci` done by the
/// test command) and checks it ends by printing `{"ok":true}`.
pub fn run_node(package: &str, script: &str, env: &[(&str, &str)]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e")
        .join(package);
    assert!(
        dir.join("node_modules").exists(),
        "run `npm ci` in {} (scripts/test.sh does)",
        dir.display()
    );
    let out = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("{\"ok\":true}"),
        "node {script} in {package} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The code-sealing secret every production-shaped test deployment shares.
pub const CODE_SECRET: &str = "test-oauth-code-secret-0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Production,
}

/// A running gatehouse process.
pub struct Gatehouse {
    pub base: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub mode: Mode,
    pub db: Option<TestDb>,
    pub topic_prefix: String,
    pub brokers: String,
    pub data_dir: Option<PathBuf>,
    pub db_url: String,
    pub redis_url: String,
    /// Extra flags; by default limits high enough that only the rate-limit
    /// tests meet them.
    pub extra_args: Vec<String>,
    /// `--public-url` when it is not this process's own address (replicas
    /// of one deployment share it, and so share issuers).
    pub public_url: Option<String>,
    /// Whether development instances may deliver webhooks to loopback
    /// receivers (the operator's switch; on for the tests, whose receivers
    /// all run on this machine).
    pub webhook_loopback: bool,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

fn log_path(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gatehouse-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.log", unique(tag)))
}

impl Gatehouse {
    pub async fn start(mode: Mode) -> Self {
        match mode {
            Mode::Embedded => Self::embedded().await,
            Mode::Production => Self::production().await,
        }
    }

    /// A process in `mode` on a clock the admin API moves (`--test-clock`).
    pub async fn with_test_clock(mode: Mode) -> Self {
        let mut args = high_limits();
        args.push("--test-clock".to_owned());
        match mode {
            Mode::Embedded => Self::embedded_with(args).await,
            Mode::Production => {
                Self::production_custom(TestDb::create().await, kafka_brokers(), redis_url(), args)
                    .await
            }
        }
    }

    pub async fn embedded() -> Self {
        Self::embedded_with(high_limits()).await
    }

    pub async fn embedded_with(extra_args: Vec<String>) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("embedded-"));
        let port = free_port();
        let mut g = Self {
            base: format!("http://127.0.0.1:{port}"),
            admin_token: unique("admin_"),
            client: http_client(),
            mode: Mode::Embedded,
            db: None,
            topic_prefix: String::new(),
            brokers: String::new(),
            data_dir: Some(dir),
            db_url: String::new(),
            redis_url: String::new(),
            extra_args,
            public_url: None,
            webhook_loopback: true,
            port,
            child: None,
            log: log_path("embedded-"),
        };
        g.spawn().await;
        g
    }

    pub async fn production() -> Self {
        Self::production_with(TestDb::create().await, kafka_brokers()).await
    }

    pub async fn production_with(db: TestDb, brokers: String) -> Self {
        Self::production_custom(db, brokers, redis_url(), high_limits()).await
    }

    pub async fn production_custom(
        db: TestDb,
        brokers: String,
        redis: String,
        extra_args: Vec<String>,
    ) -> Self {
        let status = Command::new(BIN)
            .args(["migrate", "--database-url", &db.url])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "gatehouse migrate failed");
        let port = free_port();
        let mut g = Self {
            base: format!("http://127.0.0.1:{port}"),
            admin_token: unique("admin_"),
            client: http_client(),
            mode: Mode::Production,
            db_url: db.url.clone(),
            db: Some(db),
            topic_prefix: unique("t") + ".",
            brokers,
            data_dir: None,
            redis_url: redis,
            extra_args,
            public_url: None,
            webhook_loopback: true,
            port,
            child: None,
            log: log_path("serve-"),
        };
        g.spawn().await;
        g
    }

    /// (Re)starts the process with the same storage.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        match self.mode {
            Mode::Embedded => {
                cmd.arg("--data-dir").arg(self.data_dir.as_ref().unwrap());
            }
            Mode::Production => {
                cmd.args([
                    "serve",
                    "authz",
                    "tokens",
                    "webhooks",
                    "--database-url",
                    &self.db_url,
                ])
                .args([
                    "--kafka-brokers",
                    &self.brokers,
                    "--redis-url",
                    &self.redis_url,
                ])
                .args(["--topic-prefix", &self.topic_prefix])
                .args(["--oauth-code-secret", CODE_SECRET]);
            }
        }
        cmd.args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-token", &self.admin_token])
            .args(&self.extra_args)
            .args(self.webhook_loopback.then_some(match self.mode {
                Mode::Embedded => "--webhooks-allow-loopback",
                Mode::Production => "--test-webhooks-allow-loopback",
            }))
            .args(
                self.public_url
                    .iter()
                    .flat_map(|u| ["--public-url".to_owned(), u.clone()]),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = self
                .client
                .get(format!("{}/healthz", self.base))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("gatehouse exited with {status}; log: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not start; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Another process of the same deployment: same database, broker, Redis,
    /// topic prefix and admin token.
    pub async fn sibling(&self) -> Self {
        assert_eq!(self.mode, Mode::Production);
        let port = free_port();
        let mut g = Self {
            base: format!("http://127.0.0.1:{port}"),
            admin_token: self.admin_token.clone(),
            client: http_client(),
            mode: Mode::Production,
            db: None,
            topic_prefix: self.topic_prefix.clone(),
            brokers: self.brokers.clone(),
            data_dir: None,
            db_url: self.db_url.clone(),
            redis_url: self.redis_url.clone(),
            extra_args: self.extra_args.clone(),
            public_url: Some(self.public_url.clone().unwrap_or_else(|| self.base.clone())),
            webhook_loopback: self.webhook_loopback,
            port,
            child: None,
            log: log_path("serve-sibling-"),
        };
        g.spawn().await;
        g
    }

    /// SIGKILL: no graceful shutdown, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A new tenant with both instances.
    pub async fn tenant(&self) -> Tenant {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/admin/v1/tenants",
                Some(json!({ "name": unique("tenant ") })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let inst = |env: &str| {
            let i = body["instances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["environment"] == env)
                .unwrap();
            Instance {
                id: i["id"].as_str().unwrap().to_owned(),
                key: i["secret_key"].as_str().unwrap().to_owned(),
                key_id: i["secret_key_id"].as_str().unwrap().to_owned(),
            }
        };
        Tenant {
            id: body["id"].as_str().unwrap().to_owned(),
            dev: inst("development"),
            prod: inst("production"),
        }
    }

    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_user(&self, key: &str, email: &str) -> Value {
        let (s, b) = self
            .call(
                key,
                reqwest::Method::POST,
                "/v1/users",
                Some(json!({ "email_address": [email] })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Creates an OAuth application in the key's instance.
    pub async fn create_app(&self, key: &str, body: Value) -> Value {
        let (s, app) = self
            .call(
                key,
                reqwest::Method::POST,
                "/v1/oauth_applications",
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{app}");
        app
    }

    /// Turns dynamic client registration on in the key's instance.
    pub async fn enable_registration(&self, key: &str) {
        let (s, b) = self
            .call(
                key,
                reqwest::Method::PATCH,
                "/v1/instance/oauth_application_settings",
                Some(json!({ "dynamic_oauth_client_registration": true })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Defines a custom OAuth scope in the key's instance.
    pub async fn define_scope(&self, key: &str, name: &str, description: &str) {
        let (s, b) = self
            .call(
                key,
                reqwest::Method::POST,
                "/v1/oauth_scopes",
                Some(json!({ "name": name, "description": description })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Moves a `--test-clock` process's clock forward (0: just reads it);
    /// returns the clock's time in ms.
    pub async fn advance_clock(&self, ms: i64) -> i64 {
        let (s, b) = self
            .admin(
                reqwest::Method::POST,
                "/admin/v1/test/clock/advance",
                Some(json!({ "ms": ms })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["now"].as_i64().unwrap()
    }

    /// Waits until `f` holds, polling.
    pub async fn eventually<F, Fut>(&self, what: &str, secs: u64, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Users the instance-usage consumer has counted.
    pub async fn usage(&self, instance_id: &str) -> i64 {
        let (_, b) = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/instances/{instance_id}"),
                None,
            )
            .await;
        b["usage"]["users"].as_i64().unwrap_or(-1)
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = &self.data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Limits no functional test reaches; the rate-limit tests pass their own.
pub fn high_limits() -> Vec<String> {
    [
        "--rate-limit-production",
        "1000000",
        "--rate-limit-development",
        "1000000",
    ]
    .map(String::from)
    .to_vec()
}

pub struct Tenant {
    pub id: String,
    pub dev: Instance,
    pub prod: Instance,
}

pub struct Instance {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

/// Asserts the one error shape.
pub fn assert_error_shape(status: u16, body: &Value) {
    assert!(
        (400..500).contains(&status),
        "expected 4xx, got {status}: {body}"
    );
    let e = &body["errors"][0];
    for k in ["code", "message", "long_message", "meta"] {
        assert!(!e[k].is_null(), "error item lacks {k}: {body}");
    }
    assert!(
        body["trace_id"].as_str().is_some_and(|t| !t.is_empty()),
        "no trace id: {body}"
    );
}

/// A Redis server of a test's own, which the test may stop and restart
/// (on the same port) without touching the shared one.
pub struct RedisServer(Child);

impl RedisServer {
    pub async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self(child)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
