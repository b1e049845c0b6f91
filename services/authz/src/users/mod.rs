//! Users of an instance: an event-sourced aggregate (stream type `user`).
//! Every event carries the user's whole state after it, so folding a stream
//! is taking its last state, and consumers need no other lookup.
//!
//! Commands run in one transaction: load and fold the stream, decide, append
//! with the expected version, project. A lost race (`UNIQUE(stream_id,
//! stream_version)`) is retried from a fresh load a few times, then answered
//! 409 — never a silent overwrite.

pub mod api;
pub mod password;
pub mod projection;
pub mod validate;

use actix_web::http::StatusCode;
use gatehouse_platform::db;
use gatehouse_platform::eventstore::{
    AppendError, Attempt, EventStore, NewEvent, RecordedEvent, Stream, until_won,
};
use gatehouse_platform::idempotency;
use gatehouse_platform::ids::{EmailAddressId, UserId};
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::wire::user_json;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, EmailAddress, UserState};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::Value;

pub const STORE: EventStore = EventStore::new("authz", "authz_events");

/// The aggregate as folded from its events.
#[derive(Debug, Clone)]
pub struct User {
    pub state: UserState,
    pub version: i64,
    pub instance_id: String,
    pub deleted: bool,
}

fn state_of(ev: &RecordedEvent) -> Option<UserState> {
    let p = ev.payload.as_slice();
    match ev.event_type.as_str() {
        et::USER_CREATED => v1::UserCreated::decode(p).ok()?.user,
        et::USER_UPDATED => v1::UserUpdated::decode(p).ok()?.user,
        et::USER_BANNED => v1::UserBanned::decode(p).ok()?.user,
        et::USER_UNBANNED => v1::UserUnbanned::decode(p).ok()?.user,
        _ => None,
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

/// Folds a stream into the aggregate; `None` if the stream is empty. Every
/// address of the result says whether it is verified, so the events a
/// command appends from it always carry the field.
pub fn fold(events: &[RecordedEvent]) -> Option<User> {
    let mut user: Option<User> = None;
    let created_by = events.first().map(|e| e.meta.actor.as_str()).unwrap_or("");
    for ev in events {
        if ev.event_type == et::USER_DELETED {
            if let Some(u) = user.as_mut() {
                u.deleted = true;
                u.version = ev.stream_version;
            }
            continue;
        }
        if let Some(state) = state_of(ev) {
            user = Some(User {
                state,
                version: ev.stream_version,
                instance_id: ev.meta.instance_id.clone(),
                deleted: false,
            });
        }
    }
    if let Some(u) = user.as_mut() {
        settle_verification(&mut u.state, created_by);
    }
    user
}

/// What a user command decided.
pub type Decision = gatehouse_platform::eventstore::Decision<UserState>;

pub use gatehouse_platform::eventstore::event;

async fn append_and_project(
    txn: &DatabaseTransaction,
    platform: &Platform,
    auth: &Authed,
    user_id: &str,
    expected_version: i64,
    events: &[NewEvent],
) -> Result<Vec<RecordedEvent>, AppendError> {
    let recorded = STORE
        .append(
            txn,
            Stream {
                id: user_id,
                kind: st::USER,
                version: expected_version,
            },
            events,
            &auth.event_meta(),
            platform.now_ms(),
        )
        .await?;
    for ev in &recorded {
        if let Err(err) = projection::project(txn, ev).await {
            if db::is_unique_violation(&err) {
                return Err(AppendError::Conflict {
                    stream_id: user_id.to_owned(),
                    expected: expected_version,
                });
            }
            return Err(err.into());
        }
    }
    Ok(recorded)
}

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
    let txn = db::begin_write(platform.db()).await?;
    let taken = projection::taken_emails(&txn, instance_id, &new.email_addresses, None).await?;
    if !taken.is_empty() {
        return Err(email_taken(&taken));
    }
    if let Some(u) = &state.username
        && projection::username_taken(&txn, instance_id, u, None).await?
    {
        return Err(username_taken(u));
    }
    let events = [event(
        et::USER_CREATED,
        &v1::UserCreated {
            user: Some(state.clone()),
        },
    )];
    let recorded =
        match append_and_project(&txn, platform, auth, user_id.as_str(), 0, &events).await {
            Ok(recorded) => recorded,
            // A concurrent create took one of the identifiers first.
            Err(AppendError::Conflict { .. }) => {
                return Err(ApiError::conflict(
                    "form_identifier_exists",
                    "An email address or the username was taken by a concurrent request.",
                ));
            }
            Err(AppendError::Db(e)) => return Err(e.into()),
        };
    if let Some(hash) = &new.password_hash {
        password::store(&txn, instance_id, user_id.as_str(), hash, now).await?;
    }
    idempotency::store_in(platform, &txn, StatusCode::OK, || user_json(&state)).await?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &recorded);
    Ok(state)
}

/// Loads a live user of this instance inside `txn`, or 404 (also for another
/// instance's user: existence is not leaked).
pub async fn load(txn: &impl ConnectionTrait, auth: &Authed, user_id: &str) -> ApiResult<User> {
    if UserId::parse(user_id).is_none() {
        return Err(ApiError::not_found("user"));
    }
    let events = STORE.load_stream(txn, user_id).await?;
    match fold(&events) {
        Some(u) if !u.deleted && u.instance_id == auth.instance.id.as_str() => Ok(u),
        _ => Err(ApiError::not_found("user")),
    }
}

/// Runs a decision against the current state, retrying from a fresh load when
/// another request appended first. `side_effect` runs in the same
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
    until_won(|| async {
        let txn = db::begin_write(platform.db()).await?;
        let user = load(&txn, auth, user_id).await?;
        let decision = decide(&user, platform.now_ms())?;
        if decision.events.is_empty() {
            txn.rollback().await?;
            return Ok(Attempt::Done(decision.state));
        }
        if let Some(state) = &decision.state {
            let emails: Vec<String> = state
                .email_addresses
                .iter()
                .map(|e| e.email_address.clone())
                .collect();
            let taken =
                projection::taken_emails(&txn, auth.instance.id.as_str(), &emails, Some(user_id))
                    .await?;
            if !taken.is_empty() {
                return Err(email_taken(&taken));
            }
            if let Some(u) = &state.username
                && projection::username_taken(&txn, auth.instance.id.as_str(), u, Some(user_id))
                    .await?
            {
                return Err(username_taken(u));
            }
        }
        match append_and_project(
            &txn,
            platform,
            auth,
            user_id,
            user.version,
            &decision.events,
        )
        .await
        {
            Ok(recorded) => {
                side_effect(&txn, platform.now_ms()).await?;
                if let Some(state) = &decision.state {
                    idempotency::store_in(platform, &txn, StatusCode::OK, || user_json(state))
                        .await?;
                }
                txn.commit().await?;
                platform.events_committed(STORE.table(), &recorded);
                Ok(Attempt::Done(decision.state))
            }
            Err(e) => e.lost(),
        }
    })
    .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "concurrent_modification",
            "The user was changed by other requests at the same time; retry.",
        )
    })
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
        RecordedEvent {
            global_position: version,
            event_id: format!("ev{version}"),
            stream_id: "user_x".into(),
            stream_type: st::USER.into(),
            stream_version: version,
            event_type: event_type.into(),
            payload,
            meta: EventMeta {
                actor: actor.into(),
                ..Default::default()
            },
            recorded_at_ms: 0,
        }
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
        fold(events).unwrap().state.email_addresses[0].verified
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
