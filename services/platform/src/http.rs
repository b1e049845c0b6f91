//! HTTP plumbing every service mounts: trace ids, access logs, request
//! metrics, the one error shape for extractor failures and unmatched routes,
//! and the health, readiness and metrics endpoints.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use crate::context::Platform;
use crate::error::ApiError;
use crate::ratelimit::Decision;

/// Largest JSON body any endpoint accepts.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

tokio::task_local! {
    static TRACE_ID: String;
}

/// The trace id of the request being served (empty outside a request).
pub fn current_trace_id() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

fn trace_id_from(req: &ServiceRequest) -> String {
    // W3C traceparent: "00-<32 hex trace id>-<16 hex span id>-<flags>"
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4
            && parts[1].len() == 32
            && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
            && parts[1] != "00000000000000000000000000000000"
        {
            return parts[1].to_ascii_lowercase();
        }
    }
    uuid::Uuid::new_v4().simple().to_string()
}

/// Outermost middleware: trace id, metrics, access log, and error bodies in
/// the one shape for responses that actix itself produced (404, 405, …).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let trace_id = trace_id_from(&req);
    let started = crate::clock::monotonic();
    let method = req.method().to_string();
    let platform = req.app_data::<web::Data<Platform>>().cloned();
    let span =
        tracing::info_span!("request", trace_id = %trace_id, method = %method, path = %req.path());
    let result: Result<ServiceResponse<BoxBody>, Error> = TRACE_ID
        .scope(trace_id.clone(), async move {
            // NUL cannot be stored in PostgreSQL text; refuse it up front
            // rather than let a path id or filter reach a query.
            if req.path().contains("%00") || req.query_string().contains("%00") {
                let refused = refusal(
                    req.path(),
                    StatusCode::BAD_REQUEST,
                    "malformed_request",
                    "The URL contains a NUL character (%00).",
                );
                return Ok(req.into_response(refused));
            }
            // Extractors and handlers render their own errors (in our shape);
            // an error out of the service itself is left to actix.
            let res = next.call(req).await?.map_into_boxed_body();
            Ok(ensure_error_shape(res))
        })
        .await;
    let _enter = span.enter();
    let mut res = match result {
        Ok(res) => res,
        Err(err) => return Err(err),
    };
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-trace-id"), v);
    }
    let decision = res.request().extensions().get::<Decision>().copied();
    if let Some(d) = decision {
        rate_limit_headers(res.headers_mut(), &d);
    }
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let elapsed = started.elapsed();
    if let Some(p) = platform {
        let m = p.metrics();
        m.http_requests
            .with_label_values(&[method.as_str(), route.as_str(), &status.to_string()])
            .inc();
        m.http_duration
            .with_label_values(&[method.as_str(), route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    let ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(status, route = %route, ms, "request failed");
    } else if status >= 400 {
        tracing::info!(status, route = %route, ms, "request refused");
    } else {
        tracing::debug!(status, route = %route, ms, "request served");
    }
    Ok(res)
}

/// Requests one peer address may have in flight at once, per process.
#[derive(Default)]
pub struct PeerRequests(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// A request counted against its peer until dropped.
struct PeerSlot {
    counts: std::sync::Arc<PeerRequests>,
    ip: std::net::IpAddr,
}

impl PeerRequests {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Paths whose bodies are JSON: the Backend and admin APIs (both with and
/// without `/v1`, as the SDK calls some of them) and client registration.
/// The OAuth form endpoints check their own `Content-Type`.
fn takes_json(path: &str) -> bool {
    if path.starts_with("/i/") {
        return path.contains("/oauth/register");
    }
    !path.starts_with("/healthz") && !path.starts_with("/readyz") && !path.starts_with("/metrics")
}

/// `Content-Type: application/json`, with any parameters.
fn is_json(req: &ServiceRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// OAuth protocol endpoints answer in the RFC 6749 shape (the published
/// document says the same: `openapi::Surface`).
pub fn is_oauth_path(path: &str) -> bool {
    path.starts_with("/i/") && path.contains("/oauth/")
}

fn refusal(path: &str, status: StatusCode, code: &str, message: &str) -> HttpResponse {
    if is_oauth_path(path) {
        return crate::oauth::OAuthError::new(
            status,
            crate::oauth::OAuthCode::InvalidRequest,
            message,
        )
        .error_response();
    }
    ApiError::new(status, code, message, message).error_response()
}

/// Inside [`observe`]: bounds the requests in flight per peer address
/// (`Settings::max_requests_per_peer`), and reads every request body within
/// `Settings::body_read_timeout` and [`MAX_JSON_BODY`] before any handler
/// runs, so a client that sends its body slowly, or never, is answered 408
/// and its connection let go instead of being held by a handler.
pub async fn guard_requests(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(platform) = req.app_data::<web::Data<Platform>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let settings = platform.settings();
    let path = req.path().to_owned();
    let _slot = match (req.peer_addr(), settings.max_requests_per_peer) {
        (Some(peer), max) if max > 0 => {
            let counts = platform.shared::<PeerRequests>();
            let mut map = counts.lock();
            let n = map.entry(peer.ip()).or_insert(0);
            if *n >= max {
                drop(map);
                let res = refusal(
                    &path,
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "Too many requests in flight from this address.",
                );
                return Ok(req.into_response(res));
            }
            *n += 1;
            drop(map);
            Some(PeerSlot {
                counts: counts.clone(),
                ip: peer.ip(),
            })
        }
        _ => None,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        refusal(
            &path,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_body_too_large",
            &format!("The request body is larger than {MAX_JSON_BODY} bytes."),
        )
    };
    if declared.is_some_and(|n| n > MAX_JSON_BODY) {
        return Ok(req.into_response(too_large()));
    }
    if declared != Some(0)
        && !matches!(
            *req.method(),
            actix_web::http::Method::GET | actix_web::http::Method::HEAD
        )
    {
        use futures_util::StreamExt;
        let mut payload = req.take_payload();
        let mut body = web::BytesMut::new();
        let read = async {
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| false)?;
                if body.len() + chunk.len() > MAX_JSON_BODY {
                    return Err(true);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(settings.body_read_timeout, read).await;
        let refused = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(true)) => Some(too_large()),
            Ok(Err(false)) => Some(refusal(
                &path,
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "The request body could not be read.",
            )),
            Err(_) => Some(refusal(
                &path,
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time.",
            )),
        };
        if let Some(mut res) = refused {
            // Whatever is still coming is not read: close the connection.
            res.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return Ok(req.into_response(res));
        }
        if !body.is_empty() && takes_json(&path) && !is_json(&req) {
            let res = refusal(
                &path,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the request body as application/json.",
            );
            return Ok(req.into_response(res));
        }
        req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The rate-limit headers of a Backend API response: the IETF draft names
/// (`RateLimit-*`, reset in seconds from now), the widely used `X-RateLimit-*`
/// names (reset as a Unix time, as GitHub and others send it), and on a
/// refusal `Retry-After` in seconds.
fn rate_limit_headers(h: &mut header::HeaderMap, d: &Decision) {
    let reset_secs = d.reset_ms.div_ceil(1000);
    let reset_at = (crate::clock::wall_ms() / 1000).max(0) as u64 + reset_secs;
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::HeaderName::from_static(name), v);
        }
    };
    set("ratelimit-limit", d.limit.to_string());
    set("ratelimit-remaining", d.remaining.to_string());
    set("ratelimit-reset", reset_secs.to_string());
    set(
        "ratelimit-policy",
        format!("{};w={}", d.limit, d.window_secs),
    );
    set("x-ratelimit-limit", d.limit.to_string());
    set("x-ratelimit-remaining", d.remaining.to_string());
    set("x-ratelimit-reset", reset_at.to_string());
    if !d.admitted {
        set("retry-after", d.retry_after_secs().to_string());
    }
}

fn ensure_error_shape(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    // JSON errors are already ours; HTML error pages are the hosted pages'.
    if is_json {
        return res;
    }
    let err = match status {
        StatusCode::NOT_FOUND => ApiError::new(
            status,
            "resource_not_found",
            "not found",
            "The requested resource does not exist.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "method not allowed",
            "This method is not allowed on this resource.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => body_too_large(),
        s if s.is_server_error() => ApiError::internal(format!("unshaped {s} response")),
        s => ApiError::new(
            s,
            "request_invalid",
            "invalid request",
            s.canonical_reason().unwrap_or("The request is invalid."),
        ),
    };
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, err.error_response())
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_body_too_large",
        "request body too large",
        format!("The request body is larger than {MAX_JSON_BODY} bytes."),
    )
}

/// JSON bodies: size limit and errors in the one shape.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_JSON_BODY)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::Overflow { .. } | E::OverflowKnownLength { .. } => body_too_large(),
                E::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "unsupported content type",
                    "Send the request body as application/json.",
                ),
                E::Deserialize(e) => json_error(e),
                other => ApiError::bad_request("malformed_request", other.to_string()),
            };
            api.into()
        })
}

