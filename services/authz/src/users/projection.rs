//! The users read model (`authz_users`, `authz_user_emails`), kept in the
//! same transaction as each append and rebuildable from `authz_events`.

use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, EmailAddress, UserState};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Value};

use super::STORE;

/// Applies one user event.
pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    let state = match ev.event_type.as_str() {
        et::USER_CREATED => {
            v1::UserCreated::decode(ev.payload.as_slice())
                .map_err(bad)?
                .user
        }
        et::USER_UPDATED => {
            v1::UserUpdated::decode(ev.payload.as_slice())
                .map_err(bad)?
                .user
        }
        et::USER_BANNED => {
            v1::UserBanned::decode(ev.payload.as_slice())
                .map_err(bad)?
                .user
        }
        et::USER_UNBANNED => {
            v1::UserUnbanned::decode(ev.payload.as_slice())
                .map_err(bad)?
                .user
        }
        et::USER_DELETED => {
            let m = v1::UserDeleted::decode(ev.payload.as_slice()).map_err(bad)?;
            for table in [
                "authz_user_emails WHERE user_id",
                "authz_passwords WHERE user_id",
                "authz_users WHERE id",
            ] {
                db::exec(
                    conn,
                    &format!("DELETE FROM {table} = $1"),
                    vec![m.user_id.clone().into()],
                )
                .await?;
            }
            return Ok(());
        }
        other => {
            tracing::warn!(
                event_type = other,
                "unknown user event ignored by projection"
            );
            return Ok(());
        }
    };
    let Some(mut u) = state else {
        return Err(DbErr::Custom(format!(
            "{} without user state",
            ev.event_type
        )));
    };
    if u.email_addresses.iter().any(|e| e.verified.is_none()) {
        // Written before addresses said whether they are verified: that
        // depends on who created the user.
        let created_by = if ev.stream_version == 1 {
            ev.meta.actor.clone()
        } else {
            STORE
                .load_stream(conn, &u.user_id)
                .await?
                .first()
                .map(|first| first.meta.actor.clone())
                .unwrap_or_default()
        };
        super::settle_verification(&mut u, &created_by);
    }
    let instance_id = ev.meta.instance_id.clone();
    db::exec(
        conn,
        "INSERT INTO authz_users (id, instance_id, version, primary_email_address_id, first_name, \
         last_name, external_id, username, public_metadata, private_metadata, unsafe_metadata, \
         password_enabled, banned, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO UPDATE SET version = $3, primary_email_address_id = $4, \
         first_name = $5, last_name = $6, external_id = $7, username = $8, public_metadata = $9, \
         private_metadata = $10, unsafe_metadata = $11, password_enabled = $12, banned = $13, \
         updated_at = $15",
        vec![
            u.user_id.clone().into(),
            instance_id.clone().into(),
            ev.stream_version.into(),
            opt(&Some(u.primary_email_address_id.clone()).filter(|s| !s.is_empty())),
            opt(&u.first_name),
            opt(&u.last_name),
            opt(&u.external_id),
            opt(&u.username),
            u.public_metadata_json.clone().into(),
            u.private_metadata_json.clone().into(),
            u.unsafe_metadata_json.clone().into(),
            u.password_enabled.into(),
            u.banned.into(),
            u.created_at_ms.into(),
            u.updated_at_ms.into(),
        ],
    )
    .await?;
    db::exec(
        conn,
        "DELETE FROM authz_user_emails WHERE user_id = $1",
        vec![u.user_id.clone().into()],
    )
    .await?;
    for (i, e) in u.email_addresses.iter().enumerate() {
        db::exec(
            conn,
            "INSERT INTO authz_user_emails (id, instance_id, user_id, email_address, email_lower, \
             position, verified) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                e.id.clone().into(),
                instance_id.clone().into(),
                u.user_id.clone().into(),
                e.email_address.clone().into(),
                e.email_address.to_lowercase().into(),
                (i as i32).into(),
                e.verified.unwrap_or(false).into(),
            ],
        )
        .await?;
    }
    Ok(())
}

fn opt(v: &Option<String>) -> Value {
    Value::String(v.clone())
}

/// Drops the users projection and folds every user event again. Password
/// hashes are not a projection (they never enter events) and are kept.
pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["authz_user_emails", "authz_users"],
            Some(gatehouse_proto::stream_types::USER),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

const USER_COLUMNS: &str = "id, primary_email_address_id, first_name, last_name, external_id, \
    username, public_metadata, private_metadata, unsafe_metadata, password_enabled, banned, \
    created_at, updated_at";

/// A user row without its emails.
fn state_from_row(r: &sea_orm::QueryResult) -> Result<UserState, DbErr> {
    Ok(UserState {
        user_id: col(r, "id")?,
        email_addresses: vec![],
        primary_email_address_id: col::<Option<String>>(r, "primary_email_address_id")?
            .unwrap_or_default(),
        first_name: col(r, "first_name")?,
        last_name: col(r, "last_name")?,
        external_id: col(r, "external_id")?,
        username: col(r, "username")?,
        public_metadata_json: col(r, "public_metadata")?,
        private_metadata_json: col(r, "private_metadata")?,
        unsafe_metadata_json: col(r, "unsafe_metadata")?,
        password_enabled: col(r, "password_enabled")?,
        banned: col(r, "banned")?,
        created_at_ms: col(r, "created_at")?,
        updated_at_ms: col(r, "updated_at")?,
    })
}

