//! `/v1/users`: wire-compatible with Clerk's Backend API, so the official
//! `@clerk/backend` SDK works unmodified. Thin handlers: parse, authorize
//! (the secret key's instance scopes every query), call one command, map.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::http::parse_json;
use gatehouse_platform::idempotency;
use gatehouse_platform::tenancy::InstanceKey;
use gatehouse_platform::wire::{metadata_value, user_json};
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, UserState};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::projection::{self, Filter, OrderBy};
use super::{Decision, NewUser, password, touched, validate};

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

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    email_address: Vec<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    external_id: Option<String>,
    username: Option<String>,
    public_metadata: Option<Value>,
    private_metadata: Option<Value>,
    unsafe_metadata: Option<Value>,
    #[serde(default)]
    skip_password_checks: bool,
    #[serde(default)]
    skip_password_requirement: bool,
}

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

async fn count_users(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (filter, ..) = parse_filter(req.query_string(), false)?;
    let n = projection::count(platform.db(), auth.instance.id.as_str(), &filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "object": "total_count", "total_count": n })))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default, deserialize_with = "nullable")]
    first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    username: Option<Option<String>>,
    primary_email_address_id: Option<String>,
    password: Option<String>,
    #[serde(default)]
    skip_password_checks: bool,
    #[serde(default)]
    sign_out_of_other_sessions: bool,
    public_metadata: Option<Value>,
    private_metadata: Option<Value>,
    unsafe_metadata: Option<Value>,
}

/// Sets an already validated optional text field, noting a change.
fn set_text(
    field: &'static str,
    target: &mut Option<String>,
    v: Option<Option<String>>,
    changed: &mut Vec<String>,
) {
    if let Some(v) = v
        && *target != v
    {
        *target = v;
        changed.push(field.to_owned());
    }
}

fn set_metadata(
    field: &'static str,
    target: &mut String,
    v: Option<Value>,
    changed: &mut Vec<String>,
) {
    if let Some(v) = v {
        let s = v.to_string();
        if *target != s {
            *target = s;
            changed.push(field.to_owned());
        }
    }
}

fn updated_event(state: UserState, changed: Vec<String>) -> Decision {
    Decision {
        events: vec![super::event(
            et::USER_UPDATED,
            &v1::UserUpdated {
                user: Some(state.clone()),
                changed_fields: changed,
            },
        )],
        state: Some(state),
    }
}

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
            let mut s = touched(user, now);
            let mut changed = Vec::new();
            set_text(
                "first_name",
                &mut s.first_name,
                first_name.clone(),
                &mut changed,
            );
            set_text(
                "last_name",
                &mut s.last_name,
                last_name.clone(),
                &mut changed,
            );
            set_text(
                "external_id",
                &mut s.external_id,
                external_id.clone(),
                &mut changed,
            );
            set_text("username", &mut s.username, username.clone(), &mut changed);
            if let Some(primary) = &b.primary_email_address_id {
                if !s.email_addresses.iter().any(|e| &e.id == primary) {
                    return Err(ApiError::invalid_param(
                        "primary_email_address_id",
                        "No email address of this user has that id.",
                    ));
                }
                if &s.primary_email_address_id != primary {
                    s.primary_email_address_id = primary.clone();
                    changed.push("primary_email_address_id".to_owned());
                }
            }
            set_metadata(
                "public_metadata",
                &mut s.public_metadata_json,
                public.clone(),
                &mut changed,
            );
            set_metadata(
                "private_metadata",
                &mut s.private_metadata_json,
                private.clone(),
                &mut changed,
            );
            set_metadata(
                "unsafe_metadata",
                &mut s.unsafe_metadata_json,
                unsafe_.clone(),
                &mut changed,
            );
            if password_hash.is_some() {
                s.password_enabled = true;
                changed.push("password".to_owned());
            }
            if changed.is_empty() {
                return Ok(Decision::none(user.state.clone()));
            }
            Ok(updated_event(s, changed))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    #[serde(default, deserialize_with = "nullable")]
    public_metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    private_metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    unsafe_metadata: Option<Option<Value>>,
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
        |user, now| {
            let mut s = touched(user, now);
            let mut changed = Vec::new();
            for (field, value) in &fields {
                let Some(value) = value else { continue };
                let target = match *field {
                    "public_metadata" => &mut s.public_metadata_json,
                    "private_metadata" => &mut s.private_metadata_json,
                    _ => &mut s.unsafe_metadata_json,
                };
                let next = if merge {
                    let mut base = metadata_value(target);
                    validate::merge(&mut base, value);
                    if base.to_string().len() > validate::MAX_METADATA_BYTES {
                        return Err(ApiError::invalid_param(
                            field,
                            format!(
                                "`{field}` would exceed {} bytes.",
                                validate::MAX_METADATA_BYTES
                            ),
                        ));
                    }
                    base
                } else {
                    value.clone()
                };
                set_metadata(field, target, Some(next), &mut changed);
            }
            if changed.is_empty() {
                return Ok(Decision::none(user.state.clone()));
            }
            Ok(updated_event(s, changed))
        },
        super::no_side_effect,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(HttpResponse::Ok().json(user_json(&state)))
}

async fn replace_metadata(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: MetadataBody = parse_json(&body)?;
    metadata_command(auth, platform, path.into_inner(), b.validated(true)?, false).await
}

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
        |user, _| {
            Ok(Decision {
                events: vec![super::event(
                    et::USER_DELETED,
                    &v1::UserDeleted {
                        user_id: user.state.user_id.clone(),
                    },
                )],
                state: None,
            })
        },
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
            |user, now| {
                if user.state.banned == banned {
                    return Ok(Decision::none(user.state.clone()));
                }
                let mut s = touched(user, now);
                s.banned = banned;
                let ev = if banned {
                    super::event(
                        et::USER_BANNED,
                        &v1::UserBanned {
                            user: Some(s.clone()),
                        },
                    )
                } else {
                    super::event(
                        et::USER_UNBANNED,
                        &v1::UserUnbanned {
                            user: Some(s.clone()),
                        },
                    )
                };
                Ok(Decision {
                    events: vec![ev],
                    state: Some(s),
                })
            },
            super::no_side_effect,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
        Ok((StatusCode::OK, user_json(&state)))
    })
    .await
}

async fn ban_user(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_banned(auth, platform, req, path.into_inner(), true).await
}

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
}
