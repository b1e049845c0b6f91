//! Token families: the event-sourced write model of the token service.
//!
//! A family is the line of tokens descending from one authorization code
//! (its id is the code's id, so a second redemption finds the stream taken:
//! that is single use) or from one client_credentials issuance. Refresh
//! tokens rotate inside it; reuse of a spent one, or a replayed code,
//! revokes the whole family. The projections `tokens_families`,
//! `tokens_access_tokens`, `tokens_refresh_tokens` are written in the
//! append's transaction, so once a revoke call has returned every replica
//! reading the database sees the tokens inactive; revocations also go to
//! the Redis revocation set (`revocations`) before that transaction
//! commits, which is what verification asks first.

use std::collections::HashMap;

use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::{
    AppendError, EventMeta, EventStore, NewEvent, RecordedEvent, Stream,
};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, Envelope, IssuedToken};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr};

pub const STORE: EventStore = EventStore::new("tokens", "tokens_events");

pub fn stream_id(family_id: &str) -> String {
    format!("token_family:{family_id}")
}

pub use gatehouse_platform::eventstore::event;

/// A family as folded from its events.
#[derive(Debug, Default)]
pub struct Family {
    pub version: i64,
    pub revoked: bool,
    /// The first token: client, user, scope and audience of the family.
    pub origin: Option<IssuedToken>,
    /// Refresh token hash → (spent, expires at).
    pub refresh: HashMap<String, (bool, i64)>,
}

pub fn fold(events: &[RecordedEvent]) -> Family {
    let mut f = Family::default();
    for ev in events {
        f.version = ev.stream_version;
        let p = ev.payload.as_slice();
        let token = match ev.event_type.as_str() {
            et::TOKEN_ISSUED => v1::TokenIssued::decode(p).ok().and_then(|m| m.token),
            et::TOKEN_REFRESHED => v1::TokenRefreshed::decode(p).ok().and_then(|m| {
                if let Some(r) = f.refresh.get_mut(&m.used_refresh_token_hash) {
                    r.0 = true;
                }
                m.token
            }),
            et::TOKEN_FAMILY_REVOKED => {
                f.revoked = true;
                None
            }
            _ => None,
        };
        if let Some(t) = token {
            if !t.refresh_token_hash.is_empty() {
                f.refresh.insert(
                    t.refresh_token_hash.clone(),
                    (false, t.refresh_expires_at_ms),
                );
            }
            if f.origin.is_none() {
                f.origin = Some(t);
            }
        }
    }
    f
}

/// Appends to a family and projects, inside `txn`.
pub async fn append(
    txn: &DatabaseTransaction,
    family_id: &str,
    version: i64,
    events: &[NewEvent],
    meta: &EventMeta,
    now_ms: i64,
) -> Result<Vec<RecordedEvent>, AppendError> {
    let id = stream_id(family_id);
    let recorded = STORE
        .append(
            txn,
            Stream {
                id: &id,
                kind: st::TOKEN_FAMILY,
                version,
            },
            events,
            meta,
            now_ms,
        )
        .await?;
    for ev in &recorded {
        project(txn, ev).await?;
    }
    Ok(recorded)
}

pub fn revoked_event(origin: &IssuedToken, reason: &str) -> NewEvent {
    event(
        et::TOKEN_FAMILY_REVOKED,
        &v1::TokenFamilyRevoked {
            family_id: origin.family_id.clone(),
            client_id: origin.client_id.clone(),
            user_id: origin.user_id.clone(),
            reason: reason.to_owned(),
        },
    )
}

const FAMILIES: &str = "tokens_families (id, instance_id, client_id, user_id, created_at)";
const ACCESS_TOKENS: &str = "tokens_access_tokens (jti, instance_id, family_id, client_id, subject, \
     user_id, scope, audience, created_at, expires_at, token_hash)";
const REFRESH_TOKENS: &str = "tokens_refresh_tokens (token_hash, instance_id, family_id, \
     access_token_id, client_id, created_at, expires_at)";

