//! Backend API rate limits per instance, shared by every replica of every
//! service through Redis: a sliding log (one sorted set per instance, scored
//! by Redis's own clock), checked and recorded by one Lua script in one round
//! trip (`EVALSHA`). In any rolling window at most `limit` requests are
//! admitted, and under steady over-limit load exactly `limit` are.
//!
//! Redis unreachable: each process falls back to a local GCRA limiter
//! (`governor`) with its share of the limit (limit / replicas), logs the
//! switch once, counts fallback decisions, and goes back to Redis as soon as
//! it answers again. Without Redis (the embedded default) the local limiter
//! is the limiter.
//!
//! Why a sliding log and what it costs: docs/rate-limiting.md.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};

use crate::metrics::Metrics;
use crate::tenancy::Environment;

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub production: u32,
    pub development: u32,
    pub window: Duration,
    /// How many processes share an instance's limit; each takes
    /// 1/replicas of it when it has to decide alone.
    pub replicas: u32,
    pub enabled: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            production: 1000,
            development: 100,
            window: Duration::from_secs(10),
            replicas: 1,
            enabled: true,
        }
    }
}

impl RateLimitSettings {
    pub fn default_for(&self, env: Environment) -> u32 {
        match env {
            Environment::Production => self.production,
            Environment::Development => self.development,
        }
    }
}

/// The outcome of one check, with what the response headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Milliseconds until the oldest counted request leaves the window.
    pub reset_ms: u64,
    pub window_secs: u64,
}

impl Decision {
    /// Whole seconds until a request would be admitted (never 0 on a refusal).
    pub fn retry_after_secs(&self) -> u64 {
        self.reset_ms.div_ceil(1000).max(1)
    }
}

/// KEYS[1]: the instance's log. ARGV: limit, window (ms), a unique member.
/// Returns {admitted, remaining, ms until the oldest entry expires}.
const SLIDING_LOG: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
  admitted = 1
end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
local remaining = limit - count
if remaining < 0 then remaining = 0 end
return {admitted, remaining, reset}
";

type Local = Gcra<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

