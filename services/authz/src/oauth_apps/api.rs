//! `/v1/oauth_applications`: wire-compatible with Clerk's Backend API, so the
//! official SDK's `oauthApplications.create/list/get/update/delete/rotateSecret`
//! work unmodified.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency;
use gatehouse_platform::idempotency::Idempotent;
use gatehouse_platform::oauth::AccessTokenFormat;
use gatehouse_platform::tenancy::InstanceKey;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{Decision, commands, event, hash_secret, new_secret, projection, validate};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/oauth_applications")
            .service(web::resource("").post(create).get(list))
            .service(web::resource("/{id}").get(get).patch(update).delete(delete))
            .service(web::resource("/{id}/rotate_secret").post(rotate_secret)),
    );
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create, list, get, update, delete, rotate_secret),
    components(schemas(
        OAuthApplicationObject,
        OAuthApplicationListSchema,
        DeletedOAuthApplicationSchema,
        CreateBody,
        UpdateBody,
        TokenFormatSchema
    ))
)]
struct Doc;

/// The OpenAPI description of `/v1/oauth_applications`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <Doc as utoipa::OpenApi>::openapi();
    // An absent body reads as `{}`: the PATCH changes nothing.
    if let Some(body) = doc
        .paths
        .paths
        .get_mut("/v1/oauth_applications/{id}")
        .and_then(|item| item.patch.as_mut())
        .and_then(|op| op.request_body.as_mut())
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
    doc
}

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An access token format, as requests send and objects show it.
#[derive(utoipa::ToSchema)]
#[schema(as = AccessTokenFormat, rename_all = "lowercase")]
#[allow(dead_code)]
pub(crate) enum TokenFormatSchema {
    /// RFC 9068 JWTs, verified with the issuer's JWKS.
    Jwt,
    /// Opaque `oat_…` tokens, looked up on every check.
    Opaque,
}

/// Clerk's OAuth application object (as `app_json` builds it).
#[derive(utoipa::ToSchema)]
#[schema(as = OAuthApplication)]
#[allow(dead_code)]
pub(crate) struct OAuthApplicationObject {
    /// Always `oauth_application`.
    #[schema(example = "oauth_application")]
    object: String,
    /// `oa_…`
    id: String,
    instance_id: String,
    name: String,
    client_id: String,
    /// Only in the answers of create and rotate_secret, of a confidential
    /// application: shown once.
    #[schema(nullable = false)]
    client_secret: Option<String>,
    #[schema(required = true)]
    client_uri: Option<String>,
    #[schema(required = true)]
    client_image_url: Option<String>,
    dynamically_registered: bool,
    consent_screen_enabled: bool,
    pkce_required: bool,
    public: bool,
    /// Space-separated.
    scopes: String,
    access_token_format: TokenFormatSchema,
    redirect_uris: Vec<String>,
    /// The first redirect URI, for older clients.
    #[schema(required = true)]
    callback_url: Option<String>,
    authorize_url: String,
    token_fetch_url: String,
    user_info_url: String,
    discovery_url: String,
    token_introspection_url: String,
    /// Milliseconds since the Unix epoch.
    created_at: i64,
    /// Milliseconds since the Unix epoch.
    updated_at: i64,
}

#[derive(utoipa::ToSchema)]
#[schema(as = OAuthApplicationList)]
#[allow(dead_code)]
struct OAuthApplicationListSchema {
    data: Vec<OAuthApplicationObject>,
    /// Applications matching the filter, over all pages.
    total_count: i64,
}

#[derive(utoipa::ToSchema)]
#[schema(as = DeletedOAuthApplication)]
#[allow(dead_code)]
struct DeletedOAuthApplicationSchema {
    /// Always `oauth_application`.
    #[schema(example = "oauth_application")]
    object: String,
    id: String,
    /// Always `true`.
    deleted: bool,
}

