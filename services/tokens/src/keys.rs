//! Per-instance signing keys: RS256 (2048-bit) by default, since the
//! official Clerk SDK verifies only RS256/384/512 locally; ES256 (P-256) on
//! request, through the admin API's rotation.
//! One active key per instance signs; retired keys stay in the JWKS until
//! every token they signed has expired. The key id is the RFC 7638
//! thumbprint of the public key.
//!
//! Keys are created on first use. Each process caches the active key per
//! instance for a short time, the published JWKS for a shorter one, and
//! verification keys by id while they are in use (a key id never changes
//! meaning); each cache is bounded.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use gatehouse_platform::db::{self, col};
use gatehouse_platform::oauth_code::CodeSealer;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand::RngCore;
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::Value;

use crate::ACCESS_TOKEN_TTL_MS;

/// How long a process trusts its cached active key before looking again
/// (rotation elsewhere takes effect within this).
const ACTIVE_TTL: Duration = Duration::from_secs(30);

pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
}

pub struct VerifyingKey {
    pub instance_id: String,
    pub alg: Algorithm,
    pub decoding: DecodingKey,
}

/// Instances (active keys) and key ids (verification keys) a process keeps
/// at most.
const KEY_CACHE_CAPACITY: u64 = 10_000;
/// Active keys by instance.
static ACTIVE: LazyLock<moka::sync::Cache<String, Arc<SigningKey>>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(KEY_CACHE_CAPACITY)
        .time_to_live(ACTIVE_TTL)
        .build()
});
/// Verification keys by id; one unused for an hour is dropped (and read
/// again if a token signed by it comes back).
static VERIFYING: LazyLock<moka::sync::Cache<String, Arc<VerifyingKey>>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(KEY_CACHE_CAPACITY)
        .time_to_idle(Duration::from_secs(3600))
        .build()
});

/// Private keys parsed once, by their DER bytes. jsonwebtoken's own
/// signers parse the key on every signature (and validate it: most of an
/// RS256 signature's cost, about half of an ES256 one's); [`install_signer`]
/// makes ES256 and RS256 sign with a key from here instead.
static PARSED: LazyLock<moka::sync::Cache<Vec<u8>, Arc<Parsed>>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(KEY_CACHE_CAPACITY)
        .time_to_idle(Duration::from_secs(3600))
        .build()
});

enum Parsed {
    Ec(aws_lc_rs::signature::EcdsaKeyPair),
    Rsa(aws_lc_rs::signature::RsaKeyPair),
}

/// A [`JwtSigner`] over a parsed key.
struct ParsedSigner {
    alg: Algorithm,
    key: Arc<Parsed>,
}

impl jsonwebtoken::signature::Signer<Vec<u8>> for ParsedSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let failed = jsonwebtoken::signature::Error::from_source;
        match &*self.key {
            Parsed::Ec(pair) => Ok(pair.sign(&rng, msg).map_err(failed)?.as_ref().to_vec()),
            Parsed::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    msg,
                    &mut signature,
                )
                .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

impl JwtSigner for ParsedSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn parsed_signer(
    alg: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    use jsonwebtoken::errors::ErrorKind;
    let der = key.as_bytes();
    let parsed = match (alg, key.family()) {
        (Algorithm::ES256, AlgorithmFamily::Ec) => PARSED.try_get_with_by_ref(der, || {
            aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
            )
            .map(|pair| Arc::new(Parsed::Ec(pair)))
            .map_err(|_| ErrorKind::InvalidEcdsaKey)
        }),
        (Algorithm::RS256, AlgorithmFamily::Rsa) => PARSED.try_get_with_by_ref(der, || {
            aws_lc_rs::signature::RsaKeyPair::from_der(der)
                .map(|pair| Arc::new(Parsed::Rsa(pair)))
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))
        }),
        // Anything else (not a kind of key Gatehouse makes) as jsonwebtoken
        // signs it.
        _ => return (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory)(alg, key),
    };
    let key = parsed.map_err(|e| jsonwebtoken::errors::Error::from((*e).clone()))?;
    Ok(Box::new(ParsedSigner { alg: *alg, key }))
}

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| {
    let aws = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    CryptoProvider {
        signer_factory: parsed_signer,
        verifier_factory: aws.verifier_factory,
        key_utils: aws.key_utils.clone(),
    }
});

