//! `authz_oauth_applications`, kept in the append's transaction and
//! rebuildable from `authz_events`.

use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_platform::oauth::AccessTokenFormat;
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Value};

use crate::users::STORE;

pub async fn project(conn: &impl ConnectionTrait, ev: &RecordedEvent) -> Result<(), DbErr> {
    let bad = |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type));
    let p = ev.payload.as_slice();
    let state = match ev.event_type.as_str() {
        et::OAUTH_APPLICATION_CREATED
        | et::OAUTH_APPLICATION_UPDATED
        | et::OAUTH_APPLICATION_SECRET_ROTATED => {
            gatehouse_proto::oauth_application_state(&ev.event_type, p).map_err(bad)?
        }
        et::OAUTH_APPLICATION_DELETED => {
            let m = v1::OAuthApplicationDeleted::decode(p).map_err(bad)?;
            db::exec(
                conn,
                "DELETE FROM authz_oauth_applications WHERE id = $1",
                vec![m.application_id.into()],
            )
            .await?;
            return Ok(());
        }
        other => {
            tracing::warn!(
                event_type = other,
                "unknown OAuth application event ignored"
            );
            return Ok(());
        }
    };
    let Some(a) = state else {
        return Err(DbErr::Custom(format!("{} without state", ev.event_type)));
    };
    let uris = serde_json::to_string(&a.redirect_uris).map_err(|e| DbErr::Custom(e.to_string()))?;
    let grants = serde_json::to_string(&a.grant_types).map_err(|e| DbErr::Custom(e.to_string()))?;
    db::exec(
        conn,
        "INSERT INTO authz_oauth_applications (id, instance_id, version, name, client_id, \
         client_secret_hash, client_uri, client_image_url, dynamically_registered, \
         consent_screen_enabled, pkce_required, is_public, scopes, redirect_uris, created_at, updated_at, \
         registration_access_token_hash, token_endpoint_auth_method, grant_types, access_token_format) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT (id) DO UPDATE SET version = $3, name = $4, client_secret_hash = $6, \
         client_uri = $7, client_image_url = $8, consent_screen_enabled = $10, pkce_required = $11, \
         is_public = $12, scopes = $13, redirect_uris = $14, updated_at = $16, \
         registration_access_token_hash = $17, token_endpoint_auth_method = $18, grant_types = $19, \
         access_token_format = $20",
        vec![
            a.application_id.into(),
            ev.meta.instance_id.clone().into(),
            ev.stream_version.into(),
            a.name.into(),
            a.client_id.into(),
            a.client_secret_hash.into(),
            Value::String(a.client_uri),
            Value::String(a.client_image_url),
            a.dynamically_registered.into(),
            a.consent_screen_enabled.into(),
            a.pkce_required.into(),
            a.public.into(),
            a.scopes.into(),
            uris.into(),
            a.created_at_ms.into(),
            a.updated_at_ms.into(),
            a.registration_access_token_hash.into(),
            a.token_endpoint_auth_method.into(),
            grants.into(),
            AccessTokenFormat::stored(&a.access_token_format)
                .as_str()
                .into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["authz_oauth_applications"],
            Some(st::OAUTH_APPLICATION),
            |txn, ev| Box::pin(project(txn, ev)),
        )
        .await
}

const COLUMNS: &str = "id, name, client_id, client_secret_hash, client_uri, client_image_url, \
    dynamically_registered, consent_screen_enabled, pkce_required, is_public, scopes, \
    redirect_uris, created_at, updated_at, registration_access_token_hash, \
    token_endpoint_auth_method, grant_types, access_token_format";

fn from_row(r: &sea_orm::QueryResult) -> Result<AppState, DbErr> {
    let uris: String = col(r, "redirect_uris")?;
    let grants: String = col(r, "grant_types")?;
    Ok(AppState {
        application_id: col(r, "id")?,
        name: col(r, "name")?,
        client_id: col(r, "client_id")?,
        client_secret_hash: col(r, "client_secret_hash")?,
        client_uri: col(r, "client_uri")?,
        client_image_url: col(r, "client_image_url")?,
        dynamically_registered: col(r, "dynamically_registered")?,
        consent_screen_enabled: col(r, "consent_screen_enabled")?,
        pkce_required: col(r, "pkce_required")?,
        public: col(r, "is_public")?,
        scopes: col(r, "scopes")?,
        redirect_uris: serde_json::from_str(&uris).map_err(|e| DbErr::Custom(e.to_string()))?,
        created_at_ms: col(r, "created_at")?,
        updated_at_ms: col(r, "updated_at")?,
        registration_access_token_hash: col(r, "registration_access_token_hash")?,
        token_endpoint_auth_method: col(r, "token_endpoint_auth_method")?,
        grant_types: serde_json::from_str(&grants).map_err(|e| DbErr::Custom(e.to_string()))?,
        access_token_format: col(r, "access_token_format")?,
    })
}

/// An application by its client id, within an instance.
pub async fn by_client_id(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    client_id: &str,
) -> Result<Option<AppState>, DbErr> {
    db::query_one(
        conn,
        &format!("SELECT {COLUMNS} FROM authz_oauth_applications WHERE client_id = $1 AND instance_id = $2"),
        vec![client_id.into(), instance_id.into()],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

pub async fn get(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    id: &str,
) -> Result<Option<AppState>, DbErr> {
    db::query_one(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM authz_oauth_applications WHERE id = $1 AND instance_id = $2"
        ),
        vec![id.into(), instance_id.into()],
    )
    .await?
    .map(|r| from_row(&r))
    .transpose()
}

pub async fn list(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    name_query: Option<&str>,
    order: (&str, bool),
    limit: u64,
    offset: u64,
) -> Result<(Vec<AppState>, i64), DbErr> {
    let mut filter = "instance_id = $1".to_owned();
    let mut values: Vec<Value> = vec![instance_id.into()];
    if let Some(q) = name_query.filter(|q| !q.is_empty()) {
        let escaped = q
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        values.push(format!("%{escaped}%").into());
        filter.push_str(" AND LOWER(name) LIKE $2 ESCAPE '\\'");
    }
    let total = match db::query_one(
        conn,
        &format!("SELECT COUNT(*) AS n FROM authz_oauth_applications WHERE {filter}"),
        values.clone(),
    )
    .await?
    {
        Some(r) => col(&r, "n")?,
        None => 0,
    };
    let dir = if order.1 { "DESC" } else { "ASC" };
    let n = values.len();
    values.push((limit as i64).into());
    values.push((offset as i64).into());
    let sql = format!(
        "SELECT {COLUMNS} FROM authz_oauth_applications WHERE {filter} \
         ORDER BY {} {dir}, id {dir} LIMIT ${} OFFSET ${}",
        order.0,
        n + 1,
        n + 2
    );
    let rows = db::query_all(conn, &sql, values).await?;
    Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
}

/// How many applications of the instance list `scope`.
pub async fn apps_using_scope(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    scope: &str,
) -> Result<i64, DbErr> {
    // Scopes are stored space-separated; compare whole tokens in Rust rather
    // than with LIKE, whose wildcards a scope name may contain.
    let rows = db::query_all(
        conn,
        "SELECT scopes FROM authz_oauth_applications WHERE instance_id = $1",
        vec![instance_id.into()],
    )
    .await?;
    let mut n = 0;
    for r in &rows {
        let scopes: String = col(r, "scopes")?;
        if scopes.split(' ').any(|s| s == scope) {
            n += 1;
        }
    }
    Ok(n)
}
