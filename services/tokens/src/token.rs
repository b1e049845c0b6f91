//! `POST /i/<instance>/oauth/token`: authorization_code (with PKCE),
//! refresh_token (rotation, reuse revokes the family) and
//! client_credentials. RFC 6749 error bodies; `Cache-Control: no-store`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_platform::eventstore::{EventMeta, MAX_ATTEMPTS};
use gatehouse_platform::oauth::{AccessTokenFormat, OAuthCode, OAuthError};
use gatehouse_platform::oauth_code::AuthorizationCode;
use gatehouse_platform::tenancy::{self, Instance};
use gatehouse_platform::{Platform, db};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, IssuedToken};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::clients::{self, Client};
use crate::families::{self, STORE};
use crate::{ACCESS_TOKEN_TTL_MS, REFRESH_TOKEN_TTL_MS, group, keys, users};

/// RFC 9068 access token claims.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    scope: &'a str,
    jti: &'a str,
    /// The token family (the grant's session): what revocation is kept
    /// by, so verification can ask the revocation set without a lookup.
    sid: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    /// Seconds; when the user signed in (OpenID Connect Core §2).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::bad_request(OAuthCode::InvalidGrant, description)
}

pub async fn instance(platform: &Platform, id: &str) -> Result<Instance, OAuthError> {
    tenancy::active_instance_cached(platform, id)
        .await?
        .ok_or_else(|| {
            OAuthError::new(
                StatusCode::NOT_FOUND,
                OAuthCode::InvalidRequest,
                "unknown issuer",
            )
        })
}

/// The form of an OAuth endpoint: urlencoded, each parameter at most once.
pub fn read_form(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::bad_request(
            OAuthCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    if gatehouse_platform::http::form_has_nul(body) {
        return Err(OAuthError::bad_request(
            OAuthCode::InvalidRequest,
            "the form contains a NUL character",
        ));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(p, _)| p == k) {
            return Err(OAuthError::bad_request(
                OAuthCode::InvalidRequest,
                format!("{k} appears more than once"),
            ));
        }
    }
    Ok(pairs)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The form of the token endpoint (RFC 6749 §4.1.3, §6, §4.4; RFC 7636;
/// RFC 8707). Which fields a request needs depends on its `grant_type`;
/// an empty grant parameter counts as absent, and no field may appear
/// twice.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    #[schema(inline)]
    grant_type: GrantType,
    /// `authorization_code`: the code from the authorization response.
    #[schema(nullable = false)]
    code: Option<String>,
    /// `authorization_code`: required when the authorization request had
    /// one, and then equal to it.
    #[schema(nullable = false)]
    redirect_uri: Option<String>,
    /// `authorization_code`: the PKCE verifier (43 to 128 unreserved
    /// characters); required when the authorization request had a
    /// challenge, and always for public clients.
    #[schema(
        nullable = false,
        min_length = 43,
        max_length = 128,
        pattern = r"^[A-Za-z0-9._~-]+$"
    )]
    code_verifier: Option<String>,
    /// `refresh_token`: the refresh token to rotate.
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// `refresh_token`: a subset of the granted scopes; `client_credentials`:
    /// a subset of the client's scopes. Space-separated.
    #[schema(nullable = false)]
    scope: Option<String>,
    /// RFC 8707 resource indicator: an absolute URI without a fragment.
    #[schema(nullable = false, max_length = 2048)]
    resource: Option<String>,
    /// The client, when it does not authenticate with HTTP Basic (public
    /// clients, or `client_secret_post` with `client_secret`).
    #[schema(nullable = false, min_length = 1)]
    client_id: Option<String>,
    /// `client_secret_post`: the client's secret (never with HTTP Basic).
    #[schema(nullable = false, min_length = 1)]
    client_secret: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// A successful token response (RFC 6749 §5.1).