/// Rebuilds `UserState`s from projection rows (emails loaded in one query).
async fn states_from_rows(
    conn: &impl ConnectionTrait,
    rows: &[sea_orm::QueryResult],
) -> Result<Vec<UserState>, DbErr> {
    let mut users = rows
        .iter()
        .map(state_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    if users.is_empty() {
        return Ok(users);
    }
    let placeholders: Vec<String> = (1..=users.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT id, user_id, email_address, verified, position FROM authz_user_emails \
         WHERE user_id IN ({}) ORDER BY user_id, position",
        placeholders.join(", ")
    );
    let values: Vec<Value> = users.iter().map(|u| u.user_id.clone().into()).collect();
    for r in db::query_all(conn, &sql, values).await? {
        let user_id: String = col(&r, "user_id")?;
        if let Some(u) = users.iter_mut().find(|u| u.user_id == user_id) {
            u.email_addresses.push(EmailAddress {
                id: col(&r, "id")?,
                email_address: col(&r, "email_address")?,
                verified: Some(col(&r, "verified")?),
            });
        }
    }
    Ok(users)
}

pub async fn get(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    user_id: &str,
) -> Result<Option<UserState>, DbErr> {
    // One round trip: the user joined with its emails, one row per email.
    let columns: Vec<String> = USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{}", c.trim()))
        .collect();
    let rows = db::query_all(
        conn,
        &format!(
            "SELECT {}, e.id AS email_id, e.email_address AS email_value, \
             e.verified AS email_verified \
             FROM authz_users u LEFT JOIN authz_user_emails e ON e.user_id = u.id \
             WHERE u.id = $1 AND u.instance_id = $2 ORDER BY e.position",
            columns.join(", ")
        ),
        vec![user_id.into(), instance_id.into()],
    )
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut user = state_from_row(first)?;
    for r in &rows {
        if let Some(id) = col::<Option<String>>(r, "email_id")? {
            user.email_addresses.push(EmailAddress {
                id,
                email_address: col(r, "email_value")?,
                verified: Some(col(r, "email_verified")?),
            });
        }
    }
    Ok(Some(user))
}

/// Filters of the list and count endpoints.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub email_addresses: Vec<String>,
    pub user_ids: Vec<String>,
    pub external_ids: Vec<String>,
    pub usernames: Vec<String>,
    pub query: Option<String>,
    pub banned: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    CreatedAt,
    UpdatedAt,
    FirstName,
    LastName,
    Username,
    EmailAddress,
}

