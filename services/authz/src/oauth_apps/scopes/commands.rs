//! The custom scopes' decisions: pure functions of the instance's defined
//! scopes, each returning the event to append, or the refusal. Handlers
//! parse and validate; these decide.

use gatehouse_platform::aggregate::Decided;
use gatehouse_platform::{ApiError, ApiResult};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1;

use super::{Defined, is_standard};
use crate::oauth_apps::event;

/// Most characters of a description (once trimmed).
pub const MAX_DESCRIPTION_CHARS: usize = 300;

/// A description as the consent screen will show it: trimmed, 1 to
/// [`MAX_DESCRIPTION_CHARS`] characters, none of them a control character.
pub fn valid_description(d: &str) -> ApiResult<String> {
    let d = d.trim();
    if d.is_empty() || d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_param(
            "description",
            "`description` must be 1 to 300 printable characters: it is shown to users as is.",
        ));
    }
    Ok(d.to_owned())
}

fn defined(name: &str, description: &str) -> Decided<()> {
    Decided {
        events: vec![event(
            et::OAUTH_SCOPE_DEFINED,
            &v1::OAuthScopeDefined {
                name: name.to_owned(),
                description: description.to_owned(),
            },
        )],
        answer: (),
    }
}

/// A new custom scope (`name` and `description` already valid): neither a
/// standard scope nor one the instance has.
pub fn define(scopes: &Defined, name: &str, description: &str) -> ApiResult<Decided<()>> {
    if is_standard(name) {
        return Err(ApiError::conflict(
            "scope_exists",
            format!("{name} is a standard scope."),
        ));
    }
    if scopes.contains_key(name) {
        return Err(ApiError::conflict(
            "scope_exists",
            format!("The scope {name} already exists."),
        ));
    }
    Ok(defined(name, description))
}

/// A custom scope's new description: the scope is defined again with it
/// (even when it is the same; standard scopes are not custom ones).
pub fn describe(scopes: &Defined, name: &str, description: &str) -> ApiResult<Decided<()>> {
    if !scopes.contains_key(name) {
        return Err(ApiError::not_found("scope"));
    }
    Ok(defined(name, description))
}

/// The removal of a custom scope the instance has; whether applications
/// still list it is [`removable`]'s to say.
pub fn remove(scopes: &Defined, name: &str) -> ApiResult<Decided<()>> {
    if !scopes.contains_key(name) {
        return Err(ApiError::not_found("scope"));
    }
    Ok(Decided {
        events: vec![event(
            et::OAUTH_SCOPE_REMOVED,
            &v1::OAuthScopeRemoved {
                name: name.to_owned(),
            },
        )],
        answer: (),
    })
}

