//! Grants: what a user let an OAuth application do. One stream per user ×
//! application (`oauth_grant:<user>:<application>`); `authz_oauth_grants`
//! is its projection. A grant covering the requested scopes skips the
//! consent screen; revoking it is an event the token service acts on.

use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::{Attempt, NewEvent, RecordedEvent, Stream, until_won};
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::users::{STORE, event};

fn stream_id(user_id: &str, application_id: &str) -> String {
    format!("oauth_grant:{user_id}:{application_id}")
}

/// Scopes currently granted by a stream's events (empty when revoked).
fn fold(events: &[RecordedEvent]) -> Vec<String> {
    let mut scopes = Vec::new();
    for ev in events {
        match ev.event_type.as_str() {
            et::OAUTH_GRANT_ACCEPTED => {
                if let Ok(m) = v1::OAuthGrantAccepted::decode(ev.payload.as_slice()) {
                    scopes = m
                        .scopes
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
            }
            et::OAUTH_GRANT_REVOKED => scopes.clear(),
            _ => {}
        }
    }
    scopes
}

/// Appends what `decide` returns for the stream's events, retrying from a
/// fresh load when another request appended first.
async fn command<D>(platform: &Platform, actor: &Authed, stream: &str, decide: D) -> ApiResult<bool>
where
    D: Fn(&[RecordedEvent]) -> Option<NewEvent>,
{
    until_won::<bool, ApiError, _, _>(|| async {
        let txn = db::begin_write(platform.db()).await?;
        let events = STORE.load_stream(&txn, stream).await?;
        let Some(new) = decide(&events) else {
            return Ok(Attempt::Done(false));
        };
        let version = events.last().map_or(0, |e| e.stream_version);
        let appended = STORE
            .append(
                &txn,
                Stream {
                    id: stream,
                    kind: st::OAUTH_GRANT,
                    version,
                },
                std::slice::from_ref(&new),
                &actor.event_meta(),
                platform.now_ms(),
            )
            .await;
        match appended {
            Ok(recorded) => {
                for r in &recorded {
                    project(&txn, r).await?;
                }
                txn.commit().await?;
                platform.events_committed(STORE.table(), &recorded);
                Ok(Attempt::Done(true))
            }
            Err(e) => e.lost(),
        }
    })
    .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "concurrent_modification",
            "The grant was changed by other requests at the same time; retry.",
        )
    })
}

/// Records that `user_id` granted `scopes` to `app` (added to what it had).
/// Nothing is written when the grant already covers them.
pub async fn accept(
    platform: &Platform,
    actor: &Authed,
    user_id: &str,
    app: &AppState,
    scopes: &[String],
    consented: bool,
) -> ApiResult<()> {
    let stream = stream_id(user_id, &app.application_id);
    command(platform, actor, &stream, |events| {
        let mut granted = fold(events);
        if scopes.iter().all(|s| granted.contains(s)) {
            return None;
        }
        for s in scopes {
            if !granted.contains(s) {
                granted.push(s.clone());
            }
        }
        Some(event(
            et::OAUTH_GRANT_ACCEPTED,
            &v1::OAuthGrantAccepted {
                user_id: user_id.to_owned(),
                application_id: app.application_id.clone(),
                client_id: app.client_id.clone(),
                scopes: granted.join(" "),
                consented,
                client_name: app.name.clone(),
                client_logo_url: app.client_image_url.clone(),
            },
        ))
    })
    .await
    .map(|_| ())
}

