//! The token service's own read model of OAuth clients, fed by
//! `gatehouse.oauth` (it never reads the authorization service's tables),
//! and client authentication at its endpoints.
//!
//! The same consumer acts on what ends a client's tokens: an application
//! deleted revokes every family it holds, a grant revoked revokes the
//! families of that user × client.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use async_trait::async_trait;
use base64::Engine;
use gatehouse_platform::bus::topics;
use gatehouse_platform::client_metadata;
use gatehouse_platform::consumer::Projection;
use gatehouse_platform::db::{self, col};
use gatehouse_platform::oauth::{AccessTokenFormat, OAuthCode, OAuthError};
use gatehouse_proto::event_types as et;
use gatehouse_proto::v1::{self, Envelope};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::families;

pub const NAME: &str = "tokens.clients";

pub struct Clients;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub instance_id: String,
    pub application_id: String,
    pub secret_hash: String,
    pub public: bool,
    pub scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub access_token_format: AccessTokenFormat,
}

/// Instances' declared resources, reused for [`CACHE_TTL`] like clients:
/// the process applying a change forgets its copy at once, other replicas
/// within the time to live.
static RESOURCES: LazyLock<moka::sync::Cache<String, std::sync::Arc<Vec<String>>>> =
    LazyLock::new(|| {
        moka::sync::Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .time_to_live(CACHE_TTL)
            .build()
    });

/// The resource indicators an instance declared (RFC 8707); empty: any.
pub async fn declared_resources(
    conn: &impl ConnectionTrait,
    instance_id: &str,
) -> Result<std::sync::Arc<Vec<String>>, DbErr> {
    if let Some(found) = RESOURCES.get(instance_id) {
        return Ok(found);
    }
    let found = std::sync::Arc::new(read_declared_resources(conn, instance_id).await?);
    RESOURCES.insert(instance_id.to_owned(), found.clone());
    Ok(found)
}

async fn read_declared_resources(
    conn: &impl ConnectionTrait,
    instance_id: &str,
) -> Result<Vec<String>, DbErr> {
    let row = db::query_one(
        conn,
        "SELECT resource_indicators FROM tokens_instance_resources WHERE instance_id = $1",
        vec![instance_id.into()],
    )
    .await?;
    match row {
        None => Ok(Vec::new()),
        Some(r) => serde_json::from_str(&col::<String>(&r, "resource_indicators")?)
            .map_err(|e| DbErr::Custom(format!("resource_indicators: {e}"))),
    }
}