/// The Clerk OAuth application object; `client_secret` only when given.
pub fn app_json(
    platform: &Platform,
    instance_id: &str,
    a: &AppState,
    secret: Option<&str>,
) -> Value {
    let mut v = gatehouse_platform::wire::oauth_application_json(platform, instance_id, a);
    if let Some(s) = secret {
        v["client_secret"] = json!(s);
    }
    v
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(
    as = CreateOAuthApplication,
    example = json!({
        "name": "Drive sync",
        "redirect_uris": ["https://app.example.com/callback"],
        "scopes": "openid profile email"
    })
)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[schema(
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]{0,254}[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    name: String,
    /// Exact redirect URIs: https, http on a loopback host, or a
    /// reverse-domain private-use scheme; no fragment.
    #[serde(default)]
    #[schema(max_items = 20)]
    redirect_uris: Option<Vec<String>>,
    /// Older clients send one `callback_url`; added to `redirect_uris`.
    #[serde(default)]
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
    /// Space-separated scopes the instance knows (standard or custom);
    /// `openid profile email` when absent.
    #[serde(default)]
    scopes: Option<String>,
    /// Public clients (no secret) must use PKCE.
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    consent_screen_enabled: Option<bool>,
    /// `true` when absent; `false` is refused for public clients.
    #[serde(default)]
    pkce_required: Option<bool>,
    /// An https URL (http only on a loopback host); empty means none.
    #[serde(default)]
    #[schema(max_length = 2048)]
    client_uri: Option<String>,
    /// An https URL (http only on a loopback host); empty means none.
    #[serde(default)]
    #[schema(max_length = 2048)]
    client_image_url: Option<String>,
    /// `jwt` when absent.
    #[serde(default)]
    #[schema(value_type = Option<TokenFormatSchema>)]
    access_token_format: Option<AccessTokenFormat>,
}

#[utoipa::path(
    post,
    path = "/v1/oauth_applications",
    tag = "oauth_applications",
    operation_id = "create_oauth_application",
    summary = "Create an OAuth application",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[\x21-\x7e]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and request gets the first response again (for 24 hours).")),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The new application; `client_secret` (confidential applications) is shown only here.", body = OAuthApplicationObject, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "A body that is not JSON, or an invalid Idempotency-Key (`idempotency_key_invalid`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still running (`idempotency_request_in_progress`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An invalid field (name, redirect URI, unknown scope, info URL, PKCE off for a public client), or an Idempotency-Key reused with another request (`idempotency_key_reused`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn create(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let key = idempotency::key_of(&req)?;
    let instance_id = auth.instance.id.to_string();
    idempotency::run(&platform, &instance_id, key, req.path(), &body, || async {
        let b: CreateBody = parse_json(&body)?;
        let mut uris = b.redirect_uris.unwrap_or_default();
        uris.extend(b.callback_url.filter(|c| !c.is_empty()));
        let public = b.public.unwrap_or(false);
        let known = super::scopes::known(platform.db(), &instance_id).await?;
        let state = AppState {
            name: validate::name(&b.name)?,
            redirect_uris: validate::redirect_uris(&uris)?,
            scopes: validate::scopes(
                b.scopes.as_deref().unwrap_or(validate::DEFAULT_SCOPES),
                &known,
            )?,
            public,
            consent_screen_enabled: b.consent_screen_enabled.unwrap_or(true),
            pkce_required: commands::pkce_for(public, b.pkce_required)?,
            client_uri: validate::info_url("client_uri", b.client_uri)?,
            client_image_url: validate::info_url("client_image_url", b.client_image_url)?,
            dynamically_registered: false,
            access_token_format: b
                .access_token_format
                .unwrap_or_default()
                .as_str()
                .to_owned(),
            ..Default::default()
        };
        let (app, secret) = super::create(&platform, &auth, state).await?;
        Ok((
            StatusCode::OK,
            app_json(&platform, &instance_id, &app, secret.as_deref()),
        ))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/oauth_applications",
    tag = "oauth_applications",
    operation_id = "list_oauth_applications",
    summary = "List OAuth applications",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 500, description = "Page size, 10 by default."),
        ("offset" = Option<u64>, Query, maximum = 9223372036854775807_u64, description = "Applications to skip."),
        ("order_by" = Option<String>, Query, pattern = r"^[+-]?(created_at|name)$", description = "`name` or `created_at`, optionally prefixed by `+` or `-` (descending); `created_at` ascending by default."),
        ("name_query" = Option<String>, Query, description = "Only applications whose name contains this, case-insensitively."),
    ),
    responses(
        (status = 200, description = "A page of applications (no secrets).", body = OAuthApplicationListSchema),
        (status = 422, description = "An invalid or unknown query parameter.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn list(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (mut limit, mut offset) = (10u64, 0u64);
    let mut order = ("created_at", true);
    let mut name_query = None;
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "limit" => limit = gatehouse_platform::http::limit_param(&v)?,
            "offset" => offset = gatehouse_platform::http::offset_param(&v)?,
            "order_by" => {
                let (desc, name) = match v.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    // A `+` sent unescaped arrives as a space.
                    None => (
                        false,
                        v.strip_prefix('+')
                            .or_else(|| v.strip_prefix(' '))
                            .unwrap_or(&v),
                    ),
                };
                let column = match name {
                    "created_at" => "created_at",
                    "name" => "name",
                    _ => {
                        return Err(ApiError::invalid_param(
                            "order_by",
                            "`order_by` must be name or created_at, optionally prefixed by + or -.",
                        ));
                    }
                };
                order = (column, desc);
            }
            "name_query" => name_query = Some(v.into_owned()),
            other => {
                return Err(ApiError::invalid_param(
                    other,
                    format!("Unknown query parameter `{other}`."),
                ));
            }
        }
    }
    let instance_id = auth.instance.id.to_string();
    let (apps, total) = projection::list(
        platform.db(),
        &instance_id,
        name_query.as_deref(),
        order,
        limit,
        offset,
    )
    .await?;
    let data: Vec<Value> = apps
        .iter()
        .map(|a| app_json(&platform, &instance_id, a, None))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data, "total_count": total })))
}

