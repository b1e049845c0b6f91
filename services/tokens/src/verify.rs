//! Everything that answers "is this token good?": JWKS, introspection
//! (RFC 7662), revocation (RFC 7009), userinfo, and the Backend API verify
//! endpoint wire-compatible with Clerk's.
//!
//! A token is active when its signature verifies with a key of the asking
//! instance, it has not expired, and its family is not revoked. The token's
//! own claims say everything else, so a check asks only the Redis
//! revocation set (one round trip), which every replica writes before a
//! revocation commits. When the set cannot be trusted (no Redis, Redis
//! unreachable or being refilled) or the token predates the `sid` claim,
//! the token's row is read from the database instead; either way a
//! revocation committed by any replica is seen by every other at once.
//! Opaque access tokens (`oat_…`) carry no claims: their row, found by the
//! token's SHA-256, is all there is, and it is always read.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::eventstore::{EventMeta, MAX_ATTEMPTS};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency::Idempotent;
use gatehouse_platform::oauth::{AccessTokenFormat, OAuthCode, OAuthError};
use gatehouse_platform::tenancy::{Instance, InstanceKey};
use gatehouse_platform::{ApiError, ApiResult, Platform, db};
use jsonwebtoken::{Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clients::{self, Client};
use crate::families::{self, STORE, TokenRecord};
use crate::keys;
use crate::revocations::{self, Standing};
use crate::token::{hash, instance, read_form};
use crate::users;

#[derive(Deserialize, Clone)]
struct JwtClaims {
    iss: String,
    jti: String,
    sub: String,
    client_id: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    aud: String,
    iat: i64,
    exp: i64,
    /// The family; tokens issued before it was added have none.
    #[serde(default)]
    sid: Option<String>,
}

impl JwtClaims {
    /// The token's record from its claims and what the revocation set says.
    fn record(self, instance_id: &str, family_id: String, standing: Standing) -> TokenRecord {
        let (revoked_at_ms, revocation_reason) = match standing {
            Standing::Standing => (None, None),
            Standing::Revoked { at_ms, reason } => (Some(at_ms), Some(reason)),
        };
        // Client credentials tokens are the client's own (`sub` = client).
        let user_id = if self.sub == self.client_id {
            String::new()
        } else {
            self.sub.clone()
        };
        let audience = if self.aud == self.client_id {
            String::new()
        } else {
            self.aud
        };
        TokenRecord {
            jti: self.jti,
            instance_id: instance_id.to_owned(),
            family_id,
            client_id: self.client_id,
            subject: self.sub,
            user_id,
            scope: self.scope,
            audience,
            created_at_ms: self.iat * 1000,
            expires_at_ms: self.exp * 1000,
            revoked_at_ms,
            revocation_reason,
        }
    }
}

/// Tokens whose signature this process has checked, by the SHA-256 of the
/// token: a resource server asks about the same token again and again, and
/// a signature that verified once verifies for the token's whole life
/// (keys are retired only after their tokens expire). Expiry and
/// revocation are still checked on every request.
pub struct Verified(moka::sync::Cache<[u8; 32], Arc<(String, JwtClaims)>>);

/// How long a checked signature is remembered, and how many at most.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_CAPACITY: u64 = 100_000;

impl Default for Verified {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        )
    }
}

