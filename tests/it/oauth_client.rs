//! A standard OAuth / OpenID Connect client library, not our code:
//! `openid-client` (npm, unmodified; the test command installs it) performs
//! discovery → dynamic registration → authorize (sign-up and consent posted
//! as a browser would) → token exchange with its own checks of `iss`, PKCE
//! and the ID token → userinfo → refresh → revocation, in both shapes.

use crate::common;

use crate::common::{Gatehouse, Mode};

async fn library_flow(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    g.enable_registration(&t.dev.key).await;
    let issuer = g.url(&format!("/i/{}", t.dev.id));
    common::run_node(
        "oauth-client",
        "flow.mjs",
        &[("GATEHOUSE_ISSUER", issuer.as_str())],
    );
}

#[tokio::test]
async fn openid_client_against_embedded() {
    library_flow(Mode::Embedded).await;
}

#[tokio::test]
async fn openid_client_against_production_shape() {
    library_flow(Mode::Production).await;
}