// Served by `mint`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenResponse {
    /// An RFC 9068 JWT (`typ` `at+jwt`), or an opaque `oat_…` string when
    /// the application's `access_token_format` is `opaque`.
    access_token: String,
    #[schema(inline)]
    token_type: TokenType,
    /// Seconds until the access token expires.
    #[schema(example = 3600)]
    expires_in: i64,
    /// The granted scopes, space-separated (may be empty).
    scope: String,
    /// A `ghr_…` refresh token, for the authorization_code and
    /// refresh_token grants (rotated on every use).
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// An OpenID Connect ID token, for user grants with the `openid` scope.
    #[schema(nullable = false)]
    id_token: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
enum TokenType {
    Bearer,
}

/// RFC 6749 §3.2: the token endpoint. Issues tokens for the
/// `authorization_code` (with PKCE), `refresh_token` (rotating) and
/// `client_credentials` grants.
#[utoipa::path(
    post,
    path = "/i/{instance_id}/oauth/token",
    tag = "oauth",
    operation_id = "oauth_token",
    summary = "Token endpoint",
    description = "RFC 6749 §3.2. Issues tokens for the `authorization_code` grant (with PKCE, RFC 7636), the `refresh_token` grant (the refresh token rotates; reusing a spent one revokes the whole grant) and `client_credentials`. Confidential clients authenticate with HTTP Basic or `client_secret_post`; public clients send `client_id`. The access token is a JWT (RFC 9068) or an opaque `oat_…` string, as the application's `access_token_format` says.",
    params(("instance_id" = String, Path, description = "The instance; its issuer is `…/i/{instance_id}`.")),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The tokens issued.", body = TokenResponse, headers(
            ("cache-control" = String, description = "`no-store`"),
            ("pragma" = String, description = "`no-cache`"),
        )),
        (status = 400, description = "`invalid_request` (a missing or repeated parameter, a body that is not a form), `invalid_grant` (a bad, expired, used or foreign code or refresh token, a PKCE mismatch, a banned user), `unauthorized_client`, `unsupported_grant_type`, `invalid_scope` or `invalid_target`.", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 401, description = "`invalid_client`: client authentication failed or is missing.", body = gatehouse_platform::openapi::OAuthErrorBody, headers(
            ("www-authenticate" = String, description = "`Basic realm=\"oauth\", charset=\"UTF-8\"`"),
        )),
        (status = 404, description = "`invalid_request`: no active instance has this issuer.", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 409, description = "`invalid_request`: the refresh token is being used by a concurrent request; retry.", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("client_secret_basic" = []), ()),
)]
pub async fn token(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let instance = instance(&platform, &path).await?;
    let form = read_form(&req, &body)?;
    let grant_type = field(&form, "grant_type")
        .ok_or_else(|| {
            OAuthError::bad_request(OAuthCode::InvalidRequest, "grant_type is required")
        })?
        .to_owned();
    if !matches!(
        grant_type.as_str(),
        "authorization_code" | "refresh_token" | "client_credentials"
    ) {
        return Err(OAuthError::bad_request(
            OAuthCode::UnsupportedGrantType,
            format!("grant_type {grant_type:?} is not supported"),
        ));
    }
    // client_credentials decides on the cached client; its group commit
    // checks the row and sends a request whose client changed back here
    // to read it afresh.
    let mut lookup = if grant_type == "client_credentials" {
        clients::Lookup::Cached
    } else {
        clients::Lookup::Fresh
    };
    let body = loop {
        let client =
            clients::authenticate(platform.db(), instance.id.as_str(), &req, &form, lookup).await?;
        if !client.grant_types.is_empty() && !client.grant_types.contains(&grant_type) {
            return Err(OAuthError::bad_request(
                OAuthCode::UnauthorizedClient,
                format!("this client may not use {grant_type}"),
            ));
        }
        match grant_type.as_str() {
            "authorization_code" => break code_grant(&platform, &instance, &client, &form).await?,
            "refresh_token" => break refresh_grant(&platform, &instance, &client, &form).await?,
            _ => {
                let grouped = lookup == clients::Lookup::Cached;
                match client_credentials(&platform, &instance, &client, &form, grouped).await? {
                    Some(body) => break body,
                    None => lookup = clients::Lookup::Fresh,
                }
            }
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .insert_header(("pragma", "no-cache"))
        .json(body))
}

/// What a grant decided to issue.
struct Plan<'a> {
    family_id: String,
    subject: String,
    user_id: String,
    scope: String,
    audience: String,
    grant_type: &'a str,
    refresh: bool,
    nonce: Option<String>,
    /// When the user signed in (ms), 0 when unknown.
    auth_time_ms: i64,
}

