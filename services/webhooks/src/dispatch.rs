//! Delivery: each webhooks process claims due deliveries from the durable
//! queue (`webhooks_deliveries`) in batches, sends each as a Standard
//! Webhooks request and records the attempts in batches, scheduling the
//! next one. A claim is a lease (`leased_until`, with `next_attempt_at`
//! moved to the same time): a process that dies
//! mid-delivery leaves the row due again after [`LEASE_MS`], so nothing is
//! lost (at-least-once; receivers dedupe on `webhook-id`, which is the
//! message id on every attempt). Claims are serialized across processes (an
//! advisory lock on PostgreSQL, the write lock on SQLite) and count the
//! leases of every process, which is what makes each endpoint's
//! `max_concurrency` ([`endpoints::max_concurrency`]) a limit of the whole
//! deployment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_platform::Platform;
use gatehouse_platform::client_metadata::{PublicResolver, refused_as_private};
use gatehouse_platform::db::{self, col, placeholders};
use gatehouse_platform::tenancy::{self, Environment, Instance};
use gatehouse_proto::v1::WebhookEndpointState;
use hmac::{Hmac, Mac};
use prost::Message;
use sea_orm::{DbErr, Value};
use sha2::Sha256;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{endpoints, urls};

/// Waits after a failed attempt, in order: 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h; after the last one the delivery has failed.
pub const RETRY_SCHEDULE_MS: [i64; 7] = [
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];
pub const LEASE_MS: i64 = 60_000;
/// An endpoint whose every attempt has failed for this long is disabled.
pub const DISABLE_AFTER_MS: i64 = 5 * 24 * 3600 * 1000;
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries one process has in flight (sent, or waiting to be recorded).
const CAPACITY: usize = 256;
/// Deliveries one claim takes at most.
const CLAIM_MAX: usize = 128;
/// Due deliveries one claim reads at most, oldest first, in index order;
/// only when this many due rows all belong to endpoints at their limit does
/// a younger delivery to another endpoint wait for the next claim.
const CLAIM_SCAN: i64 = 20_000;
/// Of those, the deliveries to endpoints with room that a claim ranks.
const CLAIM_WINDOW: i64 = 512;
/// Attempts recorded in one transaction at most.
const RECORD_BATCH: usize = 256;
/// A batch of results the database refused is tried this often; after that
/// its leases run out and the deliveries are sent again.
const RECORD_TRIES: usize = 3;
/// Any key, the same in every process: claims take this PostgreSQL advisory
/// lock so two processes never count an endpoint's in-flight deliveries at
/// once.
const CLAIM_LOCK: i64 = 0x6761_7465_7768_6b31;
const EXCERPT_BYTES: usize = 1024;

