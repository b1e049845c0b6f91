//! Delivery: claims due deliveries from the durable queue
//! (`webhooks_deliveries`; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any
//! number of processes share it), sends each as a Standard Webhooks request,
//! records the attempt and schedules the next one. A claim is a lease: a
//! process that dies mid-delivery leaves the row due again after
//! [`LEASE_MS`], so nothing is lost (at-least-once; receivers dedupe on
//! `webhook-id`, which is the message id on every attempt).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_platform::Platform;
use gatehouse_platform::client_metadata::{PublicResolver, refused_as_private};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::tenancy::{self, Environment};
use gatehouse_proto::v1::WebhookEndpointState;
use hmac::{Hmac, Mac};
use prost::Message;
use sea_orm::DbErr;
use sha2::Sha256;

use crate::endpoints;

/// Waits after a failed attempt, in order: 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h; after the last one the delivery has failed.
pub const RETRY_SCHEDULE_MS: [i64; 7] = [
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];
pub const LEASE_MS: i64 = 60_000;
/// An endpoint whose every attempt has failed for this long is disabled.
pub const DISABLE_AFTER_MS: i64 = 5 * 24 * 3600 * 1000;
pub const TIMEOUT: Duration = Duration::from_secs(15);
const BATCH: i64 = 64;
/// Claim-and-deliver loops per process.
pub const LOOPS: usize = 4;
/// Requests one process has in flight to one endpoint at most.
pub const PER_ENDPOINT: usize = 8;
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
    /// How long an idle loop waits before looking again.
    idle: Duration,
    /// Production endpoints: public addresses only, checked at connect time.
    public: reqwest::Client,
    /// Development endpoints (localhost allowed).
    local: reqwest::Client,
}

