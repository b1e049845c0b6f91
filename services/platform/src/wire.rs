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

/// Clerk's `verification` of an email address. A verified one is Clerk's
/// `verification_admin` (what its Backend API gives the addresses it
/// creates); an unverified one (hosted sign-up's) is Clerk's
/// `verification_otp` in status `unverified` with no attempt made: no code
/// is ever sent. An address without the flag (an event written before it
/// existed) shows as verified, as it was shown then.
fn email_verification(verified: Option<bool>) -> Value {
    if verified.unwrap_or(true) {
        json!({
            "object": "verification_admin",
            "status": "verified",
            "strategy": "admin",
            "attempts": null,
            "expire_at": null,
        })
    } else {
        json!({
            "object": "verification_otp",
            "status": "unverified",
            "strategy": "email_code",
            "attempts": 0,
            "expire_at": null,
        })
    }
}

/// The OpenAPI schemas of [`user_json`]'s object (published as `User`,
/// `EmailAddress`, `EmailVerification`): what it serves, field by field.
/// Schema-only; the handlers answer with the `Value` it builds.
pub mod user_schema {
    use utoipa::ToSchema;
    use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

    /// A string schema of exactly one value.
    fn constant(value: &str) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([value]))
            .build()
    }

    fn object_user() -> Object {
        constant("user")
    }
    fn object_email_address() -> Object {
        constant("email_address")
    }
    fn object_verification_admin() -> Object {
        constant("verification_admin")
    }
    fn object_verification_otp() -> Object {
        constant("verification_otp")
    }
    fn status_verified() -> Object {
        constant("verified")
    }
    fn status_unverified() -> Object {
        constant("unverified")
    }
    fn strategy_admin() -> Object {
        constant("admin")
    }
    fn strategy_email_code() -> Object {
        constant("email_code")
    }
    fn no_attempt() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some([0]))
            .build()
    }

    /// The Clerk user object.
    #[derive(ToSchema)]
    #[schema(as = User)]
    #[allow(dead_code)]
    pub struct UserObject {
        #[schema(schema_with = object_user)]
        object: String,
        id: String,
        #[schema(required = true)]
        username: Option<String>,
        #[schema(required = true)]
        first_name: Option<String>,
        #[schema(required = true)]
        last_name: Option<String>,
        /// Always empty: users have no image.
        image_url: String,
        has_image: bool,
        /// `null` when the user has no email address.
        #[schema(required = true)]
        primary_email_address_id: Option<String>,
        /// Always `null`.
        #[schema(required = true)]
        primary_phone_number_id: Option<String>,
        /// Always `null`.
        #[schema(required = true)]
        primary_web3_wallet_id: Option<String>,
        password_enabled: bool,
        two_factor_enabled: bool,
        totp_enabled: bool,
        backup_code_enabled: bool,
        email_addresses: Vec<EmailAddressObject>,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        phone_numbers: Vec<()>,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        web3_wallets: Vec<()>,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        passkeys: Vec<()>,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        external_accounts: Vec<()>,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        saml_accounts: Vec<()>,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        enterprise_accounts: Vec<()>,
        /// `null` once `PUT /v1/users/{user_id}/metadata` stored `null`.
        #[schema(value_type = Option<Object>, required = true)]
        public_metadata: (),
        /// `null` once `PUT /v1/users/{user_id}/metadata` stored `null`.
        #[schema(value_type = Option<Object>, required = true)]
        private_metadata: (),
        /// `null` once `PUT /v1/users/{user_id}/metadata` stored `null`.
        #[schema(value_type = Option<Object>, required = true)]
        unsafe_metadata: (),
        #[schema(required = true)]
        external_id: Option<String>,
        /// Always `null`.
        #[schema(required = true)]
        last_sign_in_at: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        last_active_at: Option<i64>,
        banned: bool,
        /// Always `false`.
        locked: bool,
        /// Always `null`.
        #[schema(required = true)]
        lockout_expires_in_seconds: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        verification_attempts_remaining: Option<i64>,
        delete_self_enabled: bool,
        create_organization_enabled: bool,
        /// Always `null`.
        #[schema(required = true)]
        create_organizations_limit: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        legal_accepted_at: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        mfa_enabled_at: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        mfa_disabled_at: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        locale: Option<String>,
        /// Milliseconds since the epoch.
        created_at: i64,
        /// Milliseconds since the epoch.
        updated_at: i64,
    }

    /// Clerk's email address object.
    #[derive(ToSchema)]
    #[schema(as = EmailAddress)]
    #[allow(dead_code)]
    pub struct EmailAddressObject {
        #[schema(schema_with = object_email_address)]
        object: String,
        id: String,
        email_address: String,
        /// Always `false`.
        reserved: bool,
        verification: EmailVerification,
        /// Always empty.
        #[schema(value_type = Vec<Object>)]
        linked_to: Vec<()>,
        /// Always `false`.
        matches_sso_connection: bool,
        /// The user's `created_at`.
        created_at: i64,
        /// The user's `updated_at`.
        updated_at: i64,
    }

    /// Whether the address is verified: Backend API addresses are (Clerk's
    /// `verification_admin`); hosted sign-up's are not (Clerk's
    /// `verification_otp`, no code ever sent).
    #[derive(ToSchema)]
    #[serde(untagged)]
    #[allow(dead_code)]
    pub enum EmailVerification {
        Admin(VerificationAdmin),
        Otp(VerificationOtp),
    }

    /// A verified address.
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct VerificationAdmin {
        #[schema(schema_with = object_verification_admin)]
        object: String,
        #[schema(schema_with = status_verified)]
        status: String,
        #[schema(schema_with = strategy_admin)]
        strategy: String,
        /// Always `null`.
        #[schema(required = true)]
        attempts: Option<i64>,
        /// Always `null`.
        #[schema(required = true)]
        expire_at: Option<i64>,
    }

    /// An unverified address: no attempt made, no code sent.
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct VerificationOtp {
        #[schema(schema_with = object_verification_otp)]
        object: String,
        #[schema(schema_with = status_unverified)]
        status: String,
        #[schema(schema_with = strategy_email_code)]
        strategy: String,
        #[schema(schema_with = no_attempt)]
        attempts: i64,
        /// Always `null`.
        #[schema(required = true)]
        expire_at: Option<i64>,
    }
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
                "verification": email_verification(e.verified),
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
        "access_token_format": crate::oauth::AccessTokenFormat::stored(&a.access_token_format).as_str(),
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
