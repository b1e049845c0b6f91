//! Sessions of the hosted pages: a random token in an HttpOnly cookie, its
//! SHA-256 in `authz_sessions`, every start and end an event on the
//! `session` stream (analytics counts sign-ins from `session.created`).
//!
//! Starting and ending run through the aggregate kernel
//! (`platform::aggregate`); the decisions ([`decide_start`],
//! [`decide_end`]) are pure functions of the folded session.

use gatehouse_platform::aggregate::{
    self, Aggregate, Decided, KernelError, Loaded, Target, Unreadable,
};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_platform::ids::SessionId;
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::oauth_apps::hash_secret;
use crate::users::{STORE, event};

pub const TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A session as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    pub expires_at_ms: i64,
    pub ended: bool,
}

/// The session aggregate: started once, ended at most once.
pub struct SessionStream;

impl Aggregate for SessionStream {
    const KIND: &'static str = st::SESSION;
    type State = Option<Session>;

    /// A stream ended twice (two sign-outs racing, before sessions ran on
    /// the kernel) folds as ended.
    fn apply(session: &mut Option<Session>, ev: &RecordedEvent) -> Result<(), Unreadable> {
        let p = ev.payload.as_slice();
        match ev.event_type.as_str() {
            et::SESSION_CREATED => {
                let m = v1::SessionCreated::decode(p)?;
                if session.is_some() {
                    return Err(Unreadable("started twice".into()));
                }
                *session = Some(Session {
                    user_id: m.user_id,
                    expires_at_ms: m.expires_at_ms,
                    ended: false,
                });
            }
            et::SESSION_ENDED => {
                v1::SessionEnded::decode(p)?;
                session
                    .as_mut()
                    .ok_or_else(|| Unreadable("ended before it was started".into()))?
                    .ended = true;
            }
            other => return Err(Unreadable(format!("no rule for {other}"))),
        }
        Ok(())
    }
}

/// A new session.
pub struct Start<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub method: &'a str,
    pub token_hash: String,
}

/// Starting a session: on a stream no session has used, lasting [`TTL_MS`]
/// from now.
pub fn decide_start(
    loaded: &Loaded<Option<Session>>,
    s: &Start<'_>,
    now: i64,
) -> ApiResult<Decided<()>> {
    if loaded.state.is_some() {
        return Err(ApiError::conflict(
            "session_exists",
            "A session already has this id; retry.",
        ));
    }
    Ok(Decided {
        events: vec![event(
            et::SESSION_CREATED,
            &v1::SessionCreated {
                session_id: s.session_id.to_owned(),
                user_id: s.user_id.to_owned(),
                method: s.method.to_owned(),
                expires_at_ms: now + TTL_MS,
                token_hash: s.token_hash.clone(),
            },
        )],
        answer: (),
    })
}

/// Ending a session: once. A session that never started, or has ended
/// already, changes nothing.
pub fn decide_end(
    session: Option<&Session>,
    session_id: &str,
    user_id: &str,
    reason: &str,
) -> Decided<()> {
    match session {
        Some(s) if !s.ended => Decided {
            events: vec![event(
                et::SESSION_ENDED,
                &v1::SessionEnded {
                    session_id: session_id.to_owned(),
                    user_id: user_id.to_owned(),
                    reason: reason.to_owned(),
                },
            )],
            answer: (),
        },
        _ => Decided::nothing(()),
    }
}

/// Starts a session; returns the token for the cookie.
pub async fn start(
    platform: &Platform,
    actor: &Authed,
    user_id: &str,
    method: &str,
) -> ApiResult<String> {
    let token = gatehouse_platform::ids::random_base62(43);
    let id = SessionId::new();
    let new = Start {
        session_id: id.as_str(),
        user_id,
        method,
        token_hash: hash_secret(&token),
    };
    let meta = actor.event_meta();
    aggregate::run::<SessionStream, _, ApiError, _, _, _>(
        platform,
        Target::new(STORE, id.as_str(), &meta),
        |loaded, now| decide_start(loaded, &new, now),
        async |_, _| Ok(()),
        async |txn, ev| project(txn, ev).await,
    )
    .await?;
    Ok(token)
}

/// The live session of a cookie token: (session id, user id).
pub async fn current(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    token: &str,
    now: i64,
) -> Result<Option<(String, String)>, DbErr> {
    Ok(current_since(conn, instance_id, token, now)
        .await?
        .map(|(id, user, _)| (id, user)))
}

/// [`current`] with when the session began: when its user last signed in
/// (OpenID Connect's `auth_time`).
pub async fn current_since(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    token: &str,
    now: i64,
) -> Result<Option<(String, String, i64)>, DbErr> {
    if token.is_empty() || token.len() > 100 {
        return Ok(None);
    }
    db::query_one(
        conn,
        "SELECT id, user_id, created_at FROM authz_sessions WHERE token_hash = $1 \
         AND instance_id = $2 AND ended_at IS NULL AND expires_at > $3",
        vec![hash_secret(token).into(), instance_id.into(), now.into()],
    )
    .await?
    .map(|r| Ok((col(&r, "id")?, col(&r, "user_id")?, col(&r, "created_at")?)))
    .transpose()
}

