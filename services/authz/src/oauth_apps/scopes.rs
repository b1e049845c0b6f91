//! Scopes an instance's OAuth applications may request: the standard ones
//! and the instance's custom scopes, each with the plain-language description
//! the consent screen shows. Custom scopes are one stream per instance
//! (`oauth_scopes:<instance id>`); `authz_oauth_scopes` is its projection.

use actix_web::{HttpResponse, web};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::{AppendError, EventMeta, RecordedEvent, Stream};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency::Idempotent;
use gatehouse_platform::tenancy::{Authed, InstanceKey};
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr};
use serde::Deserialize;
use serde_json::{Value, json};

use super::event;
use crate::users::STORE;

/// The standard scopes and what the consent screen says about them.
pub const STANDARD: &[(&str, &str)] = &[
    ("openid", "Confirm who you are"),
    ("profile", "See your name and profile"),
    ("email", "See your email address"),
    (
        "offline_access",
        "Stay connected when you are not using the app",
    ),
];

pub fn is_standard(name: &str) -> bool {
    STANDARD.iter().any(|(n, _)| *n == name)
}

fn stream_id(instance_id: &str) -> String {
    format!("oauth_scopes:{instance_id}")
}

/// RFC 6749 §3.3 scope-token characters (no space, quote or backslash), at
/// most 128 of them.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    let instance_id = ev.meta.instance_id.clone();
    match ev.event_type.as_str() {
        et::OAUTH_SCOPE_DEFINED => {
            let m = v1::OAuthScopeDefined::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO authz_oauth_scopes (instance_id, name, description, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (instance_id, name) \
                 DO UPDATE SET description = $3, updated_at = $4",
                vec![instance_id.into(), m.name.into(), m.description.into(), ev.recorded_at_ms.into()],
            )
            .await?;
        }
        et::OAUTH_SCOPE_REMOVED => {
            let m = v1::OAuthScopeRemoved::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "DELETE FROM authz_oauth_scopes WHERE instance_id = $1 AND name = $2",
                vec![instance_id.into(), m.name.into()],
            )
            .await?;
        }
        other => tracing::warn!(event_type = other, "unknown scope event ignored"),
    }
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["authz_oauth_scopes"],
            Some(st::OAUTH_SCOPES),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

/// The instance's custom scopes: (name, description), by name.
pub async fn custom(
    conn: &impl ConnectionTrait,
    instance_id: &str,
) -> Result<Vec<(String, String)>, DbErr> {
    db::query_all(
        conn,
        "SELECT name, description FROM authz_oauth_scopes WHERE instance_id = $1 ORDER BY name",
        vec![instance_id.into()],
    )
    .await?
    .iter()
    .map(|r| Ok((col(r, "name")?, col(r, "description")?)))
    .collect()
}

/// Names of every scope an application of this instance may request.
pub async fn known(conn: &impl ConnectionTrait, instance_id: &str) -> Result<Vec<String>, DbErr> {
    let mut names: Vec<String> = STANDARD.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.extend(custom(conn, instance_id).await?.into_iter().map(|(n, _)| n));
    Ok(names)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/oauth_scopes")
            .service(web::resource("").get(list).post(define))
            .service(web::resource("/{name}").patch(describe).delete(remove)),
    );
}

fn scope_json(name: &str, description: &str, standard: bool) -> Value {
    json!({ "object": "oauth_scope", "name": name, "description": description, "standard": standard })
}

