//! `gatehouse bench …`: load generators whose figures go into
//! docs/benchmarks.md. They drive the real thing (HTTP against a running
//! Gatehouse, the event store on a real PostgreSQL, the outbox through a real
//! Kafka broker), never a timed test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gatehouse_platform::bus::{KafkaBus, SharedBus};
use gatehouse_platform::eventstore::{EventMeta, EventStore, NewEvent, Stream};
use gatehouse_platform::outbox::OutboxPublisher;
use gatehouse_platform::{clock, db, metrics::Metrics};
use tokio::sync::Mutex;

mod oauth;
mod webhooks;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchKind,
}

#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// HTTP load against a running Gatehouse's Backend API.
    Http(HttpArgs),
    /// Single-event commands appended by concurrent writers (PostgreSQL).
    Append(AppendArgs),
    /// Event append → outbox → Kafka → consumer latency at a fixed rate.
    Lag(LagArgs),
    /// Steady over-limit load on one instance; reports what the rate limiter
    /// admitted per window and in the worst rolling window.
    Ratelimit(RatelimitArgs),
    /// Authorize-to-code round trips for a signed-in user with a remembered
    /// grant (sets up its own application and user).
    Authorize(oauth::AuthorizeArgs),
    /// Token endpoints: client_credentials, introspection, verify; against
    /// Gatehouse or any OAuth server.
    Oauth(oauth::OauthArgs),
    /// Webhook deliveries to a receiver in this process behind N endpoints,
    /// users created at a steady rate.
    Webhooks(webhooks::WebhooksArgs),
}

#[derive(Args, Debug)]
pub struct RatelimitArgs {
    /// Base URLs of the processes to spread the load over (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub base_url: Vec<String>,
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// The instance's limit per 10 s (to report against).
    #[arg(long)]
    pub limit: u32,
    /// Requests offered per second (steady).
    #[arg(long)]
    pub rate: u64,
    #[arg(long, default_value_t = 40)]
    pub seconds: u64,
    /// With the instance id: read the server's own admission times from the
    /// instance's sliding log in Redis during the run, for an exact worst
    /// rolling window.
    #[arg(long)]
    pub redis_url: Option<String>,
    #[arg(long)]
    pub instance_id: Option<String>,
    /// The servers' `--redis-prefix` (by default their topic prefix).
    #[arg(long, default_value = "")]
    pub redis_prefix: String,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Scenario {
    /// POST /v1/users without a password.
    CreateUser,
    /// GET /v1/users/{id} of users created before the run.
    GetUser,
    /// GET /v1/jwks: the instance's keys, from each process's cache (no
    /// database round trip), so what remains is the key check, the rate
    /// limiter and HTTP.
    Jwks,
}

#[derive(Args, Debug)]
pub struct HttpArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Args, Debug)]
pub struct LagArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// Events appended per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchKind::Http(a) => http(a).await,
        BenchKind::Append(a) => append(a).await,
        BenchKind::Lag(a) => lag(a).await,
        BenchKind::Ratelimit(a) => ratelimit(a).await,
        BenchKind::Authorize(a) => oauth::authorize(a).await,
        BenchKind::Oauth(a) => oauth::oauth(a).await,
        BenchKind::Webhooks(a) => webhooks::run(a).await,
    }
}

/// Latencies in microseconds → "p50 … p99 … max …".
fn percentiles(mut us: Vec<u64>) -> String {
    if us.is_empty() {
        return "no samples".into();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)] as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.50),
        at(0.99),
        at(1.0)
    )
}

