//! The official `@clerk/backend` SDK, unmodified, against a running Gatehouse
//! in both shapes (the test command installs the npm package).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Gatehouse, Mode};

async fn sdk_drives_the_users_api(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    for script in ["users.mjs", "oauth_applications.mjs", "access_tokens.mjs"] {
        common::run_node(
            "clerk-sdk",
            script,
            &[
                ("GATEHOUSE_URL", g.base.as_str()),
                ("GATEHOUSE_SECRET_KEY", t.dev.key.as_str()),
            ],
        );
    }
}

#[tokio::test]
async fn clerk_sdk_against_embedded() {
    sdk_drives_the_users_api(Mode::Embedded).await;
}

#[tokio::test]
async fn clerk_sdk_against_production_shape() {
    sdk_drives_the_users_api(Mode::Production).await;
}