/// The record of a validly signed access token of `instance_id` (revoked
/// or expired ones included); `None` for anything else.
pub async fn inspect(
    platform: &Platform,
    instance_id: &str,
    token: &str,
) -> Result<Option<TokenRecord>, sea_orm::DbErr> {
    if token.len() > 8192 {
        return Ok(None);
    }
    if token.starts_with(AccessTokenFormat::OPAQUE_PREFIX) {
        // The row is written in the transaction that issues or revokes, so
        // it is the token's standing as of the last commit, on any replica.
        return Ok(families::opaque_access_token(platform.db(), &hash(token))
            .await?
            .filter(|r| r.instance_id == instance_id));
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let verified = platform.shared::<Verified>();
    let claims = match verified.0.get(&digest) {
        Some(hit) if hit.0 == instance_id => hit.1.clone(),
        Some(_) => return Ok(None),
        None => match signed_claims(platform, instance_id, token).await? {
            Some(claims) => {
                verified
                    .0
                    .insert(digest, Arc::new((instance_id.to_owned(), claims.clone())));
                claims
            }
            None => return Ok(None),
        },
    };
    if let Some(family) = claims.sid.clone()
        && let Some(standing) = revocations::get().check(&family).await
    {
        return Ok(Some(claims.record(instance_id, family, standing)));
    }
    Ok(families::access_token(platform.db(), &claims.jti)
        .await?
        .filter(|r| r.instance_id == instance_id))
}

/// The claims of an access token signed by a key of `instance_id` and
/// issued by it (expired ones included); `None` for anything else.
async fn signed_claims(
    platform: &Platform,
    instance_id: &str,
    token: &str,
) -> Result<Option<JwtClaims>, sea_orm::DbErr> {
    let Ok(header) = decode_header(token) else {
        return Ok(None);
    };
    if header.typ.as_deref() != Some("at+jwt") {
        return Ok(None);
    }
    let Some(kid) = header.kid else {
        return Ok(None);
    };
    let Some(key) = keys::verifying(platform.db(), &kid).await? else {
        return Ok(None);
    };
    if key.instance_id != instance_id || key.alg != header.alg {
        return Ok(None);
    }
    let mut v = Validation::new(key.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iat", "iss", "sub", "jti"]);
    let issuer = platform.issuer(instance_id);
    v.set_issuer(&[issuer.as_str()]);
    let Ok(data) = decode::<JwtClaims>(token, &key.decoding, &v) else {
        return Ok(None);
    };
    if data.claims.iss != issuer {
        return Ok(None);
    }
    Ok(Some(data.claims))
}

fn active(r: &TokenRecord, now_ms: i64) -> bool {
    r.revoked_at_ms.is_none() && now_ms < r.expires_at_ms
}

/// The issuer's JSON Web Key Set: the keys that verify its access and ID
/// tokens.
#[utoipa::path(
    get,
    path = "/i/{instance_id}/.well-known/jwks.json",
    tag = "oauth",
    operation_id = "oauth_jwks",
    summary = "Issuer JWKS",
    description = "The keys that verify the issuer's access and ID tokens: the active signing key, then retired keys whose tokens may still be live.",
    params(("instance_id" = String, Path, description = "The instance; its issuer is `…/i/{instance_id}`.")),
    responses(
        (status = 200, description = "The key set.", body = crate::keys::JwksSchema, headers(
            ("cache-control" = String, description = "`public, max-age=300`"),
        )),
        (status = 404, description = "`invalid_request`: no active instance has this issuer.", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
)]
pub async fn jwks(
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> Result<HttpResponse, OAuthError> {
    let instance = instance(&platform, &path).await?;
    let doc = keys::jwks_document(
        platform.db(),
        platform.code_sealer(),
        instance.id.as_str(),
        platform.now_ms(),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .content_type("application/json")
        .body(doc))
}

/// `GET /v1/jwks` (Backend API, Clerk's shape): the instance's JWKS for a
/// holder of its secret key, the same document as the public one.
#[utoipa::path(
    get,
    path = "/v1/jwks",
    tag = "oauth_access_tokens",
    operation_id = "get_jwks",
    summary = "Get the instance JWKS",
    description = "The JSON Web Key Set of the secret key's instance: the same document as the issuer's public `/.well-known/jwks.json`.",
    responses(
        (status = 200, description = "The key set of the secret key's instance.", body = crate::keys::JwksSchema),
    ),
    security(("secret_key" = [])),
)]
pub async fn backend_jwks(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
) -> ApiResult<HttpResponse> {
    let doc = keys::jwks_document(
        platform.db(),
        platform.code_sealer(),
        auth.instance.id.as_str(),
        platform.now_ms(),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(doc))
}

/// The form of introspection (RFC 7662 §2.1) and revocation (RFC 7009
/// §2.1), with the client's credentials when it does not use HTTP Basic.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenRequestForm {
    /// An access or refresh token.
    token: String,
    /// `access_token` or `refresh_token`; accepted and not needed (the
    /// token is looked for as both).
    #[schema(nullable = false)]
    token_type_hint: Option<String>,
    /// The client, when it does not authenticate with HTTP Basic.
    #[schema(nullable = false, min_length = 1)]
    client_id: Option<String>,
    /// `client_secret_post`: the client's secret (never with HTTP Basic).
    #[schema(nullable = false, min_length = 1)]
    client_secret: Option<String>,
}

