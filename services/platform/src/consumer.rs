//! Idempotent consumers. Each event is applied in one transaction together
//! with a row in `platform_processed_events(consumer, event_id)`; a replayed
//! event finds its row and changes nothing. Offsets are committed to the bus
//! only after the batch is applied, so a crash re-delivers, never skips.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_proto::v1::Envelope;
use prost::Message;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};

use crate::bus::{Delivery, SharedBus};
use crate::clock::SharedClock;
use crate::db;
use crate::metrics::Metrics;

#[async_trait]
pub trait Projection: Send + Sync {
    /// Consumer group and dedupe key; stable across releases.
    fn name(&self) -> &'static str;
    fn topics(&self) -> &'static [&'static str];
    /// Applies one event; runs inside the consumer's transaction.
    async fn apply(&self, txn: &DatabaseTransaction, event: &Envelope) -> Result<(), DbErr>;
    /// Empties the read model, before a rebuild replays every event.
    async fn reset(&self, txn: &DatabaseTransaction) -> Result<(), DbErr>;
}

/// The consumer group of a projection at a generation: generation 0 is the
/// bare name; each rebuild moves to a new group that starts from the
/// beginning of the topics.
pub fn group_name(name: &str, generation: i64) -> String {
    if generation == 0 {
        name.to_owned()
    } else {
        format!("{name}.g{generation}")
    }
}

pub async fn generation(db: &impl sea_orm::ConnectionTrait, name: &str) -> Result<i64, DbErr> {
    Ok(
        match db::query_one(
            db,
            "SELECT generation FROM platform_consumer_generations WHERE consumer = $1",
            vec![name.into()],
        )
        .await?
        {
            Some(r) => db::col(&r, "generation")?,
            None => 0,
        },
    )
}

/// Rebuilds a consumer projection: empties it, forgets which events it
/// processed, and moves it to a new consumer group, so every running
/// consumer of it re-subscribes and replays its topics from the beginning
/// (within seconds; the topics must retain every event, see
/// docs/operations.md). Returns the new generation.
pub async fn rebuild(db: &DatabaseConnection, projection: &dyn Projection) -> Result<i64, DbErr> {
    let name = projection.name();
    let txn = db::begin_write(db).await?;
    projection.reset(&txn).await?;
    db::exec(
        &txn,
        "DELETE FROM platform_processed_events WHERE consumer = $1",
        vec![name.into()],
    )
    .await?;
    db::exec(
        &txn,
        "INSERT INTO platform_consumer_generations (consumer, generation) VALUES ($1, 1) \
         ON CONFLICT (consumer) DO UPDATE SET generation = platform_consumer_generations.generation + 1",
        vec![name.into()],
    )
    .await?;
    let g = generation(&txn, name).await?;
    txn.commit().await?;
    Ok(g)
}

pub struct ConsumerRunner {
    pub projection: Arc<dyn Projection>,
    pub db: DatabaseConnection,
    pub bus: SharedBus,
    pub clock: SharedClock,
    pub metrics: Metrics,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Undecodable,
}

impl ConsumerRunner {
    /// A runner of `projection` on the platform's database, bus and clock.
    pub fn new(platform: &crate::Platform, projection: Arc<dyn Projection>) -> Self {
        Self {
            projection,
            db: platform.db().clone(),
            bus: platform.bus().clone(),
            clock: platform.clock().clone(),
            metrics: platform.metrics().clone(),
        }
    }

    /// Applies one delivery exactly once (per consumer), whatever the number
    /// of times it is delivered.
    pub async fn handle(&self, delivery: &Delivery) -> Result<Outcome, DbErr> {
        let name = self.projection.name();
        let Ok(envelope) = Envelope::decode(delivery.payload.as_slice()) else {
            tracing::error!(consumer = name, topic = %delivery.topic, offset = delivery.offset,
                "undecodable record skipped");
            return Ok(Outcome::Undecodable);
        };
        let txn = db::begin_write(&self.db).await?;
        let inserted = db::exec(
            &txn,
            "INSERT INTO platform_processed_events (consumer, event_id, processed_at) \
             VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING",
            vec![
                name.into(),
                envelope.event_id.clone().into(),
                self.clock.now_ms().into(),
            ],
        )
        .await?;
        if inserted == 0 {
            txn.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        self.projection.apply(&txn, &envelope).await?;
        txn.commit().await?;
        let lag = (self.clock.now_ms() - envelope.occurred_at_ms).max(0) as f64 / 1000.0;
        self.metrics
            .consumer_lag_seconds
            .with_label_values(&[name])
            .set(lag);
        Ok(Outcome::Applied)
    }

    pub async fn run(self) {
        let name = self.projection.name();
        let mut backoff = Duration::from_millis(200);
        loop {
            let current = match generation(&self.db, name).await {
                Ok(g) => g,
                Err(err) => {
                    tracing::warn!(consumer = name, error = %err, "cannot read the consumer generation; retrying");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let mut checked = std::time::Instant::now();
            let group = group_name(name, current);
            let mut sub = match self.bus.subscribe(&group, self.projection.topics()).await {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(consumer = name, error = %err, "subscribe failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                let batch = match sub.next_batch(500, Duration::from_millis(500)).await {
                    Ok(b) => b,
                    Err(err) => {
                        tracing::warn!(consumer = name, error = %err, "receive failed");
                        tokio::time::sleep(backoff).await;
                        break;
                    }
                };
                // A rebuild moves the projection to a new group: follow it.
                if checked.elapsed() > Duration::from_secs(2) {
                    checked = std::time::Instant::now();
                    if generation(&self.db, name).await.is_ok_and(|g| g != current) {
                        tracing::info!(
                            consumer = name,
                            "projection rebuilt elsewhere; replaying from the start"
                        );
                        break;
                    }
                }
                if batch.is_empty() {
                    self.metrics
                        .consumer_lag_seconds
                        .with_label_values(&[name])
                        .set(0.0);
                    continue;
                }
                let mut done = Vec::with_capacity(batch.len());
                let mut failed = false;
                for d in &batch {
                    match self.handle(d).await {
                        Ok(outcome) => {
                            let label = match outcome {
                                Outcome::Applied => "applied",
                                Outcome::Duplicate => "duplicate",
                                Outcome::Undecodable => "undecodable",
                            };
                            self.metrics
                                .consumer_processed
                                .with_label_values(&[name, label])
                                .inc();
                            done.push(d.clone());
                        }
                        Err(err) => {
                            tracing::warn!(consumer = name, error = %err, "apply failed; will re-read");
                            failed = true;
                            break;
                        }
                    }
                }
                if let Err(err) = sub.commit(&done).await {
                    tracing::warn!(consumer = name, error = %err, "offset commit failed");
                }
                if failed {
                    // Re-subscribe so the bus hands us the unprocessed rest again.
                    tokio::time::sleep(backoff).await;
                    break;
                }
                backoff = Duration::from_millis(200);
            }
        }
    }
}
