//! The event bus: Kafka in production, a durable in-process log for the
//! embedded default. Publishing is at-least-once; consumers commit only after
//! they have processed (and deduplicated) what they received.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::db::{self, col};

/// Topics by domain. Keys are stream ids, so one aggregate stays ordered.
pub mod topics {
    pub const IDENTITY: &str = "gatehouse.identity";
    pub const TENANCY: &str = "gatehouse.tenancy";
    pub const OAUTH: &str = "gatehouse.oauth";
    pub const TOKENS: &str = "gatehouse.tokens";
    pub const WEBHOOKS: &str = "gatehouse.webhooks";
    pub const ALL: &[&str] = &[IDENTITY, TENANCY, OAUTH, TOKENS, WEBHOOKS];
}

#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    pub key: String,
    /// An encoded `Envelope`.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait Bus: Send + Sync {
    /// Publishes a batch to one topic and returns once every record is
    /// acknowledged (acks=all on Kafka, committed on the embedded log).
    async fn publish(&self, topic: &str, records: &[OutgoingRecord]) -> Result<(), BusError>;

    /// Joins `group` on `topics`, resuming after its last commit.
    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// Readiness: can we reach the bus now?
    async fn check(&self) -> Result<(), BusError>;

    fn kind(&self) -> &'static str;
}

#[async_trait]
pub trait Subscription: Send {
    /// Waits up to `wait` for records and returns at most `max` of them.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;

    /// Marks everything up to and including these deliveries as processed.
    async fn commit(&mut self, processed: &[Delivery]) -> Result<(), BusError>;
}

pub type SharedBus = Arc<dyn Bus>;

// ---------------------------------------------------------------- Kafka ----

#[derive(Clone)]
pub struct KafkaBus {
    brokers: String,
    /// Prepended to every topic name; lets several deployments (or test
    /// runs) share one cluster.
    prefix: String,
    /// Replaced when the idempotent producer hits a fatal error (for example
    /// a broker that lost its state): such a producer never recovers.
    producer: Arc<std::sync::RwLock<FutureProducer>>,
}

fn new_producer(brokers: &str) -> Result<FutureProducer, BusError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "10000")
        .set("socket.timeout.ms", "5000")
        .create()?)
}

impl KafkaBus {
    pub fn new(brokers: &str, prefix: &str) -> Result<Self, BusError> {
        Ok(Self {
            brokers: brokers.to_owned(),
            prefix: prefix.to_owned(),
            producer: Arc::new(std::sync::RwLock::new(new_producer(brokers)?)),
        })
    }

    fn producer(&self) -> Result<FutureProducer, BusError> {
        self.producer
            .read()
            .map(|p| p.clone())
            .map_err(|_| BusError::Other("producer lock poisoned".into()))
    }

    /// After a failed publish: start over with a fresh producer and make
    /// sure the topics exist. An idempotent producer whose broker lost its
    /// state (a restart without persistence, a failover) can stay stuck on
    /// its old producer id without ever reporting a fatal error, so the
    /// producer is replaced whatever the failure; that costs one handshake.
    async fn recover(&self, producer: &FutureProducer) {
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::warn!(%code, %reason, "Kafka producer hit a fatal error");
        }
        match new_producer(&self.brokers) {
            Ok(fresh) => {
                if let Ok(mut p) = self.producer.write() {
                    *p = fresh;
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot create a new Kafka producer"),
        }
        if let Err(err) = self.ensure_topics(3).await {
            tracing::debug!(error = %err, "topic check after a failed publish");
        }
    }

    pub fn topic_name(&self, topic: &str) -> String {
        format!("{}{}", self.prefix, topic)
    }

    /// Creates the domain topics if they do not exist yet.
    pub async fn ensure_topics(&self, partitions: i32) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        let names: Vec<String> = topics::ALL.iter().map(|t| self.topic_name(t)).collect();
        let new: Vec<NewTopic> = names
            .iter()
            // Consumer projections rebuild by replaying their topics from
            // the start, so the domain topics keep every event.
            .map(|n| {
                NewTopic::new(n, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1")
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(new.iter(), &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(BusError::Other(format!("creating topic {topic}: {code}")));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, records: &[OutgoingRecord]) -> Result<(), BusError> {
        let topic = self.topic_name(topic);
        let producer = self.producer()?;
        // Enqueue strictly in order (a full queue is waited out on the same
        // record, never skipped past), so records of one key keep their order.
        let mut deliveries = Vec::with_capacity(records.len());
        let deadline = crate::clock::monotonic() + Duration::from_secs(5);
        for r in records {
            let mut record = FutureRecord::to(&topic).key(&r.key).payload(&r.payload);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                        back,
                    )) if crate::clock::monotonic() < deadline => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((err, _)) => {
                        self.recover(&producer).await;
                        return Err(err.into());
                    }
                }
            }
        }
        let mut failure = None;
        for delivery in futures_util::future::join_all(deliveries).await {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => {
                    failure.get_or_insert(err);
                }
                Err(_canceled) => {
                    failure.get_or_insert(rdkafka::error::KafkaError::Canceled);
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(err) => {
                self.recover(&producer).await;
                Err(err.into())
            }
        }
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        // Groups are namespaced like topics, so deployments sharing a cluster
        // never join each other's groups.
        let group = format!("{}{}", self.prefix, group);
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A crashed member is replaced within seconds: the rebalance
            // timeout (max.poll.interval.ms) bounds how long a join waits for
            // members that will never come back.
            .set("session.timeout.ms", "6000")
            .set("max.poll.interval.ms", "15000")
            .set("heartbeat.interval.ms", "1000")
            // Topics a restarted broker re-creates are noticed quickly.
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let names: Vec<String> = topics.iter().map(|t| self.topic_name(t)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(Box::new(KafkaSubscription {
            consumer,
            prefix: self.prefix.clone(),
        }))
    }

    async fn check(&self) -> Result<(), BusError> {
        let producer = self.producer()?;
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
        })
        .await
        .map_err(|e| BusError::Other(e.to_string()))??;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }
}