/// The rows a token adds, appended to `access` and (when it has a refresh
/// token) `refresh`.
fn token_rows(
    instance_id: &str,
    t: &IssuedToken,
    now_ms: i64,
    access: &mut Vec<Vec<sea_orm::Value>>,
    refresh: &mut Vec<Vec<sea_orm::Value>>,
) {
    access.push(vec![
        t.token_id.clone().into(),
        instance_id.into(),
        t.family_id.clone().into(),
        t.client_id.clone().into(),
        t.subject.clone().into(),
        t.user_id.clone().into(),
        t.scope.clone().into(),
        t.audience.clone().into(),
        now_ms.into(),
        t.expires_at_ms.into(),
        // JWTs have no hash: NULL keeps them out of the unique index.
        Some(t.access_token_hash.clone())
            .filter(|h| !h.is_empty())
            .into(),
    ]);
    if !t.refresh_token_hash.is_empty() {
        refresh.push(vec![
            t.refresh_token_hash.clone().into(),
            instance_id.into(),
            t.family_id.clone().into(),
            t.token_id.clone().into(),
            t.client_id.clone().into(),
            now_ms.into(),
            t.refresh_expires_at_ms.into(),
        ]);
    }
}

fn family_row(instance_id: &str, t: &IssuedToken, at: i64) -> Vec<sea_orm::Value> {
    vec![
        t.family_id.clone().into(),
        instance_id.into(),
        t.client_id.clone().into(),
        t.user_id.clone().into(),
        at.into(),
    ]
}

async fn insert_token(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    t: &IssuedToken,
    now_ms: i64,
) -> Result<(), DbErr> {
    let (mut access, mut refresh) = (Vec::new(), Vec::new());
    token_rows(instance_id, t, now_ms, &mut access, &mut refresh);
    db::insert_rows(conn, ACCESS_TOKENS, access).await?;
    db::insert_rows(conn, REFRESH_TOKENS, refresh).await?;
    Ok(())
}

fn issued_token(ev: &RecordedEvent) -> Result<IssuedToken, DbErr> {
    v1::TokenIssued::decode(ev.payload.as_slice())
        .map_err(|e| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type)))?
        .token
        .ok_or_else(|| DbErr::Custom("token.issued without a token".into()))
}

/// [`project`] for many `token.issued` events (families just started), with
/// one INSERT per table: what a group commit writes.
pub async fn project_started(
    conn: &impl ConnectionTrait,
    recorded: &[RecordedEvent],
) -> Result<(), DbErr> {
    let (mut families, mut access, mut refresh) = (Vec::new(), Vec::new(), Vec::new());
    for ev in recorded {
        if ev.event_type != et::TOKEN_ISSUED {
            return Err(DbErr::Custom(format!(
                "a family starts with token.issued, not {}",
                ev.event_type
            )));
        }
        let t = issued_token(ev)?;
        let instance = ev.meta.instance_id.as_str();
        families.push(family_row(instance, &t, ev.recorded_at_ms));
        token_rows(instance, &t, ev.recorded_at_ms, &mut access, &mut refresh);
    }
    db::insert_rows(conn, FAMILIES, families).await?;
    db::insert_rows(conn, ACCESS_TOKENS, access).await?;
    db::insert_rows(conn, REFRESH_TOKENS, refresh).await?;
    Ok(())
}

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    let instance = ev.meta.instance_id.as_str();
    let at = ev.recorded_at_ms;
    match ev.event_type.as_str() {
        et::TOKEN_ISSUED => {
            let t = issued_token(ev)?;
            db::insert_rows(conn, FAMILIES, vec![family_row(instance, &t, at)]).await?;
            insert_token(conn, instance, &t, at).await?;
        }
        et::TOKEN_REFRESHED => {
            let m = v1::TokenRefreshed::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "UPDATE tokens_refresh_tokens SET used_at = $2 WHERE token_hash = $1",
                vec![m.used_refresh_token_hash.into(), at.into()],
            )
            .await?;
            if let Some(t) = m.token {
                insert_token(conn, instance, &t, at).await?;
            }
        }
        et::TOKEN_FAMILY_REVOKED => {
            let m = v1::TokenFamilyRevoked::decode(ev.payload.as_slice()).map_err(bad)?;
            let values = || {
                vec![
                    m.family_id.clone().into(),
                    at.into(),
                    m.reason.clone().into(),
                ]
            };
            db::exec(
                conn,
                "UPDATE tokens_families SET revoked_at = $2, revocation_reason = $3 \
                 WHERE id = $1 AND revoked_at IS NULL",
                values(),
            )
            .await?;
            db::exec(
                conn,
                "UPDATE tokens_access_tokens SET revoked_at = $2, revocation_reason = $3 \
                 WHERE family_id = $1 AND revoked_at IS NULL",
                values(),
            )
            .await?;
            db::exec(
                conn,
                "UPDATE tokens_refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                vec![m.family_id.into(), at.into()],
            )
            .await?;
        }
        other => tracing::warn!(event_type = other, "unknown token event ignored"),
    }
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &[
                "tokens_refresh_tokens",
                "tokens_access_tokens",
                "tokens_families",
            ],
            Some(st::TOKEN_FAMILY),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

