//! Tenancy: tenants, their development and production instances, and the
//! instance secret keys. Event-sourced like everything else (streams
//! `tenant` and `instance` in `tenancy_events`); the tables
//! `tenancy_tenants`, `tenancy_instances` and `tenancy_secret_keys` are its
//! projection, updated in the same transaction as the append.

pub mod admin_api;
pub mod keys;
pub mod usage;

use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Serialize;

pub use keys::{AdminAuth, Authed, InstanceKey, KeyCache};

use crate::context::Platform;
use crate::db::{self, col};
use crate::error::{ApiError, ApiResult};
use crate::eventstore::{AppendError, EventMeta, EventStore, NewEvent, RecordedEvent, Stream};
use crate::ids::{InstanceId, SecretKeyId, TenantId};

pub const STORE: EventStore = EventStore::new("tenancy", "tenancy_events");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "development" => Some(Self::Development),
            "production" => Some(Self::Production),
            _ => None,
        }
    }

    pub fn secret_key_prefix(self) -> &'static str {
        match self {
            Self::Development => "sk_test_",
            Self::Production => "sk_live_",
        }
    }

    fn publishable_key_prefix(self) -> &'static str {
        match self {
            Self::Development => "pk_test_",
            Self::Production => "pk_live_",
        }
    }
}

/// The instance a Backend API request acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub tenant_id: TenantId,
    pub environment: Environment,
    /// Backend API requests per rate-limit window, when overridden.
    pub rate_limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    /// `tenant`
    pub object: &'static str,
    pub id: String,
    pub name: String,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub object: &'static str,
    pub id: String,
    pub tenant_id: String,
    pub environment: Environment,
    pub publishable_key: String,
    pub issuer: String,
    /// The override; `None` means the environment's default.
    pub rate_limit_override: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretKeyView {
    /// `secret_key`
    pub object: &'static str,
    pub id: String,
    pub instance_id: String,
    pub name: String,
    /// Enough of the key to recognise it; never the key.
    pub hint: String,
    pub revoked: bool,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

/// A key as issued: the only time the secret is visible.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub view: SecretKeyView,
    pub secret: String,
}

fn encode<M: Message>(event_type: &'static str, msg: &M) -> NewEvent {
    NewEvent {
        event_type,
        payload: msg.encode_to_vec(),
    }
}

fn meta(tenant_id: &str, instance_id: &str, actor: &str) -> EventMeta {
    EventMeta {
        tenant_id: tenant_id.to_owned(),
        instance_id: instance_id.to_owned(),
        actor: actor.to_owned(),
        trace_id: crate::http::current_trace_id(),
    }
}

fn publishable_key(platform: &Platform, env: Environment, instance_id: &str) -> String {
    use base64::Engine;
    let host = platform
        .settings()
        .public_url
        .split("://")
        .nth(1)
        .unwrap_or("localhost")
        .trim_end_matches('/')
        .to_owned();
    let frontend = format!("{host}/i/{instance_id}$");
    format!(
        "{}{}",
        env.publishable_key_prefix(),
        base64::engine::general_purpose::STANDARD.encode(frontend)
    )
}

fn conflict(err: AppendError) -> ApiError {
    match err {
        AppendError::Conflict { .. } => ApiError::conflict(
            "concurrent_modification",
            "The resource was changed by another request; retry.",
        ),
        AppendError::Db(e) => ApiError::internal(e),
    }
}

/// Appends and projects in the caller's transaction.
async fn record(
    conn: &impl ConnectionTrait,
    platform: &Platform,
    stream_id: &str,
    stream_type: &str,
    expected_version: i64,
    events: &[NewEvent],
    meta: &EventMeta,
) -> ApiResult<Vec<RecordedEvent>> {
    let recorded = STORE
        .append(
            conn,
            Stream {
                id: stream_id,
                kind: stream_type,
                version: expected_version,
            },
            events,
            meta,
            platform.now_ms(),
        )
        .await
        .map_err(conflict)?;
    for ev in &recorded {
        project(conn, ev).await?;
    }
    Ok(recorded)
}

pub struct CreatedTenant {
    pub tenant: TenantView,
    pub instances: Vec<(InstanceView, IssuedKey)>,
}

