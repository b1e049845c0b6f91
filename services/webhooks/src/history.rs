//! What was sent: an endpoint's messages with their delivery state, each
//! delivery's attempts, resending one message to an endpoint, and replaying
//! everything since a time.

use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::idempotency::Idempotent;
use gatehouse_platform::tenancy::InstanceKey;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use serde_json::{Value, json};

use crate::endpoints;
use crate::openapi::{
    BODY_OR_IDEMPOTENCY_400, ENDPOINT_ID, IDEMPOTENCY_400, IDEMPOTENCY_409, IDEMPOTENCY_KEY, TAG,
    constant,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/webhooks/endpoints/{id}/messages").get(messages))
        .service(
            web::resource("/v1/webhooks/endpoints/{id}/messages/{message_id}/attempts")
                .get(attempts),
        )
        .service(
            web::resource("/v1/webhooks/endpoints/{id}/messages/{message_id}/resend").post(resend),
        )
        .service(web::resource("/v1/webhooks/endpoints/{id}/replay").post(replay));
}

/// This module's part of the published OpenAPI document.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(messages, attempts, resend, replay),
        components(schemas(
            MessageObject,
            MessageList,
            AttemptObject,
            AttemptList,
            DeliveryObject,
            ReplayObject,
            ReplayBody
        ))
    )]
    struct Doc;
    Doc::openapi()
}

const MESSAGE_ID: &str = "The message's id (`msg_…`).";

/// A message sent (or to be sent) to an endpoint, with the state of its
/// delivery there.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookMessage)]
#[allow(dead_code)]
struct MessageObject {
    #[schema(schema_with = message_object)]
    object: String,
    /// `msg_…`; the `webhook-id` of its deliveries.
    id: String,
    event_type: String,
    /// The webhook body delivered:
    /// `{"data","object":"event","type","timestamp","instance_id"}`.
    #[schema(value_type = Option<Object>, required = true)]
    payload: Value,
    /// `pending` (queued or being retried), `succeeded`, `failed` (retries
    /// exhausted) or `cancelled` (the endpoint or instance went away).
    #[schema(schema_with = delivery_status)]
    status: String,
    /// Attempts made so far.
    #[schema(minimum = 0)]
    attempts: i32,
    /// When the next attempt is due (ms since the Unix epoch); `null`
    /// unless `pending`.
    #[schema(required = true)]
    next_attempt_at: Option<i64>,
    /// Milliseconds since the Unix epoch.
    created_at: i64,
}

fn message_object() -> utoipa::openapi::schema::Object {
    constant(json!("webhook_message"))
}

fn delivery_status() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["pending", "succeeded", "failed", "cancelled"]))
        .build()
}

/// A page of an endpoint's messages, newest first.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookMessageList)]
#[allow(dead_code)]
struct MessageList {
    data: Vec<MessageObject>,
    /// Every message of the endpoint, whatever the page.
    total_count: i64,
}

/// One attempt to deliver a message to an endpoint.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookAttempt)]
#[allow(dead_code)]
struct AttemptObject {
    #[schema(schema_with = attempt_object)]
    object: String,
    /// `atmpt_…`
    id: String,
    endpoint_id: String,
    /// The receiver's HTTP status; `null` when no answer came.
    #[schema(required = true)]
    status_code: Option<i32>,
    /// The start of the receiver's answer body (empty without one).
    response: String,
    /// Why no answer came (a timeout, a refused connection, a non-public
    /// address); `null` when one did.
    #[schema(required = true)]
    error: Option<String>,
    duration_ms: i64,
    /// Milliseconds since the Unix epoch.
    attempted_at: i64,
    /// When the next attempt was scheduled (ms since the Unix epoch);
    /// `null` after a success or the last attempt.
    #[schema(required = true)]
    next_attempt_at: Option<i64>,
}

fn attempt_object() -> utoipa::openapi::schema::Object {
    constant(json!("webhook_attempt"))
}

