//! Backend API rate limits per instance, shared by every replica of every
//! service through Redis: a sliding log (one sorted set per instance, scored
//! by Redis's own clock), checked and recorded by one Lua script in one round
//! trip (`EVALSHA`). In any rolling window at most `limit` requests are
//! admitted, and under steady over-limit load exactly `limit` are.
//!
//! Redis unreachable: each process falls back to a local sliding log, as
//! exact as the shared one, with its share of the limit (limit / replicas),
//! logs the switch once, counts fallback decisions, and goes back to Redis as
//! soon as it answers again. Without Redis (the embedded default) the local
//! log is the limiter: at most the limit in any rolling window there too.
//!
//! Why a sliding log and what it costs: docs/rate-limiting.md.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

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
    /// Before every Redis key (the deployment's `--redis-prefix`).
    pub key_prefix: String,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            production: 1000,
            development: 100,
            window: Duration::from_secs(10),
            replicas: 1,
            enabled: true,
            key_prefix: String::new(),
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

/// KEYS[1]: the instance's log. ARGV: limit, window (ms), a unique member,
/// and `1` to record an admitted request (`0` only asks whether one would
/// be admitted). Returns {admitted, remaining, ms until the oldest entry
/// expires}.
const SLIDING_LOG: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
  admitted = 1
  if ARGV[4] == '1' then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    count = count + 1
  end
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

/// The in-process limiter: a sliding log per key, as exact as the Redis
/// one. Each log holds at most its limit of times, so an instance costs at
/// most 8 bytes per request it may make in a window.
#[derive(Default)]
struct LocalLogs {
    logs: HashMap<(String, u32, Duration), VecDeque<u64>>,
    /// Keys at which the next sweep runs: twice what the last one left, so
    /// sweeps cost amortized O(1) per new key.
    sweep_at: usize,
}

/// Keys past which the logs that are empty by now are swept out.
const SWEEP_AT: usize = 10_000;
/// Keys one process keeps at most; past it (after a sweep) the oldest idle
/// ones go, which for them forgets at most one window.
const MAX_KEYS: usize = 100_000;

impl LocalLogs {
    /// Counts one request at `now_ms` (a monotonic clock) under `key`
    /// against `allowed` per `window`.
    #[cfg(test)]
    fn check(&mut self, key: (String, u32, Duration), now_ms: u64) -> (bool, u32, u64) {
        self.decide(key, now_ms, true)
    }

    /// Whether a request at `now_ms` under `key` is admitted, recording it
    /// when `record`: (admitted, remaining, ms until the oldest leaves).
    fn decide(
        &mut self,
        key: (String, u32, Duration),
        now_ms: u64,
        record: bool,
    ) -> (bool, u32, u64) {
        let (allowed, window) = (key.1, key.2.as_millis() as u64);
        if self.logs.len() >= self.sweep_at.max(SWEEP_AT) && !self.logs.contains_key(&key) {
            self.sweep(now_ms);
            self.sweep_at = (self.logs.len() * 2).min(MAX_KEYS);
        }
        let log = self.logs.entry(key).or_default();
        while log.front().is_some_and(|&t| t + window <= now_ms) {
            log.pop_front();
        }
        let admitted = log.len() < allowed as usize;
        if admitted && record {
            log.push_back(now_ms);
        }
        let remaining = (allowed as usize).saturating_sub(log.len()) as u32;
        let reset = log.front().map_or(0, |&t| t + window - now_ms);
        (admitted, remaining, reset)
    }

    fn sweep(&mut self, now_ms: u64) {
        self.logs.retain(|(_, _, window), log| {
            log.back()
                .is_some_and(|&t| t + window.as_millis() as u64 > now_ms)
        });
        if self.logs.len() >= MAX_KEYS {
            let mut last: Vec<u64> = self
                .logs
                .values()
                .map(|l| l.back().copied().unwrap_or(0))
                .collect();
            let cut = last.len() / 2;
            let (_, median, _) = last.select_nth_unstable(cut);
            let median = *median;
            self.logs
                .retain(|_, l| l.back().copied().unwrap_or(0) > median);
        }
    }
}

pub struct RateLimiter {
    settings: RateLimitSettings,
    redis: Option<redis::aio::ConnectionManager>,
    script: redis::Script,
    local: Mutex<LocalLogs>,
    /// The local logs' monotonic clock starts here.
    started: Instant,
    /// Set while decisions are local because Redis failed.
    degraded: AtomicBool,
    /// Epoch ms before which Redis is not tried again after a failure, so a
    /// dead Redis costs one timeout per second, not one per request.
    retry_redis_at: AtomicI64,
    metrics: Metrics,
}

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const REDIS_RETRY_MS: i64 = 1000;

