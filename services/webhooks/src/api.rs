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
use crate::openapi::{
    BODY_OR_IDEMPOTENCY_400, ENDPOINT_ID, IDEMPOTENCY_400, IDEMPOTENCY_409, IDEMPOTENCY_422,
    IDEMPOTENCY_KEY, TAG, constant, filter_types_schema,
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

/// This module's part of the published OpenAPI document.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(
            event_types,
            list,
            create,
            get,
            update,
            delete,
            secret,
            rotate_secret,
            enable
        ),
        components(schemas(
            EventTypeObject,
            EventTypeList,
            EndpointObject,
            CreatedEndpoint,
            EndpointList,
            DeletedEndpoint,
            SecretObject,
            RotatedSecret,
            CreateBody,
            UpdateBody
        ))
    )]
    struct Doc;
    Doc::openapi()
}

/// One public event type of the catalog.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEventType)]
#[allow(dead_code)]
pub(crate) struct EventTypeObject {
    #[schema(schema_with = event_type_object)]
    object: String,
    /// The event type, as in `type` of a delivery and in `filter_types`.
    name: String,
    /// What the event means.
    description: String,
    /// A whole webhook body of this type, as delivered:
    /// `{"data","object":"event","type","timestamp","instance_id"}`.
    #[schema(value_type = Object)]
    example: Value,
}

fn event_type_object() -> utoipa::openapi::schema::Object {
    constant(json!("event_type"))
}

/// The answer of `GET /v1/webhooks/event_types`: the whole catalog.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEventTypeList)]
#[allow(dead_code)]
struct EventTypeList {
    data: Vec<EventTypeObject>,
    total_count: u64,
}

/// The event catalog: every public type, its meaning, and an example body
/// built by the code that builds deliveries.
#[utoipa::path(
    get,
    path = "/v1/webhooks/event_types",
    tag = TAG,
    operation_id = "list_webhook_event_types",
    responses(
        (status = 200, description = "Every public event type with an example body.", body = EventTypeList),
    ),
    security(("secret_key" = []))
)]
async fn event_types(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
) -> ApiResult<HttpResponse> {
    let data = catalog::entries(&platform, auth.instance.id.as_str());
    Ok(HttpResponse::Ok().json(json!({ "total_count": data.len(), "data": data })))
}

/// A webhook endpoint, as every endpoint route answers it (its secret
/// aside).
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEndpoint)]
#[allow(dead_code)]
struct EndpointObject {
    #[schema(schema_with = endpoint_object)]
    object: String,
    /// `ep_` and 22 letters or digits.
    #[schema(pattern = "^ep_[A-Za-z0-9]{22}$")]
    id: String,
    url: String,
    /// Empty when none was given.
    description: String,
    /// The event types delivered to it; `null` for every public type.
    #[schema(required = true)]
    filter_types: Option<Vec<String>>,
    /// A disabled endpoint receives nothing until enabled.
    disabled: bool,
    /// Deliveries to it in flight at once.
    #[schema(minimum = 1, maximum = 64)]
    max_concurrency: i32,
    /// Milliseconds since the Unix epoch.
    created_at: i64,
    /// Milliseconds since the Unix epoch.
    updated_at: i64,
}

/// A new webhook endpoint, with its signing secret: shown in this answer
/// only (and at `GET …/{id}/secret`).
#[derive(utoipa::ToSchema)]
#[schema(as = CreatedWebhookEndpoint)]
#[allow(dead_code)]
struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointObject,
    /// The Standard Webhooks signing secret: `whsec_` and the base64 of 32
    /// bytes.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    secret: String,
}

/// A page of the instance's endpoints, oldest first.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEndpointList)]
#[allow(dead_code)]
struct EndpointList {
    data: Vec<EndpointObject>,
    /// Every endpoint of the instance, whatever the page.
    total_count: u64,
}

/// A deleted endpoint.
#[derive(utoipa::ToSchema)]
#[schema(as = DeletedWebhookEndpoint)]
#[allow(dead_code)]
struct DeletedEndpoint {
    #[schema(schema_with = endpoint_object)]
    object: String,
    id: String,
    #[schema(schema_with = always_true)]
    deleted: bool,
}

/// An endpoint's current signing secret.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEndpointSecret)]
#[allow(dead_code)]
struct SecretObject {
    #[schema(schema_with = secret_object)]
    object: String,
    /// `whsec_` and the base64 of 32 bytes.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    secret: String,
}

/// The signing secret after a rotation.
#[derive(utoipa::ToSchema)]
#[schema(as = RotatedWebhookEndpointSecret)]
#[allow(dead_code)]
struct RotatedSecret {
    #[schema(schema_with = secret_object)]
    object: String,
    /// The new current secret: `whsec_` and the base64 of 32 bytes.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    secret: String,
    /// Until when (ms since the Unix epoch) the replaced secret keeps
    /// signing alongside the new one: 24 hours after the rotation.
    #[schema(required = true)]
    previous_secret_expires_at: Option<i64>,
}

fn endpoint_object() -> utoipa::openapi::schema::Object {
    constant(json!("webhook_endpoint"))
}

fn secret_object() -> utoipa::openapi::schema::Object {
    constant(json!("webhook_endpoint_secret"))
}