/// Takes a grant back; `false` when there was none standing.
pub async fn revoke(
    platform: &Platform,
    actor: &Authed,
    user_id: &str,
    application_id: &str,
    reason: &str,
) -> ApiResult<bool> {
    let Some(grant) = get(
        platform.db(),
        actor.instance.id.as_str(),
        user_id,
        application_id,
    )
    .await?
    else {
        return Ok(false);
    };
    let stream = stream_id(user_id, application_id);
    command(platform, actor, &stream, |events| {
        (!fold(events).is_empty()).then(|| {
            event(
                et::OAUTH_GRANT_REVOKED,
                &v1::OAuthGrantRevoked {
                    user_id: user_id.to_owned(),
                    application_id: application_id.to_owned(),
                    client_id: grant.client_id.clone(),
                    reason: reason.to_owned(),
                },
            )
        })
    })
    .await
}

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    match ev.event_type.as_str() {
        et::OAUTH_GRANT_ACCEPTED => {
            let m = v1::OAuthGrantAccepted::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO authz_oauth_grants (user_id, application_id, instance_id, client_id, \
                 scopes, consented, created_at, updated_at, client_name, client_logo_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) \
                 ON CONFLICT (user_id, application_id) DO UPDATE SET scopes = $5, \
                 consented = $6, updated_at = $7, client_name = $8, client_logo_url = $9",
                vec![
                    m.user_id.into(),
                    m.application_id.into(),
                    ev.meta.instance_id.clone().into(),
                    m.client_id.into(),
                    m.scopes.into(),
                    m.consented.into(),
                    ev.recorded_at_ms.into(),
                    m.client_name.into(),
                    m.client_logo_url.into(),
                ],
            )
            .await?;
        }
        et::OAUTH_GRANT_REVOKED => {
            let m = v1::OAuthGrantRevoked::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "DELETE FROM authz_oauth_grants WHERE user_id = $1 AND application_id = $2",
                vec![m.user_id.into(), m.application_id.into()],
            )
            .await?;
        }
        other => tracing::warn!(event_type = other, "unknown grant event ignored"),
    }
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["authz_oauth_grants"],
            Some(st::OAUTH_GRANT),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

/// A standing grant, with the application it is for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: String,
    pub application_id: String,
    pub client_id: String,
    pub application_name: String,
    pub client_image_url: Option<String>,
    pub scopes: Vec<String>,
    pub consented: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Registered applications show their current name and logo; other
/// clients (metadata documents) the ones consented to.
const SELECT: &str = "SELECT g.user_id, g.application_id, g.client_id, g.scopes, g.consented, \
    g.created_at, g.updated_at, COALESCE(a.name, g.client_name) AS name, \
    CASE WHEN a.id IS NULL THEN g.client_logo_url ELSE a.client_image_url END AS client_image_url \
    FROM authz_oauth_grants g LEFT JOIN authz_oauth_applications a \
    ON a.id = g.application_id AND a.instance_id = g.instance_id \
    WHERE (a.id IS NOT NULL OR g.client_id LIKE 'https://%') AND";

fn from_row(r: &sea_orm::QueryResult) -> Result<Grant, DbErr> {
    let scopes: String = col(r, "scopes")?;
    Ok(Grant {
        user_id: col(r, "user_id")?,
        application_id: col(r, "application_id")?,
        client_id: col(r, "client_id")?,
        application_name: col(r, "name")?,
        client_image_url: col(r, "client_image_url")?,
        scopes: scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        consented: col(r, "consented")?,
        created_at_ms: col(r, "created_at")?,
        updated_at_ms: col(r, "updated_at")?,
    })
}

pub async fn get(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
    application_id: &str,
) -> Result<Option<Grant>, DbErr> {
    db::query_one(
        conn,
        &format!("{SELECT} g.instance_id = $1 AND g.user_id = $2 AND g.application_id = $3"),
        vec![instance_id.into(), user_id.into(), application_id.into()],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

/// A user's standing grants, newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
) -> Result<Vec<Grant>, DbErr> {
    db::query_all(
        conn,
        &format!(
            "{SELECT} g.instance_id = $1 AND g.user_id = $2 \
             ORDER BY g.updated_at DESC, g.application_id"
        ),
        vec![instance_id.into(), user_id.into()],
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}