#[async_trait]
impl Projection for Clients {
    fn name(&self) -> &'static str {
        NAME
    }

    fn topics(&self) -> &'static [&'static str] {
        &[topics::OAUTH]
    }

    async fn apply(&self, txn: &DatabaseTransaction, event: &Envelope) -> Result<(), DbErr> {
        let bad =
            |e: prost::DecodeError| DbErr::Custom(format!("undecodable {}: {e}", event.event_type));
        match event.event_type.as_str() {
            et::OAUTH_APPLICATION_DELETED => {
                let m =
                    v1::OAuthApplicationDeleted::decode(event.payload.as_slice()).map_err(bad)?;
                let row = db::query_one(
                    txn,
                    "SELECT client_id FROM tokens_clients WHERE application_id = $1",
                    vec![m.application_id.clone().into()],
                )
                .await?;
                if let Some(r) = row {
                    let client_id: String = col(&r, "client_id")?;
                    // The row first: the delete waits for every group commit
                    // holding it (`current` with `lock`), so the families
                    // they started are there to revoke; later ones find the
                    // client gone.
                    db::exec(
                        txn,
                        "DELETE FROM tokens_clients WHERE client_id = $1",
                        vec![client_id.clone().into()],
                    )
                    .await?;
                    families::revoke_matching(txn, event, Some(&client_id), None, "client_deleted")
                        .await?;
                    forget(&event.instance_id, &client_id);
                }
                return Ok(());
            }
            et::OAUTH_SETTINGS_CHANGED => {
                let m = v1::OAuthSettingsChanged::decode(event.payload.as_slice()).map_err(bad)?;
                let declared = serde_json::to_string(&m.resource_indicators)
                    .map_err(|e| DbErr::Custom(e.to_string()))?;
                db::exec(
                    txn,
                    "INSERT INTO tokens_instance_resources (instance_id, resource_indicators) \
                     VALUES ($1, $2) ON CONFLICT (instance_id) DO UPDATE SET \
                     resource_indicators = $2",
                    vec![event.instance_id.clone().into(), declared.into()],
                )
                .await?;
                RESOURCES.invalidate(&event.instance_id);
                return Ok(());
            }
            et::OAUTH_GRANT_REVOKED => {
                let m = v1::OAuthGrantRevoked::decode(event.payload.as_slice()).map_err(bad)?;
                families::revoke_matching(
                    txn,
                    event,
                    Some(&m.client_id),
                    Some(&m.user_id),
                    "grant_revoked",
                )
                .await?;
                return Ok(());
            }
            _ => {}
        }
        let Some(a) = gatehouse_proto::oauth_application_state(&event.event_type, &event.payload)
            .map_err(bad)?
        else {
            return Ok(());
        };
        forget(&event.instance_id, &a.client_id);
        let uris =
            serde_json::to_string(&a.redirect_uris).map_err(|e| DbErr::Custom(e.to_string()))?;
        let grants =
            serde_json::to_string(&a.grant_types).map_err(|e| DbErr::Custom(e.to_string()))?;
        // Older events first would only move the version back: keep the newest.
        db::exec(
            txn,
            "INSERT INTO tokens_clients (client_id, instance_id, application_id, secret_hash, is_public, \
             scopes, redirect_uris, grant_types, token_endpoint_auth_method, version, access_token_format) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (client_id) DO UPDATE SET secret_hash = $4, is_public = $5, scopes = $6, \
             redirect_uris = $7, grant_types = $8, token_endpoint_auth_method = $9, version = $10, \
             access_token_format = $11 \
             WHERE tokens_clients.version < $10",
            vec![
                a.client_id.into(),
                event.instance_id.clone().into(),
                a.application_id.into(),
                a.client_secret_hash.into(),
                a.public.into(),
                a.scopes.into(),
                uris.into(),
                grants.into(),
                a.token_endpoint_auth_method.into(),
                (event.stream_version as i64).into(),
                AccessTokenFormat::stored(&a.access_token_format)
                    .as_str()
                    .into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn reset(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        db::exec(txn, "DELETE FROM tokens_clients", vec![]).await?;
        db::exec(txn, "DELETE FROM tokens_instance_resources", vec![]).await?;
        Ok(())
    }
}

const SELECT: &str = "SELECT client_id, instance_id, application_id, secret_hash, is_public, \
    scopes, grant_types, access_token_format FROM tokens_clients";

/// How long a process reuses a client it has read, for introspection,
/// revocation and `client_credentials`. A change (new secret, deletion)
/// reaches the read model through the bus; replicas other than the one
/// applying it then see it within this, except that credentials the
/// cached client refuses are checked against the row at once, and a
/// `client_credentials` token is committed only if the row still is the
/// cached client (`group`). The code and refresh grants read the row.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Clients a process keeps at most.
const CACHE_CAPACITY: u64 = 10_000;
/// By (instance, client id).
static CACHE: LazyLock<moka::sync::Cache<(String, String), Client>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(CACHE_CAPACITY)
        .time_to_live(CACHE_TTL)
        .build()
});

pub(crate) fn forget(instance_id: &str, client_id: &str) {
    CACHE.invalidate(&(instance_id.to_owned(), client_id.to_owned()));
}

/// How a request finds its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The row as it is now.
    Fresh,
    /// The per-process cache of [`CACHE_TTL`].
    Cached,
}

pub async fn get(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    client_id: &str,
) -> Result<Option<Client>, DbErr> {
    one(
        conn,
        &format!("{SELECT} WHERE client_id = $1 AND instance_id = $2"),
        client_id,
        instance_id,
    )
    .await
}

/// A client of the instance, as `lookup` says.
async fn find(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    client_id: &str,
    lookup: Lookup,
) -> Result<Option<Client>, DbErr> {
    if lookup == Lookup::Fresh {
        return get(conn, instance_id, client_id).await;
    }
    let key = (instance_id.to_owned(), client_id.to_owned());
    if let Some(client) = CACHE.get(&key) {
        return Ok(Some(client));
    }
    let found = get(conn, instance_id, client_id).await?;
    if let Some(client) = &found {
        CACHE.insert(key, client.clone());
    }
    Ok(found)
}

