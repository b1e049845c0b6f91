//! The webhooks service. This slice brings its endpoints: an event-sourced
//! aggregate per endpoint (stream type `webhook_endpoint`, in
//! `webhooks_events`, published on `gatehouse.webhooks`), the Backend API
//! under `/v1/webhooks/endpoints`, signing secrets (`whsec_…`, encrypted at
//! rest, the previous one signing alongside for 24 h after a rotation) and
//! the URL rules that keep deliveries off private networks. Fan-out and
//! delivery come next.
//!
//! Like every service it depends only on `gatehouse-platform` and
//! `gatehouse-proto`.

pub mod api;
pub mod catalog;
pub mod dispatch;
pub mod endpoints;
pub mod fanout;
pub mod history;
pub mod urls;

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
    // Several claim loops share the queue (SKIP LOCKED keeps them apart), so
    // one slow batch does not hold up the next.
    for n in 0..dispatch::LOOPS {
        let dispatcher = dispatch::Dispatcher::new(platform.clone(), n == 0);
        workers.push(("webhooks.dispatch", Box::pin(dispatcher.run())));
    }
    workers
}

pub const PROJECTIONS: &[&str] = &["webhook_endpoints"];

pub async fn rebuild(db: &DatabaseConnection, projection: &str) -> Result<Option<u64>, DbErr> {
    match projection {
        "webhook_endpoints" => endpoints::rebuild(db).await.map(Some),
        _ => Ok(None),
    }
}
