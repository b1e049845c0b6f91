//! `Platform`: the handles every service gets — database, bus, clock,
//! metrics, Redis (when configured), settings. Cheap to clone.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::bus::SharedBus;
use crate::client_metadata::{ClientMetadataFetcher, ClientMetadataSettings};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::oauth_code::CodeSealer;
use crate::ratelimit::{RateLimitSettings, RateLimiter};
use crate::tenancy::KeyCache;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL the platform is reached at; issuers derive from it.
    pub public_url: String,
    /// Token of the platform admin API; `None` disables that API.
    pub admin_token: Option<String>,
    /// How long a resolved secret key is trusted before it is looked up
    /// again. Revocation is immediate in the process that revokes and takes
    /// at most this long elsewhere.
    pub key_cache_ttl: Duration,
    pub rate_limits: RateLimitSettings,
    /// Before every Redis key (rate limits, the revocation set), so several
    /// deployments can share one Redis.
    pub redis_prefix: String,
    /// Seals authorization codes between the authorization and token
    /// services; every process of a deployment has the same one.
    pub code_sealer: CodeSealer,
    /// How client ID metadata documents are fetched.
    pub client_metadata: ClientMetadataSettings,
    /// How long a request's body may take to arrive (then 408).
    pub body_read_timeout: Duration,
    /// Requests one peer address may have in flight per process; 0: no
    /// bound (behind a proxy that bounds them itself).
    pub max_requests_per_peer: usize,
    /// The operator's switch letting development instances' webhook
    /// endpoints point at this host's loopback interface. `false` unless
    /// the embedded default was started with `--webhooks-allow-loopback`.
    pub webhooks_allow_loopback: bool,
    /// `--test-clock`: the clock, which the admin API may then move forward.
    /// `None` in every real deployment.
    pub test_clock: Option<Arc<crate::clock::OffsetClock>>,
    /// `--test-crash-after-commit`: abort after an idempotent command
    /// commits, before answering. `false` in every real deployment.
    pub test_crash_after_commit: bool,
}

struct Inner {
    db: DatabaseConnection,
    bus: SharedBus,
    clock: SharedClock,
    metrics: Metrics,
    redis: Option<redis::aio::ConnectionManager>,
    settings: Settings,
    keys: KeyCache,
    appended: Arc<Notify>,
    rate_limiter: RateLimiter,
    client_metadata: ClientMetadataFetcher,
    /// A service's per-platform state, one value per type ([`Platform::shared`]).
    shared: std::sync::Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

#[derive(Clone)]
pub struct Platform(Arc<Inner>);

impl Platform {
    pub fn new(
        db: DatabaseConnection,
        bus: SharedBus,
        clock: SharedClock,
        redis: Option<redis::aio::ConnectionManager>,
        settings: Settings,
    ) -> Self {
        let keys = KeyCache::new(settings.key_cache_ttl);
        let metrics = Metrics::new();
        let mut limits = settings.rate_limits.clone();
        limits.key_prefix = settings.redis_prefix.clone();
        let rate_limiter = RateLimiter::new(limits, redis.clone(), metrics.clone());
        let client_metadata = ClientMetadataFetcher::new(&settings.client_metadata);
        Self(Arc::new(Inner {
            client_metadata,
            db,
            bus,
            clock,
            metrics,
            rate_limiter,
            redis,
            settings,
            keys,
            appended: Arc::new(Notify::new()),
            shared: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The one `T` of this platform, made with `T::default()` on first use:
    /// per-process state a service keeps beside the platform (a queue, a
    /// cache) without the platform knowing its type.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut map = self
            .0
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        match entry.clone().downcast::<T>() {
            Ok(value) => value,
            // The key is T's own TypeId: the value is a T.
            Err(_) => unreachable!("platform shared state keyed by another type"),
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.0.db
    }

    pub fn bus(&self) -> &SharedBus {
        &self.0.bus
    }

    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    pub fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn redis(&self) -> Option<&redis::aio::ConnectionManager> {
        self.0.redis.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn code_sealer(&self) -> &CodeSealer {
        &self.0.settings.code_sealer
    }

    pub fn client_metadata(&self) -> &ClientMetadataFetcher {
        &self.0.client_metadata
    }

    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.0.rate_limiter
    }

    pub fn keys(&self) -> &KeyCache {
        &self.0.keys
    }

    /// Commands call this right after committing `events` to `store`: it
    /// counts them in `gatehouse_events_appended_total` and wakes this
    /// process's outbox publishers, so they send at once instead of at their
    /// next poll.
    pub fn events_committed(&self, store: &str, events: &[crate::eventstore::RecordedEvent]) {
        for ev in events {
            self.0
                .metrics
                .events_appended
                .with_label_values(&[store, &ev.event_type])
                .inc();
        }
        self.0.appended.notify_waiters();
    }

    pub fn appended_signal(&self) -> Arc<Notify> {
        self.0.appended.clone()
    }

    /// The OAuth issuer of an instance: path-based under the public URL.
    pub fn issuer(&self, instance_id: &str) -> String {
        format!(
            "{}/i/{}",
            self.0.settings.public_url.trim_end_matches('/'),
            instance_id
        )
    }

    /// Each dependency this process uses: name, reachable, detail.
    pub async fn check_dependencies(&self) -> Vec<(&'static str, bool, String)> {
        let timeout = Duration::from_secs(3);
        let mut out = Vec::new();
        let db = match tokio::time::timeout(timeout, self.0.db.ping()).await {
            Ok(Ok(())) => (true, self.db_kind().to_owned()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "timed out".to_owned()),
        };
        out.push(("database", db.0, db.1));
        let bus = match tokio::time::timeout(timeout, self.0.bus.check()).await {
            Ok(Ok(())) => (true, self.0.bus.kind().to_owned()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "timed out".to_owned()),
        };
        out.push(("bus", bus.0, bus.1));
        if let Some(redis) = &self.0.redis {
            let mut conn = redis.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            let r = match tokio::time::timeout(timeout, ping).await {
                Ok(Ok(_)) => (true, "redis".to_owned()),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (false, "timed out".to_owned()),
            };
            out.push(("redis", r.0, r.1));
        }
        out
    }

    fn db_kind(&self) -> &'static str {
        if crate::db::is_postgres(&self.0.db) {
            "postgres"
        } else {
            "sqlite"
        }
    }
}

/// Connects to Redis and checks it answers, within a few seconds.
pub async fn connect_redis(url: &str) -> Result<redis::aio::ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
    let connect = async {
        let mut conn = client
            .get_connection_manager()
            .await
            .map_err(|e| e.to_string())?;
        let cmd = redis::cmd("PING");
        cmd.query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(conn)
    };
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "timed out after 5 s".to_owned())?
}
