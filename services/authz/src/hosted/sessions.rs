//! Sessions of the hosted pages: a random token in an HttpOnly cookie, its
//! SHA-256 in `authz_sessions`, every start and end an event on the
//! `session` stream (analytics counts sign-ins from `session.created`).

use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::{RecordedEvent, Stream};
use gatehouse_platform::ids::SessionId;
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::oauth_apps::hash_secret;
use crate::users::{STORE, event};

pub const TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

fn meta(actor: &Authed) -> gatehouse_platform::eventstore::EventMeta {
    gatehouse_platform::eventstore::EventMeta {
        tenant_id: actor.instance.tenant_id.to_string(),
        instance_id: actor.instance.id.to_string(),
        actor: actor.actor(),
        trace_id: gatehouse_platform::http::current_trace_id(),
    }
}

/// Starts a session; returns the token for the cookie.
pub async fn start(
    platform: &Platform,
    actor: &Authed,
    user_id: &str,
    method: &str,
) -> ApiResult<String> {
    let token = gatehouse_platform::ids::random_base62(43);
    let id = SessionId::new();
    let now = platform.now_ms();
    let ev = event(
        et::SESSION_CREATED,
        &v1::SessionCreated {
            session_id: id.to_string(),
            user_id: user_id.to_owned(),
            method: method.to_owned(),
            expires_at_ms: now + TTL_MS,
            token_hash: hash_secret(&token),
        },
    );
    let txn = db::begin_write(platform.db()).await?;
    let recorded = STORE
        .append(
            &txn,
            Stream {
                id: id.as_str(),
                kind: st::SESSION,
                version: 0,
            },
            &[ev],
            &meta(actor),
            now,
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for r in &recorded {
        project(&txn, r).await?;
    }
    txn.commit().await?;
    platform.events_committed(STORE.table(), &recorded);
    Ok(token)
}

/// The live session of a cookie token: (session id, user id).
pub async fn current(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    token: &str,
    now: i64,
) -> Result<Option<(String, String)>, DbErr> {
    Ok(current_since(conn, instance_id, token, now)
        .await?
        .map(|(id, user, _)| (id, user)))
}

/// [`current`] with when the session began: when its user last signed in
/// (OpenID Connect's `auth_time`).
pub async fn current_since(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    token: &str,
    now: i64,
) -> Result<Option<(String, String, i64)>, DbErr> {
    if token.is_empty() || token.len() > 100 {
        return Ok(None);
    }
    db::query_one(
        conn,
        "SELECT id, user_id, created_at FROM authz_sessions WHERE token_hash = $1 \
         AND instance_id = $2 AND ended_at IS NULL AND expires_at > $3",
        vec![hash_secret(token).into(), instance_id.into(), now.into()],
    )
    .await?
    .map(|r| Ok((col(&r, "id")?, col(&r, "user_id")?, col(&r, "created_at")?)))
    .transpose()
}

pub async fn end(
    platform: &Platform,
    actor: &Authed,
    session_id: &str,
    user_id: &str,
    reason: &str,
) -> ApiResult<()> {
    let txn = db::begin_write(platform.db()).await?;
    let version = STORE
        .load_stream(&txn, session_id)
        .await?
        .last()
        .map_or(0, |e| e.stream_version);
    if version == 0 {
        return Ok(());
    }
    let ev = event(
        et::SESSION_ENDED,
        &v1::SessionEnded {
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            reason: reason.to_owned(),
        },
    );
    match STORE
        .append(
            &txn,
            Stream {
                id: session_id,
                kind: st::SESSION,
                version,
            },
            &[ev],
            &meta(actor),
            platform.now_ms(),
        )
        .await
    {
        Ok(recorded) => {
            for r in &recorded {
                project(&txn, r).await?;
            }
            txn.commit().await?;
            platform.events_committed(STORE.table(), &recorded);
            Ok(())
        }
        // Ended concurrently (two sign-outs): the session is over either way.
        Err(gatehouse_platform::eventstore::AppendError::Conflict { .. }) => Ok(()),
        Err(gatehouse_platform::eventstore::AppendError::Db(e)) => Err(e.into()),
    }
}

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    match ev.event_type.as_str() {
        et::SESSION_CREATED => {
            let m = v1::SessionCreated::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO authz_sessions (id, instance_id, user_id, token_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    m.session_id.into(),
                    ev.meta.instance_id.clone().into(),
                    m.user_id.into(),
                    m.token_hash.into(),
                    ev.recorded_at_ms.into(),
                    m.expires_at_ms.into(),
                ],
            )
            .await?;
        }
        et::SESSION_ENDED => {
            let m = v1::SessionEnded::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "UPDATE authz_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL",
                vec![m.session_id.into(), ev.recorded_at_ms.into()],
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(db, &["authz_sessions"], Some(st::SESSION), |txn, ev| {
            Box::pin(project(txn, ev))
        })
        .await
}
