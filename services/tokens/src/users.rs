//! The token service's own read model of users (`tokens_users`), fed by
//! `gatehouse.identity` (it never reads the authorization service's tables),
//! for the claims userinfo returns and to refuse new tokens to banned and
//! deleted users (a deleted user stays as a tombstone without personal
//! data). A user deleted or banned also loses every token family it holds:
//! its tokens stop verifying everywhere at once.

use async_trait::async_trait;
use gatehouse_platform::bus::topics;
use gatehouse_platform::consumer::Projection;
use gatehouse_platform::db::{self, col};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, Envelope};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};
use serde_json::{Map, Value, json};

use crate::families;

pub const NAME: &str = "tokens.users";

pub struct Users;

/// What userinfo may tell about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub email: Option<String>,
    /// Whether `email` is verified.
    pub email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub updated_at_ms: i64,
}

/// The userinfo response (OpenID Connect Core §5.3.2): `sub` and the
/// standard claims the token's scopes release (`profile`: names and
/// `updated_at`; `email`: `email`, `email_verified`). Claims without a
/// value are left out; other claims may be added.
#[derive(utoipa::ToSchema)]
#[schema(as = UserInfo)]
#[allow(dead_code)]
pub struct UserInfoSchema {
    /// The user's id.
    sub: String,
    /// `profile`: first and last name.
    #[schema(nullable = false)]
    name: Option<String>,
    #[schema(nullable = false)]
    given_name: Option<String>,
    #[schema(nullable = false)]
    family_name: Option<String>,
    #[schema(nullable = false)]
    preferred_username: Option<String>,
    /// `profile`: seconds since the epoch.
    #[schema(nullable = false)]
    updated_at: Option<i64>,
    /// `email`: the primary address.
    #[schema(nullable = false)]
    email: Option<String>,
    #[schema(nullable = false)]
    email_verified: Option<bool>,
}

impl Profile {
    /// The OpenID Connect standard claims (Core §5.1) the granted scopes
    /// release (§5.4): `profile` names, `email` the primary address and
    /// whether it is verified (the Backend API's addresses are, hosted
    /// sign-up's are not).
    pub fn claims(&self, scopes: &[&str]) -> Map<String, Value> {
        let mut out = Map::new();
        let mut put = |k: &str, v: Value| {
            out.insert(k.to_owned(), v);
        };
        if scopes.contains(&"profile") {
            let name = [self.first_name.as_deref(), self.last_name.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if !name.is_empty() {
                put("name", json!(name));
            }
            for (claim, value) in [
                ("given_name", &self.first_name),
                ("family_name", &self.last_name),
                ("preferred_username", &self.username),
            ] {
                if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                    put(claim, json!(v));
                }
            }
            put("updated_at", json!(self.updated_at_ms / 1000));
        }
        if scopes.contains(&"email")
            && let Some(e) = &self.email
        {
            put("email", json!(e));
            put("email_verified", json!(self.email_verified));
        }
        out
    }
}

fn primary_email(u: &v1::UserState) -> Option<&v1::EmailAddress> {
    u.email_addresses
        .iter()
        .find(|e| e.id == u.primary_email_address_id)
        .or_else(|| u.email_addresses.first())
}

/// Whether the primary address is verified; `None` when an event written
/// before addresses carried the flag does not say and cannot tell (see
/// identity.proto): only a user's first event knows who created it, so a
/// later one keeps what the read model has.
fn primary_email_verified(event: &Envelope, u: &v1::UserState) -> Option<bool> {
    match primary_email(u) {
        None => Some(false),
        Some(e) => e.verified.or_else(|| {
            (event.stream_version == 1)
                .then(|| gatehouse_proto::verified_before_the_field(&event.actor))
        }),
    }
}

