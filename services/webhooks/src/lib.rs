//! The webhooks service: endpoints as an event-sourced aggregate (stream
//! type `webhook_endpoint`, in `webhooks_events`, published on
//! `gatehouse.webhooks`) with the Backend API under `/v1/webhooks/endpoints`
//! and signing secrets (`whsec_…`, encrypted at rest, the previous one
//! signing alongside for 24 h after a rotation); the event catalog; the
//! fan-out consumer that queues a delivery per public event and matching
//! endpoint; the dispatcher that sends them with retries; and the history
//! (messages, attempts, resend, replay).
//!
//! Like every service it depends only on `gatehouse-platform` and
//! `gatehouse-proto`.

pub mod api;
pub mod catalog;
pub mod dispatch;
pub mod endpoints;
pub mod fanout;
pub mod history;
mod openapi;
pub mod urls;

pub use openapi::openapi;

use std::sync::Arc;

use actix_web::web;
use gatehouse_platform::bus::topics;
use gatehouse_platform::consumer::ConsumerRunner;
use gatehouse_platform::eventstore::EventStore;
use gatehouse_platform::outbox::OutboxPublisher;
use gatehouse_platform::{Platform, Worker};
use sea_orm::{DatabaseConnection, DbErr};

pub const SERVICE: &str = "webhooks";
pub const STORE: EventStore = EventStore::new(SERVICE, "webhooks_events");

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Before the endpoints scope, which would take these paths.
    history::configure(cfg);
    api::configure(cfg);
}

/// Background tasks: the outbox of `webhooks_events`, the fan-out consumer
/// and the dispatcher.
pub fn workers(platform: &Platform) -> Vec<(&'static str, Worker)> {
    let publisher = OutboxPublisher {
        store: STORE,
        topic_for: |_| topics::WEBHOOKS,
        db: platform.db().clone(),
        bus: platform.bus().clone(),
        clock: platform.clock().clone(),
        metrics: platform.metrics().clone(),
        appended: platform.appended_signal(),
    };
    let fanout = ConsumerRunner::new(
        platform,
        Arc::new(fanout::FanOut {
            platform: platform.clone(),
        }),
    );
    let mut workers: Vec<(&'static str, Worker)> = vec![
        ("webhooks.outbox", Box::pin(publisher.run())),
        (fanout::NAME, Box::pin(fanout.run())),
    ];
    let dispatcher = dispatch::Dispatcher::new(platform.clone());
    workers.push(("webhooks.dispatch", Box::pin(dispatcher.run())));
    workers
}

pub const PROJECTIONS: &[&str] = &["webhook_endpoints"];

pub async fn rebuild(db: &DatabaseConnection, projection: &str) -> Result<Option<u64>, DbErr> {
    match projection {
        "webhook_endpoints" => endpoints::rebuild(db).await.map(Some),
        _ => Ok(None),
    }
}
