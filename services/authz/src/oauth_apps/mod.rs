//! OAuth applications of an instance: an event-sourced aggregate (stream type
//! `oauth_application`, in `authz_events`), each event carrying the whole
//! application state. Client secrets are shown once (create, rotate) and
//! stored as SHA-256.

pub mod api;
pub mod documents;
pub mod projection;
pub mod registration;
pub mod scopes;
pub mod validate;

use actix_web::http::StatusCode;
use gatehouse_platform::db;
use gatehouse_platform::eventstore::{
    AppendError, Attempt, NewEvent, RecordedEvent, Stream, until_won,
};
use gatehouse_platform::idempotency;
use gatehouse_platform::ids::OAuthApplicationId;
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use sea_orm::DatabaseTransaction;
use sha2::{Digest, Sha256};

use crate::users::STORE;

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh client secret (48 base62 characters, ≈ 285 bits).
pub fn new_secret() -> String {
    gatehouse_platform::ids::random_base62(48)
}

pub struct App {
    pub state: AppState,
    pub version: i64,
    pub instance_id: String,
    pub deleted: bool,
}

fn state_of(ev: &RecordedEvent) -> Option<AppState> {
    gatehouse_proto::oauth_application_state(&ev.event_type, &ev.payload)
        .ok()
        .flatten()
}

pub fn fold(events: &[RecordedEvent]) -> Option<App> {
    let mut app: Option<App> = None;
    for ev in events {
        if ev.event_type == et::OAUTH_APPLICATION_DELETED {
            if let Some(a) = app.as_mut() {
                a.deleted = true;
                a.version = ev.stream_version;
            }
        } else if let Some(state) = state_of(ev) {
            app = Some(App {
                state,
                version: ev.stream_version,
                instance_id: ev.meta.instance_id.clone(),
                deleted: false,
            });
        }
    }
    app
}

pub use gatehouse_platform::eventstore::event;

async fn append(
    txn: &DatabaseTransaction,
    platform: &Platform,
    auth: &Authed,
    id: &str,
    version: i64,
    events: &[NewEvent],
) -> Result<Vec<RecordedEvent>, AppendError> {
    let stream = Stream {
        id,
        kind: st::OAUTH_APPLICATION,
        version,
    };
    let recorded = STORE
        .append(txn, stream, events, &auth.event_meta(), platform.now_ms())
        .await?;
    for ev in &recorded {
        projection::project(txn, ev).await?;
    }
    Ok(recorded)
}

/// Creates an application; returns it with its secret (confidential only).
pub async fn create(
    platform: &Platform,
    auth: &Authed,
    mut state: AppState,
) -> ApiResult<(AppState, Option<String>)> {
    let id = OAuthApplicationId::new();
    let now = platform.now_ms();
    state.application_id = id.to_string();
    state.client_id = gatehouse_platform::ids::random_base62(24);
    state.created_at_ms = now;
    state.updated_at_ms = now;
    let secret = (!state.public).then(new_secret);
    state.client_secret_hash = secret.as_deref().map(hash_secret).unwrap_or_default();
    let txn = db::begin_write(platform.db()).await?;
    scopes::hold_defined(&txn, auth.instance.id.as_str(), &state.scopes).await?;
    let events = [event(
        et::OAUTH_APPLICATION_CREATED,
        &v1::OAuthApplicationCreated {
            application: Some(state.clone()),
        },
    )];
    let recorded = append(&txn, platform, auth, id.as_str(), 0, &events)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    idempotency::store_in(platform, &txn, StatusCode::OK, || {
        api::app_json(
            platform,
            auth.instance.id.as_str(),
            &state,
            secret.as_deref(),
        )
    })
    .await?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &recorded);
    Ok((state, secret))
}

/// What an application command decided.
pub type Decision = gatehouse_platform::eventstore::Decision<AppState>;

/// Load, decide, append, project; retried from a fresh load when another
/// request appended first, then 409.
pub async fn mutate<D>(
    platform: &Platform,
    auth: &Authed,
    id: &str,
    decide: D,
) -> ApiResult<Option<AppState>>
where
    D: Fn(&App, i64) -> ApiResult<Decision>,
{
    if OAuthApplicationId::parse(id).is_none() {
        return Err(ApiError::not_found("OAuth application"));
    }
    until_won(|| async {
        let txn = db::begin_write(platform.db()).await?;
        let app = match fold(&STORE.load_stream(&txn, id).await?) {
            Some(a) if !a.deleted && a.instance_id == auth.instance.id.as_str() => a,
            _ => return Err(ApiError::not_found("OAuth application")),
        };
        let decision = decide(&app, platform.now_ms())?;
        if decision.events.is_empty() {
            return Ok(Attempt::Done(decision.state));
        }
        if let Some(next) = &decision.state
            && next.scopes != app.state.scopes
        {
            scopes::hold_defined(&txn, auth.instance.id.as_str(), &next.scopes).await?;
        }
        match append(&txn, platform, auth, id, app.version, &decision.events).await {
            Ok(recorded) => {
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
            "The OAuth application was changed by other requests at the same time; retry.",
        )
    })
}
