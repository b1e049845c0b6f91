//! The OAuth application aggregate's decisions: pure functions of the
//! loaded aggregate (and the time), each returning the events to append
//! and the answer, or the refusal. Handlers parse and validate; these
//! decide.

use gatehouse_platform::aggregate::{Decided, Loaded};
use gatehouse_platform::oauth::AccessTokenFormat;
use gatehouse_platform::{ApiError, ApiResult};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use serde_json::json;

use super::{App, Decision, event};

/// A new application, on a stream no application has used.
pub fn create(loaded: &Loaded<Option<App>>, state: &AppState) -> ApiResult<Decided<AppState>> {
    if loaded.state.is_some() {
        return Err(ApiError::conflict(
            "application_exists",
            "An application already has this id; retry.",
        ));
    }
    Ok(Decided {
        events: vec![event(
            et::OAUTH_APPLICATION_CREATED,
            &v1::OAuthApplicationCreated {
                application: Some(state.clone()),
            },
        )],
        answer: state.clone(),
    })
}

/// The application a command acts on: it exists, is not deleted, and
/// belongs to the caller's instance (anything else is the same 404, so an
/// id of another instance reveals nothing).
pub fn existing<'a>(loaded: &'a Loaded<Option<App>>, instance_id: &str) -> ApiResult<&'a App> {
    match &loaded.state {
        Some(a) if !a.deleted && a.instance_id == instance_id => Ok(a),
        _ => Err(ApiError::not_found("OAuth application")),
    }
}

/// Whether an application uses PKCE: OAuth 2.1 asks it of every client
/// unless turned off explicitly, and a public client cannot turn it off.
pub fn pkce_for(public: bool, requested: Option<bool>) -> ApiResult<bool> {
    match (public, requested) {
        (true, Some(false)) => Err(ApiError::invalid_param(
            "pkce_required",
            "Public clients must use PKCE.",
        )),
        (_, Some(p)) => Ok(p),
        (_, None) => Ok(true),
    }
}

/// A validated `PATCH /v1/oauth_applications/{id}`: each field absent
/// leaves the application's as it is.
#[derive(Debug, Default)]
pub struct Update {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub scopes: Option<String>,
    pub public: Option<bool>,
    pub consent_screen_enabled: Option<bool>,
    pub pkce_required: Option<bool>,
    /// `Some(None)` clears it.
    pub client_uri: Option<Option<String>>,
    pub client_image_url: Option<Option<String>>,
    pub access_token_format: Option<AccessTokenFormat>,
}

