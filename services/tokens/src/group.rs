//! Group commit of `client_credentials` issuance.
//!
//! Each issued token is still its own event with its own rows, committed
//! before the response goes out; what concurrent requests share is the
//! transaction. A request puts its family on the queue and then either
//! finds it committed by another request's batch or takes a writer slot
//! and writes everything queued so far: one transaction, one INSERT per
//! table for the whole batch. While a batch is in flight the next one
//! gathers, so batches grow with load and a lone request waits for nobody.
//!
//! Its client came from the per-process cache (`clients::Lookup::Cached`);
//! the batch reads the clients again inside its transaction, holding them
//! `FOR SHARE`, and commits only the requests whose client is unchanged.
//! The others are answered [`Outcome::Stale`] and go the ordinary way. A
//! client deletion deletes the row first, so it waits for a batch holding
//! it and then revokes what that batch started.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_platform::eventstore::{EventMeta, NewEvent};
use gatehouse_platform::{Platform, db};
use gatehouse_proto::stream_types as st;
use tokio::sync::{Semaphore, oneshot};

use crate::clients::{self, Client};
use crate::families::{self, STORE};

/// Batches in flight at once per process.
const WRITERS: usize = 2;
/// Families one transaction writes at most (10 parameters each in the
/// largest insert keeps a statement far below either database's limit).
const MAX_BATCH: usize = 512;

/// A family waiting to be started.
pub struct Start {
    pub family_id: String,
    pub event: NewEvent,
    pub meta: EventMeta,
    /// The client as the request authenticated and decided with.
    pub client: Client,
}

#[derive(Debug)]
pub enum Outcome {
    Committed,
    /// The client changed (or is gone) since the request read it.
    Stale,
    Failed(String),
}

struct Waiting {
    start: Start,
    reply: oneshot::Sender<Outcome>,
}

/// The per-platform queue ([`Platform::shared`]).
pub struct Queue {
    waiting: std::sync::Mutex<Vec<Waiting>>,
    writers: Arc<Semaphore>,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            waiting: std::sync::Mutex::new(Vec::new()),
            writers: Arc::new(Semaphore::new(WRITERS)),
        }
    }
}

impl Queue {
    fn take_all(&self) -> Vec<Waiting> {
        std::mem::take(
            &mut *self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Starts a family in the next batch and waits until it is committed (or
/// refused).
pub async fn start(platform: &Platform, start: Start) -> Outcome {
    let queue = platform.shared::<Queue>();
    let (reply, mut answer) = oneshot::channel();
    queue
        .waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Waiting { start, reply });
    tokio::select! {
        biased;
        out = &mut answer => {
            return out.unwrap_or_else(|_| Outcome::Failed("the batch writer stopped".into()));
        }
        permit = queue.writers.clone().acquire_owned() => {
            let Ok(permit) = permit else {
                return Outcome::Failed("the batch writers are closed".into());
            };
            // Everything queued, ours included (or another writer took
            // ours already and will answer).
            let batch = queue.take_all();
            if !batch.is_empty() {
                // Spawned: a request that goes away must not abandon the
                // batch it carries for others. The writer goes on with what
                // queued meanwhile before it lets its slot go, so nothing
                // waits for a request that is no longer there.
                let platform = platform.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut batch = batch;
                    while !batch.is_empty() {
                        write(&platform, batch).await;
                        batch = queue.take_all();
                    }
                    drop(permit);
                });
            }
        }
    }
    answer
        .await
        .unwrap_or_else(|_| Outcome::Failed("the batch writer stopped".into()))
}

/// Writes a batch, [`MAX_BATCH`] families per transaction.
async fn write(platform: &Platform, mut batch: Vec<Waiting>) {
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(MAX_BATCH));
        write_one(platform, std::mem::replace(&mut batch, rest)).await;
    }
}

async fn write_one(platform: &Platform, batch: Vec<Waiting>) {
    match commit(platform, &batch).await {
        Ok(outcomes) => {
            for (w, out) in batch.into_iter().zip(outcomes) {
                let _ = w.reply.send(out);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, size = batch.len(), "token group commit failed");
            for w in batch {
                let _ = w.reply.send(Outcome::Failed(err.to_string()));
            }
        }
    }
}

/// One transaction for the batch; the outcome of each request in order.
async fn commit(platform: &Platform, batch: &[Waiting]) -> Result<Vec<Outcome>, sea_orm::DbErr> {
    let txn = db::begin_write(platform.db()).await?;
    let keys: Vec<(String, String)> = batch
        .iter()
        .map(|w| {
            let c = &w.start.client;
            (c.instance_id.clone(), c.client_id.clone())
        })
        .collect();
    let current: HashMap<(String, String), Client> = clients::current(&txn, &keys, true).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    for (w, key) in batch.iter().zip(&keys) {
        if current.get(key) == Some(&w.start.client) {
            outcomes.push(Outcome::Committed);
            accepted.push((families::stream_id(&w.start.family_id), &w.start));
        } else {
            clients::forget(&key.0, &key.1);
            outcomes.push(Outcome::Stale);
        }
    }
    let starts: Vec<_> = accepted
        .iter()
        .map(|(id, s)| (id.as_str(), &s.event, &s.meta))
        .collect();
    let recorded = STORE
        .start_streams(&txn, st::TOKEN_FAMILY, &starts, platform.now_ms())
        .await
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    families::project_started(&txn, &recorded).await?;
    txn.commit().await?;
    platform.events_committed(STORE.table(), &recorded);
    platform
        .metrics()
        .token_group_commit_size
        .observe(recorded.len() as f64);
    Ok(outcomes)
}
