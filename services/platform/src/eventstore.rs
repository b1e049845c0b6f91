//! The append-only event store each service owns (`<service>_events`). It is
//! the write model and the outbox at once.
//!
//! Optimistic concurrency: `UNIQUE(stream_id, stream_version)`; a command that
//! loses a race gets [`AppendError::Conflict`] and reloads, never overwrites.
//!
//! Reading in commit order: on PostgreSQL a `global_position` is taken at
//! insert but becomes visible at commit, so a tailer that checkpoints by
//! position alone can skip an event forever. Each row records the writing
//! transaction (`tx_id = pg_current_xact_id()`); the tailer only reads rows of
//! transactions older than every running one and orders by
//! `(tx_id, global_position)`. SQLite has one writer, so position suffices.

use sea_orm::{ConnectionTrait, DbErr, Value};
use serde::{Deserialize, Serialize};

use crate::db::{self, col};

/// Who and what an event belongs to, stored in `metadata` and copied into
/// the bus envelope.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventMeta {
    pub tenant_id: String,
    pub instance_id: String,
    pub actor: String,
    pub trace_id: String,
}

/// The stream a command appends to, at the version it decided on.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    pub id: &'a str,
    /// The aggregate kind (`user`, `instance`, …).
    pub kind: &'a str,
    /// The version the command saw: 0 for a stream that does not exist yet.
    pub version: i64,
}

/// An event a command decided, not yet stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: &'static str,
    pub payload: Vec<u8>,
}

/// A new event of `event_type` carrying `msg`, protobuf-encoded.
pub fn event<M: prost::Message>(event_type: &'static str, msg: &M) -> NewEvent {
    NewEvent {
        event_type,
        payload: msg.encode_to_vec(),
    }
}

/// What a command decided about an aggregate: the events to append and the
/// state to answer with (`None` when it is gone).
#[derive(Debug)]
pub struct Decision<S> {
    pub events: Vec<NewEvent>,
    pub state: Option<S>,
}

impl<S> Decision<S> {
    /// Nothing to append; answer with `state` as it is.
    pub fn none(state: S) -> Self {
        Self {
            events: vec![],
            state: Some(state),
        }
    }
}

/// Applies one event to a projection inside a rebuild's transaction.
pub type Apply =
    for<'a> fn(
        &'a sea_orm::DatabaseTransaction,
        &'a RecordedEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DbErr>> + 'a>>;

#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub event_id: String,
    pub stream_id: String,
    pub stream_type: String,
    pub stream_version: i64,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub meta: EventMeta,
    pub recorded_at_ms: i64,
}

/// How many times a command reloads and decides again after losing a race
/// for a stream before it answers 409.
pub const MAX_ATTEMPTS: u32 = 8;

/// Waits a little before a command's next attempt, spread by a random
/// jitter so writers that collided do not collide again.
pub async fn pause_after_conflict(attempt: u32) {
    let jitter = u64::from(rand::random::<u8>() % 8) + u64::from(attempt) * 2;
    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream_id} moved past version {expected}")]
    Conflict { stream_id: String, expected: i64 },
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Where a tailer stands: opaque text, so the ordering scheme may differ per
/// backend. PostgreSQL: `"<tx_id>:<position>"`; SQLite: `"<position>"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint(pub String);

#[derive(Debug, Clone, Copy)]
pub struct EventStore {
    /// The owning service's name; the table is `<service>_events`.
    pub service: &'static str,
    table: &'static str,
}

const COLUMNS: &str = "global_position, event_id, stream_id, stream_type, stream_version, \
                       event_type, payload, metadata, recorded_at";

impl EventStore {
    pub const fn new(service: &'static str, table: &'static str) -> Self {
        Self { service, table }
    }

