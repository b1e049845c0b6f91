//! The OAuth settings' decisions: pure functions of the instance's settings
//! as their stream has them, returning the event to append (none when
//! nothing changes) and the settings to answer with.

use gatehouse_platform::aggregate::Decided;
use gatehouse_platform::{ApiError, ApiResult};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1;

use super::{MAX_RESOURCE_INDICATORS, Settings};
use crate::oauth_apps::event;

/// The declared resources: absolute URIs without a fragment (RFC 8707
/// §2), each once, at most [`MAX_RESOURCE_INDICATORS`].
pub fn resource_indicators(list: Vec<String>) -> ApiResult<Vec<String>> {
    if list.len() > MAX_RESOURCE_INDICATORS {
        return Err(ApiError::invalid_param(
            "resource_indicators",
            format!("At most {MAX_RESOURCE_INDICATORS} resource indicators."),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, r) in list.into_iter().enumerate() {
        if gatehouse_platform::oauth::resource_indicator(&r).is_none() {
            return Err(ApiError::invalid_param(
                &format!("resource_indicators[{i}]"),
                "A resource indicator is an absolute URI without a fragment, of at most 2048 \
                 characters.",
            ));
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// A validated `PATCH /v1/instance/oauth_application_settings`: each field
/// absent leaves the current one as it is.
#[derive(Debug, Default)]
pub struct Change {
    pub dynamic_registration: Option<bool>,
    pub metadata_documents: Option<bool>,
    pub registration_client_credentials: Option<bool>,
    pub registration_custom_scopes: Option<bool>,
    /// Replaces the list (already through [`resource_indicators`]).
    pub resource_indicators: Option<Vec<String>>,
}

/// Applies a change: one `oauth_settings.changed` event carrying the whole
/// settings, or nothing when they stay as they are.
pub fn change(current: &Settings, c: &Change) -> Decided<Settings> {
    let wanted = Settings {
        dynamic_registration: c
            .dynamic_registration
            .unwrap_or(current.dynamic_registration),
        metadata_documents: c.metadata_documents.unwrap_or(current.metadata_documents),
        registration_client_credentials: c
            .registration_client_credentials
            .unwrap_or(current.registration_client_credentials),
        registration_custom_scopes: c
            .registration_custom_scopes
            .unwrap_or(current.registration_custom_scopes),
        resource_indicators: c
            .resource_indicators
            .clone()
            .unwrap_or_else(|| current.resource_indicators.clone()),
    };
    if wanted == *current {
        return Decided::nothing(wanted);
    }
    Decided {
        events: vec![event(
            et::OAUTH_SETTINGS_CHANGED,
            &v1::OAuthSettingsChanged {
                dynamic_client_registration: wanted.dynamic_registration,
                client_id_metadata_documents_disabled: !wanted.metadata_documents,
                registration_client_credentials: wanted.registration_client_credentials,
                registration_custom_scopes: wanted.registration_custom_scopes,
                resource_indicators: wanted.resource_indicators.clone(),
            },
        )],
        answer: wanted,
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_platform::aggregate::fold;
    use gatehouse_platform::eventstore::{EventMeta, RecordedEvent};
    use prost::Message;

    use super::super::OAuthSettings;
    use super::*;

    fn recorded(version: i64, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
        let meta = EventMeta {
            instance_id: "ins_a".into(),
            ..Default::default()
        };
        RecordedEvent::unstored(version, event_type, payload, meta)
    }

    fn changed(d: &Decided<Settings>) -> v1::OAuthSettingsChanged {
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::OAUTH_SETTINGS_CHANGED);
        v1::OAuthSettingsChanged::decode(d.events[0].payload.as_slice()).unwrap()
    }

    #[test]
    fn an_instance_without_settings_events_has_the_defaults() {
        let loaded = fold::<OAuthSettings>(&[]).unwrap();
        assert_eq!(loaded.version, 0);
        let s = loaded.state;
        assert!(!s.dynamic_registration && s.metadata_documents);
        assert!(!s.registration_client_credentials && !s.registration_custom_scopes);
        assert!(s.resource_indicators.is_empty());
    }

    #[test]
    fn the_fold_takes_the_last_change_whole() {
        let first = v1::OAuthSettingsChanged {
            dynamic_client_registration: true,
            resource_indicators: vec!["https://api.example".into()],
            ..Default::default()
        };
        let second = v1::OAuthSettingsChanged {
            client_id_metadata_documents_disabled: true,
            registration_custom_scopes: true,
            ..Default::default()
        };
        let events = [
            recorded(1, et::OAUTH_SETTINGS_CHANGED, first.encode_to_vec()),
            recorded(2, et::OAUTH_SETTINGS_CHANGED, second.encode_to_vec()),
        ];
        let loaded = fold::<OAuthSettings>(&events).unwrap();
        assert_eq!(loaded.version, 2);
        assert_eq!(
            loaded.state,
            Settings {
                dynamic_registration: false,
                metadata_documents: false,
                registration_client_credentials: false,
                registration_custom_scopes: true,
                resource_indicators: Vec::new(),
            }
        );
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_skipping_it() {
        for bad in [
            recorded(1, et::OAUTH_SETTINGS_CHANGED, vec![0xff, 0xff]),
            recorded(1, "oauth_settings.reset", Vec::new()),
        ] {
            assert!(fold::<OAuthSettings>(&[bad]).is_err());
        }
    }

    #[test]
    fn fields_left_out_keep_their_current_value() {
        let current = Settings {
            registration_client_credentials: true,
            resource_indicators: vec!["https://api.example".into()],
            ..Default::default()
        };
        let c = Change {
            dynamic_registration: Some(true),
            ..Default::default()
        };
        let d = change(&current, &c);
        assert_eq!(
            d.answer,
            Settings {
                dynamic_registration: true,
                ..current.clone()
            }
        );
        let m = changed(&d);
        assert!(m.dynamic_client_registration && m.registration_client_credentials);
        assert!(!m.client_id_metadata_documents_disabled);
        assert_eq!(m.resource_indicators, ["https://api.example"]);
    }

    #[test]
    fn a_change_to_what_is_already_set_appends_nothing() {
        let current = Settings::default();
        for c in [
            Change::default(),
            Change {
                metadata_documents: Some(true),
                dynamic_registration: Some(false),
                resource_indicators: Some(Vec::new()),
                ..Default::default()
            },
        ] {
            let d = change(&current, &c);
            assert!(d.events.is_empty());
            assert_eq!(d.answer, current);
        }
    }

    #[test]
    fn turning_metadata_documents_off_is_recorded_as_disabled() {
        let c = Change {
            metadata_documents: Some(false),
            ..Default::default()
        };
        let d = change(&Settings::default(), &c);
        assert!(!d.answer.metadata_documents);
        assert!(changed(&d).client_id_metadata_documents_disabled);
    }

    #[test]
    fn resource_indicators_replace_the_list_each_once() {
        let list = [
            "https://a.example",
            "https://b.example/x",
            "https://a.example",
        ];
        let out = resource_indicators(list.map(String::from).to_vec()).unwrap();
        assert_eq!(out, ["https://a.example", "https://b.example/x"]);
        let current = Settings {
            resource_indicators: vec!["https://old.example".into()],
            ..Default::default()
        };
        let c = Change {
            resource_indicators: Some(out.clone()),
            ..Default::default()
        };
        assert_eq!(changed(&change(&current, &c)).resource_indicators, out);
    }

    #[test]
    fn a_resource_indicator_is_an_absolute_uri_without_a_fragment() {
        for bad in ["relative/path", "https://a.example/#frag", "", "mailto:x@y"] {
            let list = vec!["https://ok.example".to_owned(), bad.to_owned()];
            let e = resource_indicators(list).unwrap_err();
            assert_eq!(
                e.items[0].meta["param_name"], "resource_indicators[1]",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn at_most_50_resource_indicators() {
        let list = |n: usize| (0..n).map(|i| format!("https://r{i}.example")).collect();
        assert_eq!(resource_indicators(list(50)).unwrap().len(), 50);
        let e = resource_indicators(list(51)).unwrap_err();
        assert_eq!(e.items[0].meta["param_name"], "resource_indicators");
    }
}