fn client(allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("Gatehouse-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(PublicResolver::new(allow_private))
        .build()
        .unwrap_or_default()
}

struct Outcome {
    status: Option<u16>,
    excerpt: String,
    error: Option<String>,
    duration_ms: i64,
}

impl Dispatcher {
    /// The first loop of a process looks for due work every 100 ms when
    /// idle; the extra ones, there for throughput, every second.
    pub fn new(platform: Platform, first: bool) -> Self {
        Self {
            platform,
            idle: Duration::from_millis(if first { 100 } else { 1000 }),
            public: client(false),
            local: client(true),
        }
    }

    pub async fn run(self) {
        let mut gauges_at: Option<Instant> = None;
        loop {
            if gauges_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                gauges_at = Some(Instant::now());
                if let Err(e) = self.queue_gauges().await {
                    tracing::debug!(error = %e, "webhook queue gauges not updated");
                }
            }
            match self.tick().await {
                Ok(0) => tokio::time::sleep(self.idle).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
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

    /// Claims what is due and delivers it; returns how many were claimed.
    /// Endpoints are served in parallel, each with at most
    /// [`PER_ENDPOINT`] requests in flight from this process.
    pub async fn tick(&self) -> Result<usize, DbErr> {
        let claimed = self.claim().await?;
        let mut limits: std::collections::HashMap<&str, tokio::sync::Semaphore> =
            std::collections::HashMap::new();
        for (_, endpoint) in &claimed {
            limits
                .entry(endpoint.as_str())
                .or_insert_with(|| tokio::sync::Semaphore::new(PER_ENDPOINT));
        }
        let results =
            futures_util::future::join_all(claimed.iter().filter_map(|(message, endpoint)| {
                let limit = limits.get(endpoint.as_str())?;
                Some(self.deliver_limited(limit, message, endpoint))
            }))
            .await;
        for r in results {
            r?;
        }
        Ok(claimed.len())
    }

    async fn deliver_limited(
        &self,
        limit: &tokio::sync::Semaphore,
        message_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DbErr> {
        let _permit = limit
            .acquire()
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        self.deliver(message_id, endpoint_id).await
    }

    async fn claim(&self) -> Result<Vec<(String, String)>, DbErr> {
        let now = self.platform.now_ms();
        let txn = db::begin_write(self.platform.db()).await?;
        let lock = if db::is_postgres(&txn) {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let rows = db::query_all(
            &txn,
            &format!(
                "SELECT message_id, endpoint_id FROM webhooks_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at LIMIT $2{lock}"
            ),
            vec![now.into(), BATCH.into()],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (m, e): (String, String) = (col(&r, "message_id")?, col(&r, "endpoint_id")?);
            db::exec(
                &txn,
                "UPDATE webhooks_deliveries SET next_attempt_at = $3 \
                 WHERE message_id = $1 AND endpoint_id = $2",
                vec![m.clone().into(), e.clone().into(), (now + LEASE_MS).into()],
            )
            .await?;
            out.push((m, e));
        }
        txn.commit().await?;
        Ok(out)
    }

    async fn deliver(&self, message_id: &str, endpoint_id: &str) -> Result<(), DbErr> {
        let db = self.platform.db();
        let Some(m) = db::query_one(
            db,
            "SELECT body, instance_id FROM webhooks_messages WHERE id = $1",
            vec![message_id.into()],
        )
        .await?
        else {
            return self.close(message_id, endpoint_id, "cancelled").await;
        };
        let (body, instance_id): (String, String) = (col(&m, "body")?, col(&m, "instance_id")?);
        let endpoint = db::query_one(
            db,
            "SELECT state FROM webhooks_endpoints WHERE id = $1 AND instance_id = $2",
            vec![endpoint_id.into(), instance_id.clone().into()],
        )
        .await?
        .map(|r| col::<Vec<u8>>(&r, "state"))
        .transpose()?
        .and_then(|b| WebhookEndpointState::decode(b.as_slice()).ok());
        let instance = tenancy::active_instance_cached(&self.platform, &instance_id).await?;
        let (Some(endpoint), Some(instance)) = (endpoint, instance) else {
            return self.close(message_id, endpoint_id, "cancelled").await;
        };
        if endpoint.disabled {
            // Kept for when the endpoint is enabled again.
            return self.postpone(message_id, endpoint_id).await;
        }
        let now = self.platform.now_ms();
        let secrets: Vec<String> = endpoints::signing_secrets(&self.platform, &endpoint, now)
            .into_iter()
            .flatten()
            .collect();
        let outcome = self
            .send(
                &endpoint.url,
                instance.environment,
                message_id,
                &body,
                &secrets,
            )
            .await;
        let ok = outcome.status.is_some_and(|s| (200..300).contains(&s));
        let label = match (ok, outcome.status) {
            (true, _) => "succeeded",
            (false, Some(_)) => "failed_http",
            (false, None) => "failed_network",
        };
        let m = self.platform.metrics();
        m.webhook_deliveries.with_label_values(&[label]).inc();
        m.webhook_attempt_duration
            .with_label_values(&[label])
            .observe(outcome.duration_ms as f64 / 1000.0);
        self.record(message_id, endpoint_id, &instance_id, outcome)
            .await?;
        if !ok && self.failing_for_days(endpoint_id).await? {
            self.disable(instance, endpoint_id).await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        url: &str,
        env: Environment,
        message_id: &str,
        body: &str,
        secrets: &[String],
    ) -> Outcome {
        let started = Instant::now();
        let timestamp = self.platform.now_ms() / 1000;
        let sig = signature(secrets, message_id, timestamp, body);
        let client = match env {
            Environment::Production => &self.public,
            Environment::Development => &self.local,
        };
        let res = client
            .post(url)
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
        let mut out = Outcome {
            status: None,
            excerpt: String::new(),
            error: None,
            duration_ms: 0,
        };
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
                bytes.truncate(EXCERPT_BYTES);
                out.excerpt = String::from_utf8_lossy(&bytes).into_owned();
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

    async fn record(
        &self,
        message_id: &str,
        endpoint_id: &str,
        instance_id: &str,
        o: Outcome,
    ) -> Result<(), DbErr> {
        let now = self.platform.now_ms();
        let txn = db::begin_write(self.platform.db()).await?;
        let attempts: i64 = match db::query_one(
            &txn,
            "SELECT attempts FROM webhooks_deliveries WHERE message_id = $1 AND endpoint_id = $2",
            vec![message_id.into(), endpoint_id.into()],
        )
        .await?
        {
            Some(r) => col::<i32>(&r, "attempts")? as i64 + 1,
            None => return Ok(()),
        };
        let ok = o.status.is_some_and(|s| (200..300).contains(&s));
        let next = if ok {
            None
        } else {
            next_attempt(now, attempts as usize)
        };
        let status = match (ok, next) {
            (true, _) => "succeeded",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        db::exec(
            &txn,
            "UPDATE webhooks_deliveries SET status = $3, attempts = $4, next_attempt_at = $5, \
             updated_at = $6 WHERE message_id = $1 AND endpoint_id = $2",
            vec![
                message_id.into(),
                endpoint_id.into(),
                status.into(),
                (attempts as i32).into(),
                next.unwrap_or(now).into(),
                now.into(),
            ],
        )
        .await?;
        db::exec(
            &txn,
            "INSERT INTO webhooks_attempts (id, message_id, endpoint_id, instance_id, status_code, \
             response_excerpt, error, duration_ms, attempted_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            vec![
                format!("atmpt_{}", gatehouse_platform::ids::random_base62(22)).into(),
                message_id.into(),
                endpoint_id.into(),
                instance_id.into(),
                o.status.map(i32::from).into(),
                o.excerpt.into(),
                o.error.into(),
                o.duration_ms.into(),
                now.into(),
                next.into(),
            ],
        )
        .await?;
        txn.commit().await
    }

    /// Whether every attempt to the endpoint since its last success (or
    /// ever) failed, the first of them [`DISABLE_AFTER_MS`] ago or more.
    async fn failing_for_days(&self, endpoint_id: &str) -> Result<bool, DbErr> {
        let db = self.platform.db();
        let last_ok: i64 = match db::query_one(
            db,
            "SELECT MAX(attempted_at) AS t FROM webhooks_attempts WHERE endpoint_id = $1 \
             AND status_code >= 200 AND status_code < 300",
            vec![endpoint_id.into()],
        )
        .await?
        {
            Some(r) => col::<Option<i64>>(&r, "t")?.unwrap_or(0),
            None => 0,
        };
        let first_failure: Option<i64> = match db::query_one(
            db,
            "SELECT MIN(attempted_at) AS t FROM webhooks_attempts WHERE endpoint_id = $1 \
             AND attempted_at > $2",
            vec![endpoint_id.into(), last_ok.into()],
        )
        .await?
        {
            Some(r) => col(&r, "t")?,
            None => None,
        };
        Ok(first_failure.is_some_and(|t| self.platform.now_ms() - t >= DISABLE_AFTER_MS))
    }

    /// Disables the endpoint and records why (`webhook_endpoint.disabled`).
    async fn disable(
        &self,
        instance: gatehouse_platform::tenancy::Instance,
        endpoint_id: &str,
    ) -> Result<(), DbErr> {
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

    async fn close(&self, message_id: &str, endpoint_id: &str, status: &str) -> Result<(), DbErr> {
        db::exec(
            self.platform.db(),
            "UPDATE webhooks_deliveries SET status = $3, updated_at = $4 \
             WHERE message_id = $1 AND endpoint_id = $2",
            vec![
                message_id.into(),
                endpoint_id.into(),
                status.into(),
                self.platform.now_ms().into(),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn postpone(&self, message_id: &str, endpoint_id: &str) -> Result<(), DbErr> {
        db::exec(
            self.platform.db(),
            "UPDATE webhooks_deliveries SET next_attempt_at = $3 \
             WHERE message_id = $1 AND endpoint_id = $2",
            vec![
                message_id.into(),
                endpoint_id.into(),
                (self.platform.now_ms() + LEASE_MS).into(),
            ],
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