pub async fn create_tenant(
    platform: &Platform,
    name: &str,
    actor: &str,
) -> ApiResult<CreatedTenant> {
    let tenant_id = TenantId::new();
    let txn = db::begin_write(platform.db()).await?;
    let mut appended = Vec::new();
    let tenant_meta = meta(tenant_id.as_str(), "", actor);
    appended.extend(
        record(
            &txn,
            platform,
            tenant_id.as_str(),
            st::TENANT,
            0,
            &[encode(
                et::TENANT_CREATED,
                &v1::TenantCreated {
                    tenant_id: tenant_id.to_string(),
                    name: name.to_owned(),
                },
            )],
            &tenant_meta,
        )
        .await?,
    );
    let mut instances = Vec::new();
    for env in [Environment::Development, Environment::Production] {
        let instance_id = InstanceId::new();
        let (secret, issued) = keys::new_secret(env);
        let key_id = SecretKeyId::new();
        let pk = publishable_key(platform, env, instance_id.as_str());
        let m = meta(tenant_id.as_str(), instance_id.as_str(), actor);
        appended.extend(
            record(
                &txn,
                platform,
                instance_id.as_str(),
                st::INSTANCE,
                0,
                &[
                    encode(
                        et::INSTANCE_CREATED,
                        &v1::InstanceCreated {
                            instance_id: instance_id.to_string(),
                            tenant_id: tenant_id.to_string(),
                            environment: env.as_str().to_owned(),
                            publishable_key: pk,
                        },
                    ),
                    encode(
                        et::SECRET_KEY_ISSUED,
                        &v1::SecretKeyIssued {
                            key_id: key_id.to_string(),
                            instance_id: instance_id.to_string(),
                            key_hash: issued.hash.clone(),
                            key_hint: issued.hint.clone(),
                            name: "default".to_owned(),
                        },
                    ),
                ],
                &m,
            )
            .await?,
        );
        instances.push((instance_id, key_id, secret));
    }
    let mut out = Vec::new();
    for (instance_id, key_id, secret) in instances {
        let view = get_instance(&txn, platform, instance_id.as_str())
            .await?
            .ok_or_else(|| ApiError::internal("instance missing after create"))?;
        let key = get_key(&txn, instance_id.as_str(), key_id.as_str())
            .await?
            .ok_or_else(|| ApiError::internal("key missing after create"))?;
        out.push((view, IssuedKey { view: key, secret }));
    }
    let tenant = get_tenant(&txn, tenant_id.as_str())
        .await?
        .ok_or_else(|| ApiError::internal("tenant missing after create"))?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &appended);
    Ok(CreatedTenant {
        tenant,
        instances: out,
    })
}