/// The ids of the families not revoked of a client, of a user, or of a user
/// with one client, in an instance (none when neither is given).
pub async fn standing(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    client_id: Option<&str>,
    user_id: Option<&str>,
) -> Result<Vec<String>, DbErr> {
    if client_id.is_none() && user_id.is_none() {
        return Ok(Vec::new());
    }
    let mut sql =
        "SELECT id FROM tokens_families WHERE instance_id = $1 AND revoked_at IS NULL".to_owned();
    let mut values: Vec<sea_orm::Value> = vec![instance_id.into()];
    for (column, value) in [("client_id", client_id), ("user_id", user_id)] {
        if let Some(v) = value {
            values.push(v.into());
            sql.push_str(&format!(" AND {column} = ${}", values.len()));
        }
    }
    db::query_all(conn, &sql, values)
        .await?
        .iter()
        .map(|r| col(r, "id"))
        .collect()
}

/// Revokes the standing families of a client, of a user, or of a user with
/// one client; used by the consumers when a grant is revoked, a client
/// deleted, or a user deleted or banned, inside their transaction.
pub async fn revoke_matching(
    txn: &DatabaseTransaction,
    cause: &Envelope,
    client_id: Option<&str>,
    user_id: Option<&str>,
    reason: &str,
) -> Result<u64, DbErr> {
    let ids = standing(txn, &cause.instance_id, client_id, user_id).await?;
    let meta = EventMeta {
        tenant_id: cause.tenant_id.clone(),
        instance_id: cause.instance_id.clone(),
        actor: format!("event:{}", cause.event_id),
        trace_id: String::new(),
    };
    let mut revoked = Vec::new();
    for id in ids {
        let family = fold(&STORE.load_stream(txn, &stream_id(&id)).await?);
        let (Some(origin), false) = (family.origin, family.revoked) else {
            continue;
        };
        // The consumer's transaction holds; a concurrent append makes it
        // fail and the whole event is retried.
        let recorded = append(
            txn,
            &id,
            family.version,
            &[revoked_event(&origin, reason)],
            &meta,
            cause.occurred_at_ms,
        )
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
        revoked.extend(revocations(&recorded));
    }
    // Into the revocation set before the consumer's transaction commits.
    crate::revocations::get().record(&revoked).await;
    Ok(revoked.len() as u64)
}

/// The revocations among recorded events, as the revocation set keeps
/// them: (family, revoked at, reason), the time being the one the
/// projection stores.
pub fn revocations(recorded: &[RecordedEvent]) -> Vec<(String, i64, String)> {
    recorded
        .iter()
        .filter(|ev| ev.event_type == et::TOKEN_FAMILY_REVOKED)
        .filter_map(|ev| {
            v1::TokenFamilyRevoked::decode(ev.payload.as_slice())
                .ok()
                .map(|m| (m.family_id, ev.recorded_at_ms, m.reason))
        })
        .collect()
}