/// Makes jsonwebtoken sign ES256 and RS256 with keys parsed once (its
/// aws-lc-rs provider otherwise). Process-wide; call before the first
/// token is made or checked (later calls do nothing, and a process that
/// used jsonwebtoken before keeps its provider: only slower).
pub fn install_signer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

/// How long a process serves a JWKS document without reading the keys
/// again. Well under what clients may cache it for (`max-age=300`).
const JWKS_TTL: Duration = Duration::from_secs(5);
/// Documents a process keeps at most.
const JWKS_CACHE_CAPACITY: u64 = 10_000;
static JWKS: LazyLock<moka::sync::Cache<String, actix_web::web::Bytes>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(JWKS_CACHE_CAPACITY)
        .time_to_live(JWKS_TTL)
        .build()
});

fn err(e: impl std::fmt::Display) -> DbErr {
    DbErr::Custom(format!("signing key: {e}"))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        _ => "ES256",
    }
}

fn parse_alg(s: &str) -> Algorithm {
    if s == "RS256" {
        Algorithm::RS256
    } else {
        Algorithm::ES256
    }
}

/// A new key pair: (kid, private PEM, public JWK). Public for the signing
/// benchmark (`cargo bench -p gatehouse-tokens`).
pub fn generate(alg: Algorithm) -> Result<(String, String, Jwk), DbErr> {
    let pem = match alg {
        Algorithm::RS256 => {
            let mut rng = rsa::rand_core::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(err)?;
            rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, rsa::pkcs8::LineEnding::LF)
                .map_err(err)?
                .to_string()
        }
        _ => {
            let key = loop {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                    break k;
                }
            };
            key.to_pkcs8_pem(LineEnding::LF).map_err(err)?.to_string()
        }
    };
    let encoding = encoding_key(alg, &pem)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).map_err(err)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(err)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    Ok((kid, pem, jwk))
}

/// The signing key of a private PEM made by [`generate`].
pub fn encoding_key(alg: Algorithm, pem: &str) -> Result<EncodingKey, DbErr> {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    }
    .map_err(err)
}

/// Stores a new active key; `None` when another one became active first
/// (the unique index on active keys keeps one).
async fn insert(
    conn: &impl ConnectionTrait,
    sealer: &CodeSealer,
    instance_id: &str,
    alg: Algorithm,
    now_ms: i64,
) -> Result<Option<String>, DbErr> {
    // An RSA key takes from a few milliseconds to seconds to find: off
    // the async workers, whose other connections would stall meanwhile.
    let (kid, pem, jwk) = tokio::task::spawn_blocking(move || generate(alg))
        .await
        .map_err(err)??;
    let pem = sealer.encrypt_at_rest(&pem, &kid);
    let jwk = serde_json::to_string(&jwk).map_err(err)?;
    // Two processes may race to create an instance's first key: the unique
    // index on active keys keeps one.
    let stored = db::exec(
        conn,
        "INSERT INTO tokens_signing_keys (kid, instance_id, alg, private_pem, public_jwk, active, created_at) \
         VALUES ($1, $2, $3, $4, $5, TRUE, $6) ON CONFLICT DO NOTHING",
        vec![
            kid.clone().into(),
            instance_id.into(),
            alg_name(alg).into(),
            pem.into(),
            jwk.into(),
            now_ms.into(),
        ],
    )
    .await?;
    Ok((stored == 1).then_some(kid))
}

/// The active key, `Err(Unreadable)` inside when it is stored under
/// another secret.
async fn load_active(
    conn: &impl ConnectionTrait,
    sealer: &CodeSealer,
    instance_id: &str,
) -> Result<Option<Result<SigningKey, Unreadable>>, DbErr> {
    let Some(r) = db::query_one(
        conn,
        "SELECT kid, alg, private_pem FROM tokens_signing_keys WHERE instance_id = $1 AND active",
        vec![instance_id.into()],
    )
    .await?
    else {
        return Ok(None);
    };
    let alg = parse_alg(&col::<String>(&r, "alg")?);
    let kid: String = col(&r, "kid")?;
    let stored: String = col(&r, "private_pem")?;
    let Some(pem) = sealer.decrypt_at_rest(&stored, &kid) else {
        return Ok(Some(Err(Unreadable(kid))));
    };
    Ok(Some(Ok(SigningKey {
        encoding: encoding_key(alg, &pem)?,
        kid,
        alg,
    })))
}

