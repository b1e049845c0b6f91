//! Backend API for webhooks, per instance (secret key): the event catalog
//! at `/v1/webhooks/event_types`; `/v1/webhooks/endpoints` create and list,
//! `/{id}` get, update and delete, `/{id}/secret`, `/{id}/rotate_secret`,
//! `/{id}/enable`.

use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency::Idempotent;
use gatehouse_platform::tenancy::{Authed, InstanceKey};
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, WebhookEndpointState as State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoints::{
    self, DEFAULT_MAX_CONCURRENCY, Decision, MAX_CONCURRENCY_BOUND, ROTATION_OVERLAP_MS, event,
};
use crate::{catalog, urls};

const MAX_DESCRIPTION: usize = 1024;
const MAX_FILTER_TYPES: usize = 64;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/webhooks/event_types").get(event_types))
        .service(
            web::scope("/v1/webhooks/endpoints")
                .service(web::resource("").get(list).post(create))
                .service(web::resource("/{id}").get(get).patch(update).delete(delete))
                .service(web::resource("/{id}/secret").get(secret))
                .service(web::resource("/{id}/rotate_secret").post(rotate_secret))
                .service(web::resource("/{id}/enable").post(enable)),
        );
}

/// The event catalog: every public type, its meaning, and an example body
/// built by the code that builds deliveries.
async fn event_types(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
) -> ApiResult<HttpResponse> {
    let data = catalog::entries(&platform, auth.instance.id.as_str());
    Ok(HttpResponse::Ok().json(json!({ "total_count": data.len(), "data": data })))
}

fn endpoint_json(s: &State) -> Value {
    json!({
        "object": "webhook_endpoint",
        "id": s.endpoint_id,
        "url": s.url,
        "description": s.description,
        "filter_types": if s.filter_types.is_empty() { Value::Null } else { json!(s.filter_types) },
        "disabled": s.disabled,
        "max_concurrency": endpoints::max_concurrency(s),
        "created_at": s.created_at_ms,
        "updated_at": s.updated_at_ms,
    })
}

fn description(raw: Option<String>) -> ApiResult<String> {
    let d = raw.unwrap_or_default();
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid_param(
            "description",
            format!("`description` must be at most {MAX_DESCRIPTION} printable characters."),
        ));
    }
    Ok(d)
}

/// Deliveries in flight at once: 1 to [`MAX_CONCURRENCY_BOUND`]; absent
/// means [`DEFAULT_MAX_CONCURRENCY`].
fn max_concurrency(raw: Option<i64>) -> ApiResult<i32> {
    let Some(n) = raw else {
        return Ok(DEFAULT_MAX_CONCURRENCY);
    };
    i32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_CONCURRENCY_BOUND).contains(n))
        .ok_or_else(|| {
            ApiError::invalid_param(
                "max_concurrency",
                format!("`max_concurrency` must be an integer from 1 to {MAX_CONCURRENCY_BOUND}."),
            )
        })
}

