//! Webhook endpoints: one event-sourced aggregate per endpoint, each event
//! carrying the whole state; `webhooks_endpoints` is its projection,
//! written in the command's transaction.
//!
//! Signing secrets follow Standard Webhooks: `whsec_` and the base64 of 32
//! random bytes. They are encrypted at rest (events and projection alike)
//! under the deployment secret. After a rotation the previous secret keeps
//! signing alongside the new one for [`ROTATION_OVERLAP_MS`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_platform::aggregate::{self, Aggregate, Decided, Target, Unreadable};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, WebhookEndpointState as State, WebhookSigningSecret};
use prost::Message;
use rand::RngCore;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::STORE;

/// How long a rotated-out secret keeps signing next to the new one.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 60 * 60 * 1000;
const ID_PREFIX: &str = "ep_";
/// Deliveries to an endpoint in flight at once, counted over every process,
/// unless it sets its own `max_concurrency`. A lease runs from the claim
/// until the result is recorded, a few tens of milliseconds longer than the
/// request itself; with 8, that bookkeeping held a fast receiver near 200
/// deliveries a second (docs/benchmarks.md).
pub const DEFAULT_MAX_CONCURRENCY: i32 = 16;
/// The most an endpoint may ask for: a quarter of what one process has in
/// flight (256) and half of one claim (128), so a single endpoint never
/// takes a process's every slot.
pub const MAX_CONCURRENCY_BOUND: i32 = 64;

/// A fresh `whsec_` secret.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