/// The Standard Webhooks signature header value: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">` for each secret, space-separated.
pub fn signature(secrets: &[String], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|s| {
            let key = STANDARD.decode(s.strip_prefix("whsec_")?).ok()?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            Some(format!(
                "v1,{}",
                STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// When to try again after `attempts` failed attempts, with ±10 % jitter;
/// `None` when the schedule is spent.
pub fn next_attempt(now: i64, attempts: usize) -> Option<i64> {
    let wait = *RETRY_SCHEDULE_MS.get(attempts.checked_sub(1)?)?;
    let jitter = (rand::random::<u16>() % 201) as i64 - 100; // per mille, -100..=100
    Some(now + wait + wait * jitter / 1000)
}

pub struct Dispatcher {
    platform: Platform,
    /// Production endpoints: public addresses only, checked at connect time.
    public: reqwest::Client,
    /// Loopback endpoints of development instances, where the operator
    /// switched them on: `localhost` connects to 127.0.0.1 or ::1 and no
    /// name is ever looked up.
    loopback: reqwest::Client,
    allow_loopback: bool,
    /// One permit per delivery this process may have in flight; a permit
    /// goes back when the attempt is recorded and the lease released.
    slots: Arc<Semaphore>,
    /// Signalled when recorded attempts released their leases.
    released: Notify,
}

fn client_with<R: reqwest::dns::Resolve + 'static>(resolver: Arc<R>) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("Gatehouse-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(resolver)
        .build()
        .unwrap_or_default()
}

/// Answers `localhost` with the loopback addresses and refuses every other
/// name, so a loopback endpoint reaches this machine's loopback interface
/// and nothing a resolver could be made to say.
struct LoopbackResolver;

impl reqwest::dns::Resolve for LoopbackResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found = name.as_str() == "localhost";
        Box::pin(async move {
            if !found {
                return Err("only localhost is delivered to without a public address".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(
                [
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
                ]
                .into_iter(),
            );
            Ok(addrs)
        })
    }
}

struct Outcome {
    status: Option<u16>,
    excerpt: String,
    error: Option<String>,
    duration_ms: i64,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Message bodies and instance ids by message id.
type Messages = HashMap<String, (Arc<str>, String)>;

/// What a claim picks: the oldest due deliveries of enabled endpoints,
/// ranked per endpoint so that no endpoint goes over its `max_concurrency`
/// leases counting those it already has. `$1` now, `$2` how many, `$3`
/// [`endpoints::DEFAULT_MAX_CONCURRENCY`] (for a delivery whose endpoint is
/// gone, which is cancelled unsent), `$4` [`CLAIM_WINDOW`], `$6`
/// [`CLAIM_SCAN`]. The same text on PostgreSQL and SQLite.
const CLAIM_PICK: &str = "WITH busy AS ( \
       SELECT endpoint_id, COUNT(*) AS k FROM webhooks_deliveries \
       WHERE leased_until IS NOT NULL AND leased_until > $1 AND status = 'pending' \
       GROUP BY endpoint_id \
     ), due AS ( \
       SELECT d.message_id, d.endpoint_id, d.next_attempt_at, COALESCE(b.k, 0) AS k, \
         COALESCE(e.max_concurrency, $3) AS lim \
       FROM (SELECT message_id, endpoint_id, next_attempt_at FROM webhooks_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $6) d \
       LEFT JOIN busy b ON b.endpoint_id = d.endpoint_id \
       LEFT JOIN webhooks_endpoints e ON e.id = d.endpoint_id \
       WHERE COALESCE(b.k, 0) < COALESCE(e.max_concurrency, $3) \
         AND (e.id IS NULL OR NOT e.disabled) \
       ORDER BY d.next_attempt_at LIMIT $4 \
     ), ranked AS ( \
       SELECT message_id, endpoint_id, next_attempt_at, k, lim, ROW_NUMBER() OVER \
         (PARTITION BY endpoint_id ORDER BY next_attempt_at, message_id) AS n \
       FROM due \
     ), pick AS ( \
       SELECT message_id, endpoint_id FROM ranked WHERE n + k <= lim \
       ORDER BY next_attempt_at LIMIT $2 \
     )";

/// Leases what [`CLAIM_PICK`] picked until `$5`.
const CLAIM_UPDATE: &str = "UPDATE webhooks_deliveries SET leased_until = $5, next_attempt_at = $5 \
     WHERE (message_id, endpoint_id) IN (SELECT message_id, endpoint_id FROM pick) \
     RETURNING message_id, endpoint_id, attempts";

/// A claimed delivery.
struct Job {
    message_id: String,
    endpoint_id: String,
    /// Attempts made before this one.
    attempts: i32,
}

/// Where and how a batch's deliveries to one endpoint go.
struct Target {
    url: String,
    secrets: Vec<String>,
    instance: Instance,
}

/// An attempt made, waiting to be recorded.
struct Done {
    job: Job,
    target: Arc<Target>,
    outcome: Outcome,
    _slot: OwnedSemaphorePermit,
}

impl Dispatcher {
    pub fn new(platform: Platform) -> Self {
        Self {
            allow_loopback: platform.settings().webhooks_allow_loopback,
            platform,
            public: client_with(PublicResolver::new(false)),
            loopback: client_with(Arc::new(LoopbackResolver)),
            slots: Arc::new(Semaphore::new(CAPACITY)),
            released: Notify::new(),
        }
    }

    /// Claims and sends, and records what was sent, until the process ends.
    pub async fn run(self) {
        let this = Arc::new(self);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::join!(this.clone().claim_loop(tx), this.record_loop(rx));
    }

    async fn claim_loop(self: Arc<Self>, tx: mpsc::UnboundedSender<Done>) {
        let mut gauges_at: Option<Instant> = None;
        loop {
            if gauges_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                gauges_at = Some(gatehouse_platform::clock::monotonic());
                if let Err(e) = self.queue_gauges().await {
                    tracing::debug!(error = %e, "webhook queue gauges not updated");
                }
            }
            let free = self.slots.available_permits().min(CLAIM_MAX);
            if free == 0 {
                self.released.notified().await;
                continue;
            }
            match self.claim(free).await {
                Ok(claimed) => {
                    let short = claimed.len() < free;
                    for (job, body, target) in claimed {
                        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                            break; // never: this loop is the only taker
                        };
                        let (this, tx) = (self.clone(), tx.clone());
                        tokio::spawn(async move {
                            let outcome = this.send(&target, &job.message_id, &body).await;
                            let _ = tx.send(Done {
                                job,
                                target,
                                outcome,
                                _slot: slot,
                            });
                        });
                    }
                    if short {
                        // Nothing more is due, or every endpoint with work
                        // is at its limit: look again when a lease is
                        // released, or soon.
                        let _ = tokio::time::timeout(
                            Duration::from_millis(100),
                            self.released.notified(),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn record_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Done>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < RECORD_BATCH {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            let mut tries = 0;
            loop {
                tries += 1;
                match self.record(&batch).await {
                    Ok(()) => break,
                    Err(e) if tries < RECORD_TRIES => {
                        tracing::warn!(error = %e, "recording webhook attempts failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, attempts = batch.len(), "webhook attempts not recorded; their deliveries are sent again when the lease ends");
                        break;
                    }
                }
            }
            let failing: HashMap<String, Instance> = batch
                .iter()
                .filter(|d| !d.outcome.ok())
                .map(|d| (d.job.endpoint_id.clone(), d.target.instance.clone()))
                .collect();
            drop(batch); // gives the slots back
            self.released.notify_one();
            for (endpoint_id, instance) in failing {
                let disable = match self.failing_for_days(&endpoint_id).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, endpoint_id, "webhook failure history unreadable");
                        false
                    }
                };
                if disable && let Err(e) = self.disable(instance, &endpoint_id).await {
                    tracing::warn!(error = %e, endpoint_id, "webhook endpoint not disabled");
                }
            }
        }
    }

    /// Queue depth and the age of the oldest pending delivery.
    async fn queue_gauges(&self) -> Result<(), DbErr> {
        let row = db::query_one(
            self.platform.db(),
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM webhooks_deliveries \
             WHERE status = 'pending'",
            vec![],
        )
        .await?;
        let (n, oldest): (i64, Option<i64>) = match row {
            Some(r) => (col(&r, "n")?, col(&r, "oldest")?),
            None => (0, None),
        };
        let m = self.platform.metrics();
        m.webhook_queue_depth.set(n as f64);
        let age = oldest.map_or(0, |t| (self.platform.now_ms() - t).max(0));
        m.webhook_oldest_pending_seconds.set(age as f64 / 1000.0);
        Ok(())
    }

    /// Leases up to `want` due deliveries, oldest first, leaving out
    /// disabled endpoints and keeping every endpoint within its
    /// `max_concurrency` leases; returns them ready to send, each with its
    /// message body and target.
    async fn claim(&self, want: usize) -> Result<Vec<(Job, Arc<str>, Arc<Target>)>, DbErr> {
        let now = self.platform.now_ms();
        let txn = db::begin_write(self.platform.db()).await?;
        let postgres = db::is_postgres(&txn);
        if postgres {
            // A lost claim only means the delivery is claimed again: no need
            // to wait for the disk.
            db::exec(
                &txn,
                "SELECT pg_advisory_xact_lock($1), \
                 set_config('synchronous_commit', 'off', true)",
                vec![CLAIM_LOCK.into()],
            )
            .await?;
        }
        let sql = if postgres {
            // The messages come back with the claim.
            format!(
                "{CLAIM_PICK}, claimed AS ({CLAIM_UPDATE}) \
                 SELECT c.message_id, c.endpoint_id, c.attempts, m.body, m.instance_id \
                 FROM claimed c LEFT JOIN webhooks_messages m ON m.id = c.message_id"
            )
        } else {
            format!("{CLAIM_PICK} {CLAIM_UPDATE}")
        };
        let rows = db::query_all(
            &txn,
            &sql,
            vec![
                now.into(),
                (want as i64).into(),
                i64::from(endpoints::DEFAULT_MAX_CONCURRENCY).into(),
                CLAIM_WINDOW.into(),
                (now + LEASE_MS).into(),
                CLAIM_SCAN.into(),
            ],
        )
        .await?;
        txn.commit().await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut messages = Messages::new();
        for r in rows {
            let job = Job {
                message_id: col(&r, "message_id")?,
                endpoint_id: col(&r, "endpoint_id")?,
                attempts: col(&r, "attempts")?,
            };
            if postgres
                && !messages.contains_key(&job.message_id)
                && let (Some(body), Some(instance_id)) = (
                    col::<Option<String>>(&r, "body")?,
                    col::<Option<String>>(&r, "instance_id")?,
                )
            {
                messages.insert(job.message_id.clone(), (body.into(), instance_id));
            }
            jobs.push(job);
        }
        self.prepare(jobs, messages, postgres).await
    }

    /// Reads the endpoints of claimed deliveries, and their messages unless
    /// the claim brought them: one query each for the batch. A delivery
    /// whose message, endpoint or instance is gone is cancelled; one whose
    /// endpoint was disabled since the claim goes back to the queue.
    async fn prepare(
        &self,
        jobs: Vec<Job>,
        mut messages: Messages,
        messages_read: bool,
    ) -> Result<Vec<(Job, Arc<str>, Arc<Target>)>, DbErr> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let db = self.platform.db();
        let message_ids: Vec<&str> = unique(jobs.iter().map(|j| j.message_id.as_str()));
        let endpoint_ids: Vec<&str> = unique(jobs.iter().map(|j| j.endpoint_id.as_str()));
        if !messages_read {
            let rows = db::query_all(
                db,
                &format!(
                    "SELECT id, body, instance_id FROM webhooks_messages WHERE id IN ({})",
                    placeholders(1, message_ids.len())
                ),
                message_ids.iter().map(|&id| id.into()).collect(),
            )
            .await?;
            for r in rows {
                let body: String = col(&r, "body")?;
                messages.insert(col(&r, "id")?, (body.into(), col(&r, "instance_id")?));
            }
        }
        let now = self.platform.now_ms();
        // None: the endpoint is disabled.
        let mut targets: HashMap<String, Option<Arc<Target>>> = HashMap::new();
        for r in db::query_all(
            db,
            &format!(
                "SELECT id, instance_id, state FROM webhooks_endpoints WHERE id IN ({})",
                placeholders(1, endpoint_ids.len())
            ),
            endpoint_ids.iter().map(|&id| id.into()).collect(),
        )
        .await?
        {
            let id: String = col(&r, "id")?;
            let instance_id: String = col(&r, "instance_id")?;
            let Some(state) =
                WebhookEndpointState::decode(col::<Vec<u8>>(&r, "state")?.as_slice()).ok()
            else {
                continue;
            };
            let Some(instance) =
                tenancy::active_instance_cached(&self.platform, &instance_id).await?
            else {
                continue;
            };
            let target = (!state.disabled).then(|| {
                Arc::new(Target {
                    secrets: endpoints::signing_secrets(&self.platform, &state, now)
                        .into_iter()
                        .flatten()
                        .collect(),
                    url: state.url,
                    instance,
                })
            });
            targets.insert(id, target);
        }
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            let message = messages.get(&job.message_id);
            match (message, targets.get(&job.endpoint_id)) {
                (Some((body, instance_id)), Some(Some(t)))
                    if t.instance.id.as_str() == instance_id =>
                {
                    ready.push((job, body.clone(), t.clone()));
                }
                (Some(_), Some(None)) => self.release(&job).await?,
                _ => self.cancel(&job).await?,
            }
        }
        Ok(ready)
    }

    async fn send(&self, target: &Target, message_id: &str, body: &str) -> Outcome {
        let started = gatehouse_platform::clock::monotonic();
        let timestamp = self.platform.now_ms() / 1000;
        let sig = signature(&target.secrets, message_id, timestamp, body);
        let mut out = Outcome {
            status: None,
            excerpt: String::new(),
            error: None,
            duration_ms: 0,
        };
        let loopback = url::Url::parse(&target.url).is_ok_and(|u| urls::is_loopback_url(&u));
        let client = match (loopback, target.instance.environment) {
            (false, _) => &self.public,
            (true, Environment::Development) if self.allow_loopback => &self.loopback,
            // Saved while the switch was on, or before it existed.
            (true, _) => {
                out.error = Some("loopback endpoints are switched off on this deployment".into());
                return out;
            }
        };
        let res = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", &sig)
            .header("svix-id", message_id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", &sig)
            .body(body.to_owned())
            .send()
            .await;
        match res {
            Ok(mut r) => {
                out.status = Some(r.status().as_u16());
                let mut bytes = Vec::new();
                while bytes.len() < EXCERPT_BYTES {
                    match r.chunk().await {
                        Ok(Some(c)) => bytes.extend_from_slice(&c),
                        _ => break,
                    }
                }
                out.excerpt = excerpt(&bytes);
            }
            Err(e) => {
                out.error = Some(if refused_as_private(&e) {
                    "the endpoint resolves to a non-public address".to_owned()
                } else if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    "request failed".to_owned()
                });
            }
        }
        out.duration_ms = started.elapsed().as_millis() as i64;
        out
    }

    /// Records a batch of attempts in one transaction: each delivery's new
    /// state (lease released) and its attempt row.
    async fn record(&self, batch: &[Done]) -> Result<(), DbErr> {
        let now = self.platform.now_ms();
        let mut updates: Vec<Value> = Vec::with_capacity(batch.len() * 5);
        let mut update_rows = Vec::with_capacity(batch.len());
        let mut inserts: Vec<Value> = Vec::with_capacity(batch.len() * 10);
        let mut insert_rows = Vec::with_capacity(batch.len());
        for d in batch {
            let o = &d.outcome;
            let attempts = d.job.attempts + 1;
            let next = if o.ok() {
                None
            } else {
                next_attempt(now, attempts as usize)
            };
            let status = match (o.ok(), next) {
                (true, _) => "succeeded",
                (false, Some(_)) => "pending",
                (false, None) => "failed",
            };
            update_rows.push(format!("({})", placeholders(updates.len() + 1, 5)));
            updates.extend([
                d.job.message_id.clone().into(),
                d.job.endpoint_id.clone().into(),
                status.into(),
                attempts.into(),
                next.unwrap_or(now).into(),
            ]);
            insert_rows.push(format!("({})", placeholders(inserts.len() + 1, 10)));
            inserts.extend([
                format!("atmpt_{}", gatehouse_platform::ids::random_base62(22)).into(),
                d.job.message_id.clone().into(),
                d.job.endpoint_id.clone().into(),
                d.target.instance.id.as_str().into(),
                o.status.map(i32::from).into(),
                o.excerpt.clone().into(),
                o.error.clone().into(),
                o.duration_ms.into(),
                now.into(),
                next.into(),
            ]);
        }
        let n = updates.len();
        updates.push(now.into());
        let txn = db::begin_write(self.platform.db()).await?;
        db::exec(
            &txn,
            &format!(
                "WITH v (message_id, endpoint_id, status, attempts, next_at) AS (VALUES {}) \
                 UPDATE webhooks_deliveries SET status = v.status, attempts = v.attempts, \
                   next_attempt_at = v.next_at, leased_until = NULL, updated_at = ${} \
                 FROM v WHERE webhooks_deliveries.message_id = v.message_id \
                   AND webhooks_deliveries.endpoint_id = v.endpoint_id",
                update_rows.join(", "),
                n + 1
            ),
            updates,
        )
        .await?;
        db::exec(
            &txn,
            &format!(
                "INSERT INTO webhooks_attempts (id, message_id, endpoint_id, instance_id, \
                 status_code, response_excerpt, error, duration_ms, attempted_at, \
                 next_attempt_at) VALUES {}",
                insert_rows.join(", ")
            ),
            inserts,
        )
        .await?;
        txn.commit().await?;
        let m = self.platform.metrics();
        for d in batch {
            let label = match (d.outcome.ok(), d.outcome.status) {
                (true, _) => "succeeded",
                (false, Some(_)) => "failed_http",
                (false, None) => "failed_network",
            };
            m.webhook_deliveries.with_label_values(&[label]).inc();
            m.webhook_attempt_duration
                .with_label_values(&[label])
                .observe(d.outcome.duration_ms as f64 / 1000.0);
        }
        Ok(())
    }

    /// Whether every attempt to the endpoint since its last success (or
    /// ever) failed, the first of them [`DISABLE_AFTER_MS`] ago or more.
    async fn failing_for_days(&self, endpoint_id: &str) -> Result<bool, DbErr> {
        let first_failure: Option<i64> = match db::query_one(
            self.platform.db(),
            "SELECT MIN(attempted_at) AS t FROM webhooks_attempts WHERE endpoint_id = $1 \
             AND attempted_at > COALESCE((SELECT MAX(attempted_at) FROM webhooks_attempts \
               WHERE endpoint_id = $1 AND status_code >= 200 AND status_code < 300), 0)",
            vec![endpoint_id.into()],
        )
        .await?
        {
            Some(r) => col(&r, "t")?,
            None => None,
        };
        Ok(first_failure.is_some_and(|t| self.platform.now_ms() - t >= DISABLE_AFTER_MS))
    }

    /// Disables the endpoint and records why (`webhook_endpoint.disabled`).
    async fn disable(&self, instance: Instance, endpoint_id: &str) -> Result<(), DbErr> {
        let actor =
            gatehouse_platform::tenancy::Authed::other(instance, "system:webhooks".to_owned());
        let done = endpoints::mutate(&self.platform, &actor, endpoint_id, |e, now| {
            if e.state.disabled {
                return Ok(endpoints::Decision {
                    events: vec![],
                    state: None,
                });
            }
            let mut next = e.state.clone();
            next.disabled = true;
            next.updated_at_ms = now;
            Ok(endpoints::Decision {
                events: vec![endpoints::event(
                    gatehouse_proto::event_types::WEBHOOK_ENDPOINT_DISABLED,
                    &gatehouse_proto::v1::WebhookEndpointDisabled {
                        endpoint: Some(next.clone()),
                        reason: "every attempt failed for 5 days".into(),
                    },
                )],
                state: Some(next),
            })
        })
        .await;
        match done {
            Ok(_) => {
                tracing::warn!(
                    endpoint_id,
                    "webhook endpoint disabled after 5 days of failures"
                );
                Ok(())
            }
            Err(e) => Err(DbErr::Custom(format!(
                "disabling endpoint {endpoint_id}: {e}"
            ))),
        }
    }

    /// The delivery's message, endpoint or instance is gone.
    async fn cancel(&self, job: &Job) -> Result<(), DbErr> {
        db::exec(
            self.platform.db(),
            "UPDATE webhooks_deliveries SET status = 'cancelled', leased_until = NULL, \
             updated_at = $3 WHERE message_id = $1 AND endpoint_id = $2",
            vec![
                job.message_id.clone().into(),
                job.endpoint_id.clone().into(),
                self.platform.now_ms().into(),
            ],
        )
        .await
        .map(|_| ())
    }

    /// Back to the queue untried (its endpoint was disabled after the
    /// claim; claims leave it alone until the endpoint is enabled).
    async fn release(&self, job: &Job) -> Result<(), DbErr> {
        db::exec(
            self.platform.db(),
            "UPDATE webhooks_deliveries SET leased_until = NULL, next_attempt_at = $3 \
             WHERE message_id = $1 AND endpoint_id = $2",
            vec![
                job.message_id.clone().into(),
                job.endpoint_id.clone().into(),
                self.platform.now_ms().into(),
            ],
        )
        .await
        .map(|_| ())
    }
}

/// The distinct values, in first-seen order.
fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}

/// The start of a receiver's answer, as recorded: at most
/// [`EXCERPT_BYTES`] of it, invalid UTF-8 and NUL (which PostgreSQL text
/// cannot hold, and which would fail the whole batch's record) replaced.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_cut_and_hold_no_nul() {
        assert_eq!(excerpt(b"ok\0\xff"), "ok\u{fffd}\u{fffd}");
        assert_eq!(excerpt(&[b'a'; 2 * EXCERPT_BYTES]).len(), EXCERPT_BYTES);
    }

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter() {
        let now = 1_000_000;
        assert_eq!(next_attempt(now, 0), None);
        for (i, wait) in RETRY_SCHEDULE_MS.iter().enumerate() {
            let at = next_attempt(now, i + 1).unwrap();
            assert!(
                (at - now - wait).abs() <= wait / 10,
                "attempt {}: {at}",
                i + 1
            );
        }
        assert_eq!(next_attempt(now, RETRY_SCHEDULE_MS.len() + 1), None);
    }

    #[test]
    fn every_live_secret_signs() {
        let a = format!("whsec_{}", STANDARD.encode([1u8; 32]));
        let b = format!("whsec_{}", STANDARD.encode([2u8; 32]));
        let both = signature(&[a.clone(), b], "msg_1", 1_700_000_000, "{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_eq!(signature(&[a], "msg_1", 1_700_000_000, "{}"), parts[0]);
    }
}
