//! The official `@clerk/backend` SDK, unmodified, against a running Gatehouse
//! in both shapes (the test command installs the npm package).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Gatehouse, Mode};

async fn sdk_drives_the_users_api(mode: Mode) {
    let g = Gatehouse::start(mode).await;
    let t = g.tenant().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clerk-sdk");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/@clerk/backend")
            .exists(),
        "run `npm ci` in tests/e2e/clerk-sdk (scripts/test.sh does)"
    );
    for script in ["users.mjs", "oauth_applications.mjs", "access_tokens.mjs"] {
        let out = Command::new("node")
            .arg(script)
            .current_dir(dir)
            .env("GATEHOUSE_URL", &g.base)
            .env("GATEHOUSE_SECRET_KEY", &t.dev.key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("{\"ok\":true}"),
            "SDK run of {script} failed\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
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
