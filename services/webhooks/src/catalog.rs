//! The public event types, what each means, and the one function that
//! builds every webhook payload from a bus event. `GET
//! /v1/webhooks/event_types` runs that same function over example events,
//! so the catalog cannot drift from what is delivered. Internal events
//! (secret keys, grants, tokens, webhook endpoints themselves) are never
//! delivered. Adding an event type is one entry here and one arm in
//! [`data`].

use gatehouse_platform::Platform;
use gatehouse_platform::wire::{oauth_application_json, user_json};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1;
use prost::Message;
use serde_json::{Value, json};

/// (event type, what it means)
pub const PUBLIC: &[(&str, &str)] = &[
    (
        et::USER_CREATED,
        "A user was created, through the Backend API or hosted sign-up.",
    ),
    (
        et::USER_UPDATED,
        "A user's profile, email addresses or metadata changed.",
    ),
    (et::USER_DELETED, "A user was deleted."),
    (
        et::SESSION_CREATED,
        "A user signed in (or signed up) on the hosted pages.",
    ),
    (
        et::OAUTH_APPLICATION_CREATED,
        "An OAuth application was created or registered.",
    ),
    (
        et::OAUTH_APPLICATION_UPDATED,
        "An OAuth application's settings changed.",
    ),
    (
        et::OAUTH_APPLICATION_DELETED,
        "An OAuth application was deleted.",
    ),
];

pub fn is_public(event_type: &str) -> bool {
    PUBLIC.iter().any(|(t, _)| *t == event_type)
}

/// The `data` of the webhook for a bus event, `None` for events that are
/// not delivered (or that cannot be decoded).
pub fn data(
    platform: &Platform,
    instance_id: &str,
    event_type: &str,
    payload: &[u8],
) -> Option<Value> {
    Some(match event_type {
        et::USER_CREATED | et::USER_UPDATED => {
            user_json(&gatehouse_proto::user_state(event_type, payload).ok()??)
        }
        et::USER_DELETED => {
            let m = v1::UserDeleted::decode(payload).ok()?;
            json!({ "object": "user", "id": m.user_id, "deleted": true })
        }
        et::SESSION_CREATED => {
            let m = v1::SessionCreated::decode(payload).ok()?;
            json!({
                "object": "session",
                "id": m.session_id,
                "user_id": m.user_id,
                "method": m.method,
                "expire_at": m.expires_at_ms,
            })
        }
        et::OAUTH_APPLICATION_CREATED | et::OAUTH_APPLICATION_UPDATED => {
            let app = gatehouse_proto::oauth_application_state(event_type, payload).ok()??;
            oauth_application_json(platform, instance_id, &app)
        }
        et::OAUTH_APPLICATION_DELETED => {
            let m = v1::OAuthApplicationDeleted::decode(payload).ok()?;
            json!({ "object": "oauth_application", "id": m.application_id, "deleted": true })
        }
        _ => return None,
    })
}

/// The whole webhook body: `{"data","object":"event","type","timestamp","instance_id"}`.
pub fn body(data: Value, event_type: &str, timestamp_ms: i64, instance_id: &str) -> Value {
    json!({
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": timestamp_ms,
        "instance_id": instance_id,
    })
}

/// An example bus event of each public type, as the services emit them.
fn example_event(event_type: &str) -> Vec<u8> {
    let user = v1::UserState {
        user_id: "user_2x7Gq0M1fXb3Kd9LzYw4Vn".into(),
        email_addresses: vec![v1::EmailAddress {
            id: "idn_2x7Gq0M1fXb3Kd9LzYw4Vp".into(),
            email_address: "ada@example.com".into(),
            verified: Some(true),
        }],
        primary_email_address_id: "idn_2x7Gq0M1fXb3Kd9LzYw4Vp".into(),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        public_metadata_json: "{}".into(),
        private_metadata_json: "{}".into(),
        unsafe_metadata_json: "{}".into(),
        created_at_ms: 1_795_000_000_000,
        updated_at_ms: 1_795_000_000_000,
        ..Default::default()
    };
    let app = v1::OAuthApplicationState {
        application_id: "oa_2x7Gq0M1fXb3Kd9LzYw4Vq".into(),
        name: "Acme Desktop".into(),
        client_id: "Yq8Zt3Lm0Pw6Rn2Vx9Kc4dEf".into(),
        public: true,
        pkce_required: true,
        consent_screen_enabled: true,
        scopes: "openid email".into(),
        redirect_uris: vec!["https://app.example/callback".into()],
        created_at_ms: 1_795_000_000_000,
        updated_at_ms: 1_795_000_000_000,
        ..Default::default()
    };
    match event_type {
        et::USER_CREATED => v1::UserCreated { user: Some(user) }.encode_to_vec(),
        et::USER_UPDATED => v1::UserUpdated {
            user: Some(user),
            changed_fields: vec!["first_name".into()],
        }
        .encode_to_vec(),
        et::USER_DELETED => v1::UserDeleted {
            user_id: user.user_id,
        }
        .encode_to_vec(),
        et::SESSION_CREATED => v1::SessionCreated {
            session_id: "sess_2x7Gq0M1fXb3Kd9LzYw4Vr".into(),
            user_id: user.user_id,
            method: "sign_in".into(),
            expires_at_ms: 1_795_604_800_000,
            ..Default::default()
        }
        .encode_to_vec(),
        et::OAUTH_APPLICATION_CREATED => v1::OAuthApplicationCreated {
            application: Some(app),
        }
        .encode_to_vec(),
        et::OAUTH_APPLICATION_UPDATED => v1::OAuthApplicationUpdated {
            application: Some(app),
            ..Default::default()
        }
        .encode_to_vec(),
        et::OAUTH_APPLICATION_DELETED => v1::OAuthApplicationDeleted {
            application_id: app.application_id,
        }
        .encode_to_vec(),
        _ => Vec::new(),
    }
}

/// Every public type with its description and an example body, built by
/// [`data`] from an example event.
pub fn entries(platform: &Platform, instance_id: &str) -> Vec<Value> {
    PUBLIC
        .iter()
        .map(|(t, description)| {
            let example = data(platform, instance_id, t, &example_event(t))
                .map(|d| body(d, t, 1_795_000_000_000, instance_id));
            json!({ "object": "event_type", "name": t, "description": description, "example": example })
        })
        .collect()
}
