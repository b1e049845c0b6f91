//! The user aggregate's decisions: pure functions of the loaded user, a
//! validated request and the time, returning the events to append and the
//! state to answer with, or the refusal. Handlers parse and validate;
//! these decide; `users::mutate` runs them through the aggregate kernel.

use gatehouse_platform::wire::metadata_value;
use gatehouse_platform::{ApiError, ApiResult};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, UserState};
use serde_json::Value;

use super::{Decision, User, event, touched, validate};

/// A validated `PATCH /v1/users/{id}`: each `None` leaves the field as it
/// is; `Some(None)` clears a text field.
#[derive(Debug, Default, Clone)]
pub struct ProfileUpdate {
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub external_id: Option<Option<String>>,
    pub username: Option<Option<String>>,
    pub primary_email_address_id: Option<String>,
    pub public_metadata: Option<Value>,
    pub private_metadata: Option<Value>,
    pub unsafe_metadata: Option<Value>,
    /// A new password was given (its hash is written beside the event).
    pub password_set: bool,
}

fn set_text(
    field: &'static str,
    target: &mut Option<String>,
    v: &Option<Option<String>>,
    changed: &mut Vec<String>,
) {
    if let Some(v) = v
        && target != v
    {
        target.clone_from(v);
        changed.push(field.to_owned());
    }
}

fn set_metadata(field: &str, target: &mut String, v: Option<&Value>, changed: &mut Vec<String>) {
    if let Some(v) = v {
        let s = v.to_string();
        if *target != s {
            *target = s;
            changed.push(field.to_owned());
        }
    }
}

/// One `user.updated` naming the fields that changed, or nothing.
fn updated(user: &User, next: UserState, changed: Vec<String>) -> Decision {
    if changed.is_empty() {
        return Decision::none(user.state.clone());
    }
    Decision {
        events: vec![event(
            et::USER_UPDATED,
            &v1::UserUpdated {
                user: Some(next.clone()),
                changed_fields: changed,
            },
        )],
        state: Some(next),
    }
}

/// The profile update: names, identifiers, the primary address (one of the
/// user's own), metadata replaced, the password.
pub fn update_profile(user: &User, u: &ProfileUpdate, now: i64) -> ApiResult<Decision> {
    let mut s = touched(user, now);
    let mut changed = Vec::new();
    set_text("first_name", &mut s.first_name, &u.first_name, &mut changed);
    set_text("last_name", &mut s.last_name, &u.last_name, &mut changed);
    set_text(
        "external_id",
        &mut s.external_id,
        &u.external_id,
        &mut changed,
    );
    set_text("username", &mut s.username, &u.username, &mut changed);
    if let Some(primary) = &u.primary_email_address_id {
        if !s.email_addresses.iter().any(|e| &e.id == primary) {
            return Err(ApiError::invalid_param(
                "primary_email_address_id",
                "No email address of this user has that id.",
            ));
        }
        if &s.primary_email_address_id != primary {
            s.primary_email_address_id.clone_from(primary);
            changed.push("primary_email_address_id".to_owned());
        }
    }
    let metadata = [
        (
            "public_metadata",
            &mut s.public_metadata_json,
            &u.public_metadata,
        ),
        (
            "private_metadata",
            &mut s.private_metadata_json,
            &u.private_metadata,
        ),
        (
            "unsafe_metadata",
            &mut s.unsafe_metadata_json,
            &u.unsafe_metadata,
        ),
    ];
    for (field, target, value) in metadata {
        set_metadata(field, target, value.as_ref(), &mut changed);
    }
    if u.password_set {
        s.password_enabled = true;
        changed.push("password".to_owned());
    }
    Ok(updated(user, s, changed))
}

