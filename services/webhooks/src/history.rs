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

/// 404 unless the endpoint is the caller's instance's.
async fn own_endpoint(platform: &Platform, instance_id: &str, id: &str) -> ApiResult<()> {
    endpoints::get(platform.db(), instance_id, id)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: i64,
}

/// Queues again, now, every message of the instance since `since` (ms)
/// that the endpoint's filter takes and that it has not received: the
/// backlog after an outage, or after re-enabling.
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
