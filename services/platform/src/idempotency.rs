//! `Idempotency-Key` on POST: the first request with a key runs; a retry with
//! the same key and body gets the first response again (marked
//! `Idempotent-Replayed: true`) instead of creating twice. Keys are scoped to
//! an instance and kept for 24 hours. While the first request is still
//! running, a retry gets 409; a different body under the same key gets 422.
//!
//! Known limit: the key is recorded in its own statements, not in the
//! command's transaction. If a process dies after the command committed and
//! before the response was stored, the key looks abandoned after 60 s and a
//! retry runs the command again (a user create then fails on its unique
//! email; other creates would repeat).

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::context::Platform;
use crate::db::{self, col};
use crate::error::{ApiError, ApiResult};

pub const HEADER: &str = "idempotency-key";
const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// A key whose first request has neither finished nor failed after this long
/// belonged to a request that died; it may be taken over.
const STALE_LOCK_MS: i64 = 60 * 1000;
const IN_PROGRESS: i32 = 0;

/// The key sent with this request, validated.
pub fn key_of(req: &HttpRequest) -> ApiResult<Option<String>> {
    let Some(v) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key_invalid",
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// Runs `command` at most once per (instance, key). The command returns the
/// status and JSON body of a success; 4xx errors are remembered too, 5xx
/// errors release the key so the client can retry.
pub async fn run<F, Fut>(
    platform: &Platform,
    instance_id: &str,
    key: Option<String>,
    path: &str,
    request_body: &[u8],
    command: F,
) -> ApiResult<HttpResponse>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let Some(key) = key else {
        let (status, body) = command().await?;
        return Ok(HttpResponse::build(status).json(body));
    };
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update([0u8]);
    hasher.update(request_body);
    let fingerprint = hex::encode(hasher.finalize());
    let db = platform.db();
    let now = platform.now_ms();
    // Forget expired keys and take over abandoned ones.
    db::exec(
        db,
        "DELETE FROM platform_idempotency WHERE instance_id = $1 AND idem_key = $2 \
         AND (created_at < $3 OR (status = $4 AND created_at < $5))",
        vec![
            instance_id.into(),
            key.clone().into(),
            (now - RETENTION_MS).into(),
            IN_PROGRESS.into(),
            (now - STALE_LOCK_MS).into(),
        ],
    )
    .await?;
    let claim = crate::ids::random_base62(22);
    let claimed = db::exec(
        db,
        "INSERT INTO platform_idempotency (instance_id, idem_key, fingerprint, status, body, created_at, claim) \
         VALUES ($1, $2, $3, $4, '', $5, $6) ON CONFLICT (instance_id, idem_key) DO NOTHING",
        vec![
            instance_id.into(),
            key.clone().into(),
            fingerprint.clone().into(),
            IN_PROGRESS.into(),
            now.into(),
            claim.clone().into(),
        ],
    )
    .await?;
    if claimed == 0 {
        return replay(platform, instance_id, &key, &fingerprint).await;
    }
    let outcome = command().await;
    let (status, body) = match &outcome {
        Ok((status, body)) => (*status, body.clone()),
        // A lost race is worth retrying under the same key: not remembered.
        Err(err) if err.status.is_client_error() && err.code() != "concurrent_modification" => {
            (err.status, err.body(&crate::http::current_trace_id()))
        }
        Err(_) => {
            db::exec(
                db,
                "DELETE FROM platform_idempotency WHERE instance_id = $1 AND idem_key = $2 AND claim = $3",
                vec![instance_id.into(), key.into(), claim.into()],
            )
            .await?;
            return outcome.map(|_| HttpResponse::InternalServerError().finish());
        }
    };
    db::exec(
        db,
        "UPDATE platform_idempotency SET status = $3, body = $4 \
         WHERE instance_id = $1 AND idem_key = $2 AND claim = $5",
        vec![
            instance_id.into(),
            key.into(),
            i32::from(status.as_u16()).into(),
            body.to_string().into(),
            claim.into(),
        ],
    )
    .await?;
    let (status, body) = outcome?;
    Ok(HttpResponse::build(status).json(body))
}

async fn replay(
    platform: &Platform,
    instance_id: &str,
    key: &str,
    fingerprint: &str,
) -> ApiResult<HttpResponse> {
    let row = db::query_one(
        platform.db(),
        "SELECT fingerprint, status, body FROM platform_idempotency WHERE instance_id = $1 AND idem_key = $2",
        vec![instance_id.into(), key.into()],
    )
    .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "idempotency_request_in_progress",
            "A request with this Idempotency-Key is being processed; retry shortly.",
        )
    })?;
    let stored_fp: String = col(&row, "fingerprint")?;
    if stored_fp != fingerprint {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "idempotency key reused",
            "This Idempotency-Key was used with a different request.",
        ));
    }
    let status: i32 = col(&row, "status")?;
    if status == IN_PROGRESS {
        return Err(ApiError::conflict(
            "idempotency_request_in_progress",
            "A request with this Idempotency-Key is being processed; retry shortly.",
        ));
    }
    let body: String = col(&row, "body")?;
    let body: Value = serde_json::from_str(&body).map_err(ApiError::internal)?;
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok(HttpResponse::build(status)
        .insert_header(("idempotent-replayed", "true"))
        .json(body))
}
