//! Idempotent consumers. Each event is applied in the same transaction as
//! its row in `platform_processed_events(consumer, event_id)`; a replayed
//! event finds its row and changes nothing. Events received together are
//! applied together, up to [`CHUNK`] in one transaction (one statement
//! claims their rows, one commit for all); if that fails they are applied
//! one by one, so the events before a failing one still land. Offsets are
//! committed to the bus only after the batch is applied, so a crash
//! re-delivers, never skips.

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

/// Events applied in one transaction at most.
pub const CHUNK: usize = 100;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Applies consecutive deliveries in one transaction, each exactly once
    /// (per consumer): one statement records which events are new here,
    /// then the new ones are applied in order.
    pub async fn handle_chunk(&self, chunk: &[Delivery]) -> Result<Vec<Outcome>, DbErr> {
        let name = self.projection.name();
        let envelopes: Vec<Option<Envelope>> = chunk
            .iter()
            .map(|d| {
                let e = Envelope::decode(d.payload.as_slice()).ok();
                if e.is_none() {
                    tracing::error!(consumer = name, topic = %d.topic, offset = d.offset,
                        "undecodable record skipped");
                }
                e
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<&str> = envelopes
            .iter()
            .flatten()
            .map(|e| e.event_id.as_str())
            .filter(|id| seen.insert(*id))
            .collect();
        if ids.is_empty() {
            return Ok(vec![Outcome::Undecodable; chunk.len()]);
        }
        let txn = db::begin_write(&self.db).await?;
        let mut values: Vec<sea_orm::Value> = vec![name.into(), self.clock.now_ms().into()];
        let rows: Vec<String> = ids
            .iter()
            .map(|id| {
                values.push((*id).into());
                format!("($1, ${}, $2)", values.len())
            })
            .collect();
        let mut fresh = std::collections::HashSet::new();
        for r in db::query_all(
            &txn,
            &format!(
                "INSERT INTO platform_processed_events (consumer, event_id, processed_at) \
                 VALUES {} ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
                rows.join(", ")
            ),
            values,
        )
        .await?
        {
            fresh.insert(db::col::<String>(&r, "event_id")?);
        }
        let mut outcomes = Vec::with_capacity(chunk.len());
        let mut newest = None;
        for e in &envelopes {
            outcomes.push(match e {
                None => Outcome::Undecodable,
                Some(e) if fresh.remove(&e.event_id) => {
                    self.projection.apply(&txn, e).await?;
                    newest = Some(e.occurred_at_ms);
                    Outcome::Applied
                }
                Some(_) => Outcome::Duplicate,
            });
        }
        txn.commit().await?;
        if let Some(at) = newest {
            let lag = (self.clock.now_ms() - at).max(0) as f64 / 1000.0;
            self.metrics
                .consumer_lag_seconds
                .with_label_values(&[name])
                .set(lag);
        }
        Ok(outcomes)
    }

    fn count(&self, outcome: Outcome) {
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Undecodable => "undecodable",
        };
        self.metrics
            .consumer_processed
            .with_label_values(&[self.projection.name(), label])
            .inc();
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
            let mut checked = crate::clock::monotonic();
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
                    checked = crate::clock::monotonic();
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
                'chunks: for chunk in batch.chunks(CHUNK) {
                    match self.handle_chunk(chunk).await {
                        Ok(outcomes) => {
                            outcomes.into_iter().for_each(|o| self.count(o));
                            done.extend_from_slice(chunk);
                            continue;
                        }
                        Err(err) => {
                            tracing::debug!(consumer = name, error = %err, "chunk failed; applying its events one by one");
                        }
                    }
                    for d in chunk {
                        match self.handle_chunk(std::slice::from_ref(d)).await {
                            Ok(outcomes) => {
                                outcomes.into_iter().for_each(|o| self.count(o));
                                done.push(d.clone());
                            }
                            Err(err) => {
                                tracing::warn!(consumer = name, error = %err, "apply failed; will re-read");
                                failed = true;
                                break 'chunks;
                            }
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
