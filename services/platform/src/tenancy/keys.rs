//! Instance secret keys and the admin token: generation, hashing, and the
//! request extractors that authenticate with them.
//!
//! A key is `sk_test_`/`sk_live_` + 48 base62 characters (≈285 bits). Only
//! its SHA-256 is stored; a plain hash is enough for a key this random (no
//! dictionary to attack) and keeps the per-request check at one hash plus an
//! index lookup. The stored and computed hashes are compared in constant time.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Environment, Instance};
use crate::context::Platform;
use crate::db::{self, col};
use crate::error::ApiError;
use crate::ids::{InstanceId, TenantId};

const SECRET_LEN: usize = 48;

pub struct KeyMaterial {
    pub hash: String,
    pub hint: String,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh secret for an instance of `env` and what may be stored about it.
pub fn new_secret(env: Environment) -> (String, KeyMaterial) {
    let secret = format!(
        "{}{}",
        env.secret_key_prefix(),
        crate::ids::random_base62(SECRET_LEN)
    );
    let hint = format!(
        "{}…{}",
        env.secret_key_prefix(),
        &secret[secret.len() - 4..]
    );
    let material = KeyMaterial {
        hash: hash_secret(&secret),
        hint,
    };
    (secret, material)
}

/// A request authenticated by an instance secret key.
#[derive(Debug, Clone)]
pub struct Authed {
    pub key_id: String,
    pub instance: Instance,
    /// Who acts when it is not a secret key (for example an anonymous
    /// dynamic client registration from an IP address).
    pub actor: Option<String>,
}

impl Authed {
    /// An actor that is not a secret key, acting on `instance`.
    pub fn other(instance: Instance, actor: String) -> Self {
        Self {
            key_id: String::new(),
            instance,
            actor: Some(actor),
        }
    }

    /// The actor recorded on events this request causes.
    pub fn actor(&self) -> String {
        self.actor
            .clone()
            .unwrap_or_else(|| format!("secret_key:{}", self.key_id))
    }

    /// The metadata of events this request causes: its instance, actor and
    /// trace id.
    pub fn event_meta(&self) -> crate::eventstore::EventMeta {
        crate::eventstore::EventMeta {
            tenant_id: self.instance.tenant_id.to_string(),
            instance_id: self.instance.id.to_string(),
            actor: self.actor(),
            trace_id: crate::http::current_trace_id(),
        }
    }
}

#[derive(Debug, Clone)]
enum Resolved {
    Valid(Authed),
    Disabled,
    Unknown,
}

/// Resolved keys, kept briefly so a hot key costs no database round trip.
pub struct KeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Instant, Resolved)>>,
    /// Active instances by id (`None`: unknown or its tenant disabled), for
    /// the OAuth endpoints, which name their instance in the path.
    instances: RwLock<HashMap<String, (Instant, Option<Instance>)>>,
    /// Bumped by `clear`; a lookup that started before a clear does not
    /// cache what it read (it may predate the revocation).
    generation: std::sync::atomic::AtomicU64,
}

const MAX_ENTRIES: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
            instances: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forgets everything; called when this process revokes a key or
    /// disables a tenant.
    pub fn clear(&self) {
        if let Ok(mut e) = self.entries.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            e.clear();
        }
        if let Ok(mut i) = self.instances.write() {
            i.clear();
        }
    }

    /// A cached active-instance lookup, if fresh.
    pub fn instance(&self, id: &str) -> Option<Option<Instance>> {
        let entries = self.instances.read().ok()?;
        let (at, i) = entries.get(id)?;
        (at.elapsed() < self.ttl).then(|| i.clone())
    }

    /// The generation to hand back to [`KeyCache::put_instance`].
    pub fn instance_generation(&self) -> u64 {
        self.generation()
    }

    /// Caches an active-instance lookup unless the cache was cleared since
    /// `generation` was read; unknown ids never evict known ones.
    pub fn put_instance(&self, generation: u64, id: &str, found: Option<Instance>) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut e) = self.instances.write() {
            if self.generation() != generation {
                return;
            }
            if e.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                e.retain(|_, (at, v)| at.elapsed() < ttl && v.is_some());
                if e.len() >= MAX_ENTRIES || found.is_none() {
                    return;
                }
            }
            e.insert(id.to_owned(), (crate::clock::monotonic(), found));
        }
    }

    fn get(&self, hash: &str) -> Option<Resolved> {
        let entries = self.entries.read().ok()?;
        let (at, r) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| r.clone())
    }

    /// Caches `r` unless the cache was cleared since `generation` was read.
    fn put(&self, generation: u64, hash: String, r: Resolved) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut e) = self.entries.write() {
            if self.generation() != generation {
                return;
            }
            if e.len() >= MAX_ENTRIES {
                // Unknown keys must not be able to evict the valid ones.
                if matches!(r, Resolved::Unknown) {
                    return;
                }
                e.retain(|_, (_, v)| !matches!(v, Resolved::Unknown));
            }
            e.insert(hash, (crate::clock::monotonic(), r));
        }
    }
}

