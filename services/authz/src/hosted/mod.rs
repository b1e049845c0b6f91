//! Hosted pages per instance (server-rendered with askama, no JS): sign-up,
//! sign-in, sign-out, under the instance issuer `/i/<instance>/…`.
//!
//! Security: the session cookie is HttpOnly, SameSite=Lax, Secure unless the
//! public URL is plain-http localhost, scoped to the instance's path, and
//! replaced on every sign-in. Every form carries a CSRF token checked against
//! a SameSite=Strict cookie (double submit). Sign-in failures are one generic
//! message, take the same argon2 work whether or not the account exists, and
//! are throttled per account and per address. Pages cannot be framed.

pub mod pages;
pub mod sessions;

/// Where an email domain's enterprise SSO connection would take the user.
/// Connections arrive in a later issue; this is the seam sign-in calls.
pub fn sso_connection_for(_instance_id: &str, _email: &str) -> Option<String> {
    None
}
