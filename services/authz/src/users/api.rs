//! `/v1/users`: wire-compatible with Clerk's Backend API, so the official
//! `@clerk/backend` SDK works unmodified. Thin handlers: parse, authorize
//! (the secret key's instance scopes every query), call one command, map.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency;
use gatehouse_platform::tenancy::InstanceKey;
use gatehouse_platform::wire::user_json;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::projection::{self, Filter, OrderBy};
use super::{NewUser, commands, password, validate};

use gatehouse_platform::openapi::ErrorBody;
use gatehouse_platform::wire::user_schema::UserObject;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/users")
            .service(web::resource("").post(create_user).get(list_users))
            .service(web::resource("/count").get(count_users))
            .service(
                web::resource("/{user_id}")
                    .get(get_user)
                    .patch(update_user)
                    .delete(delete_user),
            )
            .service(web::resource("/{user_id}/ban").post(ban_user))
            .service(web::resource("/{user_id}/unban").post(unban_user))
            .service(
                web::resource("/{user_id}/metadata")
                    .put(replace_metadata)
                    .patch(merge_metadata),
            ),
    );
}

/// The users API's part of the published OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(
            create_user,
            list_users,
            count_users,
            get_user,
            update_user,
            delete_user,
            ban_user,
            unban_user,
            replace_metadata,
            merge_metadata
        ),
        components(schemas(
            UserObject,
            gatehouse_platform::wire::user_schema::EmailAddressObject,
            gatehouse_platform::wire::user_schema::EmailVerification,
            gatehouse_platform::wire::user_schema::VerificationAdmin,
            gatehouse_platform::wire::user_schema::VerificationOtp,
            UserList,
            TotalCount,
            DeletedUser,
            CreateBody,
            UpdateBody,
            MetadataBody,
            MetadataMerge,
            EmailParam
        ))
    )]
    struct Doc;
    Doc::openapi()
}

/// The answer of `GET /v1/users`: a bare array of users, as Clerk's.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UserList(Vec<UserObject>);

/// The answer of `GET /v1/users/count`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TotalCount {
    #[schema(schema_with = total_count_object)]
    object: String,
    total_count: u64,
}

/// A deleted user.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DeletedUser {
    #[schema(schema_with = user_object)]
    object: String,
    id: String,
    #[schema(schema_with = always_true)]
    deleted: bool,
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

fn total_count_object() -> utoipa::openapi::schema::Object {
    constant(json!("total_count"))
}

fn user_object() -> utoipa::openapi::schema::Object {
    constant(json!("user"))
}

fn always_true() -> utoipa::openapi::schema::Object {
    constant(json!(true))
}

/// `order_by`: a column, optionally prefixed by `+` (ascending, the
/// default) or `-` (descending).
fn order_by_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let columns = [
        "created_at",
        "updated_at",
        "first_name",
        "last_name",
        "username",
        "email_address",
    ];
    let values = columns
        .iter()
        .flat_map(|c| [c.to_string(), format!("+{c}"), format!("-{c}")]);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .default(Some(json!("-created_at")))
        .build()
}

/// The filters of `GET /v1/users` and `GET /v1/users/count`. Repeated keys
/// are OR-ed; at most 500 filter values in all. Any other parameter is 422.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct UserFilter {
    /// Users with any of these email addresses (case-insensitive).
    #[param(style = Form, explode)]
    email_address: Option<Vec<String>>,
    /// Users with any of these ids.
    #[param(style = Form, explode)]
    user_id: Option<Vec<String>>,
    /// Users with any of these external ids.
    #[param(style = Form, explode)]
    external_id: Option<Vec<String>>,
    /// Users with any of these usernames.
    #[param(style = Form, explode)]
    username: Option<Vec<String>>,
    /// A case-insensitive substring of the id, a name, the username, the
    /// external id or an email address.
    query: Option<String>,
    /// Only banned (`true`) or only unbanned (`false`) users.
    banned: Option<bool>,
}