async fn http(a: HttpArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let base = a.base_url.trim_end_matches('/').to_owned();
    let auth = format!("Bearer {}", a.secret_key);
    let run_id = gatehouse_platform::ids::random_base62(8).to_lowercase();
    let mut ids = Vec::new();
    if let Scenario::GetUser = a.scenario {
        for i in 0..100 {
            let res = client
                .post(format!("{base}/v1/users"))
                .header("authorization", &auth)
                .json(&serde_json::json!({ "email_address": [format!("seed-{run_id}-{i}@bench.example")] }))
                .send()
                .await?;
            if !res.status().is_success() {
                bail!(
                    "seeding users failed: {} {}",
                    res.status(),
                    res.text().await?
                );
            }
            let v: serde_json::Value = res.json().await?;
            ids.push(v["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    let ids = Arc::new(ids);
    let scenario = a.scenario;
    let report = load(a.concurrency, a.seconds, move |w, n| {
        let (client, base, auth, ids, run_id) = (
            client.clone(),
            base.clone(),
            auth.clone(),
            ids.clone(),
            run_id.clone(),
        );
        async move {
            let res = match scenario {
                Scenario::CreateUser => {
                    client
                        .post(format!("{base}/v1/users"))
                        .header("authorization", &auth)
                        .json(&serde_json::json!({
                            "email_address": [format!("u-{run_id}-{w}-{n}@bench.example")],
                            "first_name": "Bench",
                        }))
                        .send()
                        .await
                }
                Scenario::Jwks => {
                    client
                        .get(format!("{base}/v1/jwks"))
                        .header("authorization", &auth)
                        .send()
                        .await
                }
                Scenario::GetUser => {
                    let id = &ids[(n as usize) % ids.len()];
                    client
                        .get(format!("{base}/v1/users/{id}"))
                        .header("authorization", &auth)
                        .send()
                        .await
                }
            };
            match res {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await?;
    println!("http {:?}: {report}", a.scenario);
    Ok(())
}

/// What a load run measured.
struct Report {
    latencies_us: Vec<u64>,
    errors: u64,
    seconds: f64,
    concurrency: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} failed in {:.1} s with {} connections → {:.0} req/s; {}",
            self.latencies_us.len(),
            self.errors,
            self.seconds,
            self.concurrency,
            self.latencies_us.len() as f64 / self.seconds,
            percentiles(self.latencies_us.clone())
        )
    }
}

/// Runs `concurrency` workers for `seconds`; each calls `one(worker, n)` for
/// its n-th request (n counts across workers) and counts it as ok when it
/// returns true. Latency is timed around each call.
async fn load<F, Fut>(concurrency: usize, seconds: u64, one: F) -> anyhow::Result<Report>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let started = gatehouse_platform::clock::monotonic();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (stop, counter, one) = (stop.clone(), counter.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = gatehouse_platform::clock::monotonic();
                if one(w, n).await {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = Report {
        latencies_us: Vec::new(),
        errors: 0,
        seconds: 0.0,
        concurrency,
    };
    for t in tasks {
        let (lat, e) = t.await?;
        report.latencies_us.extend(lat);
        report.errors += e;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

const BENCH_TABLE: &str = "bench_events";
const BENCH_STORE: EventStore = EventStore::new("bench", BENCH_TABLE);

/// A scratch events table shaped exactly like a service's (PostgreSQL).
async fn scratch_store(database_url: &str) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let conn = crate::server::connect_db(database_url).await?;
    if !db::is_postgres(&conn) {
        bail!("this benchmark needs PostgreSQL");
    }
    db::exec(
        &conn,
        &format!("DROP TABLE IF EXISTS {BENCH_TABLE}"),
        vec![],
    )
    .await?;
    db::exec(
        &conn,
        &format!("CREATE TABLE {BENCH_TABLE} (LIKE authz_events INCLUDING ALL)"),
        vec![],
    )
    .await
    .context("creating the scratch table (run `gatehouse migrate` on this database first)")?;
    Ok(conn)
}

fn bench_event(n: u64) -> Vec<NewEvent> {
    vec![NewEvent {
        event_type: "bench.appended",
        payload: format!("event {n}").into_bytes(),
    }]
}

fn bench_meta() -> EventMeta {
    EventMeta {
        tenant_id: "tnt_bench".into(),
        instance_id: "ins_bench".into(),
        actor: "bench".into(),
        trace_id: String::new(),
    }
}

/// One command: a transaction appending one event to a new stream.
async fn append_one(
    conn: &sea_orm::DatabaseConnection,
    n: u64,
    now_ms: i64,
) -> Result<(), sea_orm::DbErr> {
    let txn = db::begin_write(conn).await?;
    let stream = format!("bench_{n}");
    BENCH_STORE
        .append(
            &txn,
            Stream {
                id: &stream,
                kind: "bench",
                version: 0,
            },
            &bench_event(n),
            &bench_meta(),
            now_ms,
        )
        .await
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    txn.commit().await
}

async fn append(a: AppendArgs) -> anyhow::Result<()> {
    let conn = scratch_store(&a.database_url).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let clock = clock::system();
    let mut tasks = Vec::new();
    let started = gatehouse_platform::clock::monotonic();
    for _ in 0..a.writers {
        let (conn, stop, counter, clock) =
            (conn.clone(), stop.clone(), counter.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = gatehouse_platform::clock::monotonic();
                let ok = append_one(&conn, n, clock.now_ms()).await;
                if ok.is_ok() {
                    lat.push(t.elapsed().as_micros() as u64);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    db::exec(
        &conn,
        &format!("DROP TABLE IF EXISTS {BENCH_TABLE}"),
        vec![],
    )
    .await?;
    println!(
        "append: {} single-event commands in {:.1} s with {} writers → {:.0} commands/s; {}",
        all.len(),
        secs,
        a.writers,
        all.len() as f64 / secs,
        percentiles(all)
    );
    Ok(())
}

async fn lag(a: LagArgs) -> anyhow::Result<()> {
    use gatehouse_proto::v1::Envelope;
    use prost::Message;

    let conn = scratch_store(&a.database_url).await?;
    let prefix = format!("bench-{}-", gatehouse_platform::ids::random_base62(6));
    let kafka = KafkaBus::new(&a.kafka_brokers, &prefix)?;
    kafka.ensure_topics(3).await?;
    let bus: SharedBus = Arc::new(kafka);
    let clock = clock::system();
    let appended = Arc::new(tokio::sync::Notify::new());
    let publisher = OutboxPublisher {
        store: BENCH_STORE,
        topic_for: |_| gatehouse_platform::bus::topics::IDENTITY,
        db: conn.clone(),
        bus: bus.clone(),
        clock: clock.clone(),
        metrics: Metrics::new(),
        appended: appended.clone(),
    };
    db::exec(
        &conn,
        "DELETE FROM platform_checkpoints WHERE name = $1",
        vec![format!("outbox:{BENCH_TABLE}").into()],
    )
    .await?;
    let publisher_task = tokio::spawn(publisher.run());

    let expected = a.rate * a.seconds;
    let lat = Arc::new(Mutex::new(Vec::with_capacity(expected as usize)));
    let consumer = {
        let (bus, lat, clock) = (bus.clone(), lat.clone(), clock.clone());
        tokio::spawn(async move {
            let mut sub = bus
                .subscribe(
                    &format!("{prefix}lag"),
                    &[gatehouse_platform::bus::topics::IDENTITY],
                )
                .await?;
            let mut seen = 0u64;
            let deadline =
                gatehouse_platform::clock::monotonic() + Duration::from_secs(a.seconds + 30);
            while seen < expected && gatehouse_platform::clock::monotonic() < deadline {
                let batch = sub.next_batch(500, Duration::from_millis(200)).await?;
                let now = clock.now_ms();
                let mut l = lat.lock().await;
                for d in &batch {
                    if let Ok(env) = Envelope::decode(d.payload.as_slice()) {
                        l.push(((now - env.occurred_at_ms).max(0) as u64) * 1000);
                        seen += 1;
                    }
                }
                drop(l);
                sub.commit(&batch).await?;
            }
            anyhow::Ok(seen)
        })
    };
    // Let the consumer join its group before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..expected {
        ticker.tick().await;
        let (conn, clock, appended) = (conn.clone(), clock.clone(), appended.clone());
        writers.spawn(async move {
            append_one(&conn, n, clock.now_ms()).await?;
            appended.notify_waiters();
            anyhow::Ok(())
        });
        while writers.len() > 64 {
            writers.join_next().await;
        }
    }
    while writers.join_next().await.is_some() {}
    let seen = consumer.await??;
    publisher_task.abort();
    db::exec(
        &conn,
        &format!("DROP TABLE IF EXISTS {BENCH_TABLE}"),
        vec![],
    )
    .await?;
    let samples = std::mem::take(&mut *lat.lock().await);
    println!(
        "lag: {seen}/{expected} events at {} events/s through outbox → Kafka → consumer; {}",
        a.rate,
        percentiles(samples)
    );
    Ok(())
}

async fn ratelimit(a: RatelimitArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let auth = format!("Bearer {}", a.secret_key);
    let started = gatehouse_platform::clock::monotonic();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // The server's admission log, scraped twice a second (entries live 10 s).
    let scraper = match (&a.redis_url, &a.instance_id) {
        (Some(url), Some(instance)) => {
            let client = redis::Client::open(url.as_str())?;
            let key = format!("{}gatehouse:rl:{instance}", a.redis_prefix);
            let mut conn = client.get_multiplexed_async_connection().await?;
            let stop_at =
                gatehouse_platform::clock::monotonic() + Duration::from_secs(a.seconds + 2);
            Some(tokio::spawn(async move {
                let mut seen: std::collections::HashMap<String, i64> = Default::default();
                while gatehouse_platform::clock::monotonic() < stop_at {
                    let entries: Vec<(String, i64)> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    seen.extend(entries);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let mut times: Vec<i64> = seen.into_values().collect();
                times.sort_unstable();
                let mut worst = 0usize;
                let mut j = 0;
                for i in 0..times.len() {
                    while j < times.len() && times[j] < times[i] + 10_000 {
                        j += 1;
                    }
                    worst = worst.max(j - i);
                }
                (times.len(), worst)
            }))
        }
        _ => None,
    };
    let mut set = tokio::task::JoinSet::new();
    let total = a.rate * a.seconds;
    for n in 0..total {
        ticker.tick().await;
        let base = a.base_url[(n as usize) % a.base_url.len()]
            .trim_end_matches('/')
            .to_owned();
        let req = client
            .get(format!("{base}/v1/users?limit=1"))
            .header("authorization", &auth);
        set.spawn(async move {
            let sent = started.elapsed();
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (sent, started.elapsed(), status)
        });
    }
    let mut admitted_at = Vec::new();
    let (mut refused, mut failed) = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        let (sent, done, status) = r?;
        match status {
            200 => admitted_at.push((sent, done)),
            429 => refused += 1,
            _ => failed += 1,
        }
    }
    admitted_at.sort();
    // Worst rolling 10 s window, by send time: the server decided each
    // admission between send and receipt, so a count can be off by the few
    // requests in flight at a window's edges (latency here is ~1 ms).
    let window = Duration::from_secs(10);
    let mut worst = 0usize;
    let mut j = 0;
    for i in 0..admitted_at.len() {
        while j < admitted_at.len() && admitted_at[j].0 < admitted_at[i].0 + window {
            j += 1;
        }
        worst = worst.max(j - i);
    }
    // Admitted per consecutive 10 s window after the first (steady state).
    let windows = a.seconds / 10;
    let mut per_window = Vec::new();
    for w in 1..windows {
        let lo = window * w as u32;
        let hi = lo + window;
        per_window.push(
            admitted_at
                .iter()
                .filter(|(s, _)| *s >= lo && *s < hi)
                .count(),
        );
    }
    let min = per_window.iter().copied().min().unwrap_or(0);
    if let Some(scraper) = scraper {
        let (n, worst_server) = scraper.await?;
        println!(
            "ratelimit: server log: {n} admissions recorded; worst rolling 10 s window by the server's clock: {worst_server}"
        );
    }
    println!(
        "ratelimit: offered {total} at {}/s over {} process(es); admitted {}, refused {refused}, failed {failed}; \
         worst rolling 10 s window {worst} (limit {}); steady windows {per_window:?} → min {:.1}% of the limit",
        a.rate,
        a.base_url.len(),
        admitted_at.len(),
        a.limit,
        100.0 * min as f64 / a.limit as f64
    );
    Ok(())
}