/// An introspection response (RFC 7662 §2.2): `{"active": false}` for a
/// token that is unknown, expired, revoked, or (to a public client) not
/// its own; otherwise the token's claims. An access token has every
/// field; a refresh token `token_type`, `client_id`, `exp` and `iss`.
#[derive(utoipa::ToSchema)]
#[schema(as = Introspection)]
#[allow(dead_code)]
pub struct IntrospectionSchema {
    active: bool,
    /// `Bearer` for an access token, `refresh_token` for a refresh token.
    #[schema(inline, nullable = false)]
    token_type: Option<IntrospectedTokenType>,
    /// Space-separated (access tokens).
    #[schema(nullable = false)]
    scope: Option<String>,
    #[schema(nullable = false)]
    client_id: Option<String>,
    /// The user, or the client itself for client_credentials (access tokens).
    #[schema(nullable = false)]
    sub: Option<String>,
    /// The resource the token is bound to, else the client id (access tokens).
    #[schema(nullable = false)]
    aud: Option<String>,
    #[schema(nullable = false)]
    iss: Option<String>,
    /// Expiry, seconds since the epoch.
    #[schema(nullable = false)]
    exp: Option<i64>,
    /// Issue time, seconds since the epoch (access tokens).
    #[schema(nullable = false)]
    iat: Option<i64>,
    /// The access token's id.
    #[schema(nullable = false)]
    jti: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
enum IntrospectedTokenType {
    Bearer,
    #[schema(rename = "refresh_token")]
    RefreshToken,
}

/// What introspection and revocation both read: the instance, the
/// authenticated client and the `token` parameter.
async fn token_request(
    platform: &Platform,
    req: &HttpRequest,
    instance_id: &str,
    body: &[u8],
) -> Result<(Instance, Client, String), OAuthError> {
    let instance = instance(platform, instance_id).await?;
    let form = read_form(req, body)?;
    let client = clients::authenticate(
        platform.db(),
        instance.id.as_str(),
        req,
        &form,
        clients::Lookup::Cached,
    )
    .await?;
    let token = form
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .ok_or_else(|| OAuthError::bad_request(OAuthCode::InvalidRequest, "token is required"))?;
    Ok((instance, client, token))
}

/// RFC 7662, for clients of the instance: confidential clients (secret)
/// about any token, public clients only about their own.
#[utoipa::path(
    post,
    path = "/i/{instance_id}/oauth/token_info",
    tag = "oauth",
    operation_id = "oauth_introspect",
    summary = "Token introspection",
    description = "RFC 7662. Confidential clients may ask about any token of the instance; public clients only about their own (any other is `active: false`).",
    params(("instance_id" = String, Path, description = "The instance; its issuer is `…/i/{instance_id}`.")),
    request_body(content = TokenRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token's standing; `active: false` for anything not active.", body = IntrospectionSchema, headers(
            ("cache-control" = String, description = "`no-store`"),
        )),
        (status = 400, description = "`invalid_request`: `token` missing, a parameter repeated, two client authentication methods, or a body that is not a form.", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 401, description = "`invalid_client`: client authentication failed or is missing.", body = gatehouse_platform::openapi::OAuthErrorBody, headers(
            ("www-authenticate" = String, description = "`Basic realm=\"oauth\", charset=\"UTF-8\"`"),
        )),
        (status = 404, description = "`invalid_request`: no active instance has this issuer.", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("client_secret_basic" = []), ()),
)]
pub async fn introspect(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (instance, client, token) = token_request(&platform, &req, &path, &body).await?;
    let token = token.as_str();
    let now = platform.now_ms();
    let issuer = platform.issuer(instance.id.as_str());
    let mut answer = json!({ "active": false });
    if let Some(r) = inspect(&platform, instance.id.as_str(), token).await?
        && active(&r, now)
    {
        answer = json!({
            "active": true,
            "token_type": "Bearer",
            "scope": r.scope,
            "client_id": r.client_id,
            "sub": r.subject,
            "aud": if r.audience.is_empty() { r.client_id.clone() } else { r.audience.clone() },
            "iss": issuer,
            "exp": r.expires_at_ms / 1000,
            "iat": r.created_at_ms / 1000,
            "jti": r.jti,
        });
    } else if let Some(rt) = families::refresh_token(platform.db(), &hash(token)).await?
        && rt.instance_id == instance.id.as_str()
        && !rt.used
        && !rt.revoked
        && now < rt.expires_at_ms
    {
        answer = json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": rt.client_id,
            "exp": rt.expires_at_ms / 1000,
            "iss": issuer,
        });
    }
    // A public client proves nothing but its id: it learns only about its
    // own tokens. Confidential clients may introspect any of the instance's.
    if client.public && answer["client_id"] != client.client_id.as_str() {
        answer = json!({ "active": false });
    }
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(answer))
}

