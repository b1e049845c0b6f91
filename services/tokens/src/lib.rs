//! The token service: the token endpoint, per-instance signing keys and
//! JWKS, verification (introspection, userinfo, the Clerk-compatible verify
//! endpoint), and revocation.
//!
//! It depends only on `gatehouse-platform` and `gatehouse-proto`. What it
//! knows of OAuth clients comes from `gatehouse.oauth` events into its own
//! table; authorization codes come sealed from the authorization service
//! (`platform::oauth_code`).

pub mod clients;
pub mod families;
pub mod group;
pub mod keys;
mod openapi;
pub mod revocations;
pub mod token;
pub mod users;
pub mod verify;

pub use openapi::openapi;

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use gatehouse_platform::bus::topics;
use gatehouse_platform::consumer::ConsumerRunner;
use gatehouse_platform::http::public_cors;
use gatehouse_platform::oauth::paths;
use gatehouse_platform::outbox::OutboxPublisher;
use gatehouse_platform::tenancy::AdminAuth;
use gatehouse_platform::{ApiError, ApiResult, Platform, Worker, db};
use sea_orm::{DatabaseConnection, DbErr};
use serde::Deserialize;
use serde_json::json;

pub const SERVICE: &str = "tokens";
/// Access tokens live an hour; refresh tokens 30 days (rotated on use).
pub const ACCESS_TOKEN_TTL_MS: i64 = 60 * 60 * 1000;
pub const REFRESH_TOKEN_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    keys::install_signer();
    let at = |p: &str| format!("/i/{{instance_id}}{p}");
    cfg.service(
        web::resource(at(paths::TOKEN))
            .wrap(public_cors())
            .post(token::token),
    )
    .service(
        web::resource(at(paths::REVOKE))
            .wrap(public_cors())
            .post(verify::revoke),
    )
    .service(
        web::resource(at(paths::INTROSPECT))
            .wrap(public_cors())
            .post(verify::introspect),
    )
    .service(
        web::resource(at(paths::JWKS))
            .wrap(public_cors())
            .get(verify::jwks),
    )
    .service(
        web::resource(at(paths::USERINFO))
            .wrap(public_cors())
            .get(verify::userinfo)
            .post(verify::userinfo),
    )
    .service(web::resource("/v1/jwks").get(verify::backend_jwks))
    .service(web::resource("/oauth_applications/access_tokens/revoke").post(verify::backend_revoke))
    .service(
        web::resource("/v1/oauth_applications/access_tokens/revoke").post(verify::backend_revoke),
    )
    .service(
        web::resource("/v1/oauth_applications/{application_id}/revoke_tokens")
            .post(verify::revoke_application_tokens),
    )
    // The SDK calls it without the version prefix.
    .service(web::resource("/oauth_applications/access_tokens/verify").post(verify::verify))
    .service(web::resource("/v1/oauth_applications/access_tokens/verify").post(verify::verify))
    .service(
        web::resource("/admin/v1/instances/{instance_id}/signing_keys/rotate").post(rotate_key),
    );
}

/// The body of a rotation; optional (no body: RS256).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateSigningKeyRequest)]
struct RotateBody {
    /// The new key's algorithm; RS256 when absent or null.
    #[serde(default)]
    #[schema(inline, value_type = Option<SigningAlg>)]
    alg: Option<String>,
}

/// A signing algorithm an instance's keys may use.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum SigningAlg {
    RS256,
    ES256,
}

/// The new active signing key.
#[derive(utoipa::ToSchema)]
#[schema(as = SigningKey)]
#[allow(dead_code)]
struct SigningKeySchema {
    #[schema(inline)]
    object: SigningKeyObject,
    /// The key's id, the `kid` of the JWKS entry and of the tokens it signs.
    kid: String,
    #[schema(inline)]
    alg: SigningAlg,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum SigningKeyObject {
    SigningKey,
}

/// Admin API: a new active signing key for the instance (RS256 unless
/// `{"alg":"ES256"}`); the previous one stays in the JWKS until its tokens
/// have expired.
#[utoipa::path(
    post,
    path = "/admin/v1/instances/{instance_id}/signing_keys/rotate",
    tag = "admin_signing_keys",
    operation_id = "rotate_signing_key",
    summary = "Rotate an instance's signing key",
    description = "Makes a new active signing key (RS256 unless `{\"alg\":\"ES256\"}`). The previous key stays in the JWKS until the tokens it signed have expired.",
    params(("instance_id" = String, Path, description = "The instance.")),
    request_body(content = RotateBody, description = "Optional; an empty body rotates to RS256."),
    responses(
        (status = 200, description = "The new active signing key.", body = SigningKeySchema),
        (status = 403, description = "`authorization_invalid`: the admin API is disabled on this process.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "`resource_not_found`: no active instance has this id.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "`concurrent_modification`: another rotation of the instance's key ran at the same time; nothing changed.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "`form_param_format_invalid`: an unsupported `alg`, an unknown field, or a body that is not a JSON object.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn rotate_key(
    _admin: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: RotateBody = if body.is_empty() {
        RotateBody::default()
    } else {
        gatehouse_platform::http::parse_json(&body)?
    };
    let alg = match b.alg.as_deref() {
        None => keys::DEFAULT_ALG,
        Some("ES256") => jsonwebtoken::Algorithm::ES256,
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "alg",
                format!("alg {other:?} is not supported; use ES256 or RS256"),
            ));
        }
    };
    let id = path.into_inner();
    if gatehouse_platform::tenancy::active_instance_cached(&platform, &id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("instance"));
    }
    let txn = db::begin_write(platform.db()).await?;
    let kid = keys::rotate(&txn, platform.code_sealer(), &id, alg, platform.now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "concurrent_modification",
                "Another rotation of this instance's key ran at the same time; retry.",
            )
        })?;
    txn.commit().await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "object": "signing_key", "kid": kid, "alg": format!("{alg:?}") })))
}

/// Background tasks: the outbox of `tokens_events` and the clients and
/// users consumers. Also sets up the process's revocation set.
pub fn workers(platform: &Platform) -> Vec<(&'static str, Worker)> {
    revocations::install(platform);
    let publisher = OutboxPublisher {
        store: families::STORE,
        topic_for: |_| topics::TOKENS,
        db: platform.db().clone(),
        bus: platform.bus().clone(),
        clock: platform.clock().clone(),
        metrics: platform.metrics().clone(),
        appended: platform.appended_signal(),
    };
    let clients = ConsumerRunner::new(platform, Arc::new(clients::Clients));
    let users = ConsumerRunner::new(platform, Arc::new(users::Users));
    vec![
        ("tokens.outbox", Box::pin(publisher.run())),
        (clients::NAME, Box::pin(clients.run())),
        (users::NAME, Box::pin(users.run())),
    ]
}

pub const PROJECTIONS: &[&str] = &["token_families", "token_clients", "token_users"];

pub async fn rebuild(db: &DatabaseConnection, projection: &str) -> Result<Option<u64>, DbErr> {
    match projection {
        "token_families" => families::rebuild(db).await.map(Some),
        "token_clients" => gatehouse_platform::consumer::rebuild(db, &clients::Clients)
            .await
            .map(|g| Some(g as u64)),
        "token_users" => gatehouse_platform::consumer::rebuild(db, &users::Users)
            .await
            .map(|g| Some(g as u64)),
        _ => Ok(None),
    }
}