#[utoipa::path(
    get,
    path = "/v1/oauth_applications/{id}",
    tag = "oauth_applications",
    operation_id = "get_oauth_application",
    summary = "Get an OAuth application",
    params(("id" = String, Path, description = "The application id (`oa_…`).")),
    responses(
        (status = 200, description = "The application (no secret).", body = OAuthApplicationObject),
        (status = 404, description = "No such application in this instance.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn get(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let instance_id = auth.instance.id.to_string();
    let app = projection::get(platform.db(), &instance_id, &path)
        .await?
        .ok_or_else(|| ApiError::not_found("OAuth application"))?;
    Ok(HttpResponse::Ok().json(app_json(&platform, &instance_id, &app, None)))
}

/// Absent or null fields are left as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(
    as = UpdateOAuthApplication,
    example = json!({ "name": "Drive sync", "consent_screen_enabled": true })
)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[schema(
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]{0,254}[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    name: Option<String>,
    /// Replaces the list (with `callback_url`, if given, added).
    #[schema(max_items = 20)]
    redirect_uris: Option<Vec<String>>,
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
    /// Space-separated scopes the instance knows.
    scopes: Option<String>,
    /// Must equal the application's: it cannot switch.
    public: Option<bool>,
    /// Cannot be turned off for dynamically registered applications.
    consent_screen_enabled: Option<bool>,
    /// Cannot be turned off for public clients.
    pkce_required: Option<bool>,
    /// null or empty clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    client_uri: Option<Option<String>>,
    /// null or empty clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    client_image_url: Option<Option<String>>,
    #[schema(value_type = Option<TokenFormatSchema>)]
    access_token_format: Option<AccessTokenFormat>,
}

#[utoipa::path(
    patch,
    path = "/v1/oauth_applications/{id}",
    tag = "oauth_applications",
    operation_id = "update_oauth_application",
    summary = "Update an OAuth application",
    params(("id" = String, Path, description = "The application id (`oa_…`).")),
    request_body(content = UpdateBody, content_type = "application/json", description = "Absent or empty: nothing changes."),
    responses(
        (status = 200, description = "The application as updated (no secret).", body = OAuthApplicationObject),
        (status = 400, description = "A body that is not JSON, or the consent screen turned off for a dynamically registered application (`consent_required`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No such application in this instance.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Changed by concurrent requests; retry (`concurrent_modification`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An invalid field, `public` switched, or PKCE turned off for a public client.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn update(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: UpdateBody = parse_json(&body)?;
    let name = b.name.as_deref().map(validate::name).transpose()?;
    let uris = match (b.redirect_uris, b.callback_url) {
        (None, None) => None,
        (list, cb) => {
            let mut all = list.unwrap_or_default();
            all.extend(cb.filter(|c| !c.is_empty()));
            Some(validate::redirect_uris(&all)?)
        }
    };
    let known = super::scopes::known(platform.db(), auth.instance.id.as_str()).await?;
    let scopes = b
        .scopes
        .as_deref()
        .map(|s| validate::scopes(s, &known))
        .transpose()?;
    let client_uri = b
        .client_uri
        .map(|v| validate::info_url("client_uri", v))
        .transpose()?;
    let image = b
        .client_image_url
        .map(|v| validate::info_url("client_image_url", v))
        .transpose()?;
    let instance_id = auth.instance.id.to_string();
    let update = commands::Update {
        name,
        redirect_uris: uris,
        scopes,
        public: b.public,
        consent_screen_enabled: b.consent_screen_enabled,
        pkce_required: b.pkce_required,
        client_uri,
        client_image_url: image,
        access_token_format: b.access_token_format,
    };
    let app = super::mutate(&platform, &auth, &path, |app, now| {
        commands::update(&app.state, &update, now)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("OAuth application"))?;
    Ok(HttpResponse::Ok().json(app_json(&platform, &instance_id, &app, None)))
}

#[utoipa::path(
    delete,
    path = "/v1/oauth_applications/{id}",
    tag = "oauth_applications",
    operation_id = "delete_oauth_application",
    summary = "Delete an OAuth application",
    params(("id" = String, Path, description = "The application id (`oa_…`).")),
    responses(
        (status = 200, description = "Deleted.", body = DeletedOAuthApplicationSchema),
        (status = 404, description = "No such application in this instance.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Changed by concurrent requests; retry (`concurrent_modification`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn delete(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    super::mutate(&platform, &auth, &id, |app, _| {
        Ok(Decision {
            events: vec![event(
                et::OAUTH_APPLICATION_DELETED,
                &v1::OAuthApplicationDeleted {
                    application_id: app.state.application_id.clone(),
                },
            )],
            state: None,
        })
    })
    .await?;
    Ok(
        HttpResponse::Ok()
            .json(json!({ "object": "oauth_application", "id": id, "deleted": true })),
    )
}

#[utoipa::path(
    post,
    path = "/v1/oauth_applications/{id}/rotate_secret",
    tag = "oauth_applications",
    operation_id = "rotate_oauth_application_secret",
    summary = "Rotate an OAuth application's client secret",
    params(("id" = String, Path, description = "The application id (`oa_…`)."), ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[\x21-\x7e]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and request gets the first response again (for 24 hours).")),
    responses(
        (status = 200, description = "The application with its new `client_secret`, shown only here; the old secret stops working.", body = OAuthApplicationObject, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "A public application, which has no secret (`public_client_has_no_secret`), or an invalid Idempotency-Key.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No such application in this instance.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Changed by concurrent requests, or a request with this Idempotency-Key is still running.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An Idempotency-Key reused with another request (`idempotency_key_reused`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn rotate_secret(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &[])?;
    idempotent
        .guard(|| async move {
            let secret = new_secret();
            let hash = hash_secret(&secret);
            let instance_id = auth.instance.id.to_string();
            let app = super::mutate(&platform, &auth, &path, |app, now| {
                if app.state.public {
                    return Err(ApiError::bad_request(
                        "public_client_has_no_secret",
                        "Public applications have no client secret to rotate.",
                    ));
                }
                let mut s = app.state.clone();
                s.client_secret_hash = hash.clone();
                s.updated_at_ms = now.max(s.updated_at_ms);
                Ok(Decision {
                    events: vec![event(
                        et::OAUTH_APPLICATION_SECRET_ROTATED,
                        &v1::OAuthApplicationSecretRotated {
                            application: Some(s.clone()),
                        },
                    )],
                    state: Some(s),
                })
            })
            .await?
            .ok_or_else(|| ApiError::not_found("OAuth application"))?;
            Ok(HttpResponse::Ok().json(app_json(&platform, &instance_id, &app, Some(&secret))))
        })
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mounted_route_is_documented() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &super::openapi(),
            &[
                ("POST", "/v1/oauth_applications"),
                ("GET", "/v1/oauth_applications"),
                ("GET", "/v1/oauth_applications/{id}"),
                ("PATCH", "/v1/oauth_applications/{id}"),
                ("DELETE", "/v1/oauth_applications/{id}"),
                ("POST", "/v1/oauth_applications/{id}/rotate_secret"),
            ],
        );
    }
}
