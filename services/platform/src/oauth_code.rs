//! Authorization codes as sealed envelopes.
//!
//! The authorization service issues a code; the token service redeems it.
//! They share no tables and do not call each other, so the code carries its
//! own grant: client, user, redirect URI, PKCE challenge, resource, scopes
//! and expiry, encrypted and authenticated with AES-256-GCM under a key both
//! services are configured with (`--oauth-code-secret`). Nobody without the
//! key can read a code or forge one. Single use is the token service's job:
//! it records each redeemed code id and refuses (and revokes) a replay.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a code may be redeemed after it is issued.
pub const CODE_TTL_MS: i64 = 60_000;
const PREFIX: &str = "ghc_";
const AAD: &[u8] = b"gatehouse.oauth.authorization_code.v1";
const NONCE_LEN: usize = 12;
/// Longest code accepted for opening (a code is a few hundred bytes).
const MAX_LEN: usize = 8 * 1024;

/// Everything the token service needs to redeem a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationCode {
    /// Random; the token service records it to refuse a second redemption.
    pub id: String,
    pub instance_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    /// Whether the authorization request named the redirect URI (then the
    /// token request must repeat it, RFC 6749 §4.1.3).
    pub redirect_uri_in_request: bool,
    /// S256 challenge; `None` only for confidential clients that sent none.
    pub code_challenge: Option<String>,
    /// Space-separated granted scopes.
    pub scope: String,
    /// RFC 8707 resource the tokens are for (their audience).
    pub resource: Option<String>,
    /// OpenID Connect nonce, echoed into an ID token.
    pub nonce: Option<String>,
    /// When the user signed in (ms), the ID token's `auth_time`; 0 in codes
    /// sealed before it was carried.
    #[serde(default)]
    pub auth_time_ms: i64,
    pub expires_at_ms: i64,
}

/// Seals and opens codes with the deployment's code key, and encrypts
/// secrets kept at rest (signing keys) under a second key derived from the
/// same secret.
#[derive(Clone)]
pub struct CodeSealer {
    cipher: Aes256Gcm,
    at_rest: Aes256Gcm,
}

const AT_REST_PREFIX: &str = "ghenc1:";

impl std::fmt::Debug for CodeSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeSealer(..)")
    }
}

/// Shortest accepted `--oauth-code-secret`.
pub const MIN_SECRET_LEN: usize = 32;

impl CodeSealer {
    /// The key is SHA-256 of a domain label and the configured secret, so
    /// any long random string works as the secret.
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the OAuth code secret must be at least {MIN_SECRET_LEN} characters"
            ));
        }
        let derive = |label: &[u8]| {
            let mut h = Sha256::new();
            h.update(label);
            h.update(secret.as_bytes());
            let key: [u8; 32] = h.finalize().into();
            Aes256Gcm::new_from_slice(&key).map_err(|e| e.to_string())
        };
        Ok(Self {
            cipher: derive(b"gatehouse oauth code key\0")?,
            at_rest: derive(b"gatehouse secrets at rest key\0")?,
        })
    }

    /// Encrypts a secret to store (`ghenc1:` + base64url of nonce and
    /// ciphertext); `context` (a key id, say) is bound to it, so a stored
    /// value cannot be moved to another row.
    pub fn encrypt_at_rest(&self, plain: &str, context: &str) -> String {
        let sealed = seal_with(&self.at_rest, plain.as_bytes(), context.as_bytes());
        format!("{AT_REST_PREFIX}{sealed}")
    }

    /// The secret [`CodeSealer::encrypt_at_rest`] stored for `context`;
    /// `None` when it was encrypted under another secret or altered. A value
    /// without the prefix was stored before encryption and is returned as is.
    pub fn decrypt_at_rest(&self, stored: &str, context: &str) -> Option<String> {
        let Some(encoded) = stored.strip_prefix(AT_REST_PREFIX) else {
            return Some(stored.to_owned());
        };
        String::from_utf8(open_with(&self.at_rest, encoded, context.as_bytes())?).ok()
    }

    pub fn seal(&self, code: &AuthorizationCode) -> String {
        // Serialising a struct of strings and integers cannot fail.
        let plain = serde_json::to_vec(code).unwrap_or_default();
        format!("{PREFIX}{}", seal_with(&self.cipher, &plain, AAD))
    }

    /// The code's contents if it was sealed with this key and not altered.
    /// Expiry is the caller's to check (it knows the clock).
    pub fn open(&self, code: &str) -> Option<AuthorizationCode> {
        if code.len() > MAX_LEN {
            return None;
        }
        let plain = open_with(&self.cipher, code.strip_prefix(PREFIX)?, AAD)?;
        serde_json::from_slice(&plain).ok()
    }
}

/// base64url of a fresh nonce and the AES-GCM ciphertext of `plain`.
fn seal_with(cipher: &Aes256Gcm, plain: &[u8], aad: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .unwrap_or_default();
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What [`seal_with`] sealed, if the key and `aad` match and nothing changed.
fn open_with(cipher: &Aes256Gcm, encoded: &str, aad: &[u8]) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    if bytes.len() <= NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> AuthorizationCode {
        AuthorizationCode {
            id: "c1".into(),
            instance_id: "ins_1".into(),
            client_id: "client".into(),
            user_id: "user_1".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_uri_in_request: true,
            code_challenge: Some("x".repeat(43)),
            scope: "openid email".into(),
            resource: None,
            nonce: None,
            auth_time_ms: 1,
            expires_at_ms: 2,
        }
    }

    #[test]
    fn sealed_codes_open_only_with_their_key_and_unaltered() {
        let a = CodeSealer::from_secret(&"a".repeat(32)).unwrap();
        let b = CodeSealer::from_secret(&"b".repeat(32)).unwrap();
        let sealed = a.seal(&code());
        assert!(sealed.starts_with("ghc_"));
        assert_eq!(a.open(&sealed), Some(code()));
        assert_eq!(b.open(&sealed), None);
        // Two seals of the same code differ (fresh nonce).
        assert_ne!(a.seal(&code()), sealed);
        // Any flipped character is refused.
        let mut chars: Vec<char> = sealed.chars().collect();
        let i = chars.len() - 5;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert_eq!(a.open(&tampered), None);
        for junk in ["", "ghc_", "ghc_!!", "nope", &"ghc_A".repeat(3000)] {
            assert_eq!(a.open(junk), None, "{junk}");
        }
        assert!(CodeSealer::from_secret("short").is_err());
    }

    #[test]
    fn secrets_at_rest_open_only_with_their_secret_and_context() {
        let a = CodeSealer::from_secret("a-secret-that-is-long-enough-0123456789").unwrap();
        let b = CodeSealer::from_secret("another-secret-long-enough-0123456789ab").unwrap();
        let stored = a.encrypt_at_rest("-----BEGIN PRIVATE KEY-----", "kid-1");
        assert!(stored.starts_with("ghenc1:") && !stored.contains("PRIVATE"));
        assert_eq!(
            a.decrypt_at_rest(&stored, "kid-1").as_deref(),
            Some("-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(a.decrypt_at_rest(&stored, "kid-2"), None);
        assert_eq!(b.decrypt_at_rest(&stored, "kid-1"), None);
        assert_eq!(
            a.decrypt_at_rest("legacy pem", "kid-1").as_deref(),
            Some("legacy pem")
        );
        assert_eq!(a.decrypt_at_rest("ghenc1:!!", "kid-1"), None);
    }
}