/// What an instance's first key, and a rotation that names none, uses.
pub const DEFAULT_ALG: Algorithm = Algorithm::RS256;

/// An active key that cannot be decrypted with this deployment's secret.
struct Unreadable(String);

/// The instance's active signing key, created (RS256) if it has none. An
/// active key stored under a different `--oauth-code-secret` cannot sign:
/// issuing fails (logged) until the secret is fixed or the admin API
/// rotates the key; its tokens still verify (the public key is in clear).
pub async fn active(
    conn: &impl ConnectionTrait,
    sealer: &CodeSealer,
    instance_id: &str,
    now_ms: i64,
) -> Result<Arc<SigningKey>, DbErr> {
    if let Some(k) = ACTIVE.get(instance_id) {
        return Ok(k);
    }
    let key = match load_active(conn, sealer, instance_id).await? {
        Some(Ok(k)) => k,
        Some(Err(Unreadable(kid))) => {
            // Loud rather than self-healing: one replica with the wrong
            // secret must not rotate every instance's keys under the others.
            tracing::error!(
                instance_id,
                kid,
                "the active signing key cannot be decrypted with this process's \
                 --oauth-code-secret; fix the secret, or rotate the key through the admin API"
            );
            return Err(err("the active signing key cannot be decrypted"));
        }
        None => {
            insert(conn, sealer, instance_id, DEFAULT_ALG, now_ms).await?;
            match load_active(conn, sealer, instance_id).await? {
                Some(Ok(k)) => k,
                _ => return Err(err("no usable active key after creating one")),
            }
        }
    };
    let key = Arc::new(key);
    ACTIVE.insert(instance_id.to_owned(), key.clone());
    Ok(key)
}

/// Makes a new key (of `alg`) the instance's active one; the old one stays
/// published until its tokens have expired. Returns the new key id, or
/// `None` when a rotation running at the same time made its key active
/// first (PostgreSQL: this one's update did not see that key).
pub async fn rotate(
    conn: &impl ConnectionTrait,
    sealer: &CodeSealer,
    instance_id: &str,
    alg: Algorithm,
    now_ms: i64,
) -> Result<Option<String>, DbErr> {
    db::exec(
        conn,
        "UPDATE tokens_signing_keys SET active = FALSE, retired_at = $2 WHERE instance_id = $1 AND active",
        vec![instance_id.into(), now_ms.into()],
    )
    .await?;
    let kid = insert(conn, sealer, instance_id, alg, now_ms).await?;
    ACTIVE.invalidate(instance_id);
    JWKS.invalidate(instance_id);
    Ok(kid)
}

/// A JSON Web Key Set (RFC 7517 §5): the active signing key first, then
/// retired ones whose tokens may still be live.
// Served by `jwks_document`.
#[derive(utoipa::ToSchema)]
#[schema(as = Jwks)]
#[allow(dead_code)]
pub struct JwksSchema {
    keys: Vec<JsonWebKey>,
}

/// A public signing key: RSA (`n`, `e`) for RS256, P-256 (`crv`, `x`, `y`)
/// for ES256.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JsonWebKey {
    /// `RSA` or `EC`.
    #[schema(example = "RSA")]
    kty: String,
    /// The key's RFC 7638 SHA-256 thumbprint; the `kid` of the tokens it signs.
    kid: String,
    /// `RS256` or `ES256`.
    #[schema(example = "RS256")]
    alg: String,
    /// Always `sig`.
    #[schema(rename = "use", example = "sig")]
    use_: String,
    /// RSA modulus (base64url).
    #[schema(nullable = false)]
    n: Option<String>,
    /// RSA exponent (base64url).
    #[schema(nullable = false)]
    e: Option<String>,
    /// EC curve: `P-256`.
    #[schema(nullable = false)]
    crv: Option<String>,
    /// EC x coordinate (base64url).
    #[schema(nullable = false)]
    x: Option<String>,
    /// EC y coordinate (base64url).
    #[schema(nullable = false)]
    y: Option<String>,
}

