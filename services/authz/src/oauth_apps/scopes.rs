//! Scopes an instance's OAuth applications may request: the standard ones
//! and the instance's custom scopes, each with the plain-language description
//! the consent screen shows. Custom scopes are one stream per instance
//! (`oauth_scopes:<instance id>`); `authz_oauth_scopes` is its projection.

mod commands;

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use gatehouse_platform::aggregate::{self, Aggregate, Decided, Target, Unreadable};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
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

/// The instance's custom scopes, as its stream has them: name → description.
pub type Defined = BTreeMap<String, String>;

/// The custom scopes aggregate: one stream per instance.
pub struct CustomScopes;

impl Aggregate for CustomScopes {
    const KIND: &'static str = st::OAUTH_SCOPES;
    type State = Defined;

    fn apply(scopes: &mut Defined, ev: &RecordedEvent) -> Result<(), Unreadable> {
        let p = ev.payload.as_slice();
        let nameless = || Unreadable(format!("{} without a name", ev.event_type));
        match ev.event_type.as_str() {
            et::OAUTH_SCOPE_DEFINED => {
                let m = v1::OAuthScopeDefined::decode(p)?;
                if m.name.is_empty() {
                    return Err(nameless());
                }
                scopes.insert(m.name, m.description);
            }
            et::OAUTH_SCOPE_REMOVED => {
                let m = v1::OAuthScopeRemoved::decode(p)?;
                if m.name.is_empty() {
                    return Err(nameless());
                }
                scopes.remove(&m.name);
            }
            other => return Err(Unreadable(format!("no rule for {other}"))),
        }
        Ok(())
    }
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

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, define, describe, remove),
    components(schemas(ScopeObject, ScopeList, DeletedScope, DefineBody, DescribeBody))
)]
struct Doc;

/// The OpenAPI description of `/v1/oauth_scopes`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <Doc as utoipa::OpenApi>::openapi()
}

/// A scope applications may request (as `scope_json` builds it).
#[derive(utoipa::ToSchema)]
#[schema(as = OAuthScope)]
#[allow(dead_code)]
struct ScopeObject {
    /// Always `oauth_scope`.
    #[schema(example = "oauth_scope")]
    object: String,
    name: String,
    /// What the consent screen says about the scope.
    description: String,
    /// One of `openid`, `profile`, `email`, `offline_access`: built in,
    /// neither changed nor removed.
    standard: bool,
}

#[derive(utoipa::ToSchema)]
#[schema(as = OAuthScopeList)]
#[allow(dead_code)]
struct ScopeList {
    /// The standard scopes, then the custom ones by name.
    data: Vec<ScopeObject>,
    total_count: i64,
}

#[derive(utoipa::ToSchema)]
#[schema(as = DeletedOAuthScope)]
#[allow(dead_code)]
struct DeletedScope {
    /// Always `oauth_scope`.
    #[schema(example = "oauth_scope")]
    object: String,
    name: String,
    /// Always `true`.
    deleted: bool,
}

fn scope_json(name: &str, description: &str, standard: bool) -> Value {
    json!({ "object": "oauth_scope", "name": name, "description": description, "standard": standard })
}