/// A body that is not the JSON an endpoint expects: 400 when it is not
/// JSON at all, 422 naming the field when it is JSON of the wrong shape.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    json_error_at(e, "")
}

/// [`json_error`] for a failure at `path` (`a.b[0]`, empty at the top).
fn json_error_at(e: &serde_json::Error, path: &str) -> ApiError {
    let msg = e.to_string();
    if !e.is_data() {
        return ApiError::bad_request(
            "malformed_request",
            format!(
                "The request body is not valid JSON: {}",
                crate::error::clip(&msg)
            ),
        );
    }
    // A missing field is named in the message, below `path` (an unknown
    // one is at `path` already); any other failure is the value at `path`.
    let missing = msg.starts_with("missing field");
    let param = match (missing, path.is_empty()) {
        (true, true) => field_of(&msg),
        (true, false) => format!("{path}.{}", field_of(&msg)),
        (false, true) if msg.starts_with("unknown field") => field_of(&msg),
        (false, true) => "body".to_owned(),
        (false, false) => path.to_owned(),
    };
    ApiError::invalid_param(&param, clip_quoted(&msg))
}

/// A serde message with each quoted input (`"…"` or `` `…` ``) cut to
/// [`crate::error::ECHO_CHARS`] characters.
fn clip_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(512));
    let mut rest = msg;
    while let Some(i) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[i] as char;
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        match rest.find(quote) {
            Some(j) => {
                out.push_str(&crate::error::clip(&rest[..j]));
                out.push(quote);
                rest = &rest[j + 1..];
            }
            None => {
                out.push_str(&crate::error::clip(rest));
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether an urlencoded form carries a NUL, raw or as `%00`: PostgreSQL
/// text cannot hold one, so such a form is refused before it is read.
pub fn form_has_nul(body: &[u8]) -> bool {
    body.contains(&0) || body.windows(3).any(|w| w == b"%00")
}

/// Parses a raw body (for handlers that also need the bytes, such as the
/// idempotency fingerprint). An empty body reads as `{}`. Every body is a
/// JSON object: an array is not read into a struct's fields by position.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            return Err(json_error(&e));
        }
        return Err(ApiError::invalid_param(
            "body",
            "The request body must be a JSON object.",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        json_error_at(e.inner(), &path)
    })?;
    de.end().map_err(|e| json_error(&e))?;
    Ok(value)
}