/// Revokes a family, retrying when a concurrent append wins the race.
pub async fn revoke_family(
    platform: &Platform,
    meta: &EventMeta,
    family_id: &str,
    reason: &str,
) -> Result<bool, sea_orm::DbErr> {
    for attempt in 0..MAX_ATTEMPTS {
        let txn = db::begin_write(platform.db()).await?;
        let family = families::fold(
            &STORE
                .load_stream(&txn, &families::stream_id(family_id))
                .await?,
        );
        let (Some(origin), false) = (family.origin, family.revoked) else {
            return Ok(false);
        };
        let ev = families::revoked_event(&origin, reason);
        if families::commit(
            platform,
            txn,
            family_id,
            family.version,
            &[ev],
            meta,
            attempt,
        )
        .await?
        {
            return Ok(true);
        }
    }
    Err(sea_orm::DbErr::Custom("token family kept changing".into()))
}

/// RFC 7009: the client revokes its own access or refresh token (and so its
/// whole family). Unknown tokens are answered 200 as the RFC asks.
#[utoipa::path(
    post,
    path = "/i/{instance_id}/oauth/revoke",
    tag = "oauth",
    operation_id = "oauth_revoke",
    summary = "Token revocation",
    description = "RFC 7009. The client revokes one of its own access or refresh tokens, and with it every token of the same grant. Unknown tokens, and other clients' tokens, are answered 200 without effect.",
    params(("instance_id" = String, Path, description = "The instance; its issuer is `…/i/{instance_id}`.")),
    request_body(content = TokenRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke (an unknown token, or another client's). No body.", headers(
            ("cache-control" = String, description = "`no-store`"),
        )),
        (status = 400, description = "`invalid_request`: `token` missing, a parameter repeated, two client authentication methods, or a body that is not a form.", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 401, description = "`invalid_client`: client authentication failed or is missing.", body = gatehouse_platform::openapi::OAuthErrorBody, headers(
            ("www-authenticate" = String, description = "`Basic realm=\"oauth\", charset=\"UTF-8\"`"),
        )),
        (status = 404, description = "`invalid_request`: no active instance has this issuer.", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("client_secret_basic" = []), ()),
)]
pub async fn revoke(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (instance, client, token) = token_request(&platform, &req, &path, &body).await?;
    let token = token.as_str();
    let family = match inspect(&platform, instance.id.as_str(), token).await? {
        Some(r) if r.client_id == client.client_id => Some(r.family_id),
        Some(_) => None,
        None => families::refresh_token(platform.db(), &hash(token))
            .await?
            .filter(|r| r.instance_id == instance.id.as_str() && r.client_id == client.client_id)
            .map(|r| r.family_id),
    };
    if let Some(f) = family {
        let meta = EventMeta {
            tenant_id: instance.tenant_id.to_string(),
            instance_id: instance.id.to_string(),
            actor: format!("client:{}", client.client_id),
            trace_id: gatehouse_platform::http::current_trace_id(),
        };
        revoke_family(&platform, &meta, &f, "revoked").await?;
    }
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .finish())
}

/// OpenID userinfo for an active user access token.
#[utoipa::path(
    get,
    path = "/i/{instance_id}/oauth/userinfo",
    tag = "oauth",
    operation_id = "oauth_userinfo",
    summary = "OpenID Connect userinfo",
    description = "The claims of the user an active access token was issued for, as its scopes release them (OpenID Connect Core §5.3). Also answered to POST.",
    params(("instance_id" = String, Path, description = "The instance; its issuer is `…/i/{instance_id}`.")),
    responses(
        (status = 200, description = "The user's claims, as the token's scopes release them.", body = crate::users::UserInfoSchema, headers(
            ("cache-control" = String, description = "`no-store`"),
        )),
        (status = 401, description = "`invalid_token`: no Bearer token, or one that is not an active access token of a user of this instance.", body = gatehouse_platform::openapi::OAuthErrorBody, headers(
            ("www-authenticate" = String, description = "`Bearer error=\"invalid_token\"`"),
        )),
        (status = 404, description = "`invalid_request`: no active instance has this issuer.", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("oauth_access_token" = [])),
)]
pub async fn userinfo(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, OAuthError> {
    let instance = instance(&platform, &path).await?;
    let unauthorized =
        |d: &str| OAuthError::new(StatusCode::UNAUTHORIZED, OAuthCode::InvalidToken, d);
    let token = gatehouse_platform::http::bearer_token(&req)
        .ok_or_else(|| unauthorized("a Bearer access token is required"))?;
    let record = inspect(&platform, instance.id.as_str(), token)
        .await?
        .filter(|r| active(r, platform.now_ms()) && !r.user_id.is_empty())
        .ok_or_else(|| unauthorized("the access token is not active"))?;
    let scopes: Vec<&str> = record.scope.split(' ').collect();
    let mut claims = users::profile(platform.db(), instance.id.as_str(), &record.user_id)
        .await?
        .map(|p| p.claims(&scopes))
        .unwrap_or_default();
    claims.insert("sub".into(), json!(record.user_id));
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(claims))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OAuthAccessTokenRequest)]
pub struct VerifyBody {
    /// The access token: a JWT or an opaque `oat_…` string.
    access_token: String,
}