    pub fn table(&self) -> &'static str {
        self.table
    }

    /// All events of one stream, oldest first.
    pub async fn load_stream(
        &self,
        conn: &impl ConnectionTrait,
        stream_id: &str,
    ) -> Result<Vec<RecordedEvent>, DbErr> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE stream_id = $1 ORDER BY stream_version",
            self.table
        );
        db::query_all(conn, &sql, vec![stream_id.into()])
            .await?
            .iter()
            .map(row_to_event)
            .collect()
    }

    /// Appends `events` to a stream expected to be at `stream.version`
    /// (0 for a new stream). Must run inside the command's transaction.
    pub async fn append(
        &self,
        conn: &impl ConnectionTrait,
        stream: Stream<'_>,
        events: &[NewEvent],
        meta: &EventMeta,
        now_ms: i64,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        let Stream {
            id: stream_id,
            kind: stream_type,
            version: expected_version,
        } = stream;
        let metadata = serde_json::to_string(meta).map_err(|e| DbErr::Custom(e.to_string()))?;
        let mut recorded = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            let version = expected_version + 1 + i as i64;
            let event_id = uuid::Uuid::now_v7().to_string();
            let sql = format!(
                "INSERT INTO {} (event_id, stream_id, stream_type, stream_version, event_type, \
                 payload, metadata, instance_id, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING global_position",
                self.table
            );
            let values: Vec<Value> = vec![
                event_id.clone().into(),
                stream_id.into(),
                stream_type.into(),
                version.into(),
                ev.event_type.into(),
                ev.payload.clone().into(),
                metadata.clone().into(),
                meta.instance_id.clone().into(),
                now_ms.into(),
            ];
            let row = match db::query_one(conn, &sql, values).await {
                Ok(row) => row,
                Err(err) if db::is_unique_violation(&err) => {
                    return Err(AppendError::Conflict {
                        stream_id: stream_id.to_owned(),
                        expected: expected_version,
                    });
                }
                Err(err) => return Err(err.into()),
            };
            let global_position: i64 = match row {
                Some(r) => col(&r, "global_position")?,
                None => return Err(DbErr::Custom("append returned no position".into()).into()),
            };
            recorded.push(RecordedEvent {
                global_position,
                event_id,
                stream_id: stream_id.to_owned(),
                stream_type: stream_type.to_owned(),
                stream_version: version,
                event_type: ev.event_type.to_owned(),
                payload: ev.payload.clone(),
                meta: meta.clone(),
                recorded_at_ms: now_ms,
            });
        }
        Ok(recorded)
    }

    /// Starts many streams of one kind at once, each with its first event,
    /// in one statement: how a group commit writes what concurrent
    /// commands decided. Must run inside a transaction; a stream that
    /// exists already fails the whole statement with
    /// [`AppendError::Conflict`] (callers use fresh random stream ids).
    pub async fn start_streams(
        &self,
        conn: &impl ConnectionTrait,
        kind: &str,
        starts: &[(&str, &NewEvent, &EventMeta)],
        now_ms: i64,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        const WIDTH: usize = 9;
        let mut rows = Vec::with_capacity(starts.len());
        let mut values: Vec<Value> = Vec::with_capacity(starts.len() * WIDTH);
        let mut recorded = Vec::with_capacity(starts.len());
        for (stream_id, ev, meta) in starts {
            let event_id = uuid::Uuid::now_v7().to_string();
            let metadata = serde_json::to_string(meta).map_err(|e| DbErr::Custom(e.to_string()))?;
            rows.push(format!("({})", db::placeholders(values.len() + 1, WIDTH)));
            values.extend([
                event_id.clone().into(),
                (*stream_id).into(),
                kind.into(),
                1i64.into(),
                ev.event_type.into(),
                ev.payload.clone().into(),
                metadata.into(),
                meta.instance_id.clone().into(),
                now_ms.into(),
            ]);
            recorded.push(RecordedEvent {
                global_position: 0,
                event_id,
                stream_id: (*stream_id).to_owned(),
                stream_type: kind.to_owned(),
                stream_version: 1,
                event_type: ev.event_type.to_owned(),
                payload: ev.payload.clone(),
                meta: (*meta).clone(),
                recorded_at_ms: now_ms,
            });
        }
        let sql = format!(
            "INSERT INTO {} (event_id, stream_id, stream_type, stream_version, event_type, \
             payload, metadata, instance_id, recorded_at) VALUES {} \
             RETURNING event_id, global_position",
            self.table,
            rows.join(", ")
        );
        let returned = match db::query_all(conn, &sql, values).await {
            Ok(rows) => rows,
            Err(err) if db::is_unique_violation(&err) => {
                return Err(AppendError::Conflict {
                    stream_id: starts[0].0.to_owned(),
                    expected: 0,
                });
            }
            Err(err) => return Err(err.into()),
        };
        let positions: std::collections::HashMap<String, i64> = returned
            .iter()
            .map(|r| Ok((col(r, "event_id")?, col(r, "global_position")?)))
            .collect::<Result<_, DbErr>>()?;
        for ev in &mut recorded {
            ev.global_position = *positions.get(&ev.event_id).ok_or_else(|| {
                DbErr::Custom("start_streams: a row came back without its position".into())
            })?;
        }
        Ok(recorded)
    }

    /// The next events after `from`, in commit order, and the checkpoint after
    /// the last one returned. Only committed events that no still-running
    /// transaction can precede are returned.
    pub async fn read_committed_after(
        &self,
        conn: &impl ConnectionTrait,
        from: &Checkpoint,
        limit: u64,
    ) -> Result<(Vec<RecordedEvent>, Checkpoint), DbErr> {
        if db::is_postgres(conn) {
            let (tx, pos) = parse_pg_checkpoint(&from.0)?;
            let sql = format!(
                "SELECT {COLUMNS}, tx_id::text AS tx_text FROM {t} \
                 WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
                   AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx_id, global_position LIMIT $3",
                t = self.table
            );
            let rows = db::query_all(
                conn,
                &sql,
                vec![tx.into(), pos.into(), (limit as i64).into()],
            )
            .await?;
            let mut next = from.clone();
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let ev = row_to_event(r)?;
                let tx_text: String = col(r, "tx_text")?;
                next = Checkpoint(format!("{tx_text}:{}", ev.global_position));
                out.push(ev);
            }
            Ok((out, next))
        } else {
            let pos: i64 = if from.0.is_empty() {
                0
            } else {
                from.0
                    .parse()
                    .map_err(|_| DbErr::Custom(format!("bad checkpoint {:?}", from.0)))?
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM {} WHERE global_position > $1 \
                 ORDER BY global_position LIMIT $2",
                self.table
            );
            let rows = db::query_all(conn, &sql, vec![pos.into(), (limit as i64).into()]).await?;
            let out: Vec<RecordedEvent> =
                rows.iter().map(row_to_event).collect::<Result<_, _>>()?;
            let next = out
                .last()
                .map(|e| Checkpoint(e.global_position.to_string()))
                .unwrap_or_else(|| from.clone());
            Ok((out, next))
        }
    }

    /// Applies every event, in position order, to `apply`: how projections
    /// are rebuilt. Returns how many events were applied.
    pub async fn replay<C, F, Fut>(&self, conn: &C, mut apply: F) -> Result<u64, DbErr>
    where
        C: ConnectionTrait,
        F: FnMut(RecordedEvent) -> Fut,
        Fut: std::future::Future<Output = Result<(), DbErr>>,
    {
        let mut after = 0;
        let mut n = 0;
        loop {
            let batch = self.read_all_after(conn, after, 1000).await?;
            let Some(last) = batch.last() else {
                return Ok(n);
            };
            after = last.global_position;
            for ev in batch {
                apply(ev).await?;
                n += 1;
            }
        }
    }

    /// Rebuilds a projection in one transaction: empties `tables`, then
    /// applies every event (of `stream_type`, when given) in position order.
    /// Returns how many events were read.
    pub async fn rebuild(
        &self,
        db: &sea_orm::DatabaseConnection,
        tables: &[&str],
        stream_type: Option<&str>,
        apply: Apply,
    ) -> Result<u64, DbErr> {
        let txn = db::begin_write(db).await?;
        for table in tables {
            db::exec(&txn, &format!("DELETE FROM {table}"), vec![]).await?;
        }
        let conn = &txn;
        let n = self
            .replay(conn, |ev| async move {
                if stream_type.is_none_or(|t| t == ev.stream_type) {
                    apply(conn, &ev).await?;
                }
                Ok(())
            })
            .await?;
        txn.commit().await?;
        Ok(n)
    }

    /// Every event in position order, for rebuilding projections offline.
    pub async fn read_all_after(
        &self,
        conn: &impl ConnectionTrait,
        after_position: i64,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, DbErr> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE global_position > $1 ORDER BY global_position LIMIT $2",
            self.table
        );
        db::query_all(
            conn,
            &sql,
            vec![after_position.into(), (limit as i64).into()],
        )
        .await?
        .iter()
        .map(row_to_event)
        .collect()
    }
}