pub struct RateLimiter {
    settings: RateLimitSettings,
    redis: Option<redis::aio::ConnectionManager>,
    script: redis::Script,
    local: Mutex<HashMap<(String, u32, Duration), Arc<Local>>>,
    clock: DefaultClock,
    /// Set while decisions are local because Redis failed.
    degraded: AtomicBool,
    /// Epoch ms before which Redis is not tried again after a failure, so a
    /// dead Redis costs one timeout per second, not one per request.
    retry_redis_at: AtomicI64,
    metrics: Metrics,
}

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const REDIS_RETRY_MS: i64 = 1000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RateLimiter {
    pub fn new(
        settings: RateLimitSettings,
        redis: Option<redis::aio::ConnectionManager>,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings,
            redis,
            script: redis::Script::new(SLIDING_LOG),
            local: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            degraded: AtomicBool::new(false),
            retry_redis_at: AtomicI64::new(0),
            metrics,
        }
    }

    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Counts one request of `instance_id` against `limit` per window.
    pub async fn check(&self, instance_id: &str, env: Environment, limit: u32) -> Decision {
        self.check_window(instance_id, env, limit, self.settings.window)
            .await
    }

    /// Counts one attempt under `key` against `limit` per `window` (for
    /// throttles other than the Backend API limit, such as sign-in attempts).
    pub async fn check_window(
        &self,
        instance_id: &str,
        env: Environment,
        limit: u32,
        window: Duration,
    ) -> Decision {
        let decision = match &self.redis {
            Some(redis) if now_ms() >= self.retry_redis_at.load(Ordering::Relaxed) => {
                match self.check_redis(redis, instance_id, limit, window).await {
                    Ok(d) => {
                        if self.degraded.swap(false, Ordering::Relaxed) {
                            tracing::info!("Redis is back: rate limits are shared again");
                        }
                        self.metrics.rate_limit_redis_up.set(1.0);
                        d
                    }
                    Err(err) => {
                        self.retry_redis_at
                            .store(now_ms() + REDIS_RETRY_MS, Ordering::Relaxed);
                        if !self.degraded.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %err,
                                "Redis unavailable: rate limiting falls back to this process's share");
                        }
                        self.metrics.rate_limit_redis_up.set(0.0);
                        self.fallback(instance_id, limit, window)
                    }
                }
            }
            Some(_) => self.fallback(instance_id, limit, window),
            None => self.check_local(instance_id, limit, limit, window),
        };
        let outcome = if decision.admitted {
            "admitted"
        } else {
            "rejected"
        };
        self.metrics
            .rate_limit_decisions
            .with_label_values(&[env.as_str(), outcome])
            .inc();
        decision
    }

    async fn check_redis(
        &self,
        redis: &redis::aio::ConnectionManager,
        instance_id: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Decision, String> {
        let mut conn = redis.clone();
        let member = crate::ids::random_base62(16);
        let window_ms = window.as_millis() as u64;
        let mut invocation = self.script.key(format!("gatehouse:rl:{instance_id}"));
        invocation.arg(limit).arg(window_ms).arg(member);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
        let (admitted, remaining, reset) = tokio::time::timeout(REDIS_TIMEOUT, call)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(Decision {
            admitted: admitted == 1,
            limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
            reset_ms: u64::try_from(reset.max(0)).unwrap_or(0),
            window_secs: window.as_secs(),
        })
    }

    fn fallback(&self, instance_id: &str, limit: u32, window: Duration) -> Decision {
        self.metrics.rate_limit_fallback.inc();
        let share = (limit / self.settings.replicas.max(1)).max(1);
        let mut d = self.check_local(instance_id, share, limit, window);
        d.limit = limit;
        d
    }

    /// A GCRA with burst = `allowed`, refilling over the window.
    fn check_local(
        &self,
        instance_id: &str,
        allowed: u32,
        limit: u32,
        window: Duration,
    ) -> Decision {
        let limiter = {
            let mut map = match self.local.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            if map.len() > 100_000 {
                map.clear();
            }
            map.entry((instance_id.to_owned(), allowed, window))
                .or_insert_with(|| {
                    let burst = NonZeroU32::new(allowed.max(1)).unwrap_or(NonZeroU32::MIN);
                    let period = (window / burst.get()).max(Duration::from_nanos(1));
                    let quota = Quota::with_period(period)
                        .unwrap_or_else(|| Quota::per_second(burst))
                        .allow_burst(burst);
                    Arc::new(Gcra::direct(quota).with_middleware::<StateInformationMiddleware>())
                })
                .clone()
        };
        match limiter.check() {
            Ok(snapshot) => Decision {
                admitted: true,
                limit,
                remaining: snapshot.remaining_burst_capacity(),
                reset_ms: (window / allowed.max(1)).as_millis() as u64,
                window_secs: window.as_secs(),
            },
            Err(not_until) => Decision {
                admitted: false,
                limit,
                remaining: 0,
                reset_ms: not_until.wait_time_from(self.clock.now()).as_millis() as u64,
                window_secs: window.as_secs(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_limiter_admits_the_limit_then_refuses_with_a_retry_time() {
        let rl = RateLimiter::new(
            RateLimitSettings {
                development: 5,
                ..Default::default()
            },
            None,
            Metrics::new(),
        );
        let mut admitted = 0;
        let mut last = None;
        for _ in 0..8 {
            let d = rl.check("ins_a", Environment::Development, 5).await;
            if d.admitted {
                admitted += 1;
            }
            last = Some(d);
        }
        assert_eq!(admitted, 5);
        let last = last.unwrap_or(Decision {
            admitted: true,
            limit: 0,
            remaining: 0,
            reset_ms: 0,
            window_secs: 0,
        });
        assert!(!last.admitted);
        assert!((1..=2).contains(&last.retry_after_secs()), "{last:?}");
        // Another instance has its own budget.
        assert!(
            rl.check("ins_b", Environment::Development, 5)
                .await
                .admitted
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let d = |reset_ms| Decision {
            admitted: false,
            limit: 1,
            remaining: 0,
            reset_ms,
            window_secs: 10,
        };
        assert_eq!(d(0).retry_after_secs(), 1);
        assert_eq!(d(1).retry_after_secs(), 1);
        assert_eq!(d(1001).retry_after_secs(), 2);
        assert_eq!(d(10_000).retry_after_secs(), 10);
    }
}
