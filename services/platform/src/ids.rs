//! Prefixed, typed identifiers (`user_…`, `ins_…`): one newtype per kind so an
//! id of one kind can never be passed where another is expected. The body is a
//! UUIDv7 in base62, so ids sort by creation time and carry 122 random bits.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Encodes a 128-bit value as 22 base62 characters (fixed width keeps order).
pub fn base62_u128(mut n: u128) -> String {
    let mut out = [b'0'; 22];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// A fresh time-ordered identifier with the given prefix, e.g. `user_0Ab…`.
pub fn new_prefixed(prefix: &str) -> String {
    format!("{prefix}_{}", base62_u128(uuid::Uuid::now_v7().as_u128()))
}

/// A random string of `len` base62 characters from the OS CSPRNG.
pub fn random_base62(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..62)] as char)
        .collect()
}

fn is_valid(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| body.len() == 22 && body.bytes().all(|b| b.is_ascii_alphanumeric()))
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                Self(new_prefixed($prefix))
            }

            /// Accepts only well-formed ids of this kind.
            pub fn parse(s: &str) -> Option<Self> {
                is_valid($prefix, s).then(|| Self(s.to_owned()))
            }

            /// Wraps a value read back from our own storage.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(
    /// A tenant: a customer of the platform.
    TenantId, "tnt");
typed_id!(
    /// An instance: the unit of isolation (development or production).
    InstanceId, "ins");
typed_id!(
    /// An instance secret key's id (never the key itself).
    SecretKeyId, "ak");
typed_id!(
    /// An end user of an instance.
    UserId, "user");
typed_id!(
    /// An email address of a user.
    EmailAddressId, "idn");
typed_id!(
    /// An OAuth application of an instance.
    OAuthApplicationId, "oa");
typed_id!(
    /// A signed-in session of a user.
    SessionId, "sess");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_fixed_width() {
        let id = UserId::new();
        assert!(id.as_str().starts_with("user_"));
        assert_eq!(id.as_str().len(), "user_".len() + 22);
        assert_eq!(UserId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn parse_rejects_other_kinds_and_garbage() {
        let ins = InstanceId::new();
        assert!(UserId::parse(ins.as_str()).is_none());
        assert!(UserId::parse("user_").is_none());
        assert!(UserId::parse("user_../../etc/passwd000000").is_none());
        assert!(UserId::parse("").is_none());
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = UserId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = UserId::new();
        assert!(a < b);
    }

    #[test]
    fn base62_is_fixed_width_and_ordered() {
        assert_eq!(base62_u128(0).len(), 22);
        assert_eq!(base62_u128(u128::MAX).len(), 22);
        assert!(base62_u128(61) < base62_u128(62));
    }
}