/// Applies an update: one `oauth_application.updated` event naming the
/// fields that changed, or nothing when none did.
pub fn update(current: &AppState, u: &Update, now: i64) -> ApiResult<Decision> {
    let mut s = current.clone();
    let mut changed = Vec::new();
    let mut set = |field: &str, differs: bool| {
        if differs {
            changed.push(field.to_owned());
        }
    };
    if u.public.is_some_and(|p| p != s.public) {
        return Err(ApiError::invalid_param(
            "public",
            "An application cannot switch between public and confidential; create a new one.",
        ));
    }
    if let Some(n) = &u.name {
        set("name", *n != s.name);
        s.name = n.clone();
    }
    if let Some(r) = &u.redirect_uris {
        set("redirect_uris", *r != s.redirect_uris);
        s.redirect_uris = r.clone();
    }
    if let Some(sc) = &u.scopes {
        set("scopes", *sc != s.scopes);
        s.scopes = sc.clone();
    }
    if let Some(c) = u.consent_screen_enabled {
        if !c && s.dynamically_registered {
            return Err(ApiError::bad_request(
                "consent_required",
                "Dynamically registered applications always show the consent screen.",
            )
            .with_meta(json!({ "param_name": "consent_screen_enabled" })));
        }
        set("consent_screen_enabled", c != s.consent_screen_enabled);
        s.consent_screen_enabled = c;
    }
    if let Some(p) = u.pkce_required {
        let p = pkce_for(s.public, Some(p))?;
        set("pkce_required", p != s.pkce_required);
        s.pkce_required = p;
    }
    if let Some(c) = &u.client_uri {
        set("client_uri", *c != s.client_uri);
        s.client_uri = c.clone();
    }
    if let Some(i) = &u.client_image_url {
        set("client_image_url", *i != s.client_image_url);
        s.client_image_url = i.clone();
    }
    if let Some(f) = u.access_token_format {
        set(
            "access_token_format",
            f != AccessTokenFormat::stored(&s.access_token_format),
        );
        s.access_token_format = f.as_str().to_owned();
    }
    if changed.is_empty() {
        return Ok(Decision::none(current.clone()));
    }
    // Never back in time, whatever the clock did.
    s.updated_at_ms = now.max(s.updated_at_ms);
    Ok(Decision {
        events: vec![event(
            et::OAUTH_APPLICATION_UPDATED,
            &v1::OAuthApplicationUpdated {
                application: Some(s.clone()),
                changed_fields: changed,
            },
        )],
        state: Some(s),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use gatehouse_platform::aggregate::fold;
    use gatehouse_platform::eventstore::{EventMeta, RecordedEvent};
    use prost::Message;

    use super::super::OAuthApplication;
    use super::*;

    fn app(instance_id: &str, deleted: bool) -> Loaded<Option<App>> {
        Loaded {
            state: Some(App {
                state: AppState {
                    application_id: "oa_1".into(),
                    name: "App".into(),
                    ..Default::default()
                },
                instance_id: instance_id.into(),
                deleted,
            }),
            version: 2,
        }
    }

    fn recorded(version: i64, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
        let meta = EventMeta {
            instance_id: "ins_a".into(),
            ..Default::default()
        };
        RecordedEvent::unstored(version, event_type, payload, meta)
    }

    fn created(name: &str) -> Vec<u8> {
        v1::OAuthApplicationCreated {
            application: Some(AppState {
                name: name.into(),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn the_fold_keeps_the_latest_state_and_marks_a_deletion() {
        let events = [
            recorded(1, et::OAUTH_APPLICATION_CREATED, created("A")),
            recorded(2, et::OAUTH_APPLICATION_DELETED, Vec::new()),
        ];
        let loaded = fold::<OAuthApplication>(&events).unwrap();
        let app = loaded.state.unwrap();
        assert_eq!((app.state.name.as_str(), app.deleted), ("A", true));
        assert_eq!((loaded.version, app.instance_id.as_str()), (2, "ins_a"));
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_rewinding() {
        for bad in [
            recorded(2, et::OAUTH_APPLICATION_UPDATED, vec![0xff, 0xff]),
            recorded(2, "oauth_application.renamed", Vec::new()),
        ] {
            let events = [
                recorded(1, et::OAUTH_APPLICATION_CREATED, created("A")),
                bad,
            ];
            assert!(fold::<OAuthApplication>(&events).is_err());
        }
        let orphan = [recorded(1, et::OAUTH_APPLICATION_DELETED, Vec::new())];
        assert!(fold::<OAuthApplication>(&orphan).is_err());
    }

    #[test]
    fn creating_appends_the_whole_state_once() {
        let empty = Loaded {
            state: None,
            version: 0,
        };
        let state = AppState {
            name: "New".into(),
            ..Default::default()
        };
        let d = create(&empty, &state).unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::OAUTH_APPLICATION_CREATED);
        assert_eq!(d.answer.name, "New");
    }

    #[test]
    fn creating_on_a_used_id_is_a_conflict_not_an_overwrite() {
        let e = create(&app("ins_a", false), &AppState::default()).unwrap_err();
        assert_eq!(e.status.as_u16(), 409);
    }

    #[test]
    fn another_instance_s_or_a_deleted_application_is_not_found() {
        assert!(existing(&app("ins_a", false), "ins_a").is_ok());
        for (loaded, instance) in [
            (app("ins_a", false), "ins_b"),
            (app("ins_a", true), "ins_a"),
            (
                Loaded {
                    state: None,
                    version: 0,
                },
                "ins_a",
            ),
        ] {
            assert_eq!(
                existing(&loaded, instance).unwrap_err().status.as_u16(),
                404
            );
        }
    }

    fn stored(public: bool, dynamically_registered: bool) -> AppState {
        AppState {
            name: "App".into(),
            public,
            dynamically_registered,
            pkce_required: true,
            consent_screen_enabled: true,
            scopes: "openid".into(),
            updated_at_ms: 1_000,
            ..Default::default()
        }
    }

    fn changed_fields(d: &Decision) -> Vec<String> {
        assert_eq!(d.events.len(), 1);
        v1::OAuthApplicationUpdated::decode(d.events[0].payload.as_slice())
            .unwrap()
            .changed_fields
    }

    #[test]
    fn an_update_names_only_the_fields_that_changed() {
        let u = Update {
            name: Some("Renamed".into()),
            scopes: Some("openid".into()),
            access_token_format: Some(AccessTokenFormat::Opaque),
            ..Default::default()
        };
        let d = update(&stored(false, false), &u, 2_000).unwrap();
        assert_eq!(changed_fields(&d), ["name", "access_token_format"]);
        let s = d.state.unwrap();
        assert_eq!(
            (s.name.as_str(), s.access_token_format.as_str()),
            ("Renamed", "opaque")
        );
        assert_eq!(s.updated_at_ms, 2_000);
    }

    #[test]
    fn an_update_that_changes_nothing_appends_nothing() {
        let u = Update {
            name: Some("App".into()),
            public: Some(false),
            access_token_format: Some(AccessTokenFormat::Jwt),
            ..Default::default()
        };
        let d = update(&stored(false, false), &u, 2_000).unwrap();
        assert!(d.events.is_empty());
        assert_eq!(d.state.unwrap().updated_at_ms, 1_000);
    }

    #[test]
    fn an_application_cannot_switch_between_public_and_confidential() {
        let u = Update {
            public: Some(true),
            ..Default::default()
        };
        let e = update(&stored(false, false), &u, 2_000).unwrap_err();
        assert_eq!(e.items[0].meta["param_name"], "public");
    }

    #[test]
    fn a_dynamically_registered_application_always_shows_the_consent_screen() {
        let off = Update {
            consent_screen_enabled: Some(false),
            ..Default::default()
        };
        let e = update(&stored(true, true), &off, 2_000).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.items[0].code.as_str()),
            (400, "consent_required")
        );
        assert!(update(&stored(true, false), &off, 2_000).is_ok());
    }

    #[test]
    fn a_public_client_cannot_turn_pkce_off_and_pkce_is_on_unless_asked() {
        let off = Update {
            pkce_required: Some(false),
            ..Default::default()
        };
        assert_eq!(
            update(&stored(true, false), &off, 2_000).unwrap_err().items[0].meta["param_name"],
            "pkce_required"
        );
        let d = update(&stored(false, false), &off, 2_000).unwrap();
        assert!(!d.state.unwrap().pkce_required);
        assert!(pkce_for(true, None).unwrap() && pkce_for(false, None).unwrap());
    }

    #[test]
    fn updated_at_never_moves_back_when_the_clock_does() {
        let u = Update {
            name: Some("Later".into()),
            ..Default::default()
        };
        let d = update(&stored(false, false), &u, 500).unwrap();
        assert_eq!(d.state.unwrap().updated_at_ms, 1_000);
    }

    #[test]
    fn clearing_the_logo_is_a_change() {
        let mut s = stored(false, false);
        s.client_image_url = Some("https://app.example/logo.png".into());
        let u = Update {
            client_image_url: Some(None),
            ..Default::default()
        };
        let d = update(&s, &u, 2_000).unwrap();
        assert_eq!(changed_fields(&d), ["client_image_url"]);
        assert_eq!(d.state.unwrap().client_image_url, None);
    }
}