/// An `offset` query parameter: a non-negative integer the database accepts.
/// A list's `limit`: 1 to 500.
pub fn limit_param(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>()
        .ok()
        .filter(|l| (1..=500).contains(l))
        .ok_or_else(|| ApiError::invalid_param("limit", "`limit` must be between 1 and 500."))
}

pub fn offset_param(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>()
        .ok()
        .filter(|o| i64::try_from(*o).is_ok())
        .ok_or_else(|| {
            ApiError::invalid_param(
                "offset",
                "`offset` must be a non-negative integer below 2^63.",
            )
        })
}

/// Best effort: the field a serde message names (`unknown field `foo``).
fn field_of(msg: &str) -> String {
    msg.split('`').nth(1).unwrap_or("body").to_owned()
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request("query_invalid", format!("Invalid query string: {err}")).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err, _req| ApiError::not_found("resource").into())
}

/// Extractor configs every app registers.
pub fn configure_extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::PayloadConfig::new(MAX_JSON_BODY))
        .app_data(query_config())
        .app_data(path_config());
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn configure_ops(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The operational endpoints' part of the published OpenAPI document.
pub fn ops_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(healthz, readyz, metrics),
        components(schemas(Health, Readiness, DependencyCheck))
    )]
    struct Doc;
    Doc::openapi()
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Health {
    /// `ok`
    status: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Readiness {
    ready: bool,
    /// One entry per dependency this process uses (database, bus, Redis).
    checks: std::collections::BTreeMap<String, DependencyCheck>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DependencyCheck {
    ok: bool,
    detail: String,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "The process is up.", body = Health))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Every dependency answers.", body = Readiness),
        (status = 503, description = "A dependency does not answer.", body = Readiness)
    )
)]
async fn readyz(platform: web::Data<Platform>) -> HttpResponse {
    let checks = platform.check_dependencies().await;
    let ready = checks.iter().all(|(_, ok, _)| *ok);
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, ok, detail)| (name.to_owned(), json!({ "ok": ok, "detail": detail })))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({ "ready": ready, "checks": body }))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format.", content_type = "text/plain", body = String))
)]
async fn metrics(platform: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(platform.metrics().render())
}

