//! Grants: what a user let an OAuth application do. One stream per user ×
//! application (`oauth_grant:<user>:<application>`); `authz_oauth_grants`
//! is its projection. A grant covering the requested scopes skips the
//! consent screen; revoking it is an event the token service acts on.
//!
//! Commands run through the aggregate kernel (`platform::aggregate`); the
//! decisions ([`decide_accept`], [`decide_revoke`]) are pure functions of
//! the scopes standing.

use gatehouse_platform::aggregate::{self, Aggregate, Decided, KernelError, Target, Unreadable};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_platform::tenancy::Authed;
use gatehouse_platform::{ApiError, ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::users::{STORE, event};

fn stream_id(user_id: &str, application_id: &str) -> String {
    format!("oauth_grant:{user_id}:{application_id}")
}

fn split_scopes(scopes: &str) -> Vec<String> {
    scopes
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The grant aggregate. Its state is the scopes standing, in the order
/// they were granted: empty when never granted, or revoked.
pub struct OAuthGrant;

impl Aggregate for OAuthGrant {
    const KIND: &'static str = st::OAUTH_GRANT;
    type State = Vec<String>;

    fn apply(scopes: &mut Vec<String>, ev: &RecordedEvent) -> Result<(), Unreadable> {
        let p = ev.payload.as_slice();
        match ev.event_type.as_str() {
            et::OAUTH_GRANT_ACCEPTED => {
                *scopes = split_scopes(&v1::OAuthGrantAccepted::decode(p)?.scopes);
            }
            et::OAUTH_GRANT_REVOKED => {
                v1::OAuthGrantRevoked::decode(p)?;
                scopes.clear();
            }
            other => return Err(Unreadable(format!("no rule for {other}"))),
        }
        Ok(())
    }
}

/// What the user accepts on the consent screen (or is granted silently).
pub struct Acceptance<'a> {
    pub user_id: &'a str,
    pub app: &'a AppState,
    pub scopes: &'a [String],
    pub consented: bool,
}

/// Accepting scopes: the grant becomes what was granted plus the new ones
/// (a revoked grant starts from nothing); nothing is recorded when it
/// already covers them, so consent is asked again only for scopes not
/// granted yet. Answers whether anything was recorded.
pub fn decide_accept(granted: &[String], a: &Acceptance<'_>) -> Decided<bool> {
    if a.scopes.iter().all(|s| granted.contains(s)) {
        return Decided::nothing(false);
    }
    let mut scopes = granted.to_vec();
    for s in a.scopes {
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    Decided {
        events: vec![event(
            et::OAUTH_GRANT_ACCEPTED,
            &v1::OAuthGrantAccepted {
                user_id: a.user_id.to_owned(),
                application_id: a.app.application_id.clone(),
                client_id: a.app.client_id.clone(),
                scopes: scopes.join(" "),
                consented: a.consented,
                client_name: a.app.name.clone(),
                client_logo_url: a.app.client_image_url.clone(),
            },
        )],
        answer: true,
    }
}

/// Taking a grant back: one `oauth_grant.revoked` while it stands, nothing
/// when there is none (never granted, or revoked already). Answers whether
/// anything was recorded.
pub fn decide_revoke(
    granted: &[String],
    user_id: &str,
    application_id: &str,
    client_id: &str,
    reason: &str,
) -> Decided<bool> {
    if granted.is_empty() {
        return Decided::nothing(false);
    }
    Decided {
        events: vec![event(
            et::OAUTH_GRANT_REVOKED,
            &v1::OAuthGrantRevoked {
                user_id: user_id.to_owned(),
                application_id: application_id.to_owned(),
                client_id: client_id.to_owned(),
                reason: reason.to_owned(),
            },
        )],
        answer: true,
    }
}

/// Runs a grant decision through the kernel; `true` when it recorded an
/// event. Every lost race is the grant's own 409.
async fn command<D>(platform: &Platform, actor: &Authed, stream: &str, decide: D) -> ApiResult<bool>
where
    D: Fn(&[String]) -> Decided<bool>,
{
    let meta = actor.event_meta();
    let target = Target::new(STORE, stream, &meta);
    aggregate::run::<OAuthGrant, _, KernelError, _, _, _>(
        platform,
        target,
        |loaded, _| Ok(decide(&loaded.state)),
        async |_, _| Ok(()),
        async |txn, ev| project(txn, ev).await,
    )
    .await
    .map_err(|e| match e {
        KernelError::Contended { .. } => ApiError::conflict(
            "concurrent_modification",
            "The grant was changed by other requests at the same time; retry.",
        ),
        e => e.into(),
    })
}

/// Records that `user_id` granted `scopes` to `app` (added to what it had).
/// Nothing is written when the grant already covers them.
pub async fn accept(
    platform: &Platform,
    actor: &Authed,
    user_id: &str,
    app: &AppState,
    scopes: &[String],
    consented: bool,
) -> ApiResult<()> {
    let stream = stream_id(user_id, &app.application_id);
    let acceptance = Acceptance {
        user_id,
        app,
        scopes,
        consented,
    };
    command(platform, actor, &stream, |granted| {
        decide_accept(granted, &acceptance)
    })
    .await
    .map(|_| ())
}

/// Takes a grant back; `false` when there was none standing.
pub async fn revoke(
    platform: &Platform,
    actor: &Authed,
    user_id: &str,
    application_id: &str,
    reason: &str,
) -> ApiResult<bool> {
    let Some(grant) = get(
        platform.db(),
        actor.instance.id.as_str(),
        user_id,
        application_id,
    )
    .await?
    else {
        return Ok(false);
    };
    let stream = stream_id(user_id, application_id);
    command(platform, actor, &stream, |granted| {
        decide_revoke(granted, user_id, application_id, &grant.client_id, reason)
    })
    .await
}

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    match ev.event_type.as_str() {
        et::OAUTH_GRANT_ACCEPTED => {
            let m = v1::OAuthGrantAccepted::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "INSERT INTO authz_oauth_grants (user_id, application_id, instance_id, client_id, \
                 scopes, consented, created_at, updated_at, client_name, client_logo_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) \
                 ON CONFLICT (user_id, application_id) DO UPDATE SET scopes = $5, \
                 consented = $6, updated_at = $7, client_name = $8, client_logo_url = $9",
                vec![
                    m.user_id.into(),
                    m.application_id.into(),
                    ev.meta.instance_id.clone().into(),
                    m.client_id.into(),
                    m.scopes.into(),
                    m.consented.into(),
                    ev.recorded_at_ms.into(),
                    m.client_name.into(),
                    m.client_logo_url.into(),
                ],
            )
            .await?;
        }
        et::OAUTH_GRANT_REVOKED => {
            let m = v1::OAuthGrantRevoked::decode(ev.payload.as_slice()).map_err(bad)?;
            db::exec(
                conn,
                "DELETE FROM authz_oauth_grants WHERE user_id = $1 AND application_id = $2",
                vec![m.user_id.into(), m.application_id.into()],
            )
            .await?;
        }
        other => tracing::warn!(event_type = other, "unknown grant event ignored"),
    }
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["authz_oauth_grants"],
            Some(st::OAUTH_GRANT),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

/// A standing grant, with the application it is for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: String,
    pub application_id: String,
    pub client_id: String,
    pub application_name: String,
    pub client_image_url: Option<String>,
    pub scopes: Vec<String>,
    pub consented: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Registered applications show their current name and logo; other
/// clients (metadata documents) the ones consented to.
const SELECT: &str = "SELECT g.user_id, g.application_id, g.client_id, g.scopes, g.consented, \
    g.created_at, g.updated_at, COALESCE(a.name, g.client_name) AS name, \
    CASE WHEN a.id IS NULL THEN g.client_logo_url ELSE a.client_image_url END AS client_image_url \
    FROM authz_oauth_grants g LEFT JOIN authz_oauth_applications a \
    ON a.id = g.application_id AND a.instance_id = g.instance_id \
    WHERE (a.id IS NOT NULL OR g.client_id LIKE 'https://%') AND";

fn from_row(r: &sea_orm::QueryResult) -> Result<Grant, DbErr> {
    let scopes: String = col(r, "scopes")?;
    Ok(Grant {
        user_id: col(r, "user_id")?,
        application_id: col(r, "application_id")?,
        client_id: col(r, "client_id")?,
        application_name: col(r, "name")?,
        client_image_url: col(r, "client_image_url")?,
        scopes: split_scopes(&scopes),
        consented: col(r, "consented")?,
        created_at_ms: col(r, "created_at")?,
        updated_at_ms: col(r, "updated_at")?,
    })
}

pub async fn get(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
    application_id: &str,
) -> Result<Option<Grant>, DbErr> {
    db::query_one(
        conn,
        &format!("{SELECT} g.instance_id = $1 AND g.user_id = $2 AND g.application_id = $3"),
        vec![instance_id.into(), user_id.into(), application_id.into()],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

/// A user's standing grants, newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
) -> Result<Vec<Grant>, DbErr> {
    db::query_all(
        conn,
        &format!(
            "{SELECT} g.instance_id = $1 AND g.user_id = $2 \
             ORDER BY g.updated_at DESC, g.application_id"
        ),
        vec![instance_id.into(), user_id.into()],
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

#[cfg(test)]
mod tests {
    use gatehouse_platform::aggregate::fold;
    use gatehouse_platform::eventstore::{EventMeta, NewEvent};

    use super::*;

    fn app() -> AppState {
        AppState {
            application_id: "oa_1".into(),
            client_id: "client_1".into(),
            name: "App".into(),
            client_image_url: Some("https://app.example/logo.png".into()),
            ..Default::default()
        }
    }

    fn scopes(s: &str) -> Vec<String> {
        split_scopes(s)
    }

    fn recorded(version: i64, new: &NewEvent) -> RecordedEvent {
        RecordedEvent::unstored(
            version,
            new.event_type,
            new.payload.clone(),
            EventMeta::default(),
        )
    }

    fn accepting(granted: &[String], requested: &str, consented: bool) -> Decided<bool> {
        let app = app();
        let requested = scopes(requested);
        decide_accept(
            granted,
            &Acceptance {
                user_id: "user_1",
                app: &app,
                scopes: &requested,
                consented,
            },
        )
    }

    fn accepted(d: &Decided<bool>) -> v1::OAuthGrantAccepted {
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::OAUTH_GRANT_ACCEPTED);
        v1::OAuthGrantAccepted::decode(d.events[0].payload.as_slice()).unwrap()
    }

    /// One command's decision, from the scopes standing.
    type Step = dyn Fn(&[String]) -> Decided<bool>;

    /// The stream after `decisions`, each decided from the fold so far.
    fn folded(decisions: &[&Step]) -> Vec<String> {
        let mut events = Vec::new();
        for decide in decisions {
            let granted = fold::<OAuthGrant>(&events).unwrap().state;
            for new in decide(&granted).events {
                events.push(recorded(events.len() as i64 + 1, &new));
            }
        }
        fold::<OAuthGrant>(&events).unwrap().state
    }

    #[test]
    fn the_fold_refuses_an_event_it_cannot_read_instead_of_skipping_it() {
        let first = recorded(1, &accepting(&[], "openid", true).events[0]);
        let mut garbled = first.clone();
        (garbled.stream_version, garbled.payload) = (2, vec![0xff, 0xff]);
        let mut garbled_revocation = garbled.clone();
        garbled_revocation.event_type = et::OAUTH_GRANT_REVOKED.into();
        let mut unknown = first.clone();
        (unknown.stream_version, unknown.event_type) = (2, "oauth_grant.renamed".into());
        for bad in [garbled, garbled_revocation, unknown] {
            assert!(fold::<OAuthGrant>(&[first.clone(), bad]).is_err());
        }
        let loaded = fold::<OAuthGrant>(&[first]).unwrap();
        assert_eq!((loaded.state, loaded.version), (scopes("openid"), 1));
    }

    #[test]
    fn consent_is_asked_again_only_for_scopes_not_granted_yet() {
        let granted = scopes("openid profile");
        for covered in ["openid", "profile openid", ""] {
            let d = accepting(&granted, covered, true);
            assert!(d.events.is_empty() && !d.answer, "{covered}");
        }
        let d = accepting(&granted, "openid email", true);
        assert!(d.answer);
        assert_eq!(accepted(&d).scopes, "openid profile email");
    }

    #[test]
    fn the_grant_accumulates_scopes_in_the_order_they_were_granted() {
        let standing = folded(&[
            &|g| accepting(g, "openid", true),
            &|g| accepting(g, "email openid", true),
            &|g| accepting(g, "profile email", false),
        ]);
        assert_eq!(standing, scopes("openid email profile"));
    }

    #[test]
    fn the_accepted_event_names_the_client_and_whether_the_user_consented() {
        for consented in [true, false] {
            let m = accepted(&accepting(&[], "openid", consented));
            assert_eq!(m.consented, consented);
            assert_eq!(
                (
                    m.user_id.as_str(),
                    m.application_id.as_str(),
                    m.client_id.as_str()
                ),
                ("user_1", "oa_1", "client_1")
            );
            assert_eq!(m.client_name, "App");
            assert_eq!(
                m.client_logo_url.as_deref(),
                Some("https://app.example/logo.png")
            );
        }
    }

    #[test]
    fn revoking_an_absent_grant_changes_nothing() {
        let d = decide_revoke(&[], "user_1", "oa_1", "client_1", "user");
        assert!(d.events.is_empty() && !d.answer);
        // Revoked already: the second revocation records nothing either.
        let standing = folded(&[&|g| accepting(g, "openid", true), &|g| {
            decide_revoke(g, "user_1", "oa_1", "client_1", "user")
        }]);
        let again = decide_revoke(&standing, "user_1", "oa_1", "client_1", "backend_api");
        assert!(again.events.is_empty() && !again.answer);
    }

    #[test]
    fn revoking_a_standing_grant_records_one_revocation_with_its_reason() {
        let d = decide_revoke(
            &scopes("openid"),
            "user_1",
            "oa_1",
            "client_1",
            "backend_api",
        );
        assert!(d.answer);
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].event_type, et::OAUTH_GRANT_REVOKED);
        let m = v1::OAuthGrantRevoked::decode(d.events[0].payload.as_slice()).unwrap();
        assert_eq!(
            (
                m.user_id.as_str(),
                m.application_id.as_str(),
                m.client_id.as_str()
            ),
            ("user_1", "oa_1", "client_1")
        );
        assert_eq!(m.reason, "backend_api");
    }

    #[test]
    fn a_revoked_grant_re_granted_starts_fresh() {
        let standing = folded(&[
            &|g| accepting(g, "openid profile", true),
            &|g| decide_revoke(g, "user_1", "oa_1", "client_1", "user"),
            &|g| accepting(g, "email", true),
        ]);
        assert_eq!(standing, scopes("email"));
    }
}
