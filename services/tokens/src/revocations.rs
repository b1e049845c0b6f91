//! The revocation set: which token families are revoked, kept in Redis so
//! that verification on any replica answers without reading the database.
//!
//! - A revocation is written to Redis **before** the transaction that
//!   records it commits, so once a revoke call has returned every replica
//!   asking Redis sees it. A transaction that then fails leaves an entry
//!   for a revocation that is retried anyway (revocations are never taken
//!   back).
//! - Entries live as long as the access tokens they can concern: an hour
//!   (the access-token lifetime) and a minute of clock skew after the
//!   revocation.
//! - The set is trusted only while the marker `gatehouse:tokrev:ready` is
//!   there. A Redis that lost its data has lost the marker too: the
//!   replicas ask the database meanwhile, and one of them refills the set
//!   from `tokens_families` (twice, a second apart, so a revocation whose
//!   transaction was still open during the first pass is not missed) before
//!   setting the marker again.
//! - Redis unreachable: verification asks the database. A revocation that
//!   could not be written still commits (revoking must keep working); the
//!   process then removes the marker as soon as Redis answers again, so the
//!   set is refilled before anyone trusts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse_platform::Platform;
use gatehouse_platform::clock::SharedClock;
use gatehouse_platform::db::{self, col};
use redis::aio::ConnectionManager;
use sea_orm::{DatabaseConnection, DbErr};

use crate::ACCESS_TOKEN_TTL_MS;

/// Key names below the deployment's Redis prefix (`--redis-prefix`).
pub const READY: &str = "gatehouse:tokrev:ready";
const REFILL_LOCK: &str = "gatehouse:tokrev:refilling";
const TIMEOUT: Duration = Duration::from_millis(250);
/// Clock skew between replicas an entry outlives its tokens by.
const SKEW_MS: i64 = 60_000;
/// The pause between the two refill passes, and how far back the second
/// one looks again.
const SETTLE: Duration = Duration::from_secs(1);
const SECOND_PASS_LOOKBACK_MS: i64 = 60_000;
/// Entries written per Redis round trip while refilling.
const REFILL_BATCH: usize = 1000;

/// A family's entry, below the prefix.
pub fn key(family_id: &str) -> String {
    format!("gatehouse:tokrev:{family_id}")
}

/// What the set says of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Standing,
    Revoked { at_ms: i64, reason: String },
}

struct Inner {
    redis: ConnectionManager,
    /// The deployment's Redis prefix, before every key.
    prefix: String,
    db: DatabaseConnection,
    clock: SharedClock,
    refilling: AtomicBool,
    /// A write failed: this process does not trust the set until it has
    /// removed the marker.
    dirty: AtomicBool,
}

/// The process's handle on the set; without Redis (the embedded default)
/// it holds nothing and every answer comes from the database.
#[derive(Clone, Default)]
pub struct RevocationSet(Option<Arc<Inner>>);

static SET: OnceLock<RevocationSet> = OnceLock::new();

/// Sets up the process's set from the platform's Redis (once per process).
/// A set without its marker (a new deployment, or a Redis that lost its
/// data) is refilled right away rather than on the first verification.
pub fn install(platform: &Platform) {
    let set = SET.get_or_init(|| RevocationSet::new(platform));
    if let Some(inner) = set.0.clone() {
        tokio::spawn(async move {
            let mut conn = inner.redis.clone();
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(inner.named(READY));
            if let Ok(Ok(0)) =
                tokio::time::timeout(TIMEOUT, cmd.query_async::<i64>(&mut conn)).await
            {
                inner.refill();
            }
        });
    }
}

/// The process's set (empty when not installed: the database answers).
pub fn get() -> RevocationSet {
    SET.get().cloned().unwrap_or_default()
}

impl RevocationSet {
    pub fn new(platform: &Platform) -> Self {
        Self(platform.redis().map(|r| {
            Arc::new(Inner {
                redis: r.clone(),
                prefix: platform.settings().redis_prefix.clone(),
                db: platform.db().clone(),
                clock: platform.clock().clone(),
                refilling: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
            })
        }))
    }