pub async fn disable_tenant(
    platform: &Platform,
    tenant_id: &str,
    actor: &str,
) -> ApiResult<TenantView> {
    let txn = db::begin_write(platform.db()).await?;
    let mut appended = Vec::new();
    let tenant = get_tenant(&txn, tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    if !tenant.disabled {
        let version = stream_version(&txn, tenant_id).await?;
        appended.extend(
            record(
                &txn,
                platform,
                tenant_id,
                st::TENANT,
                version,
                &[encode(
                    et::TENANT_DISABLED,
                    &v1::TenantDisabled {
                        tenant_id: tenant_id.to_owned(),
                    },
                )],
                &meta(tenant_id, "", actor),
            )
            .await?,
        );
    }
    let tenant = get_tenant(&txn, tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &appended);
    platform.keys().clear();
    Ok(tenant)
}

/// Issues a new key for an instance; with `replaces`, revokes that key in the
/// same transaction (rotation).
pub async fn issue_key(
    platform: &Platform,
    instance_id: &str,
    name: &str,
    replaces: Option<&str>,
    actor: &str,
) -> ApiResult<IssuedKey> {
    let txn = db::begin_write(platform.db()).await?;
    let mut appended = Vec::new();
    let instance = load_instance(&txn, instance_id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let tenant = get_tenant(&txn, instance.tenant_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    if tenant.disabled {
        return Err(ApiError::conflict(
            "tenant_disabled",
            "The tenant of this instance is disabled; no keys can be issued.",
        ));
    }
    let mut events = Vec::new();
    if let Some(old) = replaces {
        let key = get_key(&txn, instance_id, old)
            .await?
            .ok_or_else(|| ApiError::not_found("secret key"))?;
        if key.revoked {
            return Err(ApiError::conflict(
                "secret_key_revoked",
                "This key is already revoked; issue a new one instead.",
            ));
        }
        events.push(encode(
            et::SECRET_KEY_REVOKED,
            &v1::SecretKeyRevoked {
                key_id: old.to_owned(),
                instance_id: instance_id.to_owned(),
            },
        ));
    }
    let (secret, issued) = keys::new_secret(instance.environment);
    let key_id = SecretKeyId::new();
    events.push(encode(
        et::SECRET_KEY_ISSUED,
        &v1::SecretKeyIssued {
            key_id: key_id.to_string(),
            instance_id: instance_id.to_owned(),
            key_hash: issued.hash,
            key_hint: issued.hint,
            name: name.to_owned(),
        },
    ));
    let version = stream_version(&txn, instance_id).await?;
    appended.extend(
        record(
            &txn,
            platform,
            instance_id,
            st::INSTANCE,
            version,
            &events,
            &meta(instance.tenant_id.as_str(), instance_id, actor),
        )
        .await?,
    );
    let view = get_key(&txn, instance_id, key_id.as_str())
        .await?
        .ok_or_else(|| ApiError::internal("key missing after issue"))?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &appended);
    if replaces.is_some() {
        platform.keys().clear();
    }
    Ok(IssuedKey { view, secret })
}

pub async fn revoke_key(
    platform: &Platform,
    instance_id: &str,
    key_id: &str,
    actor: &str,
) -> ApiResult<SecretKeyView> {
    let txn = db::begin_write(platform.db()).await?;
    let mut appended = Vec::new();
    let instance = load_instance(&txn, instance_id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let key = get_key(&txn, instance_id, key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("secret key"))?;
    if !key.revoked {
        let version = stream_version(&txn, instance_id).await?;
        appended.extend(
            record(
                &txn,
                platform,
                instance_id,
                st::INSTANCE,
                version,
                &[encode(
                    et::SECRET_KEY_REVOKED,
                    &v1::SecretKeyRevoked {
                        key_id: key_id.to_owned(),
                        instance_id: instance_id.to_owned(),
                    },
                )],
                &meta(instance.tenant_id.as_str(), instance_id, actor),
            )
            .await?,
        );
    }
    let key = get_key(&txn, instance_id, key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("secret key"))?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &appended);
    platform.keys().clear();
    Ok(key)
}

/// Sets (or with `None` clears) an instance's rate-limit override.
pub async fn set_rate_limit(
    platform: &Platform,
    instance_id: &str,
    limit: Option<u32>,
    actor: &str,
) -> ApiResult<InstanceView> {
    let txn = db::begin_write(platform.db()).await?;
    let mut appended = Vec::new();
    let instance = load_instance(&txn, instance_id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    if instance.rate_limit != limit {
        let version = stream_version(&txn, instance_id).await?;
        appended.extend(
            record(
                &txn,
                platform,
                instance_id,
                st::INSTANCE,
                version,
                &[encode(
                    et::RATE_LIMIT_SET,
                    &v1::RateLimitSet {
                        instance_id: instance_id.to_owned(),
                        limit,
                    },
                )],
                &meta(instance.tenant_id.as_str(), instance_id, actor),
            )
            .await?,
        );
    }
    let view = get_instance(&txn, platform, instance_id)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &appended);
    platform.keys().clear();
    Ok(view)
}

async fn stream_version(conn: &impl ConnectionTrait, stream_id: &str) -> Result<i64, DbErr> {
    let sql = format!(
        "SELECT COALESCE(MAX(stream_version), 0) AS v FROM {} WHERE stream_id = $1",
        STORE.table()
    );
    match db::query_one(conn, &sql, vec![stream_id.into()]).await? {
        Some(r) => col(&r, "v"),
        None => Ok(0),
    }
}

/// Applies one tenancy event to the projection tables.
pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    let at = ev.recorded_at_ms;
    match ev.event_type.as_str() {
        et::TENANT_CREATED => {
            let m = v1::TenantCreated::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO tenancy_tenants (id, name, disabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)",
                vec![m.tenant_id.into(), m.name.into(), false.into(), at.into()],
            )
            .await?;
        }
        et::TENANT_DISABLED => {
            let m = v1::TenantDisabled::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "UPDATE tenancy_tenants SET disabled = $2, updated_at = $3 WHERE id = $1",
                vec![m.tenant_id.into(), true.into(), at.into()],
            )
            .await?;
        }
        et::INSTANCE_CREATED => {
            let m = v1::InstanceCreated::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO tenancy_instances (id, tenant_id, environment, publishable_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                vec![
                    m.instance_id.into(),
                    m.tenant_id.into(),
                    m.environment.into(),
                    m.publishable_key.into(),
                    at.into(),
                ],
            )
            .await?;
        }
        et::SECRET_KEY_ISSUED => {
            let m = v1::SecretKeyIssued::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO tenancy_secret_keys (id, instance_id, key_hash, key_hint, name, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    m.key_id.into(),
                    m.instance_id.into(),
                    m.key_hash.into(),
                    m.key_hint.into(),
                    m.name.into(),
                    at.into(),
                ],
            )
            .await?;
        }
        et::SECRET_KEY_REVOKED => {
            let m = v1::SecretKeyRevoked::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "UPDATE tenancy_secret_keys SET revoked_at = $3 \
                 WHERE id = $1 AND instance_id = $2 AND revoked_at IS NULL",
                vec![m.key_id.into(), m.instance_id.into(), at.into()],
            )
            .await?;
        }
        et::RATE_LIMIT_SET => {
            let m = v1::RateLimitSet::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "UPDATE tenancy_instances SET rate_limit = $2 WHERE id = $1",
                vec![m.instance_id.into(), m.limit.map(i64::from).into()],
            )
            .await?;
        }
        other => {
            tracing::warn!(
                event_type = other,
                "unknown tenancy event ignored by projection"
            );
        }
    }
    Ok(())
}