/// The paging of `GET /v1/users`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct UserPage {
    /// 1 to 500; 10 when absent.
    #[param(minimum = 1, maximum = 500, default = 10)]
    limit: Option<u64>,
    /// 0 when absent.
    #[param(minimum = 0, maximum = 9223372036854775807_u64, default = 0)]
    offset: Option<u64>,
    /// `-created_at` (newest first) when absent.
    #[param(schema_with = order_by_schema)]
    order_by: Option<String>,
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A new user. Each metadata object is at most 8 KiB serialized.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateUserRequest)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// 1 to 20 distinct (case-insensitively) addresses, all unused in the
    /// instance; the first is the primary one. Created verified.
    #[serde(default)]
    #[schema(required = true, min_items = 1, max_items = 20, value_type = Vec<EmailParam>)]
    email_address: Vec<String>,
    /// 8 to 256 characters (1 to 256 with `skip_password_checks`).
    #[schema(min_length = 8, max_length = 256)]
    password: Option<String>,
    /// At most 256 printable characters; empty means unset.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    first_name: Option<String>,
    /// At most 256 printable characters; empty means unset.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    last_name: Option<String>,
    /// At most 256 printable characters; empty means unset.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    external_id: Option<String>,
    /// Unused in the instance.
    #[schema(pattern = "^[A-Za-z0-9_-]{4,64}$")]
    username: Option<String>,
    #[schema(value_type = Option<Object>)]
    public_metadata: Option<Value>,
    #[schema(value_type = Option<Object>)]
    private_metadata: Option<Value>,
    #[schema(value_type = Option<Object>)]
    unsafe_metadata: Option<Value>,
    /// Allows passwords of 1 to 7 characters.
    #[serde(default)]
    skip_password_checks: bool,
    /// Accepted and ignored: a password is optional already.
    #[serde(default)]
    skip_password_requirement: bool,
}

/// An email address: one `@`, a local part of 1 to 64 bytes, a dotted
/// domain of letters, digits and hyphens; at most 254 bytes.
#[derive(utoipa::ToSchema)]
#[schema(format = Email)]
#[allow(dead_code)]
struct EmailParam(String);

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    operation_id = "create_user",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and body within 24 hours replays the first answer.")),
    request_body = CreateBody,
    responses(
        (status = 200, description = "The new user.", body = UserObject, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = "A malformed body, or an invalid `Idempotency-Key` (`idempotency_key_invalid`).", body = ErrorBody),
        (status = 409, description = "An email address or the username is used by another user (`form_identifier_exists`), or a request with this `Idempotency-Key` is still running.", body = ErrorBody),
        (status = 422, description = "A field fails validation (`form_param_missing`, `form_param_format_invalid`; `meta.param_name` names it), or the `Idempotency-Key` was used with another request (`idempotency_key_reused`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn create_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let key = idempotency::key_of(&req)?;
    let instance_id = auth.instance.id.to_string();
    idempotency::run(&platform, &instance_id, key, req.path(), &body, || async {
        let b: CreateBody = parse_json(&body)?;
        if b.email_address.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "form_param_missing",
                "missing",
                "`email_address` must list at least one email address.",
            )
            .with_meta(json!({ "param_name": "email_address" })));
        }
        let emails = validate::emails(&b.email_address)?;
        let _ = b.skip_password_requirement; // a password is optional here already
        let password_hash = match b.password {
            Some(p) => {
                validate::password(&p, b.skip_password_checks)?;
                Some(password::hash(p).await?)
            }
            None => None,
        };
        let new = NewUser {
            email_addresses: emails,
            // The Backend API's addresses are verified, as in Clerk.
            email_verified: true,
            password_hash,
            first_name: validate::text("first_name", b.first_name)?,
            last_name: validate::text("last_name", b.last_name)?,
            external_id: validate::text("external_id", b.external_id)?,
            username: validate::username(b.username)?,
            public_metadata: validate::metadata("public_metadata", b.public_metadata, false)?
                .unwrap_or_else(|| json!({})),
            private_metadata: validate::metadata("private_metadata", b.private_metadata, false)?
                .unwrap_or_else(|| json!({})),
            unsafe_metadata: validate::metadata("unsafe_metadata", b.unsafe_metadata, false)?
                .unwrap_or_else(|| json!({})),
        };
        let state = super::create(&platform, &auth, new).await?;
        Ok((StatusCode::OK, user_json(&state)))
    })
    .await
}

