//! Users of an instance: an event-sourced aggregate (stream type `user`).
//! Every event carries the user's whole state after it, so folding a stream
//! is taking its last state, and consumers need no other lookup.
//!
//! Commands run through the aggregate kernel (`platform::aggregate`): load
//! and fold the stream, decide, append with the expected version, check the
//! identifiers are free, project, all in one transaction. A lost race
//! (`UNIQUE(stream_id, stream_version)`, or a projection's unique index) is
//! decided again from a fresh load a few times, then answered 409, never a
//! silent overwrite.

pub mod api;
pub mod commands;
pub mod password;
pub mod projection;
pub mod validate;

use actix_web::http::StatusCode;
use gatehouse_platform::aggregate::{self, Aggregate, Decided, Loaded, Target, Unreadable};
use gatehouse_platform::eventstore::{EventStore, RecordedEvent};
use gatehouse_platform::idempotency;
use gatehouse_platform::ids::{EmailAddressId, UserId};
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::wire::user_json;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, EmailAddress, UserState};
use prost::Message;
use sea_orm::DatabaseTransaction;
use serde_json::Value;

pub const STORE: EventStore = EventStore::new("authz", "authz_events");

/// The aggregate as folded from its events.
#[derive(Debug, Clone)]
pub struct User {
    pub state: UserState,
    pub instance_id: String,
    pub deleted: bool,
    /// The actor of the stream's first event (what `verified` means on
    /// addresses written before the field).
    pub created_by: String,
}

/// The user aggregate: every event but deletion carries the whole state.
pub struct UserStream;

impl Aggregate for UserStream {
    const KIND: &'static str = st::USER;
    type State = Option<User>;

    /// Every address of the result says whether it is verified, so the
    /// events a command appends from it always carry the field.
    fn apply(user: &mut Option<User>, ev: &RecordedEvent) -> Result<(), Unreadable> {
        let p = ev.payload.as_slice();
        let state = match ev.event_type.as_str() {
            et::USER_DELETED => {
                let u = user
                    .as_mut()
                    .ok_or_else(|| Unreadable("deleted before it was created".into()))?;
                u.deleted = true;
                return Ok(());
            }
            et::USER_CREATED => v1::UserCreated::decode(p)?.user,
            et::USER_UPDATED => v1::UserUpdated::decode(p)?.user,
            et::USER_BANNED => v1::UserBanned::decode(p)?.user,
            et::USER_UNBANNED => v1::UserUnbanned::decode(p)?.user,
            other => return Err(Unreadable(format!("no rule for {other}"))),
        };
        let mut state =
            state.ok_or_else(|| Unreadable(format!("{} without state", ev.event_type)))?;
        let created_by = user
            .as_ref()
            .map_or_else(|| ev.meta.actor.clone(), |u| u.created_by.clone());
        settle_verification(&mut state, &created_by);
        *user = Some(User {
            state,
            instance_id: ev.meta.instance_id.clone(),
            deleted: false,
            created_by,
        });
        Ok(())
    }
}

/// Fills in `verified` on the addresses of a state written before the field
/// existed, from who created the user (identity.proto says what it means).
pub fn settle_verification(state: &mut UserState, created_by: &str) {
    let legacy = gatehouse_proto::verified_before_the_field(created_by);
    for e in &mut state.email_addresses {
        e.verified.get_or_insert(legacy);
    }
}

/// What a user command decided.
pub type Decision = gatehouse_platform::eventstore::Decision<UserState>;

pub use gatehouse_platform::eventstore::event;

fn username_taken(username: &str) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::CONFLICT,
        "form_identifier_exists",
        "That username is taken. Please try another.",
        format!("Already used by another user of this instance: {username}"),
    )
    .with_meta(serde_json::json!({ "param_name": "username" }))
}

fn email_taken(emails: &[String]) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::CONFLICT,
        "form_identifier_exists",
        "That email address is taken. Please try another.",
        format!(
            "Already used by another user of this instance: {}",
            emails.join(", ")
        ),
    )
    .with_meta(serde_json::json!({ "param_name": "email_address" }))
}