/// The metadata endpoints: `PUT` replaces each given field, `PATCH` merges
/// into it (objects deeply, `null` removing a key); the result of a merge
/// may not exceed the size limit.
pub fn set_metadata_fields(
    user: &User,
    fields: &[(&'static str, Option<Value>); 3],
    merge: bool,
    now: i64,
) -> ApiResult<Decision> {
    let mut s = touched(user, now);
    let mut changed = Vec::new();
    for (field, value) in fields {
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
        set_metadata(field, target, Some(&next), &mut changed);
    }
    Ok(updated(user, s, changed))
}

/// Ban or unban; a user already so is left as it is.
pub fn set_banned(user: &User, banned: bool, now: i64) -> Decision {
    if user.state.banned == banned {
        return Decision::none(user.state.clone());
    }
    let mut s = touched(user, now);
    s.banned = banned;
    let ev = if banned {
        event(
            et::USER_BANNED,
            &v1::UserBanned {
                user: Some(s.clone()),
            },
        )
    } else {
        event(
            et::USER_UNBANNED,
            &v1::UserUnbanned {
                user: Some(s.clone()),
            },
        )
    };
    Decision {
        events: vec![ev],
        state: Some(s),
    }
}

/// Deletion: the stream ends; the answer has no state.
pub fn delete(user: &User) -> Decision {
    Decision {
        events: vec![event(
            et::USER_DELETED,
            &v1::UserDeleted {
                user_id: user.state.user_id.clone(),
            },
        )],
        state: None,
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_proto::v1::EmailAddress;
    use prost::Message;
    use serde_json::json;

    use super::*;

    fn user() -> User {
        User {
            state: UserState {
                user_id: "user_1".into(),
                first_name: Some("Ada".into()),
                email_addresses: vec![
                    EmailAddress {
                        id: "idn_a".into(),
                        email_address: "ada@example.com".into(),
                        verified: Some(true),
                    },
                    EmailAddress {
                        id: "idn_b".into(),
                        email_address: "ada@work.example".into(),
                        verified: Some(true),
                    },
                ],
                primary_email_address_id: "idn_a".into(),
                public_metadata_json: r#"{"plan":"free","tags":{"a":1}}"#.into(),
                private_metadata_json: "{}".into(),
                unsafe_metadata_json: "{}".into(),
                updated_at_ms: 1_000,
                ..Default::default()
            },
            instance_id: "ins_a".into(),
            deleted: false,
            created_by: "secret_key:ak_1".into(),
        }
    }

    fn changed(d: &Decision) -> Vec<String> {
        assert_eq!(d.events.len(), 1, "one event");
        v1::UserUpdated::decode(d.events[0].payload.as_slice())
            .unwrap()
            .changed_fields
    }

    #[test]
    fn an_update_names_only_the_fields_that_changed() {
        let u = ProfileUpdate {
            first_name: Some(Some("Ada".into())),
            last_name: Some(Some("Lovelace".into())),
            ..Default::default()
        };
        let d = update_profile(&user(), &u, 2_000).unwrap();
        assert_eq!(changed(&d), ["last_name"]);
        assert_eq!(d.state.unwrap().updated_at_ms, 2_000);
    }

    #[test]
    fn an_update_that_changes_nothing_appends_nothing_and_keeps_updated_at() {
        let u = ProfileUpdate {
            first_name: Some(Some("Ada".into())),
            primary_email_address_id: Some("idn_a".into()),
            ..Default::default()
        };
        let d = update_profile(&user(), &u, 2_000).unwrap();
        assert!(d.events.is_empty());
        assert_eq!(d.state.unwrap().updated_at_ms, 1_000);
    }

    #[test]
    fn null_clears_a_name() {
        let u = ProfileUpdate {
            first_name: Some(None),
            ..Default::default()
        };
        let d = update_profile(&user(), &u, 2_000).unwrap();
        assert_eq!(changed(&d), ["first_name"]);
        assert_eq!(d.state.unwrap().first_name, None);
    }

    #[test]
    fn the_primary_address_must_be_one_of_the_user_s_own() {
        let other = ProfileUpdate {
            primary_email_address_id: Some("idn_someone_else".into()),
            ..Default::default()
        };
        let e = update_profile(&user(), &other, 2_000).unwrap_err();
        assert_eq!(e.items[0].meta["param_name"], "primary_email_address_id");
        let own = ProfileUpdate {
            primary_email_address_id: Some("idn_b".into()),
            ..Default::default()
        };
        let d = update_profile(&user(), &own, 2_000).unwrap();
        assert_eq!(d.state.unwrap().primary_email_address_id, "idn_b");
    }

    #[test]
    fn a_new_password_enables_passwords_and_is_a_change() {
        let u = ProfileUpdate {
            password_set: true,
            ..Default::default()
        };
        let d = update_profile(&user(), &u, 2_000).unwrap();
        assert_eq!(changed(&d), ["password"]);
        assert!(d.state.unwrap().password_enabled);
    }

    #[test]
    fn updated_at_never_moves_back_when_the_clock_does() {
        let u = ProfileUpdate {
            last_name: Some(Some("Byron".into())),
            ..Default::default()
        };
        let d = update_profile(&user(), &u, 10).unwrap();
        assert_eq!(d.state.unwrap().updated_at_ms, 1_000);
    }

    #[test]
    fn put_replaces_metadata_and_patch_merges_it_deeply() {
        let fields = [
            ("public_metadata", Some(json!({ "tags": { "b": 2 } }))),
            ("private_metadata", None),
            ("unsafe_metadata", None),
        ];
        let replaced = set_metadata_fields(&user(), &fields, false, 2_000).unwrap();
        assert_eq!(
            metadata_value(&replaced.state.unwrap().public_metadata_json),
            json!({ "tags": { "b": 2 } })
        );
        let merged = set_metadata_fields(&user(), &fields, true, 2_000).unwrap();
        assert_eq!(
            metadata_value(&merged.state.unwrap().public_metadata_json),
            json!({ "plan": "free", "tags": { "a": 1, "b": 2 } })
        );
    }

    #[test]
    fn a_merge_may_not_grow_metadata_past_the_limit() {
        let big = "x".repeat(validate::MAX_METADATA_BYTES);
        let fields = [
            ("public_metadata", Some(json!({ "big": big }))),
            ("private_metadata", None),
            ("unsafe_metadata", None),
        ];
        let e = set_metadata_fields(&user(), &fields, true, 2_000).unwrap_err();
        assert_eq!(e.items[0].meta["param_name"], "public_metadata");
    }

    #[test]
    fn banning_a_banned_user_changes_nothing() {
        let d = set_banned(&user(), true, 2_000);
        assert_eq!(d.events[0].event_type, et::USER_BANNED);
        let mut banned = user();
        banned.state.banned = true;
        assert!(set_banned(&banned, true, 2_000).events.is_empty());
        let d = set_banned(&banned, false, 2_000);
        assert_eq!(d.events[0].event_type, et::USER_UNBANNED);
        assert!(!d.state.unwrap().banned);
    }

    #[test]
    fn deletion_ends_the_stream_with_no_state() {
        let d = delete(&user());
        assert_eq!(d.events[0].event_type, et::USER_DELETED);
        assert!(d.state.is_none());
    }
}
