//! Passwords: argon2id hashes (PHC strings) in `authz_passwords`. Hashes never
//! enter events, so they never reach the bus; events only say whether a user
//! has a password.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use gatehouse_platform::db;
use gatehouse_platform::{ApiError, ApiResult};
use sea_orm::{ConnectionTrait, DbErr};

/// Hashes on the blocking pool: argon2id is deliberately slow.
pub async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        // 16 bytes from the thread-local CSPRNG (seeded from the OS).
        let salt =
            SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(ApiError::internal)?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub async fn store(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<(), DbErr> {
    db::exec(
        conn,
        "INSERT INTO authz_passwords (user_id, instance_id, hash, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET hash = $3, updated_at = $4",
        vec![user_id.into(), instance_id.into(), hash.into(), now.into()],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery".into())
            .await
            .ok()
            .unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong", &h));
        assert!(!verify("x", "not a phc string"));
    }
}