/// The limiter's windows follow the wall clock, not the process's `Clock`:
/// other processes share them through Redis.
fn now_ms() -> i64 {
    crate::clock::wall_ms()
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
            local: Mutex::new(LocalLogs::default()),
            started: crate::clock::monotonic(),
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
        self.decide(instance_id, env, limit, window, true).await
    }

    /// Whether one more attempt under `key` would be admitted, without
    /// counting one (a throttle that counts only failures asks this first,
    /// and counts a failure with [`Self::check_window`]).
    pub async fn peek_window(
        &self,
        key: &str,
        env: Environment,
        limit: u32,
        window: Duration,
    ) -> Decision {
        self.decide(key, env, limit, window, false).await
    }

    async fn decide(
        &self,
        instance_id: &str,
        env: Environment,
        limit: u32,
        window: Duration,
        record: bool,
    ) -> Decision {
        let decision = match &self.redis {
            Some(redis) if now_ms() >= self.retry_redis_at.load(Ordering::Relaxed) => {
                match self
                    .check_redis(redis, instance_id, limit, window, record)
                    .await
                {
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
                        self.fallback(instance_id, limit, window, record)
                    }
                }
            }
            Some(_) => self.fallback(instance_id, limit, window, record),
            None => self.check_local(instance_id, limit, limit, window, record),
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
        record: bool,
    ) -> Result<Decision, String> {
        let mut conn = redis.clone();
        let member = crate::ids::random_base62(16);
        let window_ms = window.as_millis() as u64;
        let mut invocation = self.script.key(format!(
            "{}gatehouse:rl:{instance_id}",
            self.settings.key_prefix
        ));
        invocation
            .arg(limit)
            .arg(window_ms)
            .arg(member)
            .arg(if record { "1" } else { "0" });
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

    fn fallback(&self, instance_id: &str, limit: u32, window: Duration, record: bool) -> Decision {
        self.metrics.rate_limit_fallback.inc();
        let share = (limit / self.settings.replicas.max(1)).max(1);
        let mut d = self.check_local(instance_id, share, limit, window, record);
        d.limit = limit;
        d
    }

    /// The local sliding log: `allowed` per `window`, reported against
    /// `limit`.
    fn check_local(
        &self,
        instance_id: &str,
        allowed: u32,
        limit: u32,
        window: Duration,
        record: bool,
    ) -> Decision {
        let now = self.started.elapsed().as_millis() as u64;
        let (admitted, remaining, reset_ms) = {
            let mut logs = match self.local.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            logs.decide(
                (instance_id.to_owned(), allowed.max(1), window),
                now,
                record,
            )
        };
        Decision {
            admitted,
            limit,
            remaining,
            reset_ms,
            window_secs: window.as_secs(),
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
        assert!((9..=10).contains(&last.retry_after_secs()), "{last:?}");
        // Another instance has its own budget.
        assert!(
            rl.check("ins_b", Environment::Development, 5)
                .await
                .admitted
        );
    }

    fn key(allowed: u32) -> (String, u32, Duration) {
        ("ins_a".to_owned(), allowed, Duration::from_secs(10))
    }

    #[test]
    fn the_local_log_never_admits_more_than_the_limit_in_any_rolling_window() {
        let mut logs = LocalLogs::default();
        // 150 quick requests: exactly 100.
        let admitted = (0..150u64)
            .filter(|i| logs.check(key(100), 1_000 + i).0)
            .count();
        assert_eq!(admitted, 100);
        // Half a window later nothing more; the first ones leave one by one.
        assert!(!logs.check(key(100), 6_000).0);
        let (_, _, reset) = logs.check(key(100), 10_999);
        assert_eq!(reset, 1, "the oldest (at 1000) leaves at 11000");
        assert!(logs.check(key(100), 11_000).0);
        assert!(!logs.check(key(100), 11_000).0, "only the one that left");
        // Over a long stream, every 10 s window holds at most 100.
        let mut logs = LocalLogs::default();
        let mut times = Vec::new();
        for t in (0..60_000u64).step_by(7) {
            if logs.check(key(100), t).0 {
                times.push(t);
            }
        }
        for (i, &t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|&&u| u < t + 10_000).count();
            assert!(
                in_window <= 100,
                "{in_window} admitted in the window from {t}"
            );
        }
        assert!(times.len() >= 600, "and the limit is used: {}", times.len());
    }

    #[test]
    fn local_logs_stay_bounded() {
        let mut logs = LocalLogs::default();
        for i in 0..(MAX_KEYS as u64 + 10) {
            logs.check((format!("ins_{i}"), 5, Duration::from_secs(10)), i / 100);
        }
        assert!(logs.logs.len() <= MAX_KEYS, "{}", logs.logs.len());
        // Each log holds at most its limit.
        for t in 0..50 {
            logs.check(key(5), 2_000_000 + t);
        }
        assert_eq!(logs.logs[&key(5)].len(), 5);
        // Logs that emptied are swept once there are many.
        let mut logs = LocalLogs::default();
        for i in 0..SWEEP_AT as u64 {
            logs.check((format!("old_{i}"), 5, Duration::from_secs(10)), 0);
        }
        logs.check(key(5), 60_000);
        assert_eq!(logs.logs.len(), 1);
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
