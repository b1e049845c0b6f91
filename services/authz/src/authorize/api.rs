//! Backend API over a user's OAuth grants: list them, revoke one.
//! (Revoking ends what the application may do for the user: the token
//! service revokes its tokens when it sees the `oauth_grant.revoked` event.)

use actix_web::{HttpResponse, web};
use gatehouse_platform::tenancy::InstanceKey;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use serde_json::{Value, json};

use super::grants::{self, Grant};
use crate::users::projection as users;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Registered before the `/v1/users` scope, which would otherwise take
    // these paths.
    cfg.service(web::resource("/v1/users/{user_id}/oauth_grants").get(list))
        .service(
            web::resource("/v1/users/{user_id}/oauth_grants/{application_id}")
                .get(get)
                .delete(revoke),
        );
}

fn grant_json(g: &Grant) -> Value {
    json!({
        "object": "oauth_grant",
        "user_id": g.user_id,
        "application_id": g.application_id,
        "client_id": g.client_id,
        "application_name": g.application_name,
        "scopes": g.scopes.join(" "),
        "consented": g.consented,
        "created_at": g.created_at_ms,
        "updated_at": g.updated_at_ms,
    })
}

async fn user_exists(platform: &Platform, instance_id: &str, user_id: &str) -> ApiResult<()> {
    users::get(platform.db(), instance_id, user_id)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("user"))
}

async fn list(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let instance = auth.instance.id.as_str();
    user_exists(&platform, instance, &path).await?;
    let all = grants::list(platform.db(), instance, &path).await?;
    let data: Vec<Value> = all.iter().map(grant_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data, "total_count": data.len() })))
}

async fn get(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user_id, app_id) = path.into_inner();
    let g = grants::get(platform.db(), auth.instance.id.as_str(), &user_id, &app_id)
        .await?
        .ok_or_else(|| ApiError::not_found("OAuth grant"))?;
    Ok(HttpResponse::Ok().json(grant_json(&g)))
}

async fn revoke(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (user_id, app_id) = path.into_inner();
    if !grants::revoke(&platform, &auth, &user_id, &app_id, "backend_api").await? {
        return Err(ApiError::not_found("OAuth grant"));
    }
    Ok(HttpResponse::Ok().json(json!({
        "object": "oauth_grant",
        "user_id": user_id,
        "application_id": app_id,
        "deleted": true,
    })))
}