/// The clients of `keys` (instance, client id) as they are now, for a
/// group commit to check what its requests decided on. With `lock` (on
/// PostgreSQL) the rows are held `FOR SHARE` until the transaction ends,
/// so a deletion waits for it and then revokes what it issued.
pub async fn current(
    conn: &impl ConnectionTrait,
    keys: &[(String, String)],
    lock: bool,
) -> Result<HashMap<(String, String), Client>, DbErr> {
    let mut ids: Vec<&str> = keys.iter().map(|(_, c)| c.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = format!(
        "{SELECT} WHERE client_id IN ({})",
        db::placeholders(1, ids.len())
    );
    if lock && db::is_postgres(conn) {
        sql.push_str(" FOR SHARE");
    }
    let values = ids.into_iter().map(Into::into).collect();
    db::query_all(conn, &sql, values)
        .await?
        .iter()
        .map(|r| {
            let c = from_row(r)?;
            Ok(((c.instance_id.clone(), c.client_id.clone()), c))
        })
        .collect()
}

/// The client of an application of the instance.
pub async fn by_application(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    application_id: &str,
) -> Result<Option<Client>, DbErr> {
    one(
        conn,
        &format!("{SELECT} WHERE application_id = $1 AND instance_id = $2"),
        application_id,
        instance_id,
    )
    .await
}

async fn one(
    conn: &impl ConnectionTrait,
    sql: &str,
    key: &str,
    instance_id: &str,
) -> Result<Option<Client>, DbErr> {
    db::query_one(conn, sql, vec![key.into(), instance_id.into()])
        .await?
        .map(|r| from_row(&r))
        .transpose()
}

fn from_row(r: &sea_orm::QueryResult) -> Result<Client, DbErr> {
    let scopes: String = col(r, "scopes")?;
    let grants: String = col(r, "grant_types")?;
    Ok(Client {
        client_id: col(r, "client_id")?,
        instance_id: col(r, "instance_id")?,
        application_id: col(r, "application_id")?,
        secret_hash: col(r, "secret_hash")?,
        public: col(r, "is_public")?,
        scopes: scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        grant_types: serde_json::from_str(&grants).unwrap_or_default(),
        access_token_format: AccessTokenFormat::stored(&col::<String>(r, "access_token_format")?),
    })
}

/// A client identified by its metadata document URL: public, limited to
/// the code flow. Its codes were issued by the authorization service after
/// it fetched and checked the document, and are bound to this client ID and
/// a PKCE challenge, so nothing more is needed here.
fn metadata_document_client(instance_id: &str, client_id: &str) -> Option<Client> {
    client_metadata::checked_url(client_id).ok()?;
    Some(Client {
        client_id: client_id.to_owned(),
        instance_id: instance_id.to_owned(),
        application_id: client_metadata::application_id(client_id),
        secret_hash: String::new(),
        public: true,
        scopes: Vec::new(),
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        access_token_format: AccessTokenFormat::Jwt,
    })
}

fn invalid_client(description: &str) -> OAuthError {
    OAuthError::new(
        StatusCode::UNAUTHORIZED,
        OAuthCode::InvalidClient,
        description,
    )
}

/// The client credentials of a request: HTTP Basic (`client_secret_basic`)
/// or form fields (`client_secret_post`, or a bare `client_id` for `none`).
/// Using two methods at once is refused.
pub fn credentials(
    req: &HttpRequest,
    form: &[(String, String)],
) -> Result<(String, Option<String>), OAuthError> {
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let basic = match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(h[6..].trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
            let (id, secret) = raw
                .split_once(':')
                .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let decode = |s: &str| -> String {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
        _ => None,
    };
    match (basic, field("client_id"), field("client_secret")) {
        (Some(_), _, Some(_)) => Err(OAuthError::bad_request(
            OAuthCode::InvalidRequest,
            "use one client authentication method, not two",
        )),
        (Some((id, secret)), form_id, None) => {
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::bad_request(
                    OAuthCode::InvalidRequest,
                    "client_id differs from the authenticated client",
                ));
            }
            Ok((id, Some(secret)))
        }
        (None, Some(id), secret) => Ok((id, secret)),
        (None, None, _) => Err(invalid_client("client authentication is required")),
    }
}