/// The instance's JWKS document (`{"keys":[…]}`), serialized, making sure
/// it has a key to publish first; from a per-process cache of
/// [`JWKS_TTL`].
pub async fn jwks_document(
    conn: &impl ConnectionTrait,
    sealer: &CodeSealer,
    instance_id: &str,
    now_ms: i64,
) -> Result<actix_web::web::Bytes, DbErr> {
    if let Some(doc) = JWKS.get(instance_id) {
        return Ok(doc);
    }
    active(conn, sealer, instance_id, now_ms).await?;
    let keys = jwks(conn, instance_id, now_ms).await?;
    let doc = actix_web::web::Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).map_err(err)?,
    );
    JWKS.insert(instance_id.to_owned(), doc.clone());
    Ok(doc)
}

/// A verification key by id, with the instance it belongs to.
pub async fn verifying(
    conn: &impl ConnectionTrait,
    kid: &str,
) -> Result<Option<Arc<VerifyingKey>>, DbErr> {
    if let Some(k) = VERIFYING.get(kid) {
        return Ok(Some(k));
    }
    if kid.len() > 100 {
        return Ok(None);
    }
    let Some(r) = db::query_one(
        conn,
        "SELECT instance_id, alg, public_jwk FROM tokens_signing_keys WHERE kid = $1",
        vec![kid.into()],
    )
    .await?
    else {
        return Ok(None);
    };
    let jwk: Jwk = serde_json::from_str(&col::<String>(&r, "public_jwk")?).map_err(err)?;
    let key = Arc::new(VerifyingKey {
        instance_id: col(&r, "instance_id")?,
        alg: parse_alg(&col::<String>(&r, "alg")?),
        decoding: DecodingKey::from_jwk(&jwk).map_err(err)?,
    });
    VERIFYING.insert(kid.to_owned(), key.clone());
    Ok(Some(key))
}

/// The instance's published keys: the active one and those retired less
/// than a token lifetime ago.
pub async fn jwks(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    now_ms: i64,
) -> Result<Vec<Value>, DbErr> {
    db::query_all(
        conn,
        "SELECT public_jwk FROM tokens_signing_keys WHERE instance_id = $1 \
         AND (active OR retired_at > $2) ORDER BY active DESC, created_at DESC",
        vec![instance_id.into(), (now_ms - ACCESS_TOKEN_TTL_MS).into()],
    )
    .await?
    .iter()
    .map(|r| serde_json::from_str(&col::<String>(r, "public_jwk")?).map_err(err))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens signed through the installed provider use the parsed key and
    /// verify with the published JWK; a token of another key does not.
    #[test]
    fn installed_signer_signs_with_parsed_keys() {
        install_signer();
        let claims = serde_json::json!({"sub": "user_1", "exp": 4_102_444_800_i64});
        for alg in [Algorithm::ES256, Algorithm::RS256] {
            let (kid, pem, jwk) = generate(alg).unwrap();
            let (_, _, other) = generate(alg).unwrap();
            let encoding = encoding_key(alg, &pem).unwrap();
            let mut header = jsonwebtoken::Header::new(alg);
            header.kid = Some(kid);
            let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
            assert!(PARSED.contains_key(encoding.as_bytes()), "{alg:?}");
            let mut validation = jsonwebtoken::Validation::new(alg);
            validation.validate_aud = false;
            let ok = DecodingKey::from_jwk(&jwk).unwrap();
            let got = jsonwebtoken::decode::<Value>(&token, &ok, &validation).unwrap();
            assert_eq!(got.claims["sub"], "user_1");
            let wrong = DecodingKey::from_jwk(&other).unwrap();
            assert!(jsonwebtoken::decode::<Value>(&token, &wrong, &validation).is_err());
            // A second signature reuses the parsed key and still verifies.
            let again = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
            jsonwebtoken::decode::<Value>(&again, &ok, &validation).unwrap();
        }
    }
}
