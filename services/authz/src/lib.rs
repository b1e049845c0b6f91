//! The authorization service: users (a Backend API wire-compatible with
//! Clerk's), hosted sign-in and sessions, OAuth applications and custom
//! scopes, dynamic client registration and metadata documents, the
//! authorization endpoint with consent, and grants.
//!
//! Like every service it exposes `configure` for its routes, `workers` for
//! its background tasks, and `rebuild` for its projections, and depends only
//! on `gatehouse-platform` and `gatehouse-proto`.

pub mod authorize;
pub mod hosted;
pub mod metadata;
pub mod oauth_apps;
pub mod users;

use actix_web::web;
use gatehouse_platform::bus::topics;
use gatehouse_platform::outbox::OutboxPublisher;
use gatehouse_platform::{Platform, Worker};
use sea_orm::{DatabaseConnection, DbErr};

pub const SERVICE: &str = "authz";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Before the users scope: it adds paths under /v1/users.
    authorize::configure(cfg);
    users::api::configure(cfg);
    oauth_apps::api::configure(cfg);
    oauth_apps::scopes::configure(cfg);
    oauth_apps::registration::configure(cfg);
    hosted::pages::configure(cfg);
    metadata::configure(cfg);
}

/// The authorization service's part of the published OpenAPI document:
/// every route `configure` mounts.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = users::api::openapi();
    for part in [
        authorize::api::openapi(),
        authorize::openapi(),
        oauth_apps::api::openapi(),
        oauth_apps::scopes::openapi(),
        oauth_apps::registration::openapi(),
        hosted::pages::openapi(),
        metadata::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

fn topic_for(stream_type: &str) -> &'static str {
    match stream_type {
        gatehouse_proto::stream_types::SESSION => topics::IDENTITY,
        gatehouse_proto::stream_types::OAUTH_APPLICATION
        | gatehouse_proto::stream_types::OAUTH_SCOPES
        | gatehouse_proto::stream_types::OAUTH_SETTINGS
        | gatehouse_proto::stream_types::OAUTH_GRANT => topics::OAUTH,
        _ => topics::IDENTITY,
    }
}

/// Background tasks of this service: the outbox publisher of its event store.
pub fn workers(platform: &Platform) -> Vec<(&'static str, Worker)> {
    let publisher = OutboxPublisher {
        store: users::STORE,
        topic_for,
        db: platform.db().clone(),
        bus: platform.bus().clone(),
        clock: platform.clock().clone(),
        metrics: platform.metrics().clone(),
        appended: platform.appended_signal(),
    };
    vec![("authz.outbox", Box::pin(publisher.run()))]
}

/// Projections `gatehouse rebuild` can rebuild for this service.
pub const PROJECTIONS: &[&str] = &[
    "users",
    "sessions",
    "oauth_applications",
    "oauth_scopes",
    "oauth_settings",
    "oauth_grants",
];

pub async fn rebuild(db: &DatabaseConnection, projection: &str) -> Result<Option<u64>, DbErr> {
    match projection {
        "users" => users::projection::rebuild(db).await.map(Some),
        "sessions" => hosted::sessions::rebuild(db).await.map(Some),
        "oauth_applications" => oauth_apps::projection::rebuild(db).await.map(Some),
        "oauth_scopes" => oauth_apps::scopes::rebuild(db).await.map(Some),
        "oauth_settings" => oauth_apps::registration::rebuild_settings(db)
            .await
            .map(Some),
        "oauth_grants" => authorize::grants::rebuild(db).await.map(Some),
        _ => Ok(None),
    }
}