/// Signs an access token (and an ID token for `openid` user grants) and
/// mints the refresh token; returns the event payload and the response.
async fn mint(
    platform: &Platform,
    instance: &Instance,
    client: &Client,
    plan: &Plan<'_>,
) -> Result<(IssuedToken, serde_json::Value), OAuthError> {
    let now = platform.now_ms();
    let key = keys::active(
        platform.db(),
        platform.code_sealer(),
        instance.id.as_str(),
        now,
    )
    .await?;
    let issuer = platform.issuer(instance.id.as_str());
    let jti = gatehouse_platform::ids::random_base62(22);
    let exp_ms = now + ACCESS_TOKEN_TTL_MS;
    let aud = if plan.audience.is_empty() {
        client.client_id.as_str()
    } else {
        plan.audience.as_str()
    };
    let mut header = jsonwebtoken::Header::new(key.alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some(key.kid.clone());
    let claims = Claims {
        iss: &issuer,
        sub: &plan.subject,
        aud,
        client_id: &client.client_id,
        scope: &plan.scope,
        jti: &jti,
        sid: &plan.family_id,
        iat: now / 1000,
        exp: exp_ms / 1000,
    };
    // An opaque token is a random string found by its hash; its claims are
    // the row the issue projects. The jti still names it (verify's `id`).
    let (access, access_hash) = match client.access_token_format {
        AccessTokenFormat::Jwt => (
            jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(OAuthError::internal)?,
            String::new(),
        ),
        AccessTokenFormat::Opaque => {
            let token = format!(
                "{}{}",
                AccessTokenFormat::OPAQUE_PREFIX,
                gatehouse_platform::ids::random_base62(43)
            );
            let h = hash(&token);
            (token, h)
        }
    };
    let refresh = plan
        .refresh
        .then(|| format!("ghr_{}", gatehouse_platform::ids::random_base62(43)));
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_TTL_MS / 1000,
        "scope": plan.scope,
    });
    if let Some(r) = &refresh {
        body["refresh_token"] = json!(r);
    }
    if !plan.user_id.is_empty() && plan.scope.split(' ').any(|s| s == "openid") {
        let mut h = jsonwebtoken::Header::new(key.alg);
        h.kid = Some(key.kid.clone());
        let id = IdClaims {
            iss: &issuer,
            sub: &plan.subject,
            aud: &client.client_id,
            iat: now / 1000,
            exp: exp_ms / 1000,
            nonce: plan.nonce.as_deref(),
            auth_time: (plan.auth_time_ms > 0).then_some(plan.auth_time_ms / 1000),
        };
        body["id_token"] =
            json!(jsonwebtoken::encode(&h, &id, &key.encoding).map_err(OAuthError::internal)?);
    }
    let issued = IssuedToken {
        token_id: jti,
        family_id: plan.family_id.clone(),
        client_id: client.client_id.clone(),
        subject: plan.subject.clone(),
        user_id: plan.user_id.clone(),
        scope: plan.scope.clone(),
        audience: plan.audience.clone(),
        grant_type: plan.grant_type.to_owned(),
        expires_at_ms: exp_ms,
        refresh_token_hash: refresh.as_deref().map(hash).unwrap_or_default(),
        refresh_expires_at_ms: if refresh.is_some() {
            now + REFRESH_TOKEN_TTL_MS
        } else {
            0
        },
        key_id: key.kid.clone(),
        auth_time_ms: plan.auth_time_ms,
        access_token_hash: access_hash,
    };
    Ok((issued, body))
}

