//! `Idempotency-Key` on POST: the first request with a key runs; a retry with
//! the same key and body gets the first response again (marked
//! `Idempotent-Replayed: true`) instead of creating twice. Keys are scoped to
//! an instance and kept for 24 hours. While the first request is still
//! running, a retry gets 409; a different body under the same key gets 422.
//! Stored responses are encrypted at rest (they may hold a secret shown
//! once, such as a new OAuth application's `client_secret`), bound to the
//! instance and key.
//!
//! The key is claimed in its own statement before the command runs. A
//! command that commits calls [`store_in`] with its response inside its own
//! transaction, so the outcome and the response that replays it commit
//! together: a process that dies after the commit leaves a key that replays,
//! one that dies before leaves a claim that looks abandoned after 60 s and
//! may be taken over (nothing was done).

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};
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

tokio::task_local! {
    /// The key a running idempotent command holds.
    static SCOPE: Scope;
}

#[derive(Clone)]
struct Scope {
    instance_id: String,
    key: String,
    claim: String,
    /// Set once the command stored its response in its own transaction
    /// (read after that transaction committed).
    stored: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Inside [`run`]'s command, just before the command's transaction
/// commits: stores `response()` with `status` in that transaction. Outside
/// [`run`] it does nothing (and does not build the response).
pub async fn store_in(
    platform: &Platform,
    txn: &DatabaseTransaction,
    status: StatusCode,
    response: impl FnOnce() -> Value,
) -> Result<(), DbErr> {
    let Ok(scope) = SCOPE.try_with(Scope::clone) else {
        return Ok(());
    };
    store(platform, txn, &scope, status, &response()).await?;
    scope
        .stored
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Records the response of the claim's request (encrypted).
async fn store(
    platform: &Platform,
    conn: &impl ConnectionTrait,
    scope: &Scope,
    status: StatusCode,
    body: &Value,
) -> Result<(), DbErr> {
    let sealed = platform
        .code_sealer()
        .encrypt_at_rest(&body.to_string(), &context(&scope.instance_id, &scope.key));
    db::exec(
        conn,
        "UPDATE platform_idempotency SET status = $3, body = $4 \
         WHERE instance_id = $1 AND idem_key = $2 AND claim = $5",
        vec![
            scope.instance_id.clone().into(),
            scope.key.clone().into(),
            i32::from(status.as_u16()).into(),
            sealed.into(),
            scope.claim.clone().into(),
        ],
    )
    .await
    .map(|_| ())
}

/// What a stored response is bound to: another instance's or key's row
/// does not open under this one.
fn context(instance_id: &str, key: &str) -> String {
    format!("idempotency:{instance_id}:{key}")
}

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

/// An idempotent request to a handler that answers an `HttpResponse`
/// with a JSON body (or none): with an `Idempotency-Key`, its status and
/// body are what a retry replays. The response is stored once the handler
/// returns, not inside its transaction, so a process dying in between
/// leaves the key claimed until it looks abandoned (60 s), and a retry
/// after that runs the command again.
pub struct Idempotent {
    platform: Platform,
    key: Option<String>,
    instance_id: String,
    path: String,
    body: Vec<u8>,
}

impl Idempotent {
    /// The request `req` of the authenticated instance `auth`, with `body`.
    pub fn of(req: &HttpRequest, auth: &crate::tenancy::Authed, body: &[u8]) -> ApiResult<Self> {
        let platform = req
            .app_data::<actix_web::web::Data<Platform>>()
            .ok_or_else(|| ApiError::internal("no platform in the app data"))?;
        Ok(Self {
            platform: platform.get_ref().clone(),
            key: key_of(req)?,
            instance_id: auth.instance.id.to_string(),
            path: req.path().to_owned(),
            body: body.to_vec(),
        })
    }

    pub async fn guard<F, Fut>(self, handler: F) -> ApiResult<HttpResponse>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<HttpResponse>>,
    {
        if self.key.is_none() {
            return handler().await;
        }
        let (p, id, path, body) = (&self.platform, &self.instance_id, &self.path, &self.body);
        run(p, id, self.key.clone(), path, body, || async {
            let res = handler().await?;
            let status = res.status();
            let bytes = actix_web::body::to_bytes(res.into_body())
                .await
                .map_err(|_| ApiError::internal("an idempotent response body could not be read"))?;
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(ApiError::internal)?
            };
            Ok((status, body))
        })
        .await
    }
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
    let scope = Scope {
        instance_id: instance_id.to_owned(),
        key,
        claim,
        stored: Default::default(),
    };
    let outcome = SCOPE.scope(scope.clone(), command()).await;
    let (status, body) = match &outcome {
        Ok((status, body)) => (*status, body.clone()),
        // A lost race is worth retrying under the same key: not remembered.
        Err(err) if err.status.is_client_error() && err.code() != "concurrent_modification" => {
            (err.status, err.body(&crate::http::current_trace_id()))
        }
        Err(_) => {
            db::exec(
                db,
                // Unless the command stored its response before failing.
                "DELETE FROM platform_idempotency WHERE instance_id = $1 AND idem_key = $2 \
                 AND claim = $3 AND status = $4",
                vec![
                    scope.instance_id.into(),
                    scope.key.into(),
                    scope.claim.into(),
                    IN_PROGRESS.into(),
                ],
            )
            .await?;
            return outcome.map(|_| HttpResponse::InternalServerError().finish());
        }
    };
    if outcome.is_ok() && platform.settings().test_crash_after_commit {
        tracing::error!("--test-crash-after-commit: aborting after an idempotent command");
        std::process::abort();
    }
    // Errors, and commands that changed nothing (so did not commit a
    // response), store it here.
    if !(outcome.is_ok() && scope.stored.load(std::sync::atomic::Ordering::Relaxed)) {
        store(platform, db, &scope, status, &body).await?;
    }
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
    let stored: String = col(&row, "body")?;
    let body = platform
        .code_sealer()
        .decrypt_at_rest(&stored, &context(instance_id, key))
        .ok_or_else(|| {
            ApiError::internal(
                "a stored idempotent response cannot be decrypted with this process's secret",
            )
        })?;
    let body: Value = serde_json::from_str(&body).map_err(ApiError::internal)?;
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok(HttpResponse::build(status)
        .insert_header(("idempotent-replayed", "true"))
        .json(body))
}