/// `null`/absent means every type; otherwise known public types, deduplicated.
fn filter_types(raw: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let list = raw.unwrap_or_default();
    if list.len() > MAX_FILTER_TYPES {
        return Err(ApiError::invalid_param(
            "filter_types",
            format!("At most {MAX_FILTER_TYPES} event types."),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for t in list {
        if !catalog::is_public(&t) {
            return Err(ApiError::invalid_param(
                "filter_types",
                format!("Unknown event type {t:?}."),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    filter_types: Option<Vec<String>>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    max_concurrency: Option<i64>,
}

async fn create(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    body: web::Bytes,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &body)?;
    idempotent
        .guard(|| async move {
            let b: CreateBody = parse_json(&body)?;
            let state = State {
                url: urls::check(
                    &b.url,
                    auth.instance.environment,
                    platform.settings().webhooks_allow_loopback,
                )
                .await?,
                description: description(b.description)?,
                filter_types: filter_types(b.filter_types)?,
                disabled: b.disabled.unwrap_or(false),
                max_concurrency: max_concurrency(b.max_concurrency)?,
                ..Default::default()
            };
            let (state, secret) = endpoints::create(&platform, &auth, state).await?;
            let mut out = endpoint_json(&state);
            out["secret"] = json!(secret);
            Ok(HttpResponse::Ok().json(out))
        })
        .await
}

async fn list(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (limit, offset) = page(&req)?;
    let (states, total) =
        endpoints::list(platform.db(), auth.instance.id.as_str(), limit, offset).await?;
    let data: Vec<Value> = states.iter().map(endpoint_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data, "total_count": total })))
}

/// `limit` (1–500, default 10) and `offset`, nothing else.
pub(crate) fn page(req: &HttpRequest) -> ApiResult<(u64, u64)> {
    let (mut limit, mut offset) = (10u64, 0u64);
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "limit" => limit = gatehouse_platform::http::limit_param(&v)?,
            "offset" => offset = gatehouse_platform::http::offset_param(&v)?,
            other => {
                return Err(ApiError::invalid_param(
                    other,
                    format!("Unknown query parameter `{other}`."),
                ));
            }
        }
    }
    Ok((limit, offset))
}

async fn found(platform: &Platform, auth: &Authed, id: &str) -> ApiResult<State> {
    endpoints::get(platform.db(), auth.instance.id.as_str(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

async fn get(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let s = found(&platform, &auth, &path).await?;
    Ok(HttpResponse::Ok().json(endpoint_json(&s)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Present and `null`: every type again.
    #[serde(default, deserialize_with = "present")]
    filter_types: Option<Option<Vec<String>>>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    max_concurrency: Option<i64>,
}

/// Tells a field given as `null` from one left out.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Appends an update of the fields that changed, or nothing.
fn updated(mut next: State, before: &State, now: i64) -> Decision {
    let mut changed = Vec::new();
    if next.url != before.url {
        changed.push("url".to_owned());
    }
    if next.description != before.description {
        changed.push("description".to_owned());
    }
    if next.filter_types != before.filter_types {
        changed.push("filter_types".to_owned());
    }
    if next.disabled != before.disabled {
        changed.push("disabled".to_owned());
    }
    if endpoints::max_concurrency(&next) != endpoints::max_concurrency(before) {
        changed.push("max_concurrency".to_owned());
    }
    if changed.is_empty() {
        return Decision::none(next);
    }
    next.updated_at_ms = now;
    Decision {
        events: vec![event(
            et::WEBHOOK_ENDPOINT_UPDATED,
            &v1::WebhookEndpointUpdated {
                endpoint: Some(next.clone()),
                changed_fields: changed,
            },
        )],
        state: Some(next),
    }
}

async fn update(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: UpdateBody = parse_json(&body)?;
    let url = match b.url {
        Some(u) => Some(
            urls::check(
                &u,
                auth.instance.environment,
                platform.settings().webhooks_allow_loopback,
            )
            .await?,
        ),
        None => None,
    };
    let desc = b.description.map(|d| description(Some(d))).transpose()?;
    let filter = b.filter_types.map(filter_types).transpose()?;
    let concurrency = b
        .max_concurrency
        .map(|n| max_concurrency(Some(n)))
        .transpose()?;
    let state = endpoints::mutate(&platform, &auth, &path, |e, now| {
        let mut next = e.state.clone();
        if let Some(u) = &url {
            next.url = u.clone();
        }
        if let Some(d) = &desc {
            next.description = d.clone();
        }
        if let Some(f) = &filter {
            next.filter_types = f.clone();
        }
        if let Some(d) = b.disabled {
            next.disabled = d;
        }
        if let Some(n) = concurrency {
            next.max_concurrency = n;
        }
        Ok(updated(next, &e.state, now))
    })
    .await?;
    let state = state.ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(HttpResponse::Ok().json(endpoint_json(&state)))
}

/// Re-enables an endpoint (after it was disabled by hand or for failing).
async fn enable(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &[])?;
    idempotent
        .guard(|| async move {
            let state = endpoints::mutate(&platform, &auth, &path, |e, now| {
                let mut next = e.state.clone();
                next.disabled = false;
                Ok(updated(next, &e.state, now))
            })
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            Ok(HttpResponse::Ok().json(endpoint_json(&state)))
        })
        .await
}

async fn delete(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    endpoints::mutate(&platform, &auth, &id, |e, _| {
        Ok(Decision {
            events: vec![event(
                et::WEBHOOK_ENDPOINT_DELETED,
                &v1::WebhookEndpointDeleted {
                    endpoint_id: e.state.endpoint_id.clone(),
                },
            )],
            state: None,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "object": "webhook_endpoint", "id": id, "deleted": true })))
}

/// The current signing secret.
async fn secret(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let s = found(&platform, &auth, &path).await?;
    let current = endpoints::signing_secrets(&platform, &s, platform.now_ms())
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| {
            ApiError::internal(
                "the endpoint's secret cannot be opened with this deployment's secret",
            )
        })?;
    Ok(HttpResponse::Ok().json(json!({ "object": "webhook_endpoint_secret", "secret": current })))
}

/// A new current secret; the previous one signs alongside it for 24 hours
/// (one previous secret at most: rotating again ends the older one).
async fn rotate_secret(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &[])?;
    idempotent
        .guard(|| async move {
            let fresh = endpoints::new_secret();
            let sealed = endpoints::seal_secret(&platform, &path, &fresh);
            let state = endpoints::mutate(&platform, &auth, &path, |e, now| {
                let mut next = e.state.clone();
                // The new secret, then the one it replaces for its overlap; a
                // secret rotated out earlier stops signing now.
                next.secrets = vec![sealed.clone()];
                if let Some(current) = e.state.secrets.iter().find(|s| s.expires_at_ms == 0) {
                    let mut old = current.clone();
                    old.expires_at_ms = now + ROTATION_OVERLAP_MS;
                    next.secrets.push(old);
                }
                next.updated_at_ms = now;
                Ok(Decision {
                    events: vec![event(
                        et::WEBHOOK_ENDPOINT_SECRET_ROTATED,
                        &v1::WebhookEndpointSecretRotated {
                            endpoint: Some(next.clone()),
                        },
                    )],
                    state: Some(next),
                })
            })
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            let previous_until = state.secrets.get(1).map(|s| s.expires_at_ms);
            Ok(HttpResponse::Ok().json(json!({
                "object": "webhook_endpoint_secret",
                "secret": fresh,
                "previous_secret_expires_at": previous_until,
            })))
        })
        .await
}