#[utoipa::path(
    get,
    path = "/v1/oauth_scopes",
    tag = "oauth_scopes",
    operation_id = "list_oauth_scopes",
    summary = "List the scopes applications may request",
    responses(
        (status = 200, description = "The standard scopes and the instance's custom ones.", body = ScopeList),
    ),
    security(("secret_key" = []))
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(
    as = CreateOAuthScope,
    example = json!({ "name": "files:read", "description": "Read your files" })
)]
#[serde(deny_unknown_fields)]
struct DefineBody {
    /// An RFC 6749 §3.3 scope token: no space, quote or backslash.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[\x21\x23-\x5b\x5d-\x7e]+$"
    )]
    name: String,
    /// Shown to users on the consent screen as is: 1 to 300 printable
    /// characters once trimmed.
    #[schema(
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,298}[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f])?[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    description: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(
    as = UpdateOAuthScope,
    example = json!({ "description": "Read your files and folders" })
)]
#[serde(deny_unknown_fields)]
struct DescribeBody {
    /// Shown to users on the consent screen as is: 1 to 300 printable
    /// characters once trimmed.
    #[schema(
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,298}[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f])?[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    description: String,
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

/// Runs a scope command on the instance's scope stream through the
/// aggregate kernel, under [`hold`]. With `removing`, refuses (409) while an
/// application lists that scope, checked under the lock in the same
/// transaction.
async fn record(
    platform: &Platform,
    auth: &Authed,
    removing: Option<&str>,
    decide: impl Fn(&Defined) -> ApiResult<Decided<()>>,
) -> ApiResult<()> {
    let instance_id = auth.instance.id.as_str();
    let sid = stream_id(instance_id);
    let meta = auth.event_meta();
    aggregate::run::<CustomScopes, _, ApiError, _, _, _>(
        platform,
        Target::new(STORE, &sid, &meta),
        |loaded, _| decide(&loaded.state),
        async |txn, _: &()| -> ApiResult<()> {
            hold(txn, instance_id).await?;
            if let Some(name) = removing {
                let in_use = super::projection::apps_using_scope(txn, instance_id, name).await?;
                commands::removable(name, in_use)?;
            }
            Ok(())
        },
        async |txn, ev| project(txn, ev).await,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/v1/oauth_scopes",
    tag = "oauth_scopes",
    operation_id = "create_oauth_scope",
    summary = "Define a custom scope",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[\x21-\x7e]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and request gets the first response again (for 24 hours).")),
    request_body(content = DefineBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The new scope.", body = ScopeObject, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "A body that is not JSON, or an invalid Idempotency-Key.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "The scope exists or is a standard one (`scope_exists`), scopes changed concurrently, or a request with this Idempotency-Key is still running.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An invalid name or description, or an Idempotency-Key reused with another request.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
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
        let description = commands::valid_description(&b.description)?;
        record(&platform, &auth, None, |scopes| {
            commands::define(scopes, &b.name, &description)
        })
        .await?;
        Ok(HttpResponse::Ok().json(scope_json(&b.name, &description, false)))
    })
    .await
}

#[utoipa::path(
    patch,
    path = "/v1/oauth_scopes/{name}",
    tag = "oauth_scopes",
    operation_id = "update_oauth_scope",
    summary = "Change a custom scope's description",
    params(("name" = String, Path, description = "The custom scope's name.")),
    request_body(content = DescribeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The scope as updated.", body = ScopeObject),
        (status = 400, description = "A body that is not JSON.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No such custom scope (standard scopes cannot be changed).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Scopes changed concurrently; retry.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An invalid description.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn describe(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: DescribeBody = parse_json(&body)?;
    let description = commands::valid_description(&b.description)?;
    let name = path.into_inner();
    record(&platform, &auth, None, |scopes| {
        commands::describe(scopes, &name, &description)
    })
    .await?;
    Ok(HttpResponse::Ok().json(scope_json(&name, &description, false)))
}

#[utoipa::path(
    delete,
    path = "/v1/oauth_scopes/{name}",
    tag = "oauth_scopes",
    operation_id = "delete_oauth_scope",
    summary = "Remove a custom scope",
    params(("name" = String, Path, description = "The custom scope's name.")),
    responses(
        (status = 200, description = "Removed.", body = DeletedScope),
        (status = 404, description = "No such custom scope (standard scopes cannot be removed).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Applications still list the scope (`scope_in_use`), or scopes changed concurrently.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn remove(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = path.into_inner();
    match record(&platform, &auth, Some(&name), |scopes| {
        commands::remove(scopes, &name)
    })
    .await
    {
        Ok(()) => {}
        // A name the instance has no custom scope of, that applications
        // list all the same (a standard scope): `scope_in_use` has always
        // come before the 404.
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            let instance_id = auth.instance.id.as_str();
            let in_use =
                super::projection::apps_using_scope(platform.db(), instance_id, &name).await?;
            commands::removable(&name, in_use)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    Ok(HttpResponse::Ok().json(json!({ "object": "oauth_scope", "name": name, "deleted": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mounted_route_is_documented() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &super::openapi(),
            &[
                ("GET", "/v1/oauth_scopes"),
                ("POST", "/v1/oauth_scopes"),
                ("PATCH", "/v1/oauth_scopes/{name}"),
                ("DELETE", "/v1/oauth_scopes/{name}"),
            ],
        );
    }

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