async fn upsert(
    conn: &impl ConnectionTrait,
    event: &Envelope,
    u: &v1::UserState,
) -> Result<(), DbErr> {
    // Keyed by the state's own time: a stale redelivery never wins.
    db::exec(
        conn,
        "INSERT INTO tokens_users (user_id, instance_id, email, first_name, last_name, username, \
         banned, deleted, updated_at, email_verified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, $8, COALESCE($9, FALSE)) \
         ON CONFLICT (user_id) DO UPDATE SET email = $3, first_name = $4, last_name = $5, \
         username = $6, banned = $7, updated_at = $8, \
         email_verified = COALESCE($9, tokens_users.email_verified) \
         WHERE tokens_users.updated_at <= $8 AND NOT tokens_users.deleted",
        vec![
            u.user_id.clone().into(),
            event.instance_id.as_str().into(),
            primary_email(u).map(|e| e.email_address.clone()).into(),
            u.first_name.clone().into(),
            u.last_name.clone().into(),
            u.username.clone().into(),
            u.banned.into(),
            u.updated_at_ms.into(),
            primary_email_verified(event, u).into(),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for Users {
    fn name(&self) -> &'static str {
        NAME
    }

    fn topics(&self) -> &'static [&'static str] {
        &[topics::IDENTITY]
    }

    async fn apply(&self, txn: &DatabaseTransaction, event: &Envelope) -> Result<(), DbErr> {
        let bad =
            |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", event.event_type));
        if event.event_type == et::USER_DELETED {
            let m = v1::UserDeleted::decode(event.payload.as_slice()).map_err(bad)?;
            // A tombstone without the personal data: later grants must
            // still know the user is gone.
            db::exec(
                txn,
                "INSERT INTO tokens_users (user_id, instance_id, banned, deleted, updated_at) \
                 VALUES ($1, $2, FALSE, TRUE, $3) ON CONFLICT (user_id) DO UPDATE SET \
                 email = NULL, email_verified = FALSE, first_name = NULL, last_name = NULL, \
                 username = NULL, deleted = TRUE",
                vec![
                    m.user_id.clone().into(),
                    event.instance_id.clone().into(),
                    event.occurred_at_ms.into(),
                ],
            )
            .await?;
            families::revoke_matching(txn, event, None, Some(&m.user_id), "user_deleted").await?;
            return Ok(());
        }
        let Some(u) =
            gatehouse_proto::user_state(&event.event_type, &event.payload).map_err(bad)?
        else {
            return Ok(());
        };
        upsert(txn, event, &u).await?;
        if event.event_type == et::USER_BANNED {
            families::revoke_matching(txn, event, None, Some(&u.user_id), "user_banned").await?;
        }
        Ok(())
    }

    async fn reset(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        db::exec(txn, "DELETE FROM tokens_users", vec![]).await?;
        Ok(())
    }
}

/// Whether the user may be issued tokens: not banned, not deleted. A user
/// not known here yet (its event still on the way) may.
pub async fn may_get_tokens(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
) -> Result<bool, DbErr> {
    let row = db::query_one(
        conn,
        "SELECT banned, deleted FROM tokens_users WHERE user_id = $1 AND instance_id = $2",
        vec![user_id.into(), instance_id.into()],
    )
    .await?;
    Ok(match row {
        Some(r) => !col::<bool>(&r, "banned")? && !col::<bool>(&r, "deleted")?,
        None => true,
    })
}

pub async fn profile(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
) -> Result<Option<Profile>, DbErr> {
    db::query_one(
        conn,
        "SELECT email, email_verified, first_name, last_name, username, updated_at \
         FROM tokens_users \
         WHERE user_id = $1 AND instance_id = $2 AND NOT deleted",
        vec![user_id.into(), instance_id.into()],
    )
    .await?
    .map(|r| {
        Ok(Profile {
            email: col(&r, "email")?,
            email_verified: col(&r, "email_verified")?,
            first_name: col(&r, "first_name")?,
            last_name: col(&r, "last_name")?,
            username: col(&r, "username")?,
            updated_at_ms: col(&r, "updated_at")?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_release_only_their_claims() {
        let p = Profile {
            email: Some("ada@example.com".into()),
            email_verified: true,
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            username: None,
            updated_at_ms: 1_700_000_000_123,
        };
        assert!(p.claims(&["openid"]).is_empty());
        let email = p.claims(&["openid", "email"]);
        assert_eq!(email["email"], "ada@example.com");
        assert_eq!(email["email_verified"], true);
        assert!(!email.contains_key("name"));
        let unverified = Profile {
            email_verified: false,
            ..p.clone()
        };
        assert_eq!(unverified.claims(&["email"])["email_verified"], false);
        let no_email = Profile {
            email: None,
            ..p.clone()
        };
        assert!(!no_email.claims(&["email"]).contains_key("email_verified"));
        let profile = p.claims(&["profile"]);
        assert_eq!(profile["name"], "Ada Lovelace");
        assert_eq!(profile["given_name"], "Ada");
        assert_eq!(profile["family_name"], "Lovelace");
        assert_eq!(profile["updated_at"], 1_700_000_000);
        assert!(!profile.contains_key("email") && !profile.contains_key("preferred_username"));
    }

    fn envelope(stream_version: u64, actor: &str) -> Envelope {
        Envelope {
            stream_version,
            actor: actor.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_primary_address_says_whether_it_is_verified() {
        let email = |id: &str, verified: Option<bool>| v1::EmailAddress {
            id: id.into(),
            email_address: format!("{id}@example.com"),
            verified,
        };
        let mut u = v1::UserState {
            email_addresses: vec![email("a", Some(false)), email("b", Some(true))],
            primary_email_address_id: "b".into(),
            ..Default::default()
        };
        let later = envelope(3, "secret_key:ak_1");
        assert_eq!(primary_email_verified(&later, &u), Some(true));
        u.primary_email_address_id = "a".into();
        assert_eq!(primary_email_verified(&later, &u), Some(false));
        // Events from before the flag: the creator decides, and a later
        // event keeps what the read model has.
        u.email_addresses = vec![email("a", None)];
        let by_api = envelope(1, "secret_key:ak_1");
        let by_sign_up = envelope(1, gatehouse_proto::SIGN_UP_ACTOR);
        assert_eq!(primary_email_verified(&by_api, &u), Some(true));
        assert_eq!(primary_email_verified(&by_sign_up, &u), Some(false));
        assert_eq!(primary_email_verified(&later, &u), None);
        u.email_addresses.clear();
        assert_eq!(primary_email_verified(&by_api, &u), Some(false));
    }
}
