//! The one library every Gatehouse service uses. Services depend on this
//! crate and on `gatehouse-proto` only; they never call each other's code.

pub mod aggregate;
pub mod bus;
pub mod client_metadata;
pub mod clock;
pub mod consumer;
pub mod db;
pub mod error;
pub mod eventstore;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod metrics;
pub mod oauth;
pub mod oauth_code;
pub mod openapi;
pub mod outbox;
pub mod ratelimit;
pub mod tenancy;
pub mod wire;

mod context;

pub use context::{Platform, Settings, connect_redis};
pub use error::{ApiError, ApiResult};

use std::future::Future;
use std::pin::Pin;

/// A background task a process runs for as long as it lives.
pub type Worker = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The platform's own background tasks, run by every service process: the
/// tenancy outbox publisher and the instance-usage consumer.
pub fn workers(platform: &Platform) -> Vec<(&'static str, Worker)> {
    let publisher = outbox::OutboxPublisher {
        store: tenancy::STORE,
        topic_for: |_| bus::topics::TENANCY,
        db: platform.db().clone(),
        bus: platform.bus().clone(),
        clock: platform.clock().clone(),
        metrics: platform.metrics().clone(),
        appended: platform.appended_signal(),
    };
    let usage =
        consumer::ConsumerRunner::new(platform, std::sync::Arc::new(tenancy::usage::InstanceUsage));
    vec![
        ("tenancy.outbox", Box::pin(publisher.run())),
        (tenancy::usage::NAME, Box::pin(usage.run())),
    ]
}