/// How long a request waits for a client this read model does not know yet:
/// one registered a moment ago may still be on its way through the bus
/// (milliseconds usually, longer under load), and a client that registers
/// and at once redeems a code must not be told it does not exist.
const CATCH_UP: std::time::Duration = std::time::Duration::from_millis(1500);

/// Requests that may wait for a client at once, per process; the others
/// look once and go.
const CATCH_UP_WAITERS: usize = 64;
/// How long an id that did not arrive in time is not waited for again.
const UNKNOWN_TTL: Duration = Duration::from_secs(10);

static WAITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CATCH_UP_WAITERS);
/// Ids recently waited for in vain, by (instance, client id).
static UNKNOWN: LazyLock<moka::sync::Cache<(String, String), ()>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        .max_capacity(CACHE_CAPACITY)
        .time_to_live(UNKNOWN_TTL)
        .build()
});

/// [`find`], waiting up to [`CATCH_UP`] for an id that looks like one of
/// ours (24 base62 characters) to arrive from the bus: at most once per id
/// in [`UNKNOWN_TTL`], by at most [`CATCH_UP_WAITERS`] requests at once,
/// reading the row at growing intervals (about eight reads in all).
async fn known(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    client_id: &str,
    lookup: Lookup,
) -> Result<Option<Client>, DbErr> {
    let found = find(conn, instance_id, client_id, lookup).await?;
    let ours = client_id.len() == 24 && client_id.bytes().all(|b| b.is_ascii_alphanumeric());
    let key = (instance_id.to_owned(), client_id.to_owned());
    if found.is_some() || !ours || UNKNOWN.contains_key(&key) {
        return Ok(found);
    }
    let Ok(_permit) = WAITERS.try_acquire() else {
        return Ok(None);
    };
    let deadline = gatehouse_platform::clock::monotonic() + CATCH_UP;
    let mut pause = Duration::from_millis(25);
    loop {
        let left = deadline.saturating_duration_since(gatehouse_platform::clock::monotonic());
        if left.is_zero() {
            UNKNOWN.insert(key, ());
            return Ok(None);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(400));
        if let Some(c) = find(conn, instance_id, client_id, Lookup::Fresh).await? {
            return Ok(Some(c));
        }
    }
}

/// Authenticates the client of a request within an instance. A cached
/// client that does not match the credentials is read afresh before the
/// request is refused, so a secret rotated a moment ago works at once; an
/// unknown one is not looked for twice.
pub async fn authenticate(
    conn: &impl ConnectionTrait,
    instance_id: &str,
    req: &HttpRequest,
    form: &[(String, String)],
    lookup: Lookup,
) -> Result<Client, OAuthError> {
    let (id, secret) = credentials(req, form)?;
    let found = known(conn, instance_id, &id, lookup).await?;
    let was_cached = found.is_some() && lookup == Lookup::Cached;
    match checked(instance_id, &id, found, secret.as_deref()) {
        Err(_) if was_cached => {
            forget(instance_id, &id);
            let found = get(conn, instance_id, &id).await?;
            checked(instance_id, &id, found, secret.as_deref())
        }
        outcome => outcome,
    }
}

/// The client `id` of the read model (or of a metadata document) when the
/// request's secret, or its lack of one, fits it.
fn checked(
    instance_id: &str,
    id: &str,
    found: Option<Client>,
    secret: Option<&str>,
) -> Result<Client, OAuthError> {
    let client = match found {
        Some(c) => c,
        None => metadata_document_client(instance_id, id)
            .ok_or_else(|| invalid_client("unknown client or bad credentials"))?,
    };
    match (client.public, secret) {
        (true, None) => Ok(client),
        (true, Some(_)) => Err(invalid_client("a public client has no secret")),
        (false, Some(secret)) => {
            let given = hex::encode(Sha256::digest(secret.as_bytes()));
            if bool::from(given.as_bytes().ct_eq(client.secret_hash.as_bytes())) {
                Ok(client)
            } else {
                Err(invalid_client("unknown client or bad credentials"))
            }
        }
        (false, None) => Err(invalid_client(
            "this client must authenticate with its secret",
        )),
    }
}