/// Ends a session, once.
pub async fn end(
    platform: &Platform,
    actor: &Authed,
    session_id: &str,
    user_id: &str,
    reason: &str,
) -> ApiResult<()> {
    let meta = actor.event_meta();
    let ended = aggregate::run::<SessionStream, _, KernelError, _, _, _>(
        platform,
        Target::new(STORE, session_id, &meta),
        |loaded, _| {
            Ok(decide_end(
                loaded.state.as_ref(),
                session_id,
                user_id,
                reason,
            ))
        },
        async |_, _| Ok(()),
        async |txn, ev| project(txn, ev).await,
    )
    .await;
    match ended {
        // Ended concurrently, again and again: the session is over either way.
        Ok(()) | Err(KernelError::Contended { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    match ev.event_type.as_str() {
        et::SESSION_CREATED => {
            let m = v1::SessionCreated::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO authz_sessions (id, instance_id, user_id, token_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    m.session_id.into(),
                    ev.meta.instance_id.clone().into(),
                    m.user_id.into(),
                    m.token_hash.into(),
                    ev.recorded_at_ms.into(),
                    m.expires_at_ms.into(),
                ],
            )
            .await?;
        }
        et::SESSION_ENDED => {
            let m = v1::SessionEnded::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "UPDATE authz_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL",
                vec![m.session_id.into(), ev.recorded_at_ms.into()],
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(db, &["authz_sessions"], Some(st::SESSION), |txn, ev| {
            Box::pin(project(txn, ev))
        })
        .await
}

#[cfg(test)]
mod tests {
    use gatehouse_platform::aggregate::fold;
    use gatehouse_platform::eventstore::{EventMeta, NewEvent};

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn unused() -> Loaded<Option<Session>> {
        Loaded {
            state: None,
            version: 0,
        }
    }

    fn start() -> Start<'static> {
        Start {
            session_id: "sess_1",
            user_id: "user_1",
            method: "sign_in",
            token_hash: hash_secret("token"),
        }
    }

    fn recorded(version: i64, new: &NewEvent) -> RecordedEvent {
        RecordedEvent::unstored(
            version,
            new.event_type,
            new.payload.clone(),
            EventMeta::default(),
        )
    }

    fn created() -> RecordedEvent {
        let d = decide_start(&unused(), &start(), NOW).unwrap();
        recorded(1, &d.events[0])
    }

    fn ended(version: i64, reason: &str) -> RecordedEvent {
        let live = Session {
            user_id: "user_1".into(),
            expires_at_ms: NOW + TTL_MS,
            ended: false,
        };
        let d = decide_end(Some(&live), "sess_1", "user_1", reason);
        recorded(version, &d.events[0])
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_skipping_it() {
        let mut garbled = ended(2, "sign_out");
        garbled.payload = vec![0xff, 0xff];
        let mut unknown = ended(2, "sign_out");
        unknown.event_type = "session.renewed".into();
        let mut twice = created();
        twice.stream_version = 2;
        for bad in [garbled, unknown, twice] {
            assert!(fold::<SessionStream>(&[created(), bad]).is_err());
        }
        let mut garbled_start = created();
        garbled_start.payload = vec![0xff, 0xff];
        assert!(fold::<SessionStream>(&[garbled_start]).is_err());
        // An end with no start.
        assert!(fold::<SessionStream>(&[ended(1, "sign_out")]).is_err());
    }

    #[test]
    fn a_session_starts_on_an_unused_id_and_lasts_seven_days() {
        let d = decide_start(&unused(), &start(), NOW).unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::SESSION_CREATED);
        let m = v1::SessionCreated::decode(d.events[0].payload.as_slice()).unwrap();
        assert_eq!(
            (m.session_id.as_str(), m.user_id.as_str(), m.method.as_str()),
            ("sess_1", "user_1", "sign_in")
        );
        assert_eq!(m.expires_at_ms, NOW + 7 * 24 * 60 * 60 * 1000);
        // Only the token's hash is recorded.
        assert_eq!(m.token_hash, hash_secret("token"));
        let loaded = fold::<SessionStream>(&[created()]).unwrap();
        assert_eq!(
            loaded.state,
            Some(Session {
                user_id: "user_1".into(),
                expires_at_ms: NOW + TTL_MS,
                ended: false,
            })
        );
    }

    #[test]
    fn starting_on_a_used_id_is_refused_not_overwritten() {
        let loaded = fold::<SessionStream>(&[created()]).unwrap();
        let e = decide_start(&loaded, &start(), NOW).unwrap_err();
        assert_eq!(e.status.as_u16(), 409);
    }

    #[test]
    fn a_session_ends_once() {
        let live = fold::<SessionStream>(&[created()]).unwrap();
        let d = decide_end(live.state.as_ref(), "sess_1", "user_1", "sign_out");
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::SESSION_ENDED);
        let m = v1::SessionEnded::decode(d.events[0].payload.as_slice()).unwrap();
        assert_eq!(
            (m.session_id.as_str(), m.user_id.as_str(), m.reason.as_str()),
            ("sess_1", "user_1", "sign_out")
        );
        let over = fold::<SessionStream>(&[created(), recorded(2, &d.events[0])]).unwrap();
        assert!(over.state.as_ref().unwrap().ended);
        for reason in ["sign_out", "replaced"] {
            let again = decide_end(over.state.as_ref(), "sess_1", "user_1", reason);
            assert!(again.events.is_empty(), "{reason}");
        }
    }

    #[test]
    fn ending_a_session_that_never_started_changes_nothing() {
        let d = decide_end(None, "sess_1", "user_1", "sign_out");
        assert!(d.events.is_empty());
    }

    #[test]
    fn an_ended_session_stays_ended_also_when_an_older_race_ended_it_twice() {
        let events = [created(), ended(2, "sign_out"), ended(3, "replaced")];
        let loaded = fold::<SessionStream>(&events).unwrap();
        assert_eq!(loaded.version, 3);
        let session = loaded.state.unwrap();
        assert!(session.ended);
        assert!(
            decide_end(Some(&session), "sess_1", "user_1", "sign_out")
                .events
                .is_empty()
        );
    }
}
