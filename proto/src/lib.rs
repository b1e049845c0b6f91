//! Generated event types shared by every service. Services depend on this
//! crate and on `gatehouse-platform`, never on each other.

pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/gatehouse.events.v1.rs"));
    }
}

pub use events::v1;

/// The `event_type` strings of the envelope, one per message. Publishers and
/// consumers both use these, so a rename is a compile error, not a silent drop.
pub mod event_types {
    pub const TENANT_CREATED: &str = "tenant.created";
    pub const TENANT_DISABLED: &str = "tenant.disabled";
    pub const INSTANCE_CREATED: &str = "instance.created";
    pub const SECRET_KEY_ISSUED: &str = "instance.secret_key_issued";
    pub const SECRET_KEY_REVOKED: &str = "instance.secret_key_revoked";
    pub const RATE_LIMIT_SET: &str = "instance.rate_limit_set";

    pub const USER_CREATED: &str = "user.created";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_BANNED: &str = "user.banned";
    pub const USER_UNBANNED: &str = "user.unbanned";
    pub const SESSION_CREATED: &str = "session.created";
    pub const SESSION_ENDED: &str = "session.ended";

    pub const OAUTH_APPLICATION_CREATED: &str = "oauth_application.created";
    pub const OAUTH_APPLICATION_UPDATED: &str = "oauth_application.updated";
    pub const OAUTH_APPLICATION_SECRET_ROTATED: &str = "oauth_application.secret_rotated";
    pub const OAUTH_APPLICATION_DELETED: &str = "oauth_application.deleted";
    pub const OAUTH_SCOPE_DEFINED: &str = "oauth_scope.defined";
    pub const OAUTH_SCOPE_REMOVED: &str = "oauth_scope.removed";
    pub const OAUTH_SETTINGS_CHANGED: &str = "oauth_settings.changed";
    pub const OAUTH_GRANT_ACCEPTED: &str = "oauth_grant.accepted";
    pub const OAUTH_GRANT_REVOKED: &str = "oauth_grant.revoked";

    pub const TOKEN_ISSUED: &str = "token.issued";
    pub const TOKEN_REFRESHED: &str = "token.refreshed";
    pub const TOKEN_FAMILY_REVOKED: &str = "token.family_revoked";

    pub const WEBHOOK_ENDPOINT_CREATED: &str = "webhook_endpoint.created";
    pub const WEBHOOK_ENDPOINT_UPDATED: &str = "webhook_endpoint.updated";
    pub const WEBHOOK_ENDPOINT_SECRET_ROTATED: &str = "webhook_endpoint.secret_rotated";
    pub const WEBHOOK_ENDPOINT_DELETED: &str = "webhook_endpoint.deleted";
    pub const WEBHOOK_ENDPOINT_DISABLED: &str = "webhook_endpoint.disabled";
}

/// Stream types (the aggregate kinds) and the topic each is published on.
pub mod stream_types {
    pub const TENANT: &str = "tenant";
    pub const INSTANCE: &str = "instance";
    pub const USER: &str = "user";
    pub const SESSION: &str = "session";
    pub const OAUTH_APPLICATION: &str = "oauth_application";
    pub const OAUTH_SCOPES: &str = "oauth_scopes";
    pub const OAUTH_SETTINGS: &str = "oauth_settings";
    pub const OAUTH_GRANT: &str = "oauth_grant";
    pub const TOKEN_FAMILY: &str = "token_family";
    pub const WEBHOOK_ENDPOINT: &str = "webhook_endpoint";
}

/// The actor recorded on the events hosted sign-up causes.
pub const SIGN_UP_ACTOR: &str = "sign_up";

/// Whether an email address whose event has no `verified` (written before
/// the field existed) is verified, from the actor of its user's first event:
/// verified, as the Backend API reported it, unless hosted sign-up created
/// the user (its addresses were never checked).
pub fn verified_before_the_field(created_by: &str) -> bool {
    created_by != SIGN_UP_ACTOR
}

/// The user state a user event carries (created, updated, banned,
/// unbanned); `None` for other event types.
pub fn user_state(
    event_type: &str,
    payload: &[u8],
) -> Result<Option<v1::UserState>, prost::DecodeError> {
    use prost::Message;
    Ok(match event_type {
        event_types::USER_CREATED => v1::UserCreated::decode(payload)?.user,
        event_types::USER_UPDATED => v1::UserUpdated::decode(payload)?.user,
        event_types::USER_BANNED => v1::UserBanned::decode(payload)?.user,
        event_types::USER_UNBANNED => v1::UserUnbanned::decode(payload)?.user,
        _ => None,
    })
}

/// The whole application state an `oauth_application.*` event carries;
/// `None` for deletion and for every other event type.
pub fn oauth_application_state(
    event_type: &str,
    payload: &[u8],
) -> Result<Option<v1::OAuthApplicationState>, prost::DecodeError> {
    use prost::Message;
    Ok(match event_type {
        event_types::OAUTH_APPLICATION_CREATED => {
            v1::OAuthApplicationCreated::decode(payload)?.application
        }
        event_types::OAUTH_APPLICATION_UPDATED => {
            v1::OAuthApplicationUpdated::decode(payload)?.application
        }
        event_types::OAUTH_APPLICATION_SECRET_ROTATED => {
            v1::OAuthApplicationSecretRotated::decode(payload)?.application
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn an_email_address_from_before_verified_existed_decodes_without_it() {
        // Fields 1 and 2 only, as events were written before field 3.
        let old = [0x0a, 0x03, b'i', b'd', b'n', 0x12, 0x03, b'a', b'@', b'b'];
        let e = v1::EmailAddress::decode(old.as_slice()).unwrap();
        assert_eq!((e.id.as_str(), e.verified), ("idn", None));
        let explicit = v1::EmailAddress {
            verified: Some(false),
            ..e.clone()
        };
        let again = v1::EmailAddress::decode(explicit.encode_to_vec().as_slice()).unwrap();
        assert_eq!(again.verified, Some(false), "an explicit false survives");
        assert!(verified_before_the_field("secret_key:ak_1"));
        assert!(!verified_before_the_field(SIGN_UP_ACTOR));
    }
}
