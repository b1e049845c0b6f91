//! `/v1/oauth_applications`: wire-compatible with Clerk's Backend API, so the
//! official SDK's `oauthApplications.create/list/get/update/delete/rotateSecret`
//! work unmodified.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency;
use gatehouse_platform::idempotency::Idempotent;
use gatehouse_platform::tenancy::InstanceKey;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{Decision, event, hash_secret, new_secret, projection, validate};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/oauth_applications")
            .service(web::resource("").post(create).get(list))
            .service(web::resource("/{id}").get(get).patch(update).delete(delete))
            .service(web::resource("/{id}/rotate_secret").post(rotate_secret)),
    );
}

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    /// Older clients send one `callback_url`.
    #[serde(default)]
    callback_url: Option<String>,
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    consent_screen_enabled: Option<bool>,
    #[serde(default)]
    pkce_required: Option<bool>,
    #[serde(default)]
    client_uri: Option<String>,
    #[serde(default)]
    client_image_url: Option<String>,
}

fn pkce_for(public: bool, requested: Option<bool>) -> ApiResult<bool> {
    match (public, requested) {
        (true, Some(false)) => Err(ApiError::invalid_param(
            "pkce_required",
            "Public clients must use PKCE.",
        )),
        (_, Some(p)) => Ok(p),
        // OAuth 2.1: PKCE for every client unless turned off explicitly.
        (_, None) => Ok(true),
    }
}

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
            pkce_required: pkce_for(public, b.pkce_required)?,
            client_uri: validate::info_url("client_uri", b.client_uri)?,
            client_image_url: validate::info_url("client_image_url", b.client_image_url)?,
            dynamically_registered: false,
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
                    None => (false, v.strip_prefix('+').unwrap_or(&v)),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    callback_url: Option<String>,
    scopes: Option<String>,
    public: Option<bool>,
    consent_screen_enabled: Option<bool>,
    pkce_required: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    client_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    client_image_url: Option<Option<String>>,
}

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
    let app = super::mutate(&platform, &auth, &path, |app, now| {
        let mut s = app.state.clone();
        let mut changed = Vec::new();
        let mut set = |field: &str, differs: bool| {
            if differs {
                changed.push(field.to_owned());
            }
        };
        if b.public.is_some_and(|p| p != s.public) {
            return Err(ApiError::invalid_param(
                "public",
                "An application cannot switch between public and confidential; create a new one.",
            ));
        }
        if let Some(n) = &name {
            set("name", *n != s.name);
            s.name = n.clone();
        }
        if let Some(u) = &uris {
            set("redirect_uris", *u != s.redirect_uris);
            s.redirect_uris = u.clone();
        }
        if let Some(sc) = &scopes {
            set("scopes", *sc != s.scopes);
            s.scopes = sc.clone();
        }
        if let Some(c) = b.consent_screen_enabled {
            if !c && s.dynamically_registered {
                return Err(ApiError::bad_request(
                    "consent_required",
                    "Dynamically registered applications always show the consent screen.",
                )
                .with_meta(json!({ "param_name": "consent_screen_enabled" })));
            }
            set("consent_screen_enabled", c != s.consent_screen_enabled);
            s.consent_screen_enabled = c;
        }
        if let Some(p) = b.pkce_required {
            let p = pkce_for(s.public, Some(p))?;
            set("pkce_required", p != s.pkce_required);
            s.pkce_required = p;
        }
        if let Some(c) = &client_uri {
            set("client_uri", *c != s.client_uri);
            s.client_uri = c.clone();
        }
        if let Some(i) = &image {
            set("client_image_url", *i != s.client_image_url);
            s.client_image_url = i.clone();
        }
        if changed.is_empty() {
            return Ok(Decision::none(app.state.clone()));
        }
        s.updated_at_ms = now.max(s.updated_at_ms);
        Ok(Decision {
            events: vec![event(
                et::OAUTH_APPLICATION_UPDATED,
                &v1::OAuthApplicationUpdated {
                    application: Some(s.clone()),
                    changed_fields: changed,
                },
            )],
            state: Some(s),
        })
    })
    .await?
    .ok_or_else(|| ApiError::not_found("OAuth application"))?;
    Ok(HttpResponse::Ok().json(app_json(&platform, &instance_id, &app, None)))
}

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