/// Every attempt to deliver a message to an endpoint, oldest first.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookAttemptList)]
#[allow(dead_code)]
struct AttemptList {
    data: Vec<AttemptObject>,
    total_count: u64,
}

/// A message queued again for an endpoint.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
#[allow(dead_code)]
struct DeliveryObject {
    #[schema(schema_with = delivery_object)]
    object: String,
    message_id: String,
    endpoint_id: String,
    #[schema(schema_with = pending)]
    status: String,
}

fn delivery_object() -> utoipa::openapi::schema::Object {
    constant(json!("webhook_delivery"))
}

fn pending() -> utoipa::openapi::schema::Object {
    constant(json!("pending"))
}

/// What a replay queued.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookReplay)]
#[allow(dead_code)]
struct ReplayObject {
    #[schema(schema_with = replay_object)]
    object: String,
    endpoint_id: String,
    /// Deliveries queued (again).
    queued: u64,
    /// Whether every message since `since` was read; otherwise call again
    /// with `next_since`.
    complete: bool,
    /// Where the next call starts (ms since the Unix epoch); `null` when
    /// `complete`.
    #[schema(required = true)]
    next_since: Option<i64>,
}

fn replay_object() -> utoipa::openapi::schema::Object {
    constant(json!("webhook_replay"))
}