/// Drops the tenancy projection and folds every tenancy event again.
pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &[
                "tenancy_secret_keys",
                "tenancy_instances",
                "tenancy_tenants",
            ],
            None,
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

// ----------------------------------------------------------------- reads ----

fn tenant_from_row(r: &sea_orm::QueryResult) -> Result<TenantView, DbErr> {
    Ok(TenantView {
        object: "tenant",
        id: col(r, "id")?,
        name: col(r, "name")?,
        disabled: col(r, "disabled")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

pub async fn get_tenant(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<TenantView>, DbErr> {
    db::query_one(
        conn,
        "SELECT id, name, disabled, created_at, updated_at FROM tenancy_tenants WHERE id = $1",
        vec![id.into()],
    )
    .await?
    .map(|r| tenant_from_row(&r))
    .transpose()
}

pub async fn list_tenants(
    conn: &impl ConnectionTrait,
    limit: u64,
    offset: u64,
) -> Result<(Vec<TenantView>, i64), DbErr> {
    let rows = db::query_all(
        conn,
        "SELECT id, name, disabled, created_at, updated_at FROM tenancy_tenants \
         ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
        vec![(limit as i64).into(), (offset as i64).into()],
    )
    .await?;
    let total =
        match db::query_one(conn, "SELECT COUNT(*) AS n FROM tenancy_tenants", vec![]).await? {
            Some(r) => col(&r, "n")?,
            None => 0,
        };
    Ok((
        rows.iter().map(tenant_from_row).collect::<Result<_, _>>()?,
        total,
    ))
}

fn instance_from_row(r: &sea_orm::QueryResult, platform: &Platform) -> Result<InstanceView, DbErr> {
    let id: String = col(r, "id")?;
    let env: String = col(r, "environment")?;
    Ok(InstanceView {
        object: "instance",
        issuer: platform.issuer(&id),
        id,
        tenant_id: col(r, "tenant_id")?,
        environment: Environment::parse(&env)
            .ok_or_else(|| DbErr::Custom(format!("unknown environment {env}")))?,
        publishable_key: col(r, "publishable_key")?,
        rate_limit_override: col(r, "rate_limit")?,
        created_at: col(r, "created_at")?,
    })
}

const INSTANCE_COLUMNS: &str =
    "id, tenant_id, environment, publishable_key, rate_limit, created_at";

pub async fn get_instance(
    conn: &impl ConnectionTrait,
    platform: &Platform,
    id: &str,
) -> Result<Option<InstanceView>, DbErr> {
    db::query_one(
        conn,
        &format!("SELECT {INSTANCE_COLUMNS} FROM tenancy_instances WHERE id = $1"),
        vec![id.into()],
    )
    .await?
    .map(|r| instance_from_row(&r, platform))
    .transpose()
}

pub async fn tenant_instances(
    conn: &impl ConnectionTrait,
    platform: &Platform,
    tenant_id: &str,
) -> Result<Vec<InstanceView>, DbErr> {
    db::query_all(
        conn,
        &format!(
            "SELECT {INSTANCE_COLUMNS} FROM tenancy_instances WHERE tenant_id = $1 ORDER BY environment"
        ),
        vec![tenant_id.into()],
    )
    .await?
    .iter()
    .map(|r| instance_from_row(r, platform))
    .collect()
}

/// The instance with this id, if it exists and its tenant is not disabled.
/// [`active_instance`] through the process's key cache: as fresh as a
/// resolved secret key (`--key-cache-seconds`), cleared at once when this
/// process disables a tenant.
pub async fn active_instance_cached(
    platform: &Platform,
    id: &str,
) -> Result<Option<Instance>, DbErr> {
    if let Some(hit) = platform.keys().instance(id) {
        return Ok(hit);
    }
    let generation = platform.keys().instance_generation();
    let found = active_instance(platform.db(), id).await?;
    platform.keys().put_instance(generation, id, found.clone());
    Ok(found)
}

pub async fn active_instance(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<Instance>, DbErr> {
    let Some(instance) = load_instance(conn, id).await? else {
        return Ok(None);
    };
    let active = get_tenant(conn, instance.tenant_id.as_str())
        .await?
        .is_some_and(|t| !t.disabled);
    Ok(active.then_some(instance))
}

async fn load_instance(conn: &impl ConnectionTrait, id: &str) -> Result<Option<Instance>, DbErr> {
    let Some(r) = db::query_one(
        conn,
        "SELECT id, tenant_id, environment, rate_limit FROM tenancy_instances WHERE id = $1",
        vec![id.into()],
    )
    .await?
    else {
        return Ok(None);
    };
    let env: String = col(&r, "environment")?;
    Ok(Some(Instance {
        id: InstanceId::from_trusted(col(&r, "id")?),
        tenant_id: TenantId::from_trusted(col(&r, "tenant_id")?),
        environment: Environment::parse(&env)
            .ok_or_else(|| DbErr::Custom(format!("unknown environment {env}")))?,
        rate_limit: col::<Option<i64>>(&r, "rate_limit")?.and_then(|l| u32::try_from(l).ok()),
    }))
}

fn key_from_row(r: &sea_orm::QueryResult) -> Result<SecretKeyView, DbErr> {
    let revoked_at: Option<i64> = col(r, "revoked_at")?;
    Ok(SecretKeyView {
        object: "secret_key",
        id: col(r, "id")?,
        instance_id: col(r, "instance_id")?,
        name: col(r, "name")?,
        hint: col(r, "key_hint")?,
        revoked: revoked_at.is_some(),
        revoked_at,
        created_at: col(r, "created_at")?,
    })
}

const KEY_COLUMNS: &str = "id, instance_id, name, key_hint, revoked_at, created_at";

pub async fn get_key(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    key_id: &str,
) -> Result<Option<SecretKeyView>, DbErr> {
    db::query_one(
        conn,
        &format!(
            "SELECT {KEY_COLUMNS} FROM tenancy_secret_keys WHERE id = $1 AND instance_id = $2"
        ),
        vec![key_id.into(), instance_id.into()],
    )
    .await?
    .map(|r| key_from_row(&r))
    .transpose()
}

pub async fn list_keys(
    conn: &impl ConnectionTrait,
    instance_id: &str,
) -> Result<Vec<SecretKeyView>, DbErr> {
    db::query_all(
        conn,
        &format!(
            "SELECT {KEY_COLUMNS} FROM tenancy_secret_keys WHERE instance_id = $1 ORDER BY created_at, id"
        ),
        vec![instance_id.into()],
    )
    .await?
    .iter()
    .map(key_from_row)
    .collect()
}