impl OrderBy {
    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "u.created_at",
            Self::UpdatedAt => "u.updated_at",
            Self::FirstName => "u.first_name",
            Self::LastName => "u.last_name",
            Self::Username => "u.username",
            Self::EmailAddress => {
                "(SELECT e.email_lower FROM authz_user_emails e WHERE e.id = u.primary_email_address_id)"
            }
        }
    }

    pub fn parse(s: &str) -> Option<(Self, bool)> {
        let (desc, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            // A `+` sent unescaped in a query string arrives as a space.
            None => (
                false,
                s.strip_prefix('+')
                    .or_else(|| s.strip_prefix(' '))
                    .unwrap_or(s),
            ),
        };
        let by = match name {
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "first_name" => Self::FirstName,
            "last_name" => Self::LastName,
            "username" => Self::Username,
            "email_address" => Self::EmailAddress,
            _ => return None,
        };
        Some((by, desc))
    }
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn where_clause(instance_id: &str, f: &Filter) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = vec![instance_id.into()];
    let mut clauses = vec!["u.instance_id = $1".to_owned()];
    let list = |values: &mut Vec<Value>, items: &[String]| -> String {
        let start = values.len();
        values.extend(items.iter().map(|i| Value::from(i.clone())));
        (start + 1..=values.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !f.email_addresses.is_empty() {
        let lowered: Vec<String> = f.email_addresses.iter().map(|e| e.to_lowercase()).collect();
        let p = list(&mut values, &lowered);
        clauses.push(format!(
            "u.id IN (SELECT e.user_id FROM authz_user_emails e WHERE e.instance_id = $1 AND e.email_lower IN ({p}))"
        ));
    }
    if !f.user_ids.is_empty() {
        let p = list(&mut values, &f.user_ids);
        clauses.push(format!("u.id IN ({p})"));
    }
    if !f.external_ids.is_empty() {
        let p = list(&mut values, &f.external_ids);
        clauses.push(format!("u.external_id IN ({p})"));
    }
    if !f.usernames.is_empty() {
        let p = list(&mut values, &f.usernames);
        clauses.push(format!("u.username IN ({p})"));
    }
    if let Some(banned) = f.banned {
        values.push(banned.into());
        clauses.push(format!("u.banned = ${}", values.len()));
    }
    if let Some(q) = f.query.as_deref().filter(|q| !q.is_empty()) {
        values.push(like_pattern(q).into());
        let n = values.len();
        clauses.push(format!(
            "(LOWER(u.id) LIKE ${n} ESCAPE '\\' OR LOWER(u.first_name) LIKE ${n} ESCAPE '\\' \
             OR LOWER(u.last_name) LIKE ${n} ESCAPE '\\' OR LOWER(u.username) LIKE ${n} ESCAPE '\\' \
             OR LOWER(u.external_id) LIKE ${n} ESCAPE '\\' \
             OR EXISTS (SELECT 1 FROM authz_user_emails e WHERE e.user_id = u.id AND e.email_lower LIKE ${n} ESCAPE '\\'))"
        ));
    }
    (clauses.join(" AND "), values)
}

pub async fn list(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    filter: &Filter,
    order: (OrderBy, bool),
    limit: u64,
    offset: u64,
) -> Result<Vec<UserState>, DbErr> {
    let (clause, mut values) = where_clause(instance_id, filter);
    let dir = if order.1 { "DESC" } else { "ASC" };
    values.push((limit as i64).into());
    values.push((offset as i64).into());
    let n = values.len();
    let columns: Vec<String> = USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{}", c.trim()))
        .collect();
    let sql = format!(
        "SELECT {} FROM authz_users u WHERE {clause} ORDER BY {} {dir} NULLS LAST, u.id {dir} \
         LIMIT ${} OFFSET ${}",
        columns.join(", "),
        order.0.column(),
        n - 1,
        n
    );
    let rows = db::query_all(conn, &sql, values).await?;
    states_from_rows(conn, &rows).await
}

pub async fn count(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    filter: &Filter,
) -> Result<i64, DbErr> {
    let (clause, values) = where_clause(instance_id, filter);
    let sql = format!("SELECT COUNT(*) AS n FROM authz_users u WHERE {clause}");
    match db::query_one(conn, &sql, values).await? {
        Some(r) => col(&r, "n"),
        None => Ok(0),
    }
}

/// Which of these (lowercased) addresses already belong to a user of the
/// instance other than `except_user`.
pub async fn taken_emails(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    emails: &[String],
    except_user: Option<&str>,
) -> Result<Vec<String>, DbErr> {
    if emails.is_empty() {
        return Ok(vec![]);
    }
    let mut values: Vec<Value> = vec![instance_id.into(), except_user.unwrap_or("").into()];
    values.extend(emails.iter().map(|e| Value::from(e.to_lowercase())));
    let p: Vec<String> = (3..=values.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT email_lower FROM authz_user_emails WHERE instance_id = $1 AND user_id <> $2 \
         AND email_lower IN ({})",
        p.join(", ")
    );
    db::query_all(conn, &sql, values)
        .await?
        .iter()
        .map(|r| col(r, "email_lower"))
        .collect()
}

/// Whether another user of the instance has this username (case-insensitive).
pub async fn username_taken(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    username: &str,
    except_user: Option<&str>,
) -> Result<bool, DbErr> {
    Ok(db::query_one(
        conn,
        "SELECT 1 AS taken FROM authz_users WHERE instance_id = $1 AND LOWER(username) = LOWER($2) AND id <> $3",
        vec![instance_id.into(), username.into(), except_user.unwrap_or("").into()],
    )
    .await?
    .is_some())
}

/// Who signs in with this address: (user id, banned, password hash).
pub async fn credentials_by_email(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    email: &str,
) -> Result<Option<(String, bool, Option<String>)>, DbErr> {
    db::query_one(
        conn,
        "SELECT u.id, u.banned, p.hash FROM authz_user_emails e \
         JOIN authz_users u ON u.id = e.user_id \
         LEFT JOIN authz_passwords p ON p.user_id = u.id \
         WHERE e.instance_id = $1 AND e.email_lower = $2",
        vec![instance_id.into(), email.to_lowercase().into()],
    )
    .await?
    .map(|r| Ok((col(&r, "id")?, col(&r, "banned")?, col(&r, "hash")?)))
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::OrderBy;

    #[test]
    fn order_by_takes_a_sign_and_reads_an_unescaped_plus_as_ascending() {
        assert_eq!(
            OrderBy::parse("-created_at"),
            Some((OrderBy::CreatedAt, true))
        );
        assert_eq!(
            OrderBy::parse("+created_at"),
            Some((OrderBy::CreatedAt, false))
        );
        assert_eq!(
            OrderBy::parse(" username"),
            Some((OrderBy::Username, false))
        );
        assert_eq!(
            OrderBy::parse("created_at"),
            Some((OrderBy::CreatedAt, false))
        );
        assert_eq!(OrderBy::parse("--created_at"), None);
        assert_eq!(OrderBy::parse("password"), None);
    }
}