fn always_true() -> utoipa::openapi::schema::Object {
    constant(json!(true))
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

/// A new webhook endpoint. `null` is the same as an absent field.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateWebhookEndpointRequest)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// An absolute `https` URL of at most 2048 bytes, without
    /// credentials, fragment, whitespace or control characters, whose host
    /// is or resolves only to public addresses. (A deployment started with
    /// `--webhooks-allow-loopback` also takes `http` or `https` to
    /// `localhost`, `127.0.0.1` and `[::1]` for development instances.)
    #[schema(format = "uri", min_length = 1, max_length = 2048)]
    url: String,
    /// At most 1024 characters, no control characters but newlines; empty
    /// when absent.
    #[serde(default)]
    #[schema(
        max_length = 1024,
        pattern = "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*$"
    )]
    description: Option<String>,
    /// At most 64 public event types (duplicates are dropped); absent,
    /// `null` or empty: every public type.
    #[serde(default)]
    #[schema(schema_with = filter_types_schema)]
    filter_types: Option<Vec<String>>,
    /// Created disabled; `false` when absent.
    #[serde(default)]
    disabled: Option<bool>,
    /// Deliveries in flight at once, 1 to 64; 16 when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64, default = 16)]
    max_concurrency: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints",
    tag = TAG,
    operation_id = "create_webhook_endpoint",
    params(("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    request_body = CreateBody,
    responses(
        (status = 200, description = "The new endpoint, with its signing secret.", body = CreatedEndpoint, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = BODY_OR_IDEMPOTENCY_400, body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = IDEMPOTENCY_409, body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "A field fails validation: `url` not acceptable (an unresolvable or non-public host among them), an unknown event type in `filter_types`, `max_concurrency` out of range, an unknown field (`form_param_format_invalid`, `meta.param_name` names it); or the `Idempotency-Key` was used with another request (`idempotency_key_reused`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]

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

/// `limit` and `offset` of the history's and the endpoints' lists; any
/// other query parameter is 422.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct Page {
    /// 1 to 500; 10 when absent.
    #[param(minimum = 1, maximum = 500, default = 10)]
    limit: Option<u64>,
    /// 0 when absent.
    #[param(minimum = 0, maximum = 9223372036854775807_u64, default = 0)]
    offset: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    tag = TAG,
    operation_id = "list_webhook_endpoints",
    params(Page),
    responses(
        (status = 200, description = "A page of the instance's endpoints, oldest first.", body = EndpointList),
        (status = 422, description = "An unknown query parameter, or `limit` or `offset` out of range (`form_param_format_invalid`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}",
    tag = TAG,
    operation_id = "get_webhook_endpoint",
    params(("id" = String, Path, description = ENDPOINT_ID)),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointObject),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn get(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let s = found(&platform, &auth, &path).await?;
    Ok(HttpResponse::Ok().json(endpoint_json(&s)))
}

/// Changes to an endpoint: absent (or, but for `filter_types`, `null`)
/// fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateWebhookEndpointRequest)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    /// As on creation: an absolute `https` URL of at most 2048 bytes
    /// to a public host.
    #[serde(default)]
    #[schema(format = "uri", min_length = 1, max_length = 2048)]
    url: Option<String>,
    /// At most 1024 characters, no control characters but newlines.
    #[serde(default)]
    #[schema(
        max_length = 1024,
        pattern = "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*$"
    )]
    description: Option<String>,
    /// At most 64 public event types; `null` or empty: every type again.
    /// Present and `null`: every type again.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = filter_types_schema)]
    filter_types: Option<Option<Vec<String>>>,
    #[serde(default)]
    disabled: Option<bool>,
    /// Deliveries in flight at once, 1 to 64.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
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

#[utoipa::path(
    patch,
    path = "/v1/webhooks/endpoints/{id}",
    tag = TAG,
    operation_id = "update_webhook_endpoint",
    params(("id" = String, Path, description = ENDPOINT_ID)),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The endpoint after the update.", body = EndpointObject),
        (status = 400, description = "The body is not valid JSON (`malformed_request`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "A field fails validation, as on creation (`form_param_format_invalid`, `meta.param_name` names it); checked before the endpoint is looked up.", body = gatehouse_platform::openapi::ErrorBody),
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/enable",
    tag = TAG,
    operation_id = "enable_webhook_endpoint",
    params(("id" = String, Path, description = ENDPOINT_ID), ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 200, description = "The endpoint, enabled.", body = EndpointObject, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = IDEMPOTENCY_400, body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`), or a request with this `Idempotency-Key` is still running (`idempotency_request_in_progress`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = IDEMPOTENCY_422, body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
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

#[utoipa::path(
    delete,
    path = "/v1/webhooks/endpoints/{id}",
    tag = TAG,
    operation_id = "delete_webhook_endpoint",
    params(("id" = String, Path, description = ENDPOINT_ID)),
    responses(
        (status = 200, description = "The endpoint is deleted; nothing more is delivered to it.", body = DeletedEndpoint),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
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
#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/secret",
    tag = TAG,
    operation_id = "get_webhook_endpoint_secret",
    params(("id" = String, Path, description = ENDPOINT_ID)),
    responses(
        (status = 200, description = "The current signing secret.", body = SecretObject),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
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
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/rotate_secret",
    tag = TAG,
    operation_id = "rotate_webhook_endpoint_secret",
    params(("id" = String, Path, description = ENDPOINT_ID), ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 200, description = "The new secret; the replaced one signs alongside it for 24 hours.", body = RotatedSecret, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = IDEMPOTENCY_400, body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`), or a request with this `Idempotency-Key` is still running (`idempotency_request_in_progress`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = IDEMPOTENCY_422, body = gatehouse_platform::openapi::ErrorBody),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's fields are the served ones, all required.
    #[test]
    fn the_endpoint_schema_is_what_is_served() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let schema = &doc["components"]["schemas"]["WebhookEndpoint"];
        let mut served: Vec<String> = endpoint_json(&State::default())
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
        served.sort();
        required.sort();
        assert_eq!(served, required);
        assert_eq!(
            schema["properties"].as_object().unwrap().len(),
            required.len()
        );
    }
}