/// A scope `in_use` applications list cannot be removed.
pub fn removable(name: &str, in_use: i64) -> ApiResult<()> {
    if in_use > 0 {
        return Err(ApiError::conflict(
            "scope_in_use",
            format!(
                "{in_use} OAuth application(s) still list the scope {name}; remove it from them first."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use gatehouse_platform::aggregate::fold;
    use gatehouse_platform::eventstore::{EventMeta, RecordedEvent};
    use prost::Message;

    use super::super::CustomScopes;
    use super::*;

    fn recorded(version: i64, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
        let meta = EventMeta {
            instance_id: "ins_a".into(),
            ..Default::default()
        };
        RecordedEvent::unstored(version, event_type, payload, meta)
    }

    fn defined_event(version: i64, name: &str, description: &str) -> RecordedEvent {
        let m = v1::OAuthScopeDefined {
            name: name.into(),
            description: description.into(),
        };
        recorded(version, et::OAUTH_SCOPE_DEFINED, m.encode_to_vec())
    }

    fn removed_event(version: i64, name: &str) -> RecordedEvent {
        let m = v1::OAuthScopeRemoved { name: name.into() };
        recorded(version, et::OAUTH_SCOPE_REMOVED, m.encode_to_vec())
    }

    fn scopes(names: &[&str]) -> Defined {
        names
            .iter()
            .map(|n| ((*n).to_owned(), format!("About {n}")))
            .collect()
    }

    fn status_and_code(e: &ApiError) -> (u16, &str) {
        (e.status.as_u16(), e.items[0].code.as_str())
    }

    #[test]
    fn the_fold_defines_rewords_and_removes_scopes() {
        let events = [
            defined_event(1, "read:a", "Read A"),
            defined_event(2, "write:a", "Write A"),
            defined_event(3, "read:a", "Read all of A"),
            removed_event(4, "write:a"),
        ];
        let loaded = fold::<CustomScopes>(&events).unwrap();
        assert_eq!(loaded.version, 4);
        assert_eq!(
            loaded.state.into_iter().collect::<Vec<_>>(),
            [("read:a".to_owned(), "Read all of A".to_owned())]
        );
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_skipping_it() {
        for bad in [
            recorded(2, et::OAUTH_SCOPE_REMOVED, vec![0xff, 0xff]),
            recorded(2, "oauth_scope.renamed", Vec::new()),
            recorded(2, et::OAUTH_SCOPE_DEFINED, Vec::new()),
        ] {
            let events = [defined_event(1, "read:a", "Read A"), bad];
            assert!(fold::<CustomScopes>(&events).is_err());
        }
    }

    #[test]
    fn a_standard_scope_name_cannot_be_defined() {
        for name in ["openid", "profile", "email", "offline_access"] {
            let e = define(&scopes(&[]), name, "Mine").unwrap_err();
            assert_eq!(status_and_code(&e), (409, "scope_exists"));
        }
    }

    #[test]
    fn a_scope_the_instance_has_cannot_be_defined_again() {
        let e = define(&scopes(&["read:a"]), "read:a", "Again").unwrap_err();
        assert_eq!(status_and_code(&e), (409, "scope_exists"));
    }

    #[test]
    fn defining_a_new_scope_records_its_name_and_description() {
        let d = define(&scopes(&["read:a"]), "write:a", "Write A").unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::OAUTH_SCOPE_DEFINED);
        let m = v1::OAuthScopeDefined::decode(d.events[0].payload.as_slice()).unwrap();
        assert_eq!(
            (m.name.as_str(), m.description.as_str()),
            ("write:a", "Write A")
        );
    }

    #[test]
    fn a_description_is_1_to_300_printable_characters_once_trimmed() {
        assert_eq!(valid_description("  Read A \n").unwrap(), "Read A");
        assert!(valid_description(&"é".repeat(300)).is_ok());
        for bad in ["", "   ", &"x".repeat(301), "line\u{7}bell", "two\nlines"] {
            let e = valid_description(bad).unwrap_err();
            assert_eq!(e.items[0].meta["param_name"], "description", "{bad:?}");
        }
    }

    #[test]
    fn only_a_custom_scope_the_instance_has_can_be_reworded() {
        let have = scopes(&["read:a"]);
        let d = describe(&have, "read:a", "Read all of A").unwrap();
        assert_eq!(d.events[0].event_type, et::OAUTH_SCOPE_DEFINED);
        for name in ["write:a", "openid"] {
            assert_eq!(describe(&have, name, "x").unwrap_err().status.as_u16(), 404);
        }
    }

    #[test]
    fn only_a_custom_scope_the_instance_has_can_be_removed() {
        let have = scopes(&["read:a"]);
        let d = remove(&have, "read:a").unwrap();
        assert_eq!(d.events[0].event_type, et::OAUTH_SCOPE_REMOVED);
        for name in ["write:a", "email"] {
            assert_eq!(remove(&have, name).unwrap_err().status.as_u16(), 404);
        }
    }

    #[test]
    fn a_scope_an_application_lists_cannot_be_removed() {
        let e = removable("read:a", 2).unwrap_err();
        assert_eq!(status_and_code(&e), (409, "scope_in_use"));
        assert!(e.items[0].long_message.contains("2 OAuth application(s)"));
        assert!(removable("read:a", 0).is_ok());
    }
}
