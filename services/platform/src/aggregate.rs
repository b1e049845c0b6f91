//! The aggregate kernel: one way to run a command against an event-sourced
//! aggregate, so that every service gets the same guarantees.
//!
//! An [`Aggregate`] says how its events fold into its state, and nothing
//! else; a fold that meets an event it cannot read fails (logged with the
//! event's id, counted in `gatehouse_undecodable_events_total`) instead of
//! skipping it, since a skipped event silently rewinds the aggregate.
//!
//! [`run`] owns the rest of a command: open the write transaction, load and
//! fold the stream, call the command's pure decision with the state and the
//! time, append what it decided at the version it saw, let the service
//! write its projection (and anything else, such as an idempotent response)
//! in the same transaction, commit, count the events. A lost optimistic-
//! concurrency race reloads and decides again after a jittered pause; after
//! [`MAX_ATTEMPTS`] lost races the command answers one uniform 409
//! `concurrent_modification`.

use sea_orm::{DatabaseTransaction, DbErr};

use crate::context::Platform;
use crate::db;
use crate::error::ApiError;
use crate::eventstore::{
    AppendError, EventMeta, EventStore, MAX_ATTEMPTS, NewEvent, RecordedEvent, Stream,
    pause_after_conflict,
};

/// An event the aggregate cannot read: a payload that does not decode, or
/// a type it does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl From<prost::DecodeError> for Unreadable {
    fn from(e: prost::DecodeError) -> Self {
        Self(e.to_string())
    }
}

pub trait Aggregate {
    /// The stream type of its events (`gatehouse_proto::stream_types`).
    const KIND: &'static str;
    /// The state before any event: usually "does not exist".
    type State: Default;

    /// Folds one event into the state.
    fn apply(state: &mut Self::State, event: &RecordedEvent) -> Result<(), Unreadable>;
}

/// An aggregate as loaded: its state and the version it is at (0 for a
/// stream with no events).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    pub state: S,
    pub version: i64,
}

/// Why the kernel could not run a command.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Every attempt lost the race for the stream.
    #[error("stream {stream_id} kept changing under the command")]
    Contended { stream_id: String },
    /// A stored event the aggregate cannot read.
    #[error("event {event_id} ({event_type}) of {stream_id} cannot be read: {reason}")]
    Unreadable {
        stream_id: String,
        event_id: String,
        event_type: String,
        reason: String,
    },
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl From<KernelError> for ApiError {
    fn from(e: KernelError) -> Self {
        match e {
            KernelError::Contended { .. } => ApiError::conflict(
                "concurrent_modification",
                "The resource was changed by other requests at the same time; retry.",
            ),
            KernelError::Unreadable { .. } => ApiError::internal(e),
            KernelError::Db(e) => e.into(),
        }
    }
}

/// Folds `events` (one stream, oldest first).
pub fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Loaded<A::State>, KernelError> {
    let mut loaded = Loaded {
        state: A::State::default(),
        version: 0,
    };
    for ev in events {
        A::apply(&mut loaded.state, ev).map_err(|e| KernelError::Unreadable {
            stream_id: ev.stream_id.clone(),
            event_id: ev.event_id.clone(),
            event_type: ev.event_type.clone(),
            reason: e.0,
        })?;
        loaded.version = ev.stream_version;
    }
    Ok(loaded)
}

/// What a command decided: the events to append (none: nothing changes)
/// and what to answer.
#[derive(Debug)]
pub struct Decided<T> {
    pub events: Vec<NewEvent>,
    pub answer: T,
}

impl<T> Decided<T> {
    /// Nothing to append.
    pub fn nothing(answer: T) -> Self {
        Self {
            events: Vec::new(),
            answer,
        }
    }
}

/// Which stream a command runs against, as whom.
pub struct Target<'a> {
    pub store: EventStore,
    pub stream_id: &'a str,
    pub meta: &'a EventMeta,
}

impl<'a> Target<'a> {
    pub fn new(store: EventStore, stream_id: &'a str, meta: &'a EventMeta) -> Self {
        Self {
            store,
            stream_id,
            meta,
        }
    }
}