/// `POST /oauth_applications/access_tokens/verify` (and under `/v1`):
/// Clerk's `clerk_idp_oauth_access_token` object, 404 for a token that is
/// not this instance's.
///
/// An opaque token that is revoked or expired is 404 too: the official SDK
/// sends opaque tokens here and takes any 200 as valid, never reading
/// `revoked` or `expired`. A JWT is answered with its standing in those
/// fields, as Clerk does (the SDK checks JWTs itself and never sends them).
#[utoipa::path(
    post,
    path = "/v1/oauth_applications/access_tokens/verify",
    tag = "oauth_access_tokens",
    operation_id = "verify_oauth_access_token",
    summary = "Verify an OAuth access token",
    description = "Clerk's verify endpoint (also served without `/v1`). A JWT of the instance is answered with its standing in `revoked` and `expired`; an opaque token is answered only while it is active (404 once revoked or expired).",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The token, with its standing in `revoked` and `expired` (a JWT may be either; an opaque token answered here is neither).", body = IdPOAuthAccessTokenSchema),
        (status = 404, description = "`resource_not_found`: not an access token of this instance, or an opaque token that is revoked or expired.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = [])),
)]
pub async fn verify(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: VerifyBody = parse_json(&body)?;
    let now = platform.now_ms();
    let opaque = b.access_token.starts_with(AccessTokenFormat::OPAQUE_PREFIX);
    let r = inspect(&platform, auth.instance.id.as_str(), &b.access_token)
        .await?
        .filter(|r| !opaque || active(r, now))
        .ok_or_else(|| ApiError::not_found("OAuth access token"))?;
    Ok(HttpResponse::Ok().json(access_token_json(&r, now)))
}