async fn list(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
) -> ApiResult<HttpResponse> {
    let mut data: Vec<Value> = STANDARD
        .iter()
        .map(|(n, d)| scope_json(n, d, true))
        .collect();
    for (n, d) in custom(platform.db(), auth.instance.id.as_str()).await? {
        data.push(scope_json(&n, &d, false));
    }
    let total = data.len();
    Ok(HttpResponse::Ok().json(json!({ "data": data, "total_count": total })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefineBody {
    name: String,
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeBody {
    description: String,
}

fn valid_description(d: &str) -> ApiResult<String> {
    let d = d.trim();
    if d.is_empty() || d.chars().count() > 300 || d.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            "description",
            "`description` must be 1 to 300 printable characters: it is shown to users as is.",
        ));
    }
    Ok(d.to_owned())
}

/// Serializes, per instance, the removal of scopes against the application
/// writes that list them: each takes this lock in its transaction before
/// reading, so a removal never misses an application that is about to list
/// the scope, and an application never lists one that is going (on SQLite
/// the write lock does this already).
pub async fn hold(txn: &DatabaseTransaction, instance_id: &str) -> Result<(), DbErr> {
    if db::is_postgres(txn) {
        db::exec(
            txn,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            vec![format!("authz.oauth_scopes:{instance_id}").into()],
        )
        .await?;
    }
    Ok(())
}

/// Inside an application write's transaction: takes [`hold`], then checks
/// that every scope in `scopes` (space-separated) is still defined.
pub async fn hold_defined(
    txn: &DatabaseTransaction,
    instance_id: &str,
    scopes: &str,
) -> ApiResult<()> {
    hold(txn, instance_id).await?;
    super::validate::scopes(scopes, &known(txn, instance_id).await?).map(|_| ())
}

/// Appends the event `decide` makes of the current custom scopes to the
/// instance's scope stream, reloading on a race. With
/// `removing`, refuses (409) while an application lists that scope, checked
/// under [`hold`] in the same transaction.
async fn record(
    platform: &Platform,
    auth: &Authed,
    removing: Option<&str>,
    decide: impl Fn(&[(String, String)]) -> ApiResult<gatehouse_platform::eventstore::NewEvent>,
) -> ApiResult<()> {
    let instance_id = auth.instance.id.to_string();
    let sid = stream_id(&instance_id);
    for attempt in 0..gatehouse_platform::eventstore::MAX_ATTEMPTS {
        let txn = db::begin_write(platform.db()).await?;
        hold(&txn, &instance_id).await?;
        if let Some(name) = removing {
            let in_use = super::projection::apps_using_scope(&txn, &instance_id, name).await?;
            if in_use > 0 {
                return Err(ApiError::conflict(
                    "scope_in_use",
                    format!(
                        "{in_use} OAuth application(s) still list the scope {name}; remove it from them first."
                    ),
                ));
            }
        }
        let version = STORE
            .load_stream(&txn, &sid)
            .await?
            .last()
            .map_or(0, |e| e.stream_version);
        let current = custom(&txn, &instance_id).await?;
        let ev = decide(&current)?;
        let meta = EventMeta {
            tenant_id: auth.instance.tenant_id.to_string(),
            instance_id: instance_id.clone(),
            actor: auth.actor(),
            trace_id: gatehouse_platform::http::current_trace_id(),
        };
        let stream = Stream {
            id: &sid,
            kind: st::OAUTH_SCOPES,
            version,
        };
        match STORE
            .append(&txn, stream, &[ev], &meta, platform.now_ms())
            .await
        {
            Ok(recorded) => {
                for r in &recorded {
                    project(&txn, r).await?;
                }
                txn.commit().await?;
                platform.events_committed(STORE.table(), &recorded);
                return Ok(());
            }
            Err(AppendError::Conflict { .. }) => {
                drop(txn);
                gatehouse_platform::eventstore::pause_after_conflict(attempt).await;
            }
            Err(AppendError::Db(e)) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "concurrent_modification",
        "Scopes changed concurrently; retry.",
    ))
}

async fn define(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    body: web::Bytes,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &body)?;
    idempotent.guard(|| async move {
        let b: DefineBody = parse_json(&body)?;
        if !valid_name(&b.name) {
            return Err(ApiError::invalid_param(
                "name",
                "`name` must be 1 to 128 characters without spaces, quotes or backslashes (RFC 6749 §3.3).",
            ));
        }
        let description = valid_description(&b.description)?;
        if is_standard(&b.name) {
            return Err(ApiError::conflict(
                "scope_exists",
                format!("{} is a standard scope.", b.name),
            ));
        }
        record(&platform, &auth, None, |current| {
            if current.iter().any(|(n, _)| *n == b.name) {
                return Err(ApiError::conflict(
                    "scope_exists",
                    format!("The scope {} already exists.", b.name),
                ));
            }
            Ok(event(
                et::OAUTH_SCOPE_DEFINED,
                &v1::OAuthScopeDefined {
                    name: b.name.clone(),
                    description: description.clone(),
                },
            ))
        })
        .await?;
        Ok(HttpResponse::Ok().json(scope_json(&b.name, &description, false)))
    })
    .await
}

async fn describe(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: DescribeBody = parse_json(&body)?;
    let description = valid_description(&b.description)?;
    let name = path.into_inner();
    record(&platform, &auth, None, |current| {
        if !current.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::not_found("scope"));
        }
        Ok(event(
            et::OAUTH_SCOPE_DEFINED,
            &v1::OAuthScopeDefined {
                name: name.clone(),
                description: description.clone(),
            },
        ))
    })
    .await?;
    Ok(HttpResponse::Ok().json(scope_json(&name, &description, false)))
}

async fn remove(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = path.into_inner();
    record(&platform, &auth, Some(&name), |current| {
        if !current.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::not_found("scope"));
        }
        Ok(event(
            et::OAUTH_SCOPE_REMOVED,
            &v1::OAuthScopeRemoved { name: name.clone() },
        ))
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "object": "oauth_scope", "name": name, "deleted": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_follow_rfc_6749() {
        for ok in ["read:docs", "files.write", "https://api.example/x", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "two words",
            "quo\"te",
            "back\\slash",
            &"x".repeat(129),
            "é",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