/// The bearer token of a request, if the header is well formed.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// CORS for endpoints a public client calls from a browser (metadata, JWKS,
/// token, revocation, introspection): any origin, answered with `*`, never
/// with credentials; preflights are cached for a day.
pub fn public_cors() -> actix_cors::Cors {
    actix_cors::Cors::default()
        .allow_any_origin()
        .send_wildcard()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::ACCEPT,
        ])
        .expose_headers([actix_web::http::header::WWW_AUTHENTICATE])
        .max_age(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_taken_from_serde_message() {
        assert_eq!(field_of("unknown field `foo`, expected one of `a`"), "foo");
        assert_eq!(field_of("invalid type: integer"), "body");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        first_name: Option<String>,
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        tags: Vec<String>,
    }

    fn param_of(body: &str) -> (u16, String) {
        let e = parse_json::<Body>(body.as_bytes()).expect_err(body);
        let meta = &e.items[0].meta;
        (
            e.status.as_u16(),
            meta["param_name"].as_str().unwrap_or("").to_owned(),
        )
    }

    #[test]
    fn param_name_is_the_path_of_the_failing_field() {
        assert_eq!(
            param_of(r#"{"first_name":123}"#),
            (422, "first_name".into())
        );
        assert_eq!(
            param_of(r#"{"inner":{"tags":[1]}}"#),
            (422, "inner.tags[0]".into())
        );
        assert_eq!(param_of(r#"{"inner":{}}"#), (422, "inner.tags".into()));
        assert_eq!(param_of(r#"{"colour":"blue"}"#), (422, "colour".into()));
        assert_eq!(param_of(r#"{"first_name":"a"} x"#).0, 400);
        assert_eq!(param_of("{").0, 400);
    }

    #[test]
    fn an_array_is_not_an_object() {
        assert_eq!(param_of(r#"["Ada", null]"#), (422, "body".into()));
        assert_eq!(param_of("7"), (422, "body".into()));
        assert_eq!(param_of("[").0, 400);
    }

    #[test]
    fn echoed_input_is_cut() {
        let long = "x".repeat(5000);
        let e = parse_json::<Body>(format!(r#"{{"first_name":{{"{long}":1}}}}"#).as_bytes())
            .expect_err("a map is no string");
        assert!(
            e.items[0].long_message.len() < 300,
            "{}",
            e.items[0].long_message
        );
        let e = parse_json::<Body>(format!(r#"{{"{long}":1}}"#).as_bytes()).expect_err("unknown");
        assert!(e.items[0].long_message.chars().count() <= 400);
        assert!(e.items[0].meta["param_name"].as_str().map_or(0, str::len) < 110);
    }
}