/// Clerk's `clerk_idp_oauth_access_token` object: an OAuth access token
/// and its standing.
// Served by `access_token_json`.
#[derive(utoipa::ToSchema)]
#[schema(as = IdPOAuthAccessToken)]
#[allow(dead_code)]
pub struct IdPOAuthAccessTokenSchema {
    #[schema(inline)]
    object: IdPOAuthAccessTokenObject,
    /// The token's id (its `jti`).
    id: String,
    client_id: String,
    #[schema(inline, rename = "type")]
    type_: OAuthTokenType,
    /// The user, or the client itself for client_credentials.
    subject: String,
    scopes: Vec<String>,
    revoked: bool,
    /// Why it was revoked (`revoked`, `refresh_token_reuse`, …); null while it is not.
    revocation_reason: Option<String>,
    expired: bool,
    /// Expiry, milliseconds since the epoch.
    expiration: i64,
    /// Milliseconds since the epoch.
    created_at: i64,
    /// The revocation time, else `created_at`.
    updated_at: i64,
    /// The resource the token is bound to, else the client id.
    aud: Vec<String>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum IdPOAuthAccessTokenObject {
    ClerkIdpOauthAccessToken,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum OAuthTokenType {
    OauthToken,
}

/// Clerk's `clerk_idp_oauth_access_token` object of a token record.
pub(crate) fn access_token_json(r: &TokenRecord, now: i64) -> Value {
    let scopes: Vec<&str> = r.scope.split(' ').filter(|s| !s.is_empty()).collect();
    let aud: Value = if r.audience.is_empty() {
        json!([r.client_id])
    } else {
        json!([r.audience])
    };
    json!({
        "object": "clerk_idp_oauth_access_token",
        "id": r.jti,
        "client_id": r.client_id,
        "type": "oauth_token",
        "subject": r.subject,
        "scopes": scopes,
        "revoked": r.revoked_at_ms.is_some(),
        "revocation_reason": r.revocation_reason,
        "expired": now >= r.expires_at_ms,
        "expiration": r.expires_at_ms,
        "created_at": r.created_at_ms,
        "updated_at": r.revoked_at_ms.unwrap_or(r.created_at_ms),
        "aud": aud,
    })
}

/// `POST /v1/oauth_applications/access_tokens/revoke` (and without `/v1`):
/// the Backend API revokes one access token, and so its whole family;
/// answers the token object as it now stands, 404 for a token that is not
/// this instance's.
#[utoipa::path(
    post,
    path = "/v1/oauth_applications/access_tokens/revoke",
    tag = "oauth_access_tokens",
    operation_id = "revoke_oauth_access_token",
    summary = "Revoke an OAuth access token",
    description = "Revokes the token and every token of its grant, and answers the token as it now stands (also served without `/v1`).",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry replay the first answer instead of running again.", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The token as it now stands (`revoked: true`); its whole grant is revoked.", body = IdPOAuthAccessTokenSchema),
        (status = 400, description = "`idempotency_key_invalid`: the Idempotency-Key is not 1 to 255 visible ASCII characters.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is being processed.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "`resource_not_found`: not an access token of this instance.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "A body that does not meet the schema, or an Idempotency-Key used with a different request.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = [])),
)]
pub async fn backend_revoke(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    body: web::Bytes,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &body)?;
    idempotent
        .guard(|| async move {
            let b: VerifyBody = parse_json(&body)?;
            let instance_id = auth.instance.id.as_str();
            let found = inspect(&platform, instance_id, &b.access_token)
                .await?
                .ok_or_else(|| ApiError::not_found("OAuth access token"))?;
            revoke_family(&platform, &auth.event_meta(), &found.family_id, "revoked").await?;
            let now = inspect(&platform, instance_id, &b.access_token)
                .await?
                .ok_or_else(|| ApiError::not_found("OAuth access token"))?;
            Ok(HttpResponse::Ok().json(access_token_json(&now, platform.now_ms())))
        })
        .await
}

/// What revoking an application's tokens did.
#[derive(utoipa::ToSchema)]
#[schema(as = OAuthApplicationTokenRevocation)]
#[allow(dead_code)]
pub struct ApplicationTokenRevocation {
    #[schema(inline)]
    object: ApplicationTokenRevocationObject,
    application_id: String,
    /// The application's OAuth client id.
    client_id: String,
    /// How many grants (token families) were revoked by this request.
    #[schema(minimum = 0)]
    revoked_families: u64,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ApplicationTokenRevocationObject {
    OauthApplicationTokenRevocation,
}

/// `POST /v1/oauth_applications/{id}/revoke_tokens`: every token the
/// application's client holds, for every user, stops working at once.
#[utoipa::path(
    post,
    path = "/v1/oauth_applications/{application_id}/revoke_tokens",
    tag = "oauth_access_tokens",
    operation_id = "revoke_oauth_application_tokens",
    summary = "Revoke all tokens of an OAuth application",
    description = "Every token the application's client holds, for every user, stops working at once.",
    params(
        ("application_id" = String, Path, description = "The OAuth application."),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry replay the first answer instead of running again.", min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    responses(
        (status = 200, description = "Every grant of the application's client is revoked.", body = ApplicationTokenRevocation),
        (status = 400, description = "`idempotency_key_invalid`: the Idempotency-Key is not 1 to 255 visible ASCII characters.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is being processed.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "`resource_not_found`: no OAuth application of this instance has this id.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different request.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = [])),
)]
pub async fn revoke_application_tokens(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &[])?;
    idempotent
        .guard(|| async move {
            let application_id = path.into_inner();
            let instance_id = auth.instance.id.as_str();
            let client = clients::by_application(platform.db(), instance_id, &application_id)
                .await?
                .ok_or_else(|| ApiError::not_found("OAuth application"))?;
            let meta = auth.event_meta();
            let mut revoked = 0u64;
            for family in
                families::standing(platform.db(), instance_id, Some(&client.client_id), None)
                    .await?
            {
                if revoke_family(&platform, &meta, &family, "revoked_by_backend_api").await? {
                    revoked += 1;
                }
            }
            Ok(HttpResponse::Ok().json(json!({
                "object": "oauth_application_token_revocation",
                "application_id": application_id,
                "client_id": client.client_id,
                "revoked_families": revoked,
            })))
        })
        .await
}
