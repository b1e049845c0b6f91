//! OAuth applications of an instance: an event-sourced aggregate (stream type
//! `oauth_application`, in `authz_events`), each event carrying the whole
//! application state. Client secrets are shown once (create, rotate) and
//! stored as SHA-256.

pub mod api;
pub mod commands;
pub mod documents;
pub mod projection;
pub mod registration;
pub mod scopes;
pub mod validate;

use actix_web::http::StatusCode;
use gatehouse_platform::aggregate::{self, Aggregate, Decided, Target, Unreadable};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_platform::idempotency;
use gatehouse_platform::ids::OAuthApplicationId;
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::OAuthApplicationState as AppState;
use sha2::{Digest, Sha256};

use crate::users::STORE;

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh client secret (48 base62 characters, ≈ 285 bits).
pub fn new_secret() -> String {
    gatehouse_platform::ids::random_base62(48)
}

#[derive(Debug)]
pub struct App {
    pub state: AppState,
    pub instance_id: String,
    pub deleted: bool,
}

/// The OAuth application aggregate: every event but deletion carries the
/// whole state.
pub struct OAuthApplication;

impl Aggregate for OAuthApplication {
    const KIND: &'static str = st::OAUTH_APPLICATION;
    type State = Option<App>;

    fn apply(app: &mut Option<App>, ev: &RecordedEvent) -> Result<(), Unreadable> {
        if ev.event_type == et::OAUTH_APPLICATION_DELETED {
            let a = app
                .as_mut()
                .ok_or_else(|| Unreadable("deleted before it was created".into()))?;
            a.deleted = true;
            return Ok(());
        }
        let state = gatehouse_proto::oauth_application_state(&ev.event_type, &ev.payload)?
            .ok_or_else(|| Unreadable(format!("no rule for {}", ev.event_type)))?;
        *app = Some(App {
            state,
            instance_id: ev.meta.instance_id.clone(),
            deleted: false,
        });
        Ok(())
    }
}

pub use gatehouse_platform::eventstore::event;

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
    let meta = auth.event_meta();
    let instance_id = auth.instance.id.as_str();
    let created = aggregate::run::<OAuthApplication, _, ApiError, _, _, _>(
        platform,
        Target::new(STORE, id.as_str(), &meta),
        |loaded, _| commands::create(loaded, &state),
        async |txn, app: &AppState| -> ApiResult<()> {
            scopes::hold_defined(txn, instance_id, &app.scopes).await?;
            idempotency::store_in(platform, txn, StatusCode::OK, || {
                api::app_json(platform, instance_id, app, secret.as_deref())
            })
            .await?;
            Ok(())
        },
        async |txn, ev| projection::project(txn, ev).await,
    )
    .await?;
    Ok((created, secret))
}

/// What an application command decided.
pub type Decision = gatehouse_platform::eventstore::Decision<AppState>;

/// Load, decide, append, project, through the aggregate kernel: a lost
/// race is decided again from a fresh load, then 409.
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
    let meta = auth.event_meta();
    let instance_id = auth.instance.id.as_str();
    aggregate::run::<OAuthApplication, _, ApiError, _, _, _>(
        platform,
        Target::new(STORE, id, &meta),
        |loaded, now| {
            let app = commands::existing(loaded, instance_id)?;
            let decision = decide(app, now)?;
            let scopes_changed = decision
                .state
                .as_ref()
                .is_some_and(|next| next.scopes != app.state.scopes);
            Ok(Decided {
                events: decision.events,
                answer: (decision.state, scopes_changed),
            })
        },
        async |txn, (next, scopes_changed): &(Option<AppState>, bool)| -> ApiResult<()> {
            if let (Some(next), true) = (next, scopes_changed) {
                scopes::hold_defined(txn, instance_id, &next.scopes).await?;
            }
            Ok(())
        },
        async |txn, ev| projection::project(txn, ev).await,
    )
    .await
    .map(|(state, _)| state)
}