    /// The family's standing by the set, in one round trip; `None` when the
    /// set cannot be trusted now and the database must answer.
    pub async fn check(&self, family_id: &str) -> Option<Standing> {
        let inner = self.0.as_ref()?;
        if inner.dirty.load(Ordering::Acquire) {
            return None;
        }
        let mut conn = inner.redis.clone();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(inner.named(READY))
            .arg(inner.named(&key(family_id)));
        let answer = tokio::time::timeout(
            TIMEOUT,
            cmd.query_async::<(Option<String>, Option<String>)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((Some(_), None))) => Some(Standing::Standing),
            Ok(Ok((Some(_), Some(v)))) => parse(&v),
            Ok(Ok((None, _))) => {
                inner.clone().refill();
                None
            }
            _ => None,
        }
    }

    /// Records revocations `(family, revoked at, reason)`; call it before
    /// the transaction recording them commits.
    pub async fn record(&self, revoked: &[(String, i64, String)]) {
        let Some(inner) = &self.0 else {
            return;
        };
        if revoked.is_empty() {
            return;
        }
        if let Err(e) = inner.write(revoked).await {
            tracing::warn!(error = %e,
                "revocation not written to Redis: verification asks the database until the set is refilled");
            inner.clone().distrust();
        }
    }
}

fn parse(v: &str) -> Option<Standing> {
    let (at, reason) = v.split_once(' ')?;
    Some(Standing::Revoked {
        at_ms: at.parse().ok()?,
        reason: reason.to_owned(),
    })
}

impl Inner {
    fn named(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn write(&self, revoked: &[(String, i64, String)]) -> Result<(), String> {
        let now = self.clock.now_ms();
        let mut pipe = redis::pipe();
        for (family, at, reason) in revoked {
            let ttl = (at + ACCESS_TOKEN_TTL_MS + SKEW_MS - now).max(1000);
            pipe.cmd("SET")
                .arg(self.named(&key(family)))
                .arg(format!("{at} {reason}"))
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        let mut conn = self.redis.clone();
        tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// After a failed write: stop trusting the set here, and remove the
    /// marker once Redis answers, so that every replica waits for a refill.
    fn distrust(self: Arc<Self>) {
        if self.dirty.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            loop {
                let mut conn = self.redis.clone();
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.named(READY));
                if let Ok(Ok(())) =
                    tokio::time::timeout(TIMEOUT, cmd.query_async::<()>(&mut conn)).await
                {
                    self.dirty.store(false, Ordering::Release);
                    tracing::info!("Redis is back: the revocation set is refilled");
                    self.refill();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Refills the set in the background (one refill per process at a time,
    /// one in the deployment thanks to a lock in Redis).
    fn refill(self: Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = self.refill_once().await {
                tracing::warn!(error = %e, "refilling the revocation set failed; will retry");
            }
            self.refilling.store(false, Ordering::Release);
        });
    }

    async fn refill_once(&self) -> Result<(), String> {
        let mut conn = self.redis.clone();
        let mut lock = redis::cmd("SET");
        lock.arg(self.named(REFILL_LOCK))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(60_000);
        let got: Option<String> = lock
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if got.is_none() {
            // Another process refills: look again a little later.
            tokio::time::sleep(SETTLE / 2).await;
            return Ok(());
        }
        let started = self.clock.now_ms();
        let outcome = async {
            let first = self
                .load_since(started - ACCESS_TOKEN_TTL_MS - SKEW_MS)
                .await
                .map_err(|e| e.to_string())?;
            self.write_all(&first).await?;
            tokio::time::sleep(SETTLE).await;
            let second = self
                .load_since(started - SECOND_PASS_LOOKBACK_MS)
                .await
                .map_err(|e| e.to_string())?;
            self.write_all(&second).await?;
            let mut ready = redis::cmd("SET");
            ready.arg(self.named(READY)).arg(started);
            ready
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                revoked_families = first.len(),
                "revocation set refilled from the database"
            );
            Ok(())
        }
        .await;
        let mut unlock = redis::cmd("DEL");
        unlock.arg(self.named(REFILL_LOCK));
        let _ = unlock.query_async::<()>(&mut conn).await;
        outcome
    }

    async fn write_all(&self, revoked: &[(String, i64, String)]) -> Result<(), String> {
        for chunk in revoked.chunks(REFILL_BATCH) {
            self.write(chunk).await?;
        }
        Ok(())
    }

    async fn load_since(&self, since_ms: i64) -> Result<Vec<(String, i64, String)>, DbErr> {
        db::query_all(
            &self.db,
            "SELECT id, revoked_at, revocation_reason FROM tokens_families \
             WHERE revoked_at > $1",
            vec![since_ms.into()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                col(r, "id")?,
                col(r, "revoked_at")?,
                col::<Option<String>>(r, "revocation_reason")?.unwrap_or_default(),
            ))
        })
        .collect()
    }
}
