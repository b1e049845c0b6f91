//! Signing and local verification of access tokens as Gatehouse makes them
//! (RFC 9068 claims, `at+jwt`), ES256 against RS256, with the library,
//! backend and signer (keys parsed once) the token service uses.
//! `cargo bench -p gatehouse-tokens`.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

fn claims() -> Value {
    json!({
        "iss": "https://auth.example.com/i/ins_0352mGnX0xkVjXAn06w17p",
        "sub": "user_0352mGnX0xkVjXAn06w17p",
        "aud": "https://mcp.example.com/mcp",
        "client_id": "3fJ9kQ2mZ8xR1vT6yB4nW7cD",
        "scope": "openid email files:read",
        "jti": "Yq8Zt3Lm0Pw6Rn2Vx9Kc4d",
        "iat": 1_795_000_000,
        "exp": 4_102_444_800_i64,
    })
}

fn keys(alg: Algorithm) -> (Header, EncodingKey, DecodingKey) {
    let (kid, pem, jwk) = gatehouse_tokens::keys::generate(alg).unwrap();
    let encoding = gatehouse_tokens::keys::encoding_key(alg, &pem).unwrap();
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    (header, encoding, DecodingKey::from_jwk(&jwk).unwrap())
}

fn jwt(c: &mut Criterion) {
    gatehouse_tokens::keys::install_signer();
    let claims = claims();
    for (name, alg) in [("ES256", Algorithm::ES256), ("RS256", Algorithm::RS256)] {
        let (header, encoding, decoding) = keys(alg);
        let mut validation = Validation::new(alg);
        validation.set_audience(&["https://mcp.example.com/mcp"]);
        validation.set_issuer(&["https://auth.example.com/i/ins_0352mGnX0xkVjXAn06w17p"]);
        let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        c.bench_function(&format!("sign {name}"), |b| {
            b.iter(|| jsonwebtoken::encode(&header, &claims, &encoding).unwrap())
        });
        c.bench_function(&format!("verify {name}"), |b| {
            b.iter(|| jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap())
        });
    }
}

criterion_group!(benches, jwt);
criterion_main!(benches);