/// New user: everything validated before the transaction; the password is
/// already hashed.
pub struct NewUser {
    pub email_addresses: Vec<String>,
    /// Whether the addresses are verified: the Backend API's are, hosted
    /// sign-up's are not.
    pub email_verified: bool,
    pub password_hash: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub external_id: Option<String>,
    pub username: Option<String>,
    pub public_metadata: Value,
    pub private_metadata: Value,
    pub unsafe_metadata: Value,
}

pub async fn create(platform: &Platform, auth: &Authed, new: NewUser) -> ApiResult<UserState> {
    let user_id = UserId::new();
    let now = platform.now_ms();
    let emails: Vec<EmailAddress> = new
        .email_addresses
        .iter()
        .map(|e| EmailAddress {
            id: EmailAddressId::new().into_string(),
            email_address: e.clone(),
            verified: Some(new.email_verified),
        })
        .collect();
    let state = UserState {
        user_id: user_id.to_string(),
        primary_email_address_id: emails.first().map(|e| e.id.clone()).unwrap_or_default(),
        email_addresses: emails,
        first_name: new.first_name,
        last_name: new.last_name,
        external_id: new.external_id,
        username: new.username,
        public_metadata_json: new.public_metadata.to_string(),
        private_metadata_json: new.private_metadata.to_string(),
        unsafe_metadata_json: new.unsafe_metadata.to_string(),
        password_enabled: new.password_hash.is_some(),
        banned: false,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let instance_id = auth.instance.id.as_str();
    let meta = auth.event_meta();
    aggregate::run::<UserStream, _, ApiError, _, _, _>(
        platform,
        Target::new(STORE, user_id.as_str(), &meta),
        |loaded, _| {
            if loaded.state.is_some() {
                return Err(ApiError::conflict(
                    "user_exists",
                    "A user already has this id; retry.",
                ));
            }
            Ok(Decided {
                events: vec![event(
                    et::USER_CREATED,
                    &v1::UserCreated {
                        user: Some(state.clone()),
                    },
                )],
                answer: state.clone(),
            })
        },
        async |txn, state: &UserState| -> ApiResult<()> {
            unique_identifiers(txn, instance_id, state, None).await?;
            if let Some(hash) = &new.password_hash {
                password::store(txn, instance_id, &state.user_id, hash, now).await?;
            }
            idempotency::store_in(platform, txn, StatusCode::OK, || user_json(state)).await?;
            Ok(())
        },
        async |txn, ev| projection::project(txn, ev).await,
    )
    .await
}

/// The user's email addresses and username are no other user's of the
/// instance (read in the command's transaction; a concurrent command taking
/// one at the same moment is caught by the projection's unique indexes).
async fn unique_identifiers(
    txn: &DatabaseTransaction,
    instance_id: &str,
    state: &UserState,
    except: Option<&str>,
) -> ApiResult<()> {
    let emails: Vec<String> = state
        .email_addresses
        .iter()
        .map(|e| e.email_address.clone())
        .collect();
    let taken = projection::taken_emails(txn, instance_id, &emails, except).await?;
    if !taken.is_empty() {
        return Err(email_taken(&taken));
    }
    if let Some(u) = &state.username
        && projection::username_taken(txn, instance_id, u, except).await?
    {
        return Err(username_taken(u));
    }
    Ok(())
}

/// A live user of this instance, or 404 (also for another instance's user:
/// existence is not leaked).
pub fn existing<'a>(loaded: &'a Loaded<Option<User>>, auth: &Authed) -> ApiResult<&'a User> {
    match &loaded.state {
        Some(u) if !u.deleted && u.instance_id == auth.instance.id.as_str() => Ok(u),
        _ => Err(ApiError::not_found("user")),
    }
}