/// Query parameters of list and count; repeated keys allowed for lists.
fn parse_filter(qs: &str, paging: bool) -> ApiResult<(Filter, (OrderBy, bool), u64, u64)> {
    let mut f = Filter::default();
    let mut order = (OrderBy::CreatedAt, true);
    let (mut limit, mut offset) = (10u64, 0u64);
    for (k, v) in form_urlencoded::parse(qs.as_bytes()) {
        let v = v.into_owned();
        match (k.as_ref(), paging) {
            ("email_address", _) => f.email_addresses.push(v),
            ("user_id", _) => f.user_ids.push(v),
            ("external_id", _) => f.external_ids.push(v),
            ("username", _) => f.usernames.push(v),
            ("query", _) => f.query = Some(v),
            ("banned", _) => {
                f.banned = Some(v.parse().map_err(|_| {
                    ApiError::invalid_param("banned", "`banned` must be true or false.")
                })?)
            }
            ("limit", true) => limit = gatehouse_platform::http::limit_param(&v)?,
            ("offset", true) => offset = gatehouse_platform::http::offset_param(&v)?,
            ("order_by", true) => {
                order = OrderBy::parse(&v).ok_or_else(|| {
                    ApiError::invalid_param(
                        "order_by",
                        "`order_by` must be one of created_at, updated_at, first_name, last_name, \
                         username, email_address, optionally prefixed by + or -.",
                    )
                })?
            }
            (other, _) => {
                return Err(ApiError::invalid_param(
                    other,
                    format!("Unknown or unsupported query parameter `{other}`."),
                ));
            }
        }
    }
    if f.email_addresses.len() + f.user_ids.len() + f.external_ids.len() + f.usernames.len() > 500 {
        return Err(ApiError::invalid_param(
            "query",
            "At most 500 filter values per request.",
        ));
    }
    Ok((f, order, limit, offset))
}

#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    operation_id = "list_users",
    params(UserFilter, UserPage),
    responses(
        (status = 200, description = "The matching users, a bare array as Clerk's.", body = UserList),
        (status = 422, description = "An unknown query parameter or a value out of range (`form_param_format_invalid`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn list_users(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (filter, order, limit, offset) = parse_filter(req.query_string(), true)?;
    let users = projection::list(
        platform.db(),
        auth.instance.id.as_str(),
        &filter,
        order,
        limit,
        offset,
    )
    .await?;
    Ok(HttpResponse::Ok().json(users.iter().map(user_json).collect::<Vec<_>>()))
}

#[utoipa::path(
    get,
    path = "/v1/users/count",
    tag = "users",
    operation_id = "count_users",
    params(UserFilter),
    responses(
        (status = 200, description = "How many users match.", body = TotalCount),
        (status = 422, description = "An unknown query parameter (paging ones included) or a bad value (`form_param_format_invalid`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn count_users(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (filter, ..) = parse_filter(req.query_string(), false)?;
    let n = projection::count(platform.db(), auth.instance.id.as_str(), &filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "object": "total_count", "total_count": n })))
}

#[utoipa::path(
    get,
    path = "/v1/users/{user_id}",
    tag = "users",
    operation_id = "get_user",
    params(("user_id" = String, Path, description = "The user's id (`user_…`).")),
    responses(
        (status = 200, description = "The user.", body = UserObject),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn get_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let user = projection::get(platform.db(), auth.instance.id.as_str(), &path)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(HttpResponse::Ok().json(user_json(&user)))
}

/// Changes to a user: absent fields stay as they are. Each metadata object
/// given replaces the stored one (at most 8 KiB serialized).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateUserRequest)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    /// At most 256 printable characters; `null` or empty clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    first_name: Option<Option<String>>,
    /// At most 256 printable characters; `null` or empty clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    last_name: Option<Option<String>>,
    /// At most 256 printable characters; `null` or empty clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 256, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    external_id: Option<Option<String>>,
    /// Unused in the instance; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{4,64}$")]
    username: Option<Option<String>>,
    /// The id of one of the user's email addresses.
    primary_email_address_id: Option<String>,
    /// 8 to 256 characters (1 to 256 with `skip_password_checks`).
    #[schema(min_length = 8, max_length = 256)]
    password: Option<String>,
    /// Allows passwords of 1 to 7 characters.
    #[serde(default)]
    skip_password_checks: bool,
    /// Accepted and ignored.
    #[serde(default)]
    sign_out_of_other_sessions: bool,
    #[schema(value_type = Option<Object>)]
    public_metadata: Option<Value>,
    #[schema(value_type = Option<Object>)]
    private_metadata: Option<Value>,
    #[schema(value_type = Option<Object>)]
    unsafe_metadata: Option<Value>,
}

