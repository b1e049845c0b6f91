//! Wire shapes shared by more than one service: the Clerk-compatible user
//! and OAuth application objects the Backend API answers with, which
//! webhooks deliver as their `data` too.

use gatehouse_proto::v1::{OAuthApplicationState, UserState};
use serde_json::{Value, json};

use crate::Platform;
use crate::oauth::paths;

/// A metadata object from its JSON text (`{}` when it is not one).
pub fn metadata_value(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| json!({}))
}

/// The Clerk user object.
pub fn user_json(u: &UserState) -> Value {
    let emails: Vec<Value> = u
        .email_addresses
        .iter()
        .map(|e| {
            json!({
                "object": "email_address",
                "id": e.id,
                "email_address": e.email_address,
                "reserved": false,
                "verification": {
                    "object": "verification_admin",
                    "status": "verified",
                    "strategy": "admin",
                    "attempts": null,
                    "expire_at": null,
                },
                "linked_to": [],
                "matches_sso_connection": false,
                "created_at": u.created_at_ms,
                "updated_at": u.updated_at_ms,
            })
        })
        .collect();
    let primary = (!u.primary_email_address_id.is_empty()).then_some(&u.primary_email_address_id);
    json!({
        "object": "user",
        "id": u.user_id,
        "username": u.username,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "image_url": "",
        "has_image": false,
        "primary_email_address_id": primary,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "password_enabled": u.password_enabled,
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "email_addresses": emails,
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "public_metadata": metadata_value(&u.public_metadata_json),
        "private_metadata": metadata_value(&u.private_metadata_json),
        "unsafe_metadata": metadata_value(&u.unsafe_metadata_json),
        "external_id": u.external_id,
        "last_sign_in_at": null,
        "last_active_at": null,
        "banned": u.banned,
        "locked": false,
        "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": null,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "create_organizations_limit": null,
        "legal_accepted_at": null,
        "mfa_enabled_at": null,
        "mfa_disabled_at": null,
        "locale": null,
        "created_at": u.created_at_ms,
        "updated_at": u.updated_at_ms,
    })
}

/// The Clerk `oauth_application` object (never the secret).
pub fn oauth_application_json(
    platform: &Platform,
    instance_id: &str,
    a: &OAuthApplicationState,
) -> Value {
    let issuer = platform.issuer(instance_id);
    json!({
        "object": "oauth_application",
        "id": a.application_id,
        "instance_id": instance_id,
        "name": a.name,
        "client_id": a.client_id,
        "client_uri": a.client_uri,
        "client_image_url": a.client_image_url,
        "dynamically_registered": a.dynamically_registered,
        "consent_screen_enabled": a.consent_screen_enabled,
        "pkce_required": a.pkce_required,
        "public": a.public,
        "scopes": a.scopes,
        "redirect_uris": a.redirect_uris,
        "callback_url": a.redirect_uris.first(),
        "authorize_url": format!("{issuer}{}", paths::AUTHORIZE),
        "token_fetch_url": format!("{issuer}{}", paths::TOKEN),
        "user_info_url": format!("{issuer}{}", paths::USERINFO),
        "discovery_url": format!("{issuer}/.well-known/oauth-authorization-server"),
        "token_introspection_url": format!("{issuer}{}", paths::INTROSPECT),
        "created_at": a.created_at_ms,
        "updated_at": a.updated_at_ms,
    })
}