/// Runs a decision against the current state through the aggregate kernel
/// (a lost race, or an identifier taken by a concurrent command, is decided
/// again from a fresh load, then 409). `side_effect` runs in the same
/// transaction after a successful append (password writes).
pub async fn mutate<D, S>(
    platform: &Platform,
    auth: &Authed,
    user_id: &str,
    decide: D,
    side_effect: S,
) -> ApiResult<Option<UserState>>
where
    D: Fn(&User, i64) -> ApiResult<Decision>,
    S: for<'a> Fn(&'a DatabaseTransaction, i64) -> SideEffect<'a>,
{
    if UserId::parse(user_id).is_none() {
        return Err(ApiError::not_found("user"));
    }
    let meta = auth.event_meta();
    let instance_id = auth.instance.id.as_str();
    aggregate::run::<UserStream, _, ApiError, _, _, _>(
        platform,
        Target::new(STORE, user_id, &meta),
        |loaded, now| {
            let decision = decide(existing(loaded, auth)?, now)?;
            Ok(Decided {
                events: decision.events,
                answer: decision.state,
            })
        },
        async |txn, state: &Option<UserState>| -> ApiResult<()> {
            if let Some(state) = state {
                unique_identifiers(txn, instance_id, state, Some(user_id)).await?;
            }
            side_effect(txn, platform.now_ms()).await?;
            if let Some(state) = state {
                idempotency::store_in(platform, txn, StatusCode::OK, || user_json(state)).await?;
            }
            Ok(())
        },
        async |txn, ev| projection::project(txn, ev).await,
    )
    .await
}

pub type SideEffect<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<()>> + Send + 'a>>;

pub fn no_side_effect(_: &DatabaseTransaction, _: i64) -> SideEffect<'_> {
    Box::pin(async { Ok(()) })
}

/// The state after an update, with `updated_at` moved.
pub fn touched(user: &User, now: i64) -> UserState {
    let mut s = user.state.clone();
    s.updated_at_ms = now.max(s.updated_at_ms);
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use gatehouse_platform::eventstore::EventMeta;

    fn recorded(version: i64, actor: &str, event_type: &str, state: UserState) -> RecordedEvent {
        let payload = match event_type {
            et::USER_CREATED => v1::UserCreated { user: Some(state) }.encode_to_vec(),
            _ => v1::UserUpdated {
                user: Some(state),
                changed_fields: vec![],
            }
            .encode_to_vec(),
        };
        let meta = EventMeta {
            actor: actor.into(),
            ..Default::default()
        };
        RecordedEvent::unstored(version, event_type, payload, meta)
    }

    fn state(verified: Option<bool>) -> UserState {
        UserState {
            user_id: "user_x".into(),
            email_addresses: vec![EmailAddress {
                id: "idn_x".into(),
                email_address: "ada@example.com".into(),
                verified,
            }],
            primary_email_address_id: "idn_x".into(),
            ..Default::default()
        }
    }

    fn verified_after(events: &[RecordedEvent]) -> Option<bool> {
        gatehouse_platform::aggregate::fold::<UserStream>(events)
            .unwrap()
            .state
            .unwrap()
            .state
            .email_addresses[0]
            .verified
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_rewinding() {
        let api = "secret_key:ak_1";
        let created = recorded(1, api, et::USER_CREATED, state(Some(true)));
        let mut garbled = recorded(2, api, et::USER_UPDATED, state(Some(true)));
        garbled.payload = vec![0xff, 0xff];
        let mut unknown = recorded(2, api, et::USER_UPDATED, state(Some(true)));
        unknown.event_type = "user.renamed".into();
        for bad in [garbled, unknown] {
            assert!(
                gatehouse_platform::aggregate::fold::<UserStream>(&[created.clone(), bad]).is_err()
            );
        }
        let deleted = recorded(2, api, et::USER_DELETED, state(None));
        let loaded =
            gatehouse_platform::aggregate::fold::<UserStream>(&[created, deleted]).unwrap();
        assert!(loaded.state.unwrap().deleted);
        assert_eq!(loaded.version, 2);
    }

    #[test]
    fn the_fold_says_whether_each_address_is_verified() {
        let api = "secret_key:ak_1";
        let sign_up = gatehouse_proto::SIGN_UP_ACTOR;
        // Events that carry the flag keep it.
        for v in [true, false] {
            let ev = recorded(1, api, et::USER_CREATED, state(Some(v)));
            assert_eq!(verified_after(&[ev]), Some(v));
        }
        // Events from before the flag: the creator decides, also after
        // later events by someone else.
        let old = |version, actor, event_type| recorded(version, actor, event_type, state(None));
        assert_eq!(
            verified_after(&[
                old(1, api, et::USER_CREATED),
                old(2, "user:user_x", et::USER_UPDATED)
            ]),
            Some(true)
        );
        assert_eq!(
            verified_after(&[
                old(1, sign_up, et::USER_CREATED),
                old(2, api, et::USER_UPDATED)
            ]),
            Some(false)
        );
    }
}
