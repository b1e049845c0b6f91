//! Platform admin API under `/admin/v1/` (admin token): tenants, instances,
//! instance secret keys.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminAuth, IssuedKey};
use crate::context::Platform;
use crate::error::{ApiError, ApiResult};

const ACTOR: &str = "admin";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .route("/tenants", web::post().to(create_tenant))
            .route("/tenants", web::get().to(list_tenants))
            .route("/tenants/{tenant_id}", web::get().to(get_tenant))
            .route(
                "/tenants/{tenant_id}/disable",
                web::post().to(disable_tenant),
            )
            .route("/instances/{instance_id}", web::get().to(get_instance))
            .route("/test/clock/advance", web::post().to(advance_clock))
            .route(
                "/instances/{instance_id}/rate_limit",
                web::put().to(set_rate_limit),
            )
            .route(
                "/instances/{instance_id}/secret_keys",
                web::post().to(create_key),
            )
            .route(
                "/instances/{instance_id}/secret_keys",
                web::get().to(list_keys),
            )
            .route(
                "/instances/{instance_id}/secret_keys/{key_id}/revoke",
                web::post().to(revoke_key),
            )
            .route(
                "/instances/{instance_id}/secret_keys/{key_id}/rotate",
                web::post().to(rotate_key),
            ),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    /// Requests per window; `null` returns to the environment's default. The
    /// field is required, so an empty body is an error, not a reset.
    #[serde(deserialize_with = "required_nullable")]
    limit: Option<u32>,
}

fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<u64>,
    offset: Option<u64>,
}

fn valid_name(field: &str, name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be 1 to 256 printable characters."),
        ));
    }
    Ok(name.to_owned())
}

fn issued_json(k: &IssuedKey) -> Value {
    let mut v = serde_json::to_value(&k.view).unwrap_or_default();
    v["secret_key"] = json!(k.secret);
    v
}

async fn create_tenant(
    _: AdminAuth,
    platform: web::Data<Platform>,
    body: web::Json<CreateTenant>,
) -> ApiResult<HttpResponse> {
    let name = valid_name("name", &body.name)?;
    let created = super::create_tenant(&platform, &name, ACTOR).await?;
    let mut tenant = serde_json::to_value(&created.tenant).map_err(ApiError::internal)?;
    let mut instances = Vec::new();
    for (inst, key) in &created.instances {
        let mut v = instance_json(&platform, inst).await?;
        v["secret_key"] = json!(key.secret);
        v["secret_key_id"] = json!(key.view.id);
        instances.push(v);
    }
    tenant["instances"] = Value::Array(instances);
    Ok(HttpResponse::Created().json(tenant))
}

async fn tenant_json(platform: &Platform, id: &str) -> ApiResult<Value> {
    let tenant = super::get_tenant(platform.db(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let mut v = serde_json::to_value(&tenant).map_err(ApiError::internal)?;
    let mut instances = Vec::new();
    for inst in super::tenant_instances(platform.db(), platform, id).await? {
        instances.push(instance_json(platform, &inst).await?);
    }
    v["instances"] = Value::Array(instances);
    Ok(v)
}

async fn list_tenants(
    _: AdminAuth,
    platform: web::Data<Platform>,
    page: web::Query<Page>,
) -> ApiResult<HttpResponse> {
    let limit = page.limit.unwrap_or(20);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_param(
            "limit",
            "`limit` must be between 1 and 500.",
        ));
    }
    let (tenants, total) = super::list_tenants(
        platform.db(),
        limit,
        crate::http::offset_param(&page.offset.unwrap_or(0).to_string())?,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "data": tenants, "total_count": total })))
}

async fn get_tenant(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(tenant_json(&platform, &path).await?))
}

async fn disable_tenant(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    super::disable_tenant(&platform, &path, ACTOR).await?;
    Ok(HttpResponse::Ok().json(tenant_json(&platform, &path).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    ms: i64,
}

/// Moves a `--test-clock` process's clock forward; 404 everywhere else.
async fn advance_clock(
    _: AdminAuth,
    platform: web::Data<Platform>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let Some(clock) = &platform.settings().test_clock else {
        return Err(ApiError::not_found("test clock"));
    };
    let b: AdvanceBody = crate::http::parse_json(&body)?;
    if !(0..=30 * 24 * 3600 * 1000).contains(&b.ms) {
        return Err(ApiError::invalid_param("ms", "`ms` must be 0 to 30 days."));
    }
    clock.advance_ms(b.ms);
    Ok(HttpResponse::Ok().json(json!({ "object": "test_clock", "now": platform.now_ms() })))
}

async fn get_instance(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let inst = super::get_instance(platform.db(), &platform, &path)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    Ok(HttpResponse::Ok().json(instance_json(&platform, &inst).await?))
}

/// The instance as JSON with its usage and effective rate limit.
async fn instance_json(platform: &Platform, inst: &super::InstanceView) -> ApiResult<Value> {
    let mut v = serde_json::to_value(inst).map_err(ApiError::internal)?;
    v["usage"] = json!({ "users": super::usage::get(platform.db(), &inst.id).await? });
    let rl = &platform.settings().rate_limits;
    let default = rl.default_for(inst.environment);
    v["rate_limit"] = json!({
        "limit": inst.rate_limit_override.unwrap_or(i64::from(default)),
        "window_seconds": rl.window.as_secs(),
        "default": default,
        "overridden": inst.rate_limit_override.is_some(),
    });
    if let Some(o) = v.as_object_mut() {
        o.remove("rate_limit_override");
    }
    Ok(v)
}

async fn set_rate_limit(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Json<RateLimitBody>,
) -> ApiResult<HttpResponse> {
    if body.limit == Some(0) {
        return Err(ApiError::invalid_param(
            "limit",
            "`limit` must be at least 1, or null for the default.",
        ));
    }
    let inst = super::set_rate_limit(&platform, &path, body.limit, ACTOR).await?;
    Ok(HttpResponse::Ok().json(instance_json(&platform, &inst).await?))
}

/// The optional `{"name"}` body of key creation: empty is fine, anything
/// else must be valid.
fn key_name(body: &[u8]) -> ApiResult<String> {
    let b: KeyRequest = crate::http::parse_json(body)?;
    match b.name {
        Some(n) => valid_name("name", &n),
        None => Ok("unnamed".to_owned()),
    }
}

async fn create_key(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let name = key_name(&body)?;
    let issued = super::issue_key(&platform, &path, &name, None, ACTOR).await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(issued_json(&issued)))
}

async fn list_keys(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    super::get_instance(platform.db(), &platform, &path)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    let keys = super::list_keys(platform.db(), &path).await?;
    let total = keys.len();
    Ok(HttpResponse::Ok().json(json!({ "data": keys, "total_count": total })))
}

async fn revoke_key(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (instance_id, key_id) = path.into_inner();
    let key = super::revoke_key(&platform, &instance_id, &key_id, ACTOR).await?;
    Ok(HttpResponse::Ok().json(key))
}

async fn rotate_key(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (instance_id, key_id) = path.into_inner();
    let old = super::get_key(platform.db(), &instance_id, &key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("secret key"))?;
    let issued = super::issue_key(&platform, &instance_id, &old.name, Some(&key_id), ACTOR).await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(issued_json(&issued)))
}