pub fn new_id() -> String {
    format!("{ID_PREFIX}{}", gatehouse_platform::ids::random_base62(22))
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .is_some_and(|r| r.len() == 22 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The secret stored for an endpoint, bound to the endpoint id.
pub fn seal_secret(platform: &Platform, endpoint_id: &str, secret: &str) -> WebhookSigningSecret {
    WebhookSigningSecret {
        encrypted_secret: platform.code_sealer().encrypt_at_rest(secret, endpoint_id),
        created_at_ms: platform.now_ms(),
        expires_at_ms: 0,
    }
}

/// The secrets signing at `now`: the current one, then rotated-out ones
/// within their overlap. `None` for one this deployment cannot open.
pub fn signing_secrets(platform: &Platform, state: &State, now: i64) -> Vec<Option<String>> {
    state
        .secrets
        .iter()
        .filter(|s| s.expires_at_ms == 0 || s.expires_at_ms > now)
        .map(|s| {
            platform
                .code_sealer()
                .decrypt_at_rest(&s.encrypted_secret, &state.endpoint_id)
        })
        .collect()
}

/// The endpoint's bound on deliveries in flight: its setting, or the
/// default for one recorded before the setting existed (0).
pub fn max_concurrency(state: &State) -> i32 {
    match state.max_concurrency {
        0 => DEFAULT_MAX_CONCURRENCY,
        n => n.clamp(1, MAX_CONCURRENCY_BOUND),
    }
}

pub struct Endpoint {
    pub state: State,
    pub instance_id: String,
    pub deleted: bool,
}

/// The state an event carries, for the projection.
fn state_of(ev: &RecordedEvent) -> Option<State> {
    let mut one = None;
    WebhookEndpoint::apply(&mut one, ev).ok()?;
    one.map(|e| e.state)
}

/// The webhook endpoint aggregate: every event but deletion carries the
/// whole state.
pub struct WebhookEndpoint;

impl Aggregate for WebhookEndpoint {
    const KIND: &'static str = st::WEBHOOK_ENDPOINT;
    type State = Option<Endpoint>;

    fn apply(out: &mut Option<Endpoint>, ev: &RecordedEvent) -> Result<(), Unreadable> {
        let p = ev.payload.as_slice();
        let state = match ev.event_type.as_str() {
            et::WEBHOOK_ENDPOINT_DELETED => {
                let e = out
                    .as_mut()
                    .ok_or_else(|| Unreadable("deleted before it was created".into()))?;
                e.deleted = true;
                return Ok(());
            }
            et::WEBHOOK_ENDPOINT_CREATED => v1::WebhookEndpointCreated::decode(p)?.endpoint,
            et::WEBHOOK_ENDPOINT_UPDATED => v1::WebhookEndpointUpdated::decode(p)?.endpoint,
            et::WEBHOOK_ENDPOINT_SECRET_ROTATED => {
                v1::WebhookEndpointSecretRotated::decode(p)?.endpoint
            }
            et::WEBHOOK_ENDPOINT_DISABLED => v1::WebhookEndpointDisabled::decode(p)?.endpoint,
            other => return Err(Unreadable(format!("no rule for {other}"))),
        };
        let state = state.ok_or_else(|| Unreadable(format!("{} without state", ev.event_type)))?;
        *out = Some(Endpoint {
            state,
            instance_id: ev.meta.instance_id.clone(),
            deleted: false,
        });
        Ok(())
    }
}

pub use gatehouse_platform::eventstore::event;

/// Creates an endpoint from `state` (id, secret and times are set here);
/// returns it with its secret in clear, shown this once.
pub async fn create(
    platform: &Platform,
    auth: &Authed,
    mut state: State,
) -> ApiResult<(State, String)> {
    let now = platform.now_ms();
    state.endpoint_id = new_id();
    state.created_at_ms = now;
    state.updated_at_ms = now;
    let secret = new_secret();
    state.secrets = vec![seal_secret(platform, &state.endpoint_id, &secret)];
    let meta = auth.event_meta();
    let target = Target::new(STORE, &state.endpoint_id, &meta);
    let created = aggregate::run::<WebhookEndpoint, _, ApiError, _, _, _>(
        platform,
        target,
        |loaded, _| {
            if loaded.state.is_some() {
                return Err(ApiError::conflict(
                    "endpoint_exists",
                    "An endpoint already has this id; retry.",
                ));
            }
            Ok(Decided {
                events: vec![event(
                    et::WEBHOOK_ENDPOINT_CREATED,
                    &v1::WebhookEndpointCreated {
                        endpoint: Some(state.clone()),
                    },
                )],
                answer: state.clone(),
            })
        },
        async |_, _| Ok(()),
        async |txn, ev| project(txn, ev).await,
    )
    .await?;
    Ok((created, secret))
}

/// What an endpoint command decided.
pub type Decision = gatehouse_platform::eventstore::Decision<State>;

/// Load, decide, append, project, through the aggregate kernel: a lost
/// race is decided again from a fresh load, then 409. Another instance's
/// endpoint is 404.
pub async fn mutate<D>(
    platform: &Platform,
    auth: &Authed,
    id: &str,
    decide: D,
) -> ApiResult<Option<State>>
where
    D: Fn(&Endpoint, i64) -> ApiResult<Decision>,
{
    if !valid_id(id) {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let meta = auth.event_meta();
    let target = Target::new(STORE, id, &meta);
    let instance_id = auth.instance.id.as_str();
    aggregate::run::<WebhookEndpoint, _, ApiError, _, _, _>(
        platform,
        target,
        |loaded, now| {
            let endpoint = match &loaded.state {
                Some(e) if !e.deleted && e.instance_id == instance_id => e,
                _ => return Err(ApiError::not_found("webhook endpoint")),
            };
            let decision = decide(endpoint, now)?;
            Ok(Decided {
                events: decision.events,
                answer: decision.state,
            })
        },
        async |_, _| Ok(()),
        async |txn, ev| project(txn, ev).await,
    )
    .await
}

// ------------------------------------------------------------ projection ---

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    if ev.event_type == et::WEBHOOK_ENDPOINT_DELETED {
        let m = v1::WebhookEndpointDeleted::decode(ev.payload.as_slice())
            .map_err(|e| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type)))?;
        db::exec(
            conn,
            "DELETE FROM webhooks_endpoints WHERE id = $1",
            vec![m.endpoint_id.into()],
        )
        .await?;
        return Ok(());
    }
    let Some(s) = state_of(ev) else {
        return Err(DbErr::Custom(format!("{} without state", ev.event_type)));
    };
    let filter =
        serde_json::to_string(&s.filter_types).map_err(|e| DbErr::Custom(e.to_string()))?;
    db::exec(
        conn,
        "INSERT INTO webhooks_endpoints (id, instance_id, version, url, description, filter_types, \
         disabled, state, created_at, updated_at, max_concurrency) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET version = $3, url = $4, description = $5, \
         filter_types = $6, disabled = $7, state = $8, updated_at = $10, max_concurrency = $11",
        vec![
            s.endpoint_id.clone().into(),
            ev.meta.instance_id.clone().into(),
            ev.stream_version.into(),
            s.url.clone().into(),
            s.description.clone().into(),
            filter.into(),
            s.disabled.into(),
            s.encode_to_vec().into(),
            s.created_at_ms.into(),
            s.updated_at_ms.into(),
            max_concurrency(&s).into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["webhooks_endpoints"],
            Some(st::WEBHOOK_ENDPOINT),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

fn from_row(r: &sea_orm::QueryResult) -> Result<State, DbErr> {
    let bytes: Vec<u8> = col(r, "state")?;
    State::decode(bytes.as_slice()).map_err(|e| DbErr::Custom(format!("endpoint state: {e}")))
}

pub async fn get(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    id: &str,
) -> Result<Option<State>, DbErr> {
    db::query_one(
        conn,
        "SELECT state FROM webhooks_endpoints WHERE id = $1 AND instance_id = $2",
        vec![id.into(), instance_id.into()],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

/// A page of the instance's endpoints, oldest first, and the total.
pub async fn list(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    limit: u64,
    offset: u64,
) -> Result<(Vec<State>, u64), DbErr> {
    let rows = db::query_all(
        conn,
        "SELECT state FROM webhooks_endpoints WHERE instance_id = $1 \
         ORDER BY created_at, id LIMIT $2 OFFSET $3",
        vec![
            instance_id.into(),
            (limit as i64).into(),
            (offset as i64).into(),
        ],
    )
    .await?;
    let total: i64 = match db::query_one(
        conn,
        "SELECT COUNT(*) AS n FROM webhooks_endpoints WHERE instance_id = $1",
        vec![instance_id.into()],
    )
    .await?
    {
        Some(r) => col(&r, "n")?,
        None => 0,
    };
    let states = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((states, total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_standard_webhooks() {
        let s = new_secret();
        let raw = STANDARD.decode(s.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn ids_are_checked_before_any_lookup() {
        assert!(valid_id(&new_id()));
        assert!(!valid_id("ep_short"));
        assert!(!valid_id("oa_0352mGnX0xkVjXAn06w17p"));
        assert!(!valid_id("ep_0352mGnX0xkVjXAn06w1'p"));
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_rewinding() {
        let ev = |version: i64, event_type: &str, payload: Vec<u8>| {
            RecordedEvent::unstored(version, event_type, payload, Default::default())
        };
        let created = v1::WebhookEndpointCreated {
            endpoint: Some(State {
                url: "https://hooks.example/a".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec();
        let good = [ev(1, et::WEBHOOK_ENDPOINT_CREATED, created.clone())];
        let loaded = gatehouse_platform::aggregate::fold::<WebhookEndpoint>(&good).unwrap();
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.state.unwrap().state.url, "https://hooks.example/a");
        for bad in [
            ev(2, et::WEBHOOK_ENDPOINT_UPDATED, vec![0xff, 0xff]),
            ev(2, "webhook_endpoint.paused", Vec::new()),
        ] {
            let events = [ev(1, et::WEBHOOK_ENDPOINT_CREATED, created.clone()), bad];
            assert!(gatehouse_platform::aggregate::fold::<WebhookEndpoint>(&events).is_err());
        }
    }

    #[test]
    fn endpoints_recorded_before_the_setting_get_the_default() {
        let mut s = State::default();
        assert_eq!(max_concurrency(&s), DEFAULT_MAX_CONCURRENCY);
        s.max_concurrency = 1;
        assert_eq!(max_concurrency(&s), 1);
        s.max_concurrency = MAX_CONCURRENCY_BOUND;
        assert_eq!(max_concurrency(&s), MAX_CONCURRENCY_BOUND);
    }
}