async fn resolve(platform: &Platform, secret: &str) -> Result<Resolved, ApiError> {
    let hash = hash_secret(secret);
    if let Some(r) = platform.keys().get(&hash) {
        return Ok(r);
    }
    let generation = platform.keys().generation();
    let row = db::query_one(
        platform.db(),
        "SELECT k.id, k.key_hash, i.id AS instance_id, i.tenant_id, i.environment, i.rate_limit, t.disabled \
         FROM tenancy_secret_keys k \
         JOIN tenancy_instances i ON i.id = k.instance_id \
         JOIN tenancy_tenants t ON t.id = i.tenant_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        vec![hash.clone().into()],
    )
    .await?;
    let resolved = match row {
        None => Resolved::Unknown,
        Some(r) => {
            let stored: String = col(&r, "key_hash")?;
            let env: String = col(&r, "environment")?;
            let disabled: bool = col(&r, "disabled")?;
            let environment =
                Environment::parse(&env).ok_or_else(|| ApiError::internal("bad environment"))?;
            if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes()))
                || !secret.starts_with(environment.secret_key_prefix())
            {
                Resolved::Unknown
            } else if disabled {
                Resolved::Disabled
            } else {
                Resolved::Valid(Authed {
                    actor: None,
                    key_id: col(&r, "id")?,
                    instance: Instance {
                        id: InstanceId::from_trusted(col(&r, "instance_id")?),
                        tenant_id: TenantId::from_trusted(col(&r, "tenant_id")?),
                        environment,
                        rate_limit: col::<Option<i64>>(&r, "rate_limit")?
                            .and_then(|l| u32::try_from(l).ok()),
                    },
                })
            }
        }
    };
    platform.keys().put(generation, hash, resolved.clone());
    Ok(resolved)
}

fn platform_of(req: &HttpRequest) -> Result<Platform, ApiError> {
    req.app_data::<web::Data<Platform>>()
        .map(|p| p.get_ref().clone())
        .ok_or_else(|| ApiError::internal("platform not registered"))
}

/// Extractor: the instance of the secret key in `Authorization: Bearer`.
pub struct InstanceKey(pub Authed);

impl FromRequest for InstanceKey {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let platform = platform_of(req);
        let token = crate::http::bearer_token(req).map(str::to_owned);
        let req = req.clone();
        Box::pin(async move {
            let platform = platform?;
            let Some(token) = token else {
                return Err(ApiError::unauthorized(
                    "Send an instance secret key as `Authorization: Bearer sk_…`.",
                ));
            };
            if !(token.starts_with("sk_test_") || token.starts_with("sk_live_"))
                || token.len() > 200
            {
                return Err(ApiError::unauthorized("The secret key is malformed."));
            }
            match resolve(&platform, &token).await? {
                Resolved::Valid(a) => {
                    rate_limit(&platform, &req, &a).await?;
                    Ok(InstanceKey(a))
                }
                Resolved::Disabled => Err(ApiError::unauthorized(
                    "The tenant of this secret key is disabled.",
                )),
                Resolved::Unknown => Err(ApiError::unauthorized(
                    "The secret key is invalid or has been revoked.",
                )),
            }
        })
    }
}

/// Every Backend API request of an instance counts against its limit: the
/// decision goes into the request's extensions (the HTTP layer turns it into
/// headers) and a refusal is the 429.
async fn rate_limit(platform: &Platform, req: &HttpRequest, a: &Authed) -> Result<(), ApiError> {
    let limiter = platform.rate_limiter();
    if !limiter.enabled() {
        return Ok(());
    }
    let env = a.instance.environment;
    let limit = a
        .instance
        .rate_limit
        .unwrap_or_else(|| limiter.settings().default_for(env));
    let decision = limiter.check(a.instance.id.as_str(), env, limit).await;
    req.extensions_mut().insert(decision);
    if decision.admitted {
        return Ok(());
    }
    Err(ApiError::new(
        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "Too many requests",
        format!(
            "This instance may make {limit} Backend API requests per {} seconds; retry in {} s.",
            decision.window_secs,
            decision.retry_after_secs()
        ),
    ))
}

/// Extractor: the platform admin token.
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let check = || {
            let platform = platform_of(req)?;
            let Some(expected) = platform.settings().admin_token.as_deref() else {
                return Err(ApiError::forbidden(
                    "The admin API is disabled on this process.",
                ));
            };
            let given = crate::http::bearer_token(req).ok_or_else(|| {
                ApiError::unauthorized("Send the admin token as `Authorization: Bearer …`.")
            })?;
            // Hash both so the comparison is constant-time whatever the lengths.
            let a = Sha256::digest(given.as_bytes());
            let b = Sha256::digest(expected.as_bytes());
            if bool::from(a.ct_eq(&b)) {
                Ok(AdminAuth)
            } else {
                Err(ApiError::unauthorized("The admin token is invalid."))
            }
        };
        std::future::ready(check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_environment_prefix_and_hash_is_stable() {
        let (dev, m) = new_secret(Environment::Development);
        assert!(dev.starts_with("sk_test_"));
        assert_eq!(dev.len(), "sk_test_".len() + SECRET_LEN);
        assert_eq!(m.hash, hash_secret(&dev));
        assert!(m.hint.ends_with(&dev[dev.len() - 4..]));
        assert!(!m.hint.contains(&dev[8..20]));
        let (live, _) = new_secret(Environment::Production);
        assert!(live.starts_with("sk_live_"));
        assert_ne!(dev, new_secret(Environment::Development).0);
    }

    #[test]
    fn cache_expires_and_clears() {
        let c = KeyCache::new(Duration::from_millis(20));
        c.put(c.generation(), "h".into(), Resolved::Unknown);
        assert!(c.get("h").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get("h").is_none());
        c.put(c.generation(), "h".into(), Resolved::Unknown);
        c.clear();
        assert!(c.get("h").is_none());
    }

    #[test]
    fn a_lookup_that_started_before_a_clear_is_not_cached() {
        let c = KeyCache::new(Duration::from_secs(60));
        let before = c.generation();
        c.clear(); // a revocation commits while the lookup is in flight
        c.put(before, "h".into(), Resolved::Unknown);
        assert!(c.get("h").is_none());
    }
}