/// Runs one command: see the module's documentation. `decide` gets the
/// loaded aggregate and the time. In the command's transaction, after the
/// append: `within` gets the answer, to check what needs the database and
/// write what must commit with the events (a password, an idempotent
/// response); then `project` applies each recorded event to the service's
/// projection. A unique index of the projection refusing a row means
/// another command took the same key (an email address, a username) at
/// the same moment: a lost race like any other, decided again from a fresh
/// load.
pub async fn run<A, T, E, D, W, P>(
    platform: &Platform,
    target: Target<'_>,
    mut decide: D,
    within: W,
    project: P,
) -> Result<T, E>
where
    A: Aggregate,
    E: From<KernelError> + From<DbErr>,
    D: FnMut(&Loaded<A::State>, i64) -> Result<Decided<T>, E>,
    W: AsyncFn(&DatabaseTransaction, &T) -> Result<(), E>,
    P: AsyncFn(&DatabaseTransaction, &RecordedEvent) -> Result<(), DbErr>,
{
    let Target {
        store,
        stream_id,
        meta,
    } = target;
    'attempts: for attempt in 0..MAX_ATTEMPTS {
        let txn = db::begin_write(platform.db()).await?;
        let events = store.load_stream(&txn, stream_id).await?;
        let loaded = fold::<A>(&events).inspect_err(|e| unreadable(platform, store, e))?;
        let now = platform.now_ms();
        let decided = decide(&loaded, now)?;
        if decided.events.is_empty() {
            return Ok(decided.answer);
        }
        let stream = Stream {
            id: stream_id,
            kind: A::KIND,
            version: loaded.version,
        };
        let recorded = match store.append(&txn, stream, &decided.events, meta, now).await {
            Ok(recorded) => recorded,
            Err(AppendError::Conflict { .. }) => {
                drop(txn);
                pause_after_conflict(attempt).await;
                continue;
            }
            Err(AppendError::Db(e)) => return Err(e.into()),
        };
        within(&txn, &decided.answer).await?;
        for ev in &recorded {
            match project(&txn, ev).await {
                Ok(()) => {}
                Err(e) if db::is_unique_violation(&e) => {
                    drop(txn);
                    pause_after_conflict(attempt).await;
                    continue 'attempts;
                }
                Err(e) => return Err(e.into()),
            }
        }
        txn.commit().await?;
        platform.events_committed(store.table(), &recorded);
        return Ok(decided.answer);
    }
    Err(KernelError::Contended {
        stream_id: stream_id.to_owned(),
    }
    .into())
}

/// Logs and counts an event a fold could not read.
fn unreadable(platform: &Platform, store: EventStore, e: &KernelError) {
    if let KernelError::Unreadable {
        event_id,
        event_type,
        ..
    } = e
    {
        tracing::error!(%event_id, %event_type, store = store.table(), error = %e, "an aggregate cannot read its event");
        platform
            .metrics()
            .undecodable_events
            .with_label_values(&[store.table(), event_type])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter: `add` events carry one byte to add; anything else is
    /// unreadable.
    struct Counter;

    impl Aggregate for Counter {
        const KIND: &'static str = "counter";
        type State = u32;

        fn apply(state: &mut u32, event: &RecordedEvent) -> Result<(), Unreadable> {
            match (event.event_type.as_str(), event.payload.as_slice()) {
                ("add", [n]) => {
                    *state += u32::from(*n);
                    Ok(())
                }
                (other, _) => Err(Unreadable(format!("no rule for {other}"))),
            }
        }
    }

    fn recorded(version: i64, event_type: &str, payload: &[u8]) -> RecordedEvent {
        RecordedEvent::unstored(version, event_type, payload.to_vec(), EventMeta::default())
    }

    #[test]
    fn a_fold_applies_every_event_and_ends_at_the_last_version() {
        let events = [recorded(1, "add", &[2]), recorded(2, "add", &[3])];
        assert_eq!(
            fold::<Counter>(&events).unwrap(),
            Loaded {
                state: 5,
                version: 2
            }
        );
        assert_eq!(
            fold::<Counter>(&[]).unwrap(),
            Loaded {
                state: 0,
                version: 0
            }
        );
    }

    #[test]
    fn a_fold_that_cannot_read_an_event_fails_naming_it_instead_of_skipping_it() {
        let events = [
            recorded(1, "add", &[2]),
            recorded(2, "add", &[]),
            recorded(3, "add", &[3]),
        ];
        match fold::<Counter>(&events) {
            Err(KernelError::Unreadable {
                event_id,
                event_type,
                ..
            }) => assert_eq!((event_id.as_str(), event_type.as_str()), ("ev2", "add")),
            other => panic!("folded past an unreadable event: {other:?}"),
        }
    }

    #[test]
    fn a_contended_command_is_a_409_concurrent_modification() {
        let e: ApiError = KernelError::Contended {
            stream_id: "x".into(),
        }
        .into();
        assert_eq!(e.status.as_u16(), 409);
        assert_eq!(e.items[0].code, "concurrent_modification");
    }
}
