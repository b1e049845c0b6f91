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

/// The admin API's part of the published OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(
            create_tenant,
            list_tenants,
            get_tenant,
            disable_tenant,
            get_instance,
            advance_clock,
            set_rate_limit,
            create_key,
            list_keys,
            revoke_key,
            rotate_key
        ),
        components(schemas(
            super::TenantView,
            super::SecretKeyView,
            super::Environment,
            Tenant,
            TenantList,
            Instance,
            InstanceUsage,
            InstanceRateLimit,
            IssuedSecretKey,
            SecretKeyList,
            TestClock
        ))
    )]
    struct Doc;
    Doc::openapi()
}

/// A tenant with its instances.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Tenant {
    #[serde(flatten)]
    tenant: super::TenantView,
    instances: Vec<Instance>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TenantList {
    data: Vec<super::TenantView>,
    total_count: u64,
}

/// An instance as the admin API shows it. Only the answer to tenant
/// creation carries `secret_key` and `secret_key_id`: the key is shown once.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Instance {
    /// `instance`
    object: String,
    id: String,
    tenant_id: String,
    environment: super::Environment,
    publishable_key: String,
    /// The OAuth issuer, `<public url>/i/<instance id>`.
    issuer: String,
    created_at: i64,
    usage: InstanceUsage,
    rate_limit: InstanceRateLimit,
    secret_key: Option<String>,
    secret_key_id: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct InstanceUsage {
    users: i64,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct InstanceRateLimit {
    /// Backend API requests admitted per window.
    limit: i64,
    window_seconds: u64,
    /// The environment's default limit.
    default: u32,
    overridden: bool,
}

/// A secret key as issued: the only time `secret_key` is shown.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct IssuedSecretKey {
    #[serde(flatten)]
    key: super::SecretKeyView,
    secret_key: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SecretKeyList {
    data: Vec<super::SecretKeyView>,
    total_count: u64,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TestClock {
    /// `test_clock`
    object: String,
    /// The clock's time, ms since the epoch.
    now: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    /// 1 to 256 printable characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*\\S[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    /// 1 to 256 printable characters; `unnamed` when absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*\\S[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    /// Requests per window; `null` returns to the environment's default. The
    /// field is required, so an empty body is an error, not a reset.
    #[serde(deserialize_with = "required_nullable")]
    #[schema(required, minimum = 1, maximum = 4294967295_u64)]
    limit: Option<u32>,
}

fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(d)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Page {
    /// 1 to 500; 20 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    #[param(minimum = 0)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/tenants",
    tag = "admin",
    operation_id = "create_tenant",
    request_body = CreateTenant,
    responses((status = 201, description = "The tenant and both of its instances, each with a fresh secret key shown only here.", body = Tenant)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/tenants",
    tag = "admin",
    operation_id = "list_tenants",
    params(Page),
    responses((status = 200, description = "Tenants, newest first.", body = TenantList), (status = 422, description = "`limit` or `offset` out of range.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{tenant_id}",
    tag = "admin",
    operation_id = "get_tenant",
    params(("tenant_id" = String, Path, description = "A tenant id (`ten_…`)")),
    responses((status = 200, description = "The tenant with its instances.", body = Tenant), (status = 404, description = "No such tenant.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
async fn get_tenant(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(tenant_json(&platform, &path).await?))
}

#[utoipa::path(
    post,
    path = "/admin/v1/tenants/{tenant_id}/disable",
    tag = "admin",
    operation_id = "disable_tenant",
    params(("tenant_id" = String, Path, description = "A tenant id (`ten_…`)")),
    responses((status = 200, description = "The tenant, now disabled: its keys stop working.", body = Tenant), (status = 404, description = "No such tenant.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
async fn disable_tenant(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    super::disable_tenant(&platform, &path, ACTOR).await?;
    Ok(HttpResponse::Ok().json(tenant_json(&platform, &path).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    /// How far to move the clock: 0 to 30 days in ms.
    #[schema(minimum = 0, maximum = 2592000000_i64)]
    ms: i64,
}

/// Moves a `--test-clock` process's clock forward; 404 everywhere else.
#[utoipa::path(
    post,
    path = "/admin/v1/test/clock/advance",
    tag = "admin",
    operation_id = "advance_clock",
    request_body = AdvanceBody,
    responses((status = 200, description = "The clock, moved.", body = TestClock), (status = 404, description = "This process does not run on a test clock.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/instances/{instance_id}",
    tag = "admin",
    operation_id = "get_instance",
    params(("instance_id" = String, Path, description = "An instance id (`ins_…`)")),
    responses((status = 200, description = "The instance with its usage and rate limit.", body = Instance), (status = 404, description = "No such instance.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    put,
    path = "/admin/v1/instances/{instance_id}/rate_limit",
    tag = "admin",
    operation_id = "set_rate_limit",
    params(("instance_id" = String, Path, description = "An instance id (`ins_…`)")),
    request_body = RateLimitBody,
    responses((status = 200, description = "The instance with its new limit.", body = Instance), (status = 404, description = "No such instance.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/instances/{instance_id}/secret_keys",
    tag = "admin",
    operation_id = "create_secret_key",
    params(("instance_id" = String, Path, description = "An instance id (`ins_…`)")),
    request_body = Option<KeyRequest>,
    responses((status = 201, description = "The new key, shown only here.", body = IssuedSecretKey), (status = 404, description = "No such instance.", body = crate::openapi::ErrorBody), (status = 409, description = "The tenant is disabled.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    get,
    path = "/admin/v1/instances/{instance_id}/secret_keys",
    tag = "admin",
    operation_id = "list_secret_keys",
    params(("instance_id" = String, Path, description = "An instance id (`ins_…`)")),
    responses((status = 200, description = "The instance's keys, without secrets.", body = SecretKeyList), (status = 404, description = "No such instance.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    post,
    path = "/admin/v1/instances/{instance_id}/secret_keys/{key_id}/revoke",
    tag = "admin",
    operation_id = "revoke_secret_key",
    params(("instance_id" = String, Path, description = "An instance id (`ins_…`)"), ("key_id" = String, Path, description = "A secret key id")),
    responses((status = 200, description = "The key, revoked (again, if it was).", body = super::SecretKeyView), (status = 404, description = "No such instance or key.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
async fn revoke_key(
    _: AdminAuth,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (instance_id, key_id) = path.into_inner();
    let key = super::revoke_key(&platform, &instance_id, &key_id, ACTOR).await?;
    Ok(HttpResponse::Ok().json(key))
}

#[utoipa::path(
    post,
    path = "/admin/v1/instances/{instance_id}/secret_keys/{key_id}/rotate",
    tag = "admin",
    operation_id = "rotate_secret_key",
    params(("instance_id" = String, Path, description = "An instance id (`ins_…`)"), ("key_id" = String, Path, description = "A secret key id")),
    responses((status = 201, description = "A new key replacing this one, which is revoked.", body = IssuedSecretKey), (status = 404, description = "No such instance or key.", body = crate::openapi::ErrorBody), (status = 409, description = "The key is already revoked, or the tenant is disabled.", body = crate::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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