struct KafkaSubscription {
    consumer: StreamConsumer,
    prefix: String,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(msg) => msg?,
        };
        out.push(to_delivery(&first, &self.prefix));
        drop(first);
        while out.len() < max {
            match tokio::time::timeout(Duration::from_millis(1), self.consumer.recv()).await {
                Ok(Ok(m)) => out.push(to_delivery(&m, &self.prefix)),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, processed: &[Delivery]) -> Result<(), BusError> {
        let mut highest: std::collections::BTreeMap<(String, i32), i64> = Default::default();
        for d in processed {
            let e = highest
                .entry((d.topic.clone(), d.partition))
                .or_insert(d.offset);
            *e = (*e).max(d.offset);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in highest {
            tpl.add_partition_offset(
                &format!("{}{}", self.prefix, topic),
                partition,
                Offset::Offset(offset + 1),
            )?;
        }
        if tpl.count() > 0 {
            self.consumer.commit(&tpl, CommitMode::Async)?;
        }
        Ok(())
    }
}

fn to_delivery<M: Message>(m: &M, prefix: &str) -> Delivery {
    let topic = m.topic();
    Delivery {
        topic: topic.strip_prefix(prefix).unwrap_or(topic).to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

// ------------------------------------------------------------- embedded ----

/// A durable log in the embedded database (`platform_bus_log`), for the
/// single-process default. Consumers keep their position in
/// `platform_bus_offsets`, so a restart resumes where processing stopped.
#[derive(Clone)]
pub struct EmbeddedBus {
    db: DatabaseConnection,
    appended: Arc<Notify>,
}

impl EmbeddedBus {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            appended: Arc::new(Notify::new()),
        }
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, topic: &str, records: &[OutgoingRecord]) -> Result<(), BusError> {
        let txn = db::begin_write(&self.db).await?;
        for r in records {
            db::exec(
                &txn,
                "INSERT INTO platform_bus_log (topic, record_key, payload) VALUES ($1, $2, $3)",
                vec![topic.into(), r.key.clone().into(), r.payload.clone().into()],
            )
            .await?;
        }
        txn.commit().await?;
        self.appended.notify_waiters();
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        db::exec(
            &self.db,
            "INSERT INTO platform_bus_offsets (group_name, position) VALUES ($1, 0) \
             ON CONFLICT (group_name) DO NOTHING",
            vec![group.into()],
        )
        .await?;
        let row = db::query_one(
            &self.db,
            "SELECT position FROM platform_bus_offsets WHERE group_name = $1",
            vec![group.into()],
        )
        .await?;
        let position: i64 = match row {
            Some(r) => col(&r, "position")?,
            None => 0,
        };
        Ok(Box::new(EmbeddedSubscription {
            db: self.db.clone(),
            appended: self.appended.clone(),
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            position,
        }))
    }

    async fn check(&self) -> Result<(), BusError> {
        self.db.ping().await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

struct EmbeddedSubscription {
    db: DatabaseConnection,
    appended: Arc<Notify>,
    group: String,
    topics: Vec<String>,
    /// Highest log position handed out so far.
    position: i64,
}

impl EmbeddedSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let placeholders: Vec<String> = (0..self.topics.len())
            .map(|i| format!("${}", i + 3))
            .collect();
        let sql = format!(
            "SELECT position, topic, payload FROM platform_bus_log \
             WHERE position > $1 AND topic IN ({}) ORDER BY position LIMIT $2",
            placeholders.join(", ")
        );
        let mut values: Vec<sea_orm::Value> = vec![self.position.into(), (max as i64).into()];
        values.extend(self.topics.iter().map(|t| t.clone().into()));
        let rows = db::query_all(&self.db, &sql, values).await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    topic: col(r, "topic")?,
                    partition: 0,
                    offset: col(r, "position")?,
                    payload: col(r, "payload")?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        // Register interest before looking, so a publish in between wakes us.
        let notified = self.appended.notified();
        let batch = self.fetch(max).await?;
        let batch = if batch.is_empty() {
            let _ = tokio::time::timeout(wait, notified).await;
            self.fetch(max).await?
        } else {
            batch
        };
        if let Some(last) = batch.last() {
            self.position = last.offset;
        }
        Ok(batch)
    }

    async fn commit(&mut self, processed: &[Delivery]) -> Result<(), BusError> {
        if let Some(max) = processed.iter().map(|d| d.offset).max() {
            db::exec(
                &self.db,
                "UPDATE platform_bus_offsets SET position = $2 \
                 WHERE group_name = $1 AND position < $2",
                vec![self.group.clone().into(), max.into()],
            )
            .await?;
        }
        Ok(())
    }
}