fn parse_pg_checkpoint(s: &str) -> Result<(String, i64), DbErr> {
    if s.is_empty() {
        return Ok(("0".to_owned(), 0));
    }
    let bad = || DbErr::Custom(format!("bad checkpoint {s:?}"));
    let (tx, pos) = s.split_once(':').ok_or_else(bad)?;
    if tx.is_empty() || !tx.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((tx.to_owned(), pos.parse().map_err(|_| bad())?))
}

fn row_to_event(r: &sea_orm::QueryResult) -> Result<RecordedEvent, DbErr> {
    let metadata: String = col(r, "metadata")?;
    Ok(RecordedEvent {
        global_position: col(r, "global_position")?,
        event_id: col(r, "event_id")?,
        stream_id: col(r, "stream_id")?,
        stream_type: col(r, "stream_type")?,
        stream_version: col(r, "stream_version")?,
        event_type: col(r, "event_type")?,
        payload: col(r, "payload")?,
        meta: serde_json::from_str(&metadata).map_err(|e| DbErr::Custom(e.to_string()))?,
        recorded_at_ms: col(r, "recorded_at")?,
    })
}

impl RecordedEvent {
    /// An event as the store would record it at `version` of a stream, by
    /// `meta`, without a store: what folds and decisions are unit-tested on.
    pub fn unstored(version: i64, event_type: &str, payload: Vec<u8>, meta: EventMeta) -> Self {
        Self {
            global_position: version,
            event_id: format!("ev{version}"),
            stream_id: String::new(),
            stream_type: String::new(),
            stream_version: version,
            event_type: event_type.to_owned(),
            payload,
            meta,
            recorded_at_ms: 0,
        }
    }

    /// The bus envelope of this event.
    pub fn envelope(&self) -> gatehouse_proto::v1::Envelope {
        gatehouse_proto::v1::Envelope {
            event_id: self.event_id.clone(),
            tenant_id: self.meta.tenant_id.clone(),
            instance_id: self.meta.instance_id.clone(),
            stream_id: self.stream_id.clone(),
            stream_type: self.stream_type.clone(),
            stream_version: self.stream_version as u64,
            event_type: self.event_type.clone(),
            occurred_at_ms: self.recorded_at_ms,
            payload: self.payload.clone(),
            actor: self.meta.actor.clone(),
            trace_id: self.meta.trace_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_checkpoint_parses_and_rejects_garbage() {
        assert_eq!(parse_pg_checkpoint("").ok(), Some(("0".into(), 0)));
        assert_eq!(parse_pg_checkpoint("7:42").ok(), Some(("7".into(), 42)));
        assert!(parse_pg_checkpoint("x:1").is_err());
        assert!(parse_pg_checkpoint("1;drop:1").is_err());
        assert!(parse_pg_checkpoint("12").is_err());
    }
}