/// 404 unless the endpoint is the caller's instance's.
async fn own_endpoint(platform: &Platform, instance_id: &str, id: &str) -> ApiResult<()> {
    endpoints::get(platform.db(), instance_id, id)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/messages",
    tag = TAG,
    operation_id = "list_webhook_messages",
    params(("id" = String, Path, description = ENDPOINT_ID), crate::api::Page),
    responses(
        (status = 200, description = "A page of the messages for the endpoint, newest first, with their delivery state.", body = MessageList),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An unknown query parameter, or `limit` or `offset` out of range (`form_param_format_invalid`); checked before the endpoint is looked up.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn messages(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (limit, offset) = crate::api::page(&req)?;
    let instance_id = auth.instance.id.as_str();
    own_endpoint(&platform, instance_id, &path).await?;
    let rows = db::query_all(
        platform.db(),
        "SELECT m.id, m.event_type, m.body, m.created_at, d.status, d.attempts, d.next_attempt_at \
         FROM webhooks_deliveries d JOIN webhooks_messages m ON m.id = d.message_id \
         WHERE d.endpoint_id = $1 AND d.instance_id = $2 \
         ORDER BY m.created_at DESC, m.id LIMIT $3 OFFSET $4",
        vec![
            path.as_str().into(),
            instance_id.into(),
            limit.into(),
            offset.into(),
        ],
    )
    .await?;
    let total: i64 = match db::query_one(
        platform.db(),
        "SELECT COUNT(*) AS n FROM webhooks_deliveries WHERE endpoint_id = $1 AND instance_id = $2",
        vec![path.as_str().into(), instance_id.into()],
    )
    .await?
    {
        Some(r) => col(&r, "n")?,
        None => 0,
    };
    let mut data = Vec::with_capacity(rows.len());
    for r in rows {
        let status: String = col(&r, "status")?;
        let body: String = col(&r, "body")?;
        data.push(json!({
            "object": "webhook_message",
            "id": col::<String>(&r, "id")?,
            "event_type": col::<String>(&r, "event_type")?,
            "payload": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            "status": status,
            "attempts": col::<i32>(&r, "attempts")?,
            "next_attempt_at": (status == "pending").then(|| col::<i64>(&r, "next_attempt_at")).transpose()?,
            "created_at": col::<i64>(&r, "created_at")?,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "data": data, "total_count": total })))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/messages/{message_id}/attempts",
    tag = TAG,
    operation_id = "list_webhook_attempts",
    params(
        ("id" = String, Path, description = ENDPOINT_ID),
        ("message_id" = String, Path, description = MESSAGE_ID)
    ),
    responses(
        (status = 200, description = "Every attempt to deliver the message to the endpoint, oldest first (none for a message it never had).", body = AttemptList),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn attempts(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (endpoint_id, message_id) = path.into_inner();
    let instance_id = auth.instance.id.as_str();
    own_endpoint(&platform, instance_id, &endpoint_id).await?;
    let rows = db::query_all(
        platform.db(),
        "SELECT id, status_code, response_excerpt, error, duration_ms, attempted_at, \
         next_attempt_at FROM webhooks_attempts \
         WHERE message_id = $1 AND endpoint_id = $2 AND instance_id = $3 \
         ORDER BY attempted_at, id",
        vec![
            message_id.into(),
            endpoint_id.clone().into(),
            instance_id.into(),
        ],
    )
    .await?;
    let mut data = Vec::with_capacity(rows.len());
    for r in rows {
        data.push(json!({
            "object": "webhook_attempt",
            "id": col::<String>(&r, "id")?,
            "endpoint_id": endpoint_id,
            "status_code": col::<Option<i32>>(&r, "status_code")?,
            "response": col::<String>(&r, "response_excerpt")?,
            "error": col::<Option<String>>(&r, "error")?,
            "duration_ms": col::<i64>(&r, "duration_ms")?,
            "attempted_at": col::<i64>(&r, "attempted_at")?,
            "next_attempt_at": col::<Option<i64>>(&r, "next_attempt_at")?,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "data": data, "total_count": data.len() })))
}

/// Queues the message for the endpoint again, now (same `webhook-id`); a
/// delivery being sent at this moment is left to that attempt.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/messages/{message_id}/resend",
    tag = TAG,
    operation_id = "resend_webhook_message",
    params(
        ("id" = String, Path, description = ENDPOINT_ID),
        ("message_id" = String, Path, description = MESSAGE_ID),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")
    ),
    responses(
        (status = 202, description = "The message is queued for the endpoint again, now.", body = DeliveryObject, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = IDEMPOTENCY_400, body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No endpoint of this instance has this id, or the endpoint never had this message (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = IDEMPOTENCY_409, body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = crate::openapi::IDEMPOTENCY_422, body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn resend(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &[])?;
    idempotent
        .guard(|| async move {
            let (endpoint_id, message_id) = path.into_inner();
            let instance_id = auth.instance.id.as_str();
            own_endpoint(&platform, instance_id, &endpoint_id).await?;
            let now = platform.now_ms();
            let n = db::exec(
            platform.db(),
            "UPDATE webhooks_deliveries SET attempts = CASE WHEN status = 'pending' THEN attempts \
             ELSE 0 END, status = 'pending', next_attempt_at = CASE \
             WHEN leased_until > $4 THEN next_attempt_at ELSE $4 END, updated_at = $4 \
             WHERE message_id = $1 AND endpoint_id = $2 AND instance_id = $3",
            vec![
                message_id.clone().into(),
                endpoint_id.clone().into(),
                instance_id.into(),
                now.into(),
            ],
        )
        .await?;
            if n == 0 {
                return Err(ApiError::not_found("webhook message"));
            }
            Ok(HttpResponse::Accepted().json(json!({
                "object": "webhook_delivery",
                "message_id": message_id,
                "endpoint_id": endpoint_id,
                "status": "pending",
            })))
        })
        .await
}

/// Most messages one replay call reads; the answer says where the next
/// call starts.
const MAX_REPLAY: i64 = 10_000;
/// Deliveries queued by one statement.
const REPLAY_CHUNK: usize = 500;

/// Replays everything since a time.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ReplayWebhookMessagesRequest)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// Milliseconds since the Unix epoch: messages created at or after it.
    #[schema(minimum = 0)]
    since: i64,
}

/// Queues again, now, every message of the instance since `since` (ms)
/// that the endpoint's filter takes and that it has not received: the
/// backlog after an outage, or after re-enabling.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/replay",
    tag = TAG,
    operation_id = "replay_webhook_messages",
    params(
        ("id" = String, Path, description = ENDPOINT_ID),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")
    ),
    request_body = ReplayBody,
    responses(
        (status = 202, description = "The instance's messages since `since` that the endpoint's filter takes and that it has not received are queued again (at most 10,000 read per call).", body = ReplayObject, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = BODY_OR_IDEMPOTENCY_400, body = gatehouse_platform::openapi::ErrorBody),
        (status = 404, description = "No endpoint of this instance has this id (`resource_not_found`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = IDEMPOTENCY_409, body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "`since` is missing, negative or not an integer, or an unknown field (`form_param_format_invalid`); or the `Idempotency-Key` was used with another request (`idempotency_key_reused`).", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn replay(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let idempotent = Idempotent::of(&req, &auth, &body)?;
    idempotent.guard(|| async move {
        let b: ReplayBody = gatehouse_platform::http::parse_json(&body)?;
        if b.since < 0 {
            return Err(ApiError::invalid_param(
                "since",
                "`since` must be a time in ms.",
            ));
        }
        let instance_id = auth.instance.id.as_str();
        let endpoint = endpoints::get(platform.db(), instance_id, &path)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
        let rows = db::query_all(
            platform.db(),
            "SELECT id, event_type, created_at FROM webhooks_messages WHERE instance_id = $1 \
             AND created_at >= $2 ORDER BY created_at, id LIMIT $3",
            vec![instance_id.into(), b.since.into(), (MAX_REPLAY + 1).into()],
        )
        .await?;
        // Where the next call starts when this one stops at the cap.
        let next_since: Option<i64> = match rows.get(MAX_REPLAY as usize) {
            Some(r) => Some(col(r, "created_at")?),
            None => None,
        };
        let mut wanted = Vec::new();
        for r in rows.iter().take(MAX_REPLAY as usize) {
            let event_type: String = col(r, "event_type")?;
            if endpoint.filter_types.is_empty() || endpoint.filter_types.contains(&event_type) {
                wanted.push(col::<String>(r, "id")?);
            }
        }
        let now = platform.now_ms();
        let mut queued = 0u64;
        // A fresh retry schedule for what is queued again; received messages
        // stay as they are.
        for chunk in wanted.chunks(REPLAY_CHUNK) {
            let mut values: Vec<sea_orm::Value> =
                vec![path.as_str().into(), instance_id.into(), now.into()];
            let rows: Vec<String> = chunk
                .iter()
                .map(|id| {
                    values.push(id.clone().into());
                    format!("(${}, $1, $2, 'pending', 0, $3, $3, $3)", values.len())
                })
                .collect();
            queued += db::exec(
                platform.db(),
                &format!(
                    "INSERT INTO webhooks_deliveries (message_id, endpoint_id, instance_id, status, \
                     attempts, next_attempt_at, created_at, updated_at) VALUES {} \
                     ON CONFLICT (message_id, endpoint_id) DO UPDATE SET \
                     attempts = CASE WHEN webhooks_deliveries.status = 'pending' \
                       THEN webhooks_deliveries.attempts ELSE 0 END, \
                     status = 'pending', next_attempt_at = CASE \
                       WHEN webhooks_deliveries.leased_until > $3 \
                       THEN webhooks_deliveries.next_attempt_at ELSE $3 END, updated_at = $3 \
                     WHERE webhooks_deliveries.status <> 'succeeded'",
                    rows.join(", ")
                ),
                values,
            )
            .await?;
        }
        Ok(HttpResponse::Accepted().json(json!({
            "object": "webhook_replay",
            "endpoint_id": path.as_str(),
            "queued": queued,
            "complete": next_since.is_none(),
            "next_since": next_since,
        })))
    })
    .await
}