fn meta(instance: &Instance, client: &Client) -> EventMeta {
    EventMeta {
        tenant_id: instance.tenant_id.to_string(),
        instance_id: instance.id.to_string(),
        actor: format!("client:{}", client.client_id),
        trace_id: gatehouse_platform::http::current_trace_id(),
    }
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.1: 43–128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn checked_code(
    platform: &Platform,
    instance: &Instance,
    client: &Client,
    form: &[(String, String)],
) -> Result<AuthorizationCode, OAuthError> {
    let raw = field(form, "code")
        .ok_or_else(|| OAuthError::bad_request(OAuthCode::InvalidRequest, "code is required"))?;
    let code = platform
        .code_sealer()
        .open(raw)
        .ok_or_else(|| invalid_grant("the authorization code is invalid"))?;
    if code.instance_id != instance.id.as_str() || code.client_id != client.client_id {
        return Err(invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if platform.now_ms() > code.expires_at_ms {
        return Err(invalid_grant("the authorization code has expired"));
    }
    match field(form, "redirect_uri") {
        Some(r) if r != code.redirect_uri => {
            return Err(invalid_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        None if code.redirect_uri_in_request => {
            return Err(OAuthError::bad_request(
                OAuthCode::InvalidRequest,
                "redirect_uri is required: the authorization request had one",
            ));
        }
        _ => {}
    }
    match (&code.code_challenge, field(form, "code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            if !valid_verifier(verifier) || s256(verifier) != *challenge {
                return Err(invalid_grant(
                    "code_verifier does not match the code challenge",
                ));
            }
        }
        (Some(_), None) => {
            return Err(OAuthError::bad_request(
                OAuthCode::InvalidRequest,
                "code_verifier is required",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid_grant(
                "the authorization request had no code challenge",
            ));
        }
        (None, None) if client.public => {
            return Err(invalid_grant("a public client must use PKCE"));
        }
        (None, None) => {}
    }
    if let Some(r) = field(form, "resource") {
        well_formed_resource(r)?;
        if code.resource.as_deref() != Some(r) {
            return Err(OAuthError::bad_request(
                OAuthCode::InvalidTarget,
                "resource differs from the one granted",
            ));
        }
    }
    Ok(code)
}

/// RFC 8707 §2, by the same rule as `/authorize`.
fn well_formed_resource(r: &str) -> Result<(), OAuthError> {
    match gatehouse_platform::oauth::resource_indicator(r) {
        Some(_) => Ok(()),
        None => Err(OAuthError::bad_request(
            OAuthCode::InvalidTarget,
            "resource must be an absolute URI without a fragment",
        )),
    }
}

/// A token bound to `audience` must name one of the instance's declared
/// resources, if it declared any.
async fn declared_resource(
    platform: &Platform,
    instance: &Instance,
    audience: &str,
) -> Result<(), OAuthError> {
    if audience.is_empty() {
        return Ok(());
    }
    well_formed_resource(audience)?;
    let declared = clients::declared_resources(platform.db(), instance.id.as_str()).await?;
    if !gatehouse_platform::oauth::resource_allowed(&declared, audience) {
        return Err(OAuthError::bad_request(
            OAuthCode::InvalidTarget,
            "resource is not one of this issuer's resources",
        ));
    }
    Ok(())
}

/// A banned or deleted user gets no new tokens, even from a code or family
/// that predates the ban (their families are revoked when the event
/// arrives; this closes the window before and after).
async fn refuse_removed_user(
    platform: &Platform,
    instance: &Instance,
    user_id: &str,
) -> Result<(), OAuthError> {
    if !user_id.is_empty()
        && !users::may_get_tokens(platform.db(), instance.id.as_str(), user_id).await?
    {
        return Err(invalid_grant("the user can no longer be issued tokens"));
    }
    Ok(())
}

async fn code_grant(
    platform: &Platform,
    instance: &Instance,
    client: &Client,
    form: &[(String, String)],
) -> Result<serde_json::Value, OAuthError> {
    let code = checked_code(platform, instance, client, form)?;
    refuse_removed_user(platform, instance, &code.user_id).await?;
    declared_resource(platform, instance, code.resource.as_deref().unwrap_or("")).await?;
    let plan = Plan {
        family_id: code.id.clone(),
        subject: code.user_id.clone(),
        user_id: code.user_id.clone(),
        scope: code.scope.clone(),
        audience: code.resource.clone().unwrap_or_default(),
        grant_type: "authorization_code",
        refresh: true,
        nonce: code.nonce.clone(),
        auth_time_ms: code.auth_time_ms,
    };
    let (issued, body) = mint(platform, instance, client, &plan).await?;
    let meta = meta(instance, client);
    for attempt in 0..MAX_ATTEMPTS {
        let txn = db::begin_write(platform.db()).await?;
        let family = families::fold(
            &STORE
                .load_stream(&txn, &families::stream_id(&code.id))
                .await?,
        );
        if let Some(origin) = family.origin {
            // A replayed code: refuse, and revoke what the first use got.
            if !family.revoked {
                let ev = families::revoked_event(&origin, "code_replay");
                let (id, v) = (&code.id, family.version);
                if !families::commit(platform, txn, id, v, &[ev], &meta, attempt).await? {
                    continue;
                }
            }
            return Err(invalid_grant("the authorization code was already used"));
        }
        let ev = families::event(
            et::TOKEN_ISSUED,
            &v1::TokenIssued {
                token: Some(issued.clone()),
            },
        );
        if families::commit(platform, txn, &code.id, 0, &[ev], &meta, attempt).await? {
            return Ok(body);
        }
    }
    Err(invalid_grant("the authorization code was already used"))
}

async fn refresh_grant(
    platform: &Platform,
    instance: &Instance,
    client: &Client,
    form: &[(String, String)],
) -> Result<serde_json::Value, OAuthError> {
    let raw = field(form, "refresh_token").ok_or_else(|| {
        OAuthError::bad_request(OAuthCode::InvalidRequest, "refresh_token is required")
    })?;
    let presented = hash(raw);
    let record = families::refresh_token(platform.db(), &presented)
        .await?
        .filter(|r| r.instance_id == instance.id.as_str() && r.client_id == client.client_id)
        .ok_or_else(|| invalid_grant("the refresh token is invalid"))?;
    let meta = meta(instance, client);
    for attempt in 0..MAX_ATTEMPTS {
        let txn = db::begin_write(platform.db()).await?;
        let family = families::fold(
            &STORE
                .load_stream(&txn, &families::stream_id(&record.family_id))
                .await?,
        );
        let Some(origin) = family.origin.clone() else {
            return Err(invalid_grant("the refresh token is invalid"));
        };
        if family.revoked {
            return Err(invalid_grant("the refresh token was revoked"));
        }
        let (spent, expires) = family.refresh.get(&presented).copied().unwrap_or((true, 0));
        if spent {
            // Reuse of a rotated token: someone else holds the family.
            let ev = families::revoked_event(&origin, "refresh_token_reuse");
            let (id, v) = (&record.family_id, family.version);
            if families::commit(platform, txn, id, v, &[ev], &meta, attempt).await? {
                return Err(invalid_grant(
                    "the refresh token was already used; every token of its grant is revoked",
                ));
            }
            continue;
        }
        if platform.now_ms() > expires {
            return Err(invalid_grant("the refresh token has expired"));
        }
        refuse_removed_user(platform, instance, &origin.user_id).await?;
        // RFC 8707 §2.2: a refresh may name the resource, never another one.
        if let Some(r) = field(form, "resource") {
            well_formed_resource(r)?;
            if r != origin.audience {
                return Err(OAuthError::bad_request(
                    OAuthCode::InvalidTarget,
                    "resource differs from the one granted",
                ));
            }
        }
        declared_resource(platform, instance, &origin.audience).await?;
        let granted: Vec<&str> = origin.scope.split(' ').filter(|s| !s.is_empty()).collect();
        let scope = match field(form, "scope") {
            Some(s) => {
                let asked: Vec<&str> = s.split(' ').filter(|s| !s.is_empty()).collect();
                if let Some(extra) = asked.iter().find(|a| !granted.contains(a)) {
                    return Err(OAuthError::bad_request(
                        OAuthCode::InvalidScope,
                        format!("scope {extra:?} was not granted"),
                    ));
                }
                asked.join(" ")
            }
            None => origin.scope.clone(),
        };
        let plan = Plan {
            family_id: record.family_id.clone(),
            subject: origin.subject.clone(),
            user_id: origin.user_id.clone(),
            scope,
            audience: origin.audience.clone(),
            grant_type: "refresh_token",
            refresh: true,
            nonce: None,
            auth_time_ms: origin.auth_time_ms,
        };
        let (issued, body) = mint(platform, instance, client, &plan).await?;
        let ev = families::event(
            et::TOKEN_REFRESHED,
            &v1::TokenRefreshed {
                token: Some(issued),
                used_refresh_token_hash: presented.clone(),
            },
        );
        let (id, v) = (&record.family_id, family.version);
        if families::commit(platform, txn, id, v, &[ev], &meta, attempt).await? {
            return Ok(body);
        }
    }
    Err(OAuthError::new(
        StatusCode::CONFLICT,
        OAuthCode::InvalidRequest,
        "the refresh token is being used concurrently; retry",
    ))
}

async fn client_credentials(
    platform: &Platform,
    instance: &Instance,
    client: &Client,
    form: &[(String, String)],
    grouped: bool,
) -> Result<Option<serde_json::Value>, OAuthError> {
    if client.public {
        return Err(OAuthError::bad_request(
            OAuthCode::UnauthorizedClient,
            "client_credentials is for confidential clients",
        ));
    }
    let scope = match field(form, "scope") {
        Some(s) => {
            let asked: Vec<&str> = s.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(extra) = asked
                .iter()
                .find(|a| !client.scopes.iter().any(|c| c == *a))
            {
                return Err(OAuthError::bad_request(
                    OAuthCode::InvalidScope,
                    format!("scope {extra:?} is not allowed for this client"),
                ));
            }
            asked.join(" ")
        }
        None => client.scopes.join(" "),
    };
    let audience = match field(form, "resource") {
        Some(r) => {
            well_formed_resource(r)?;
            r.to_owned()
        }
        None => String::new(),
    };
    declared_resource(platform, instance, &audience).await?;
    let family_id = gatehouse_platform::ids::random_base62(22);
    let plan = Plan {
        family_id: family_id.clone(),
        subject: client.client_id.clone(),
        user_id: String::new(),
        scope,
        audience,
        grant_type: "client_credentials",
        refresh: false,
        nonce: None,
        auth_time_ms: 0,
    };
    let (issued, body) = mint(platform, instance, client, &plan).await?;
    let ev = families::event(
        et::TOKEN_ISSUED,
        &v1::TokenIssued {
            token: Some(issued),
        },
    );
    if grouped {
        let start = group::Start {
            family_id,
            event: ev,
            meta: meta(instance, client),
            client: client.clone(),
        };
        return match group::start(platform, start).await {
            group::Outcome::Committed => Ok(Some(body)),
            group::Outcome::Stale => Ok(None),
            group::Outcome::Failed(err) => Err(OAuthError::internal(err)),
        };
    }
    let txn = db::begin_write(platform.db()).await?;
    let recorded = families::append(
        &txn,
        &family_id,
        0,
        &[ev],
        &meta(instance, client),
        platform.now_ms(),
    )
    .await
    .map_err(OAuthError::internal)?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &recorded);
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_verifier(verifier));
        assert_eq!(
            s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}!", "a".repeat(50))));
    }
}
