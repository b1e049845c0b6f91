//! The outbox publisher: tails a service's event store in commit order and
//! produces each event to its topic (key = stream id), then stores the
//! checkpoint. Delivery is at-least-once: a crash between produce and
//! checkpoint re-sends a batch, which consumers drop by event id.
//!
//! Several replicas may run a publisher for the same store; on PostgreSQL
//! each round takes a transaction-scoped advisory lock named after the store,
//! so one batch is published by one replica at a time. An advisory lock does
//! not give the transaction an id, so the round does not hold back
//! `pg_snapshot_xmin` (and with it every tailer) while it talks to Kafka;
//! the id is taken only by the checkpoint update just before commit.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::Notify;

use crate::bus::{OutgoingRecord, SharedBus};
use crate::clock::SharedClock;
use crate::db::{self, col};
use crate::eventstore::{Checkpoint, EventStore, RecordedEvent};
use crate::metrics::Metrics;

const BATCH: u64 = 500;
/// Rounds start at least this far apart. Under a steady stream of commits
/// a round (a transaction of five statements and a produce) then carries
/// every event of its interval, instead of the one or two committed since
/// the last round, or none when an older transaction is still open; the
/// first event after a quiet spell still goes out at once.
const PACE: Duration = Duration::from_millis(10);

/// Picks the topic for an event of a given stream type.
pub type TopicFor = fn(&str) -> &'static str;

pub struct OutboxPublisher {
    pub store: EventStore,
    pub topic_for: TopicFor,
    pub db: DatabaseConnection,
    pub bus: SharedBus,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// Woken by commands of this process right after they commit.
    pub appended: Arc<Notify>,
}

impl OutboxPublisher {
    fn checkpoint_name(&self) -> String {
        format!("outbox:{}", self.store.table())
    }

    /// Creates the checkpoint row if this store has never been published.
    pub async fn ensure_checkpoint(&self) -> Result<(), PublishError> {
        db::exec(
            &self.db,
            "INSERT INTO platform_checkpoints (name, position) VALUES ($1, '') \
             ON CONFLICT (name) DO NOTHING",
            vec![self.checkpoint_name().into()],
        )
        .await?;
        Ok(())
    }

    /// Publishes what is ready; returns how many events went out. Needs the
    /// checkpoint row ([`Self::ensure_checkpoint`]).
    pub async fn publish_once(&self) -> Result<usize, PublishError> {
        let name = self.checkpoint_name();
        if db::is_postgres(&self.db) {
            let txn = self.db.begin().await?;
            let n = self.publish_locked(&txn, name).await?;
            txn.commit().await?;
            Ok(n)
        } else {
            // One process owns an SQLite file, and the embedded bus writes to
            // the same file: holding a write transaction here would block it.
            self.publish_locked(&self.db, name).await
        }
    }

    async fn publish_locked(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        name: String,
    ) -> Result<usize, PublishError> {
        if db::is_postgres(conn) {
            let locked = db::query_one(
                conn,
                "SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked",
                vec![name.clone().into()],
            )
            .await?
            .map(|r| col::<bool>(&r, "locked"))
            .transpose()?
            .unwrap_or(false);
            if !locked {
                // Another replica is publishing this store right now.
                return Ok(0);
            }
        }
        let Some(row) = db::query_one(
            conn,
            "SELECT position FROM platform_checkpoints WHERE name = $1",
            vec![name.clone().into()],
        )
        .await?
        else {
            return Ok(0);
        };
        let from = Checkpoint(col(&row, "position")?);
        let (events, next) = self.store.read_committed_after(conn, &from, BATCH).await?;
        let store = self.store.table();
        if events.is_empty() {
            self.metrics
                .outbox_lag_seconds
                .with_label_values(&[store])
                .set(0.0);
            return Ok(0);
        }
        let oldest = events.iter().map(|e| e.recorded_at_ms).min().unwrap_or(0);
        let lag = (self.clock.now_ms() - oldest).max(0) as f64 / 1000.0;
        self.metrics
            .outbox_lag_seconds
            .with_label_values(&[store])
            .set(lag);

        self.publish_events(&events).await?;
        db::exec(
            conn,
            "UPDATE platform_checkpoints SET position = $2 WHERE name = $1",
            vec![name.into(), next.0.into()],
        )
        .await?;
        self.metrics
            .outbox_published
            .with_label_values(&[store])
            .inc_by(events.len() as u64);
        Ok(events.len())
    }

    async fn publish_events(&self, events: &[RecordedEvent]) -> Result<(), PublishError> {
        // Group by topic, keeping commit order inside each topic.
        let mut by_topic: Vec<(&'static str, Vec<OutgoingRecord>)> = Vec::new();
        for ev in events {
            let topic = (self.topic_for)(&ev.stream_type);
            let record = OutgoingRecord {
                key: ev.stream_id.clone(),
                payload: ev.envelope().encode_to_vec(),
            };
            match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, list)) => list.push(record),
                None => by_topic.push((topic, vec![record])),
            }
        }
        for (topic, records) in by_topic {
            self.bus
                .publish(topic, &records)
                .await
                .map_err(|e| PublishError::Bus(e.to_string()))?;
        }
        Ok(())
    }

    /// Runs until the process stops: publishes as soon as this process
    /// appends, and polls for other processes' appends.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        while let Err(err) = self.ensure_checkpoint().await {
            tracing::warn!(store = self.store.table(), error = %err, "outbox checkpoint unavailable; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        loop {
            let notified = self.appended.notified();
            let began = crate::clock::monotonic();
            match self.publish_once().await {
                Ok(n) if n as u64 == BATCH => continue,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    tokio::time::sleep_until((began + PACE).into()).await;
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                }
                Err(err) => {
                    tracing::warn!(store = self.store.table(), error = %err, "outbox publish failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("bus: {0}")]
    Bus(String),
}
