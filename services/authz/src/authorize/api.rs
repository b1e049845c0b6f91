//! Backend API over a user's OAuth grants: list them, revoke one.
//! (Revoking ends what the application may do for the user: the token
//! service revokes its tokens when it sees the `oauth_grant.revoked` event.)

use actix_web::{HttpResponse, web};
use gatehouse_platform::openapi::ErrorBody;
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

/// The OAuth grants API's part of the published OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(list, get, revoke),
        components(schemas(OAuthGrant, OAuthGrantList, DeletedOAuthGrant))
    )]
    struct Doc;
    Doc::openapi()
}

fn constant(value: Value) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let t = if value.is_boolean() {
        Type::Boolean
    } else {
        Type::String
    };
    ObjectBuilder::new()
        .schema_type(t)
        .enum_values(Some([value]))
        .build()
}

fn grant_object() -> utoipa::openapi::schema::Object {
    constant(json!("oauth_grant"))
}

fn always_true() -> utoipa::openapi::schema::Object {
    constant(json!(true))
}

/// What a user let an OAuth application do ([`grant_json`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct OAuthGrant {
    #[schema(schema_with = grant_object)]
    object: String,
    user_id: String,
    application_id: String,
    client_id: String,
    /// The application's current name; for a metadata-document client,
    /// the name it had when the user consented.
    application_name: String,
    /// Granted scopes, space-separated.
    scopes: String,
    /// Whether the user saw and accepted a consent screen (`false`: the
    /// application skips it).
    consented: bool,
    /// Milliseconds since the epoch.
    created_at: i64,
    /// Milliseconds since the epoch.
    updated_at: i64,
}

/// A user's standing grants, most recently changed first.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct OAuthGrantList {
    data: Vec<OAuthGrant>,
    total_count: u64,
}

/// A revoked grant.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DeletedOAuthGrant {
    #[schema(schema_with = grant_object)]
    object: String,
    user_id: String,
    application_id: String,
    #[schema(schema_with = always_true)]
    deleted: bool,
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

#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/oauth_grants",
    tag = "oauth_grants",
    operation_id = "list_user_oauth_grants",
    params(("user_id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user's standing grants.", body = OAuthGrantList),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/oauth_grants/{application_id}",
    tag = "oauth_grants",
    operation_id = "get_user_oauth_grant",
    params(("user_id" = String, Path, description = "The user's id."), ("application_id" = String, Path, description = "The OAuth application's id (for a metadata-document client, the id its grant was recorded under).")),
    responses(
        (status = 200, description = "The grant.", body = OAuthGrant),
        (status = 404, description = "The user has no standing grant for this application.", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
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

#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}/oauth_grants/{application_id}",
    tag = "oauth_grants",
    operation_id = "revoke_user_oauth_grant",
    params(("user_id" = String, Path, description = "The user's id."), ("application_id" = String, Path, description = "The OAuth application's id (for a metadata-document client, the id its grant was recorded under).")),
    responses(
        (status = 200, description = "The grant is revoked; the token service then revokes the application's tokens for the user.", body = DeletedOAuthGrant),
        (status = 404, description = "The user has no standing grant for this application.", body = ErrorBody),
        (status = 409, description = "Concurrent changes to the grant kept winning (`concurrent_modification`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &openapi(),
            &[
                ("GET", "/v1/users/{user_id}/oauth_grants"),
                ("GET", "/v1/users/{user_id}/oauth_grants/{application_id}"),
                (
                    "DELETE",
                    "/v1/users/{user_id}/oauth_grants/{application_id}",
                ),
            ],
        );
        let v = serde_json::to_value(openapi()).unwrap_or_default();
        // The schema has exactly the fields served.
        let g = Grant {
            user_id: "user_x".into(),
            application_id: "oa_x".into(),
            client_id: "c".into(),
            application_name: "A".into(),
            client_image_url: None,
            scopes: vec!["openid".into()],
            consented: true,
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        let served = grant_json(&g);
        let props = &v["components"]["schemas"]["OAuthGrant"]["properties"];
        assert_eq!(
            props.as_object().map(|o| o.len()),
            served.as_object().map(|o| o.len())
        );
        for (k, _) in served.as_object().into_iter().flatten() {
            assert!(props.get(k).is_some(), "{k}");
        }
    }
}