#[utoipa::path(
    patch,
    path = "/v1/users/{user_id}",
    tag = "users",
    operation_id = "update_user",
    params(("user_id" = String, Path, description = "The user's id (`user_…`).")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The user after the update.", body = UserObject),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
        (status = 409, description = "The username is used by another user (`form_identifier_exists`), or concurrent changes kept winning (`concurrent_modification`).", body = ErrorBody),
        (status = 422, description = "A field fails validation, or `primary_email_address_id` is not one of the user's addresses (`form_param_format_invalid`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn update_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: UpdateBody = parse_json(&body)?;
    let _ = b.sign_out_of_other_sessions; // no sessions yet: nothing to sign out of
    // Validate once, outside the retry loop.
    let first_name = b
        .first_name
        .map(|v| validate::text("first_name", v))
        .transpose()?;
    let last_name = b
        .last_name
        .map(|v| validate::text("last_name", v))
        .transpose()?;
    let external_id = b
        .external_id
        .map(|v| validate::text("external_id", v))
        .transpose()?;
    let username = b.username.map(validate::username).transpose()?;
    let public = validate::metadata("public_metadata", b.public_metadata, false)?;
    let private = validate::metadata("private_metadata", b.private_metadata, false)?;
    let unsafe_ = validate::metadata("unsafe_metadata", b.unsafe_metadata, false)?;
    let password_hash = match b.password {
        Some(p) => {
            validate::password(&p, b.skip_password_checks)?;
            Some(password::hash(p).await?)
        }
        None => None,
    };
    let instance_id = auth.instance.id.to_string();
    let user_id = path.into_inner();
    let state = super::mutate(
        &platform,
        &auth,
        &user_id,
        |user, now| {
            let update = commands::ProfileUpdate {
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                external_id: external_id.clone(),
                username: username.clone(),
                primary_email_address_id: b.primary_email_address_id.clone(),
                public_metadata: public.clone(),
                private_metadata: private.clone(),
                unsafe_metadata: unsafe_.clone(),
                password_set: password_hash.is_some(),
            };
            commands::update_profile(user, &update, now)
        },
        |txn, now| {
            let hash = password_hash.clone();
            let (instance_id, user_id) = (instance_id.clone(), user_id.clone());
            Box::pin(async move {
                if let Some(h) = hash {
                    password::store(txn, &instance_id, &user_id, &h, now).await?;
                }
                Ok(())
            })
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(HttpResponse::Ok().json(user_json(&state)))
}

/// Metadata objects, each at most 8 KiB serialized; absent fields stay as
/// they are. `null` is accepted by `PUT` only.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = UserMetadataRequest)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    public_metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    private_metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    unsafe_metadata: Option<Option<Value>>,
}

/// What `PATCH …/metadata` accepts: metadata objects, none of them `null`.
#[derive(utoipa::ToSchema)]
#[schema(as = UserMetadataMergeRequest)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct MetadataMerge {
    #[schema(value_type = Object, required = false)]
    public_metadata: (),
    #[schema(value_type = Object, required = false)]
    private_metadata: (),
    #[schema(value_type = Object, required = false)]
    unsafe_metadata: (),
}

impl MetadataBody {
    fn validated(self, allow_null: bool) -> ApiResult<[(&'static str, Option<Value>); 3]> {
        let check = |field: &'static str, v: Option<Option<Value>>| {
            validate::metadata(field, v.map(|v| v.unwrap_or(Value::Null)), allow_null)
        };
        Ok([
            (
                "public_metadata",
                check("public_metadata", self.public_metadata)?,
            ),
            (
                "private_metadata",
                check("private_metadata", self.private_metadata)?,
            ),
            (
                "unsafe_metadata",
                check("unsafe_metadata", self.unsafe_metadata)?,
            ),
        ])
    }
}

async fn metadata_command(
    auth: gatehouse_platform::tenancy::Authed,
    platform: web::Data<Platform>,
    user_id: String,
    fields: [(&'static str, Option<Value>); 3],
    merge: bool,
) -> ApiResult<HttpResponse> {
    let state = super::mutate(
        &platform,
        &auth,
        &user_id,
        |user, now| commands::set_metadata_fields(user, &fields, merge, now),
        super::no_side_effect,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(HttpResponse::Ok().json(user_json(&state)))
}

#[utoipa::path(
    put,
    path = "/v1/users/{user_id}/metadata",
    tag = "users",
    operation_id = "replace_user_metadata",
    params(("user_id" = String, Path, description = "The user's id (`user_…`).")),
    request_body = MetadataBody,
    responses(
        (status = 200, description = "The user, each given metadata field replaced (`null` stores `null`).", body = UserObject),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`).", body = ErrorBody),
        (status = 422, description = "A field is not an object or `null`, or is over 8 KiB (`form_param_format_invalid`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn replace_metadata(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: MetadataBody = parse_json(&body)?;
    metadata_command(auth, platform, path.into_inner(), b.validated(true)?, false).await
}

#[utoipa::path(
    patch,
    path = "/v1/users/{user_id}/metadata",
    tag = "users",
    operation_id = "merge_user_metadata",
    params(("user_id" = String, Path, description = "The user's id (`user_…`).")),
    request_body(content = MetadataMerge, description = "Each given field is deep-merged: objects key by key, `null` removes a key. A field may not be `null` itself."),
    responses(
        (status = 200, description = "The user after the merge.", body = UserObject),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`).", body = ErrorBody),
        (status = 422, description = "A field is not an object, or it or the merge result is over 8 KiB (`form_param_format_invalid`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn merge_metadata(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: MetadataBody = parse_json(&body)?;
    let fields = b.validated(false)?;
    metadata_command(auth, platform, path.into_inner(), fields, true).await
}

#[utoipa::path(
    delete,
    path = "/v1/users/{user_id}",
    tag = "users",
    operation_id = "delete_user",
    params(("user_id" = String, Path, description = "The user's id (`user_…`).")),
    responses(
        (status = 200, description = "The user is deleted.", body = DeletedUser),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn delete_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let user_id = path.into_inner();
    super::mutate(
        &platform,
        &auth,
        &user_id,
        |user, _| Ok(commands::delete(user)),
        super::no_side_effect,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "object": "user", "id": user_id, "deleted": true })))
}

async fn set_banned(
    auth: gatehouse_platform::tenancy::Authed,
    platform: web::Data<Platform>,
    req: HttpRequest,
    user_id: String,
    banned: bool,
) -> ApiResult<HttpResponse> {
    let key = idempotency::key_of(&req)?;
    let instance_id = auth.instance.id.to_string();
    idempotency::run(&platform, &instance_id, key, req.path(), b"", || async {
        let state = super::mutate(
            &platform,
            &auth,
            &user_id,
            |user, now| Ok(commands::set_banned(user, banned, now)),
            super::no_side_effect,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
        Ok((StatusCode::OK, user_json(&state)))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/ban",
    tag = "users",
    operation_id = "ban_user",
    params(("user_id" = String, Path, description = "The user's id (`user_…`)."), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and body within 24 hours replays the first answer.")),
    responses(
        (status = 200, description = "The user, banned: sign-in refused (already so: unchanged).", body = UserObject, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = "An invalid `Idempotency-Key` (`idempotency_key_invalid`).", body = ErrorBody),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`), or a request with this `Idempotency-Key` is still running.", body = ErrorBody),
        (status = 422, description = "The `Idempotency-Key` was used with another request (`idempotency_key_reused`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn ban_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_banned(auth, platform, req, path.into_inner(), true).await
}

#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/unban",
    tag = "users",
    operation_id = "unban_user",
    params(("user_id" = String, Path, description = "The user's id (`user_…`)."), ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and body within 24 hours replays the first answer.")),
    responses(
        (status = 200, description = "The user, no longer banned (already so: unchanged).", body = UserObject, headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = "An invalid `Idempotency-Key` (`idempotency_key_invalid`).", body = ErrorBody),
        (status = 404, description = "No user of this instance has this id.", body = ErrorBody),
        (status = 409, description = "Concurrent changes kept winning (`concurrent_modification`), or a request with this `Idempotency-Key` is still running.", body = ErrorBody),
        (status = 422, description = "The `Idempotency-Key` was used with another request (`idempotency_key_reused`).", body = ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn unban_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_banned(auth, platform, req, path.into_inner(), false).await
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::v1::{self, UserState};

    use super::*;

    #[test]
    fn filter_parses_repeated_keys_and_refuses_unknown() {
        let (f, order, limit, offset) = parse_filter(
            "email_address=a%40b.co&email_address=c%40d.co&limit=5&offset=10&order_by=-updated_at",
            true,
        )
        .ok()
        .unwrap_or_default_for_test();
        assert_eq!(f.email_addresses, vec!["a@b.co", "c@d.co"]);
        assert_eq!(order, (OrderBy::UpdatedAt, true));
        assert_eq!((limit, offset), (5, 10));
        assert!(parse_filter("nope=1", true).is_err());
        assert!(parse_filter("limit=0", true).is_err());
        assert!(parse_filter("limit=501", true).is_err());
        assert!(parse_filter("limit=5", false).is_err());
        assert!(parse_filter("order_by=password", true).is_err());
    }

    trait OrDefault {
        fn unwrap_or_default_for_test(self) -> (Filter, (OrderBy, bool), u64, u64);
    }

    impl OrDefault for Option<(Filter, (OrderBy, bool), u64, u64)> {
        fn unwrap_or_default_for_test(self) -> (Filter, (OrderBy, bool), u64, u64) {
            self.unwrap_or((Filter::default(), (OrderBy::CreatedAt, false), 0, 0))
        }
    }

    #[test]
    fn user_object_has_the_fields_the_sdk_reads() {
        let u = UserState {
            user_id: "user_x".into(),
            public_metadata_json: "{\"a\":1}".into(),
            private_metadata_json: "{}".into(),
            unsafe_metadata_json: "{}".into(),
            ..Default::default()
        };
        let v = user_json(&u);
        assert_eq!(v["object"], "user");
        assert_eq!(v["public_metadata"]["a"], 1);
        for k in [
            "email_addresses",
            "phone_numbers",
            "web3_wallets",
            "external_accounts",
            "enterprise_accounts",
        ] {
            assert!(v[k].is_array(), "{k}");
        }
        assert!(v["primary_email_address_id"].is_null());
    }

    #[test]
    fn the_document_lists_every_route() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &openapi(),
            &[
                ("POST", "/v1/users"),
                ("GET", "/v1/users"),
                ("GET", "/v1/users/count"),
                ("GET", "/v1/users/{user_id}"),
                ("PATCH", "/v1/users/{user_id}"),
                ("DELETE", "/v1/users/{user_id}"),
                ("POST", "/v1/users/{user_id}/ban"),
                ("POST", "/v1/users/{user_id}/unban"),
                ("PUT", "/v1/users/{user_id}/metadata"),
                ("PATCH", "/v1/users/{user_id}/metadata"),
            ],
        );
        let v = serde_json::to_value(openapi()).unwrap_or_default();
        // Every served user object meets the schema's required fields.
        let user = user_json(&UserState {
            email_addresses: vec![v1::EmailAddress {
                id: "idn_a".into(),
                email_address: "a@b.co".into(),
                verified: Some(false),
            }],
            ..Default::default()
        });
        let schema = &v["components"]["schemas"]["User"];
        let props = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for k in user.as_object().into_iter().flatten().map(|(k, _)| k) {
            assert!(props.contains_key(k), "{k} not in the User schema");
        }
        for k in schema["required"].as_array().into_iter().flatten() {
            let k = k.as_str().unwrap_or_default();
            assert!(user.get(k).is_some(), "{k} is required but not served");
        }
        assert_eq!(props.len(), user.as_object().map_or(0, |o| o.len()));
    }

    #[test]
    fn email_addresses_show_whether_they_are_verified() {
        let email = |id: &str, verified| v1::EmailAddress {
            id: id.into(),
            email_address: format!("{id}@example.com"),
            verified,
        };
        let u = UserState {
            email_addresses: vec![
                email("idn_a", Some(true)),
                email("idn_b", Some(false)),
                email("idn_c", None),
            ],
            ..Default::default()
        };
        let v = user_json(&u);
        let verification = |i: usize| &v["email_addresses"][i]["verification"];
        assert_eq!(verification(0)["status"], "verified");
        assert_eq!(verification(0)["strategy"], "admin");
        assert_eq!(verification(1)["status"], "unverified");
        assert_eq!(verification(1)["object"], "verification_otp");
        assert_eq!(verification(2)["status"], "verified", "as shown before");
    }
}