/// A token's record: what verification answers besides the signature.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub jti: String,
    pub instance_id: String,
    pub family_id: String,
    pub client_id: String,
    pub subject: String,
    pub user_id: String,
    pub scope: String,
    pub audience: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub revocation_reason: Option<String>,
}

pub async fn access_token(
    conn: &impl ConnectionTrait,
    jti: &str,
) -> Result<Option<TokenRecord>, DbErr> {
    access_token_where(conn, "jti", jti).await
}

/// An opaque access token's record, by the SHA-256 (hex) of the token.
pub async fn opaque_access_token(
    conn: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<TokenRecord>, DbErr> {
    access_token_where(conn, "token_hash", hash).await
}

async fn access_token_where(
    conn: &impl ConnectionTrait,
    column: &'static str,
    value: &str,
) -> Result<Option<TokenRecord>, DbErr> {
    db::query_one(
        conn,
        &format!(
            "SELECT jti, instance_id, family_id, client_id, subject, user_id, scope, audience, \
             created_at, expires_at, revoked_at, revocation_reason FROM tokens_access_tokens \
             WHERE {column} = $1"
        ),
        vec![value.into()],
    )
    .await?
    .map(|r| {
        Ok(TokenRecord {
            jti: col(&r, "jti")?,
            instance_id: col(&r, "instance_id")?,
            family_id: col(&r, "family_id")?,
            client_id: col(&r, "client_id")?,
            subject: col(&r, "subject")?,
            user_id: col(&r, "user_id")?,
            scope: col(&r, "scope")?,
            audience: col(&r, "audience")?,
            created_at_ms: col(&r, "created_at")?,
            expires_at_ms: col(&r, "expires_at")?,
            revoked_at_ms: col(&r, "revoked_at")?,
            revocation_reason: col(&r, "revocation_reason")?,
        })
    })
    .transpose()
}

/// A refresh token's family, client and state by the token's hash.
pub struct RefreshRecord {
    pub instance_id: String,
    pub family_id: String,
    pub client_id: String,
    pub access_token_id: String,
    pub expires_at_ms: i64,
    pub used: bool,
    pub revoked: bool,
}

pub async fn refresh_token(
    conn: &impl ConnectionTrait,
    hash: &str,
) -> Result<Option<RefreshRecord>, DbErr> {
    db::query_one(
        conn,
        "SELECT instance_id, family_id, client_id, access_token_id, expires_at, used_at, revoked_at \
         FROM tokens_refresh_tokens WHERE token_hash = $1",
        vec![hash.into()],
    )
    .await?
    .map(|r| {
        Ok(RefreshRecord {
            instance_id: col(&r, "instance_id")?,
            family_id: col(&r, "family_id")?,
            client_id: col(&r, "client_id")?,
            access_token_id: col(&r, "access_token_id")?,
            expires_at_ms: col(&r, "expires_at")?,
            used: col::<Option<i64>>(&r, "used_at")?.is_some(),
            revoked: col::<Option<i64>>(&r, "revoked_at")?.is_some(),
        })
    })
    .transpose()
}

/// Appends `events` to a family in `txn` and commits. `Ok(false)` when
/// another request appended first: the caller reloads and decides again
/// (after a pause that grows with `attempt`).
pub async fn commit(
    platform: &gatehouse_platform::Platform,
    txn: DatabaseTransaction,
    family_id: &str,
    version: i64,
    events: &[NewEvent],
    meta: &EventMeta,
    attempt: u32,
) -> Result<bool, DbErr> {
    match append(&txn, family_id, version, events, meta, platform.now_ms()).await {
        Ok(recorded) => {
            crate::revocations::get()
                .record(&revocations(&recorded))
                .await;
            txn.commit().await?;
            platform.events_committed(STORE.table(), &recorded);
            Ok(true)
        }
        Err(AppendError::Conflict { .. }) => {
            drop(txn);
            gatehouse_platform::eventstore::pause_after_conflict(attempt).await;
            Ok(false)
        }
        Err(AppendError::Db(e)) => Err(e),
    }
}
