//! Dynamic client registration (RFC 7591) and its management protocol
//! (RFC 7592), per instance, off by default. The switch lives in the
//! instance's OAuth settings (`/v1/instance/oauth_application_settings`).
//!
//! Registered clients are ordinary OAuth applications marked
//! `dynamically_registered`, with the consent screen forced on. Each gets a
//! registration access token (shown once, stored as SHA-256) to read, update
//! and delete its registration.

mod settings_commands;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use gatehouse_platform::aggregate::{self, Aggregate, Target, Unreadable};
use gatehouse_platform::db::{self, col};
use gatehouse_platform::eventstore::RecordedEvent;
use gatehouse_platform::http::{bearer_token, parse_json};
use gatehouse_platform::oauth::{OAuthCode, OAuthError};
use gatehouse_platform::tenancy::{self, Authed, InstanceKey};
use gatehouse_platform::{ApiResult, Platform};
use gatehouse_proto::event_types as et;
use gatehouse_proto::stream_types as st;
use gatehouse_proto::v1::{self, OAuthApplicationState as AppState};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{Decision, event, hash_secret, projection, validate};
use crate::users::STORE;

/// Registrations one IP address may make per instance per rate-limit window.
const REGISTRATIONS_PER_IP: u32 = 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/instance/oauth_application_settings")
            .get(get_settings)
            .patch(patch_settings),
    )
    .service(
        web::resource("/i/{instance_id}/oauth/register")
            .wrap(gatehouse_platform::http::public_cors())
            .post(register),
    )
    .service(
        web::resource("/i/{instance_id}/oauth/register/{client_id}")
            .get(read)
            .put(update)
            .delete(delete),
    );
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(get_settings, patch_settings, register, read, update, delete),
    components(schemas(
        SettingsObject,
        SettingsBody,
        ClientMetadata,
        RegisteredClient,
        AuthMethodSchema,
        GrantTypeSchema,
        ResponseTypeSchema
    )),
    modifiers(&RegistrationAccessToken)
)]
struct Doc;

/// The bearer token of RFC 7592 management requests.
struct RegistrationAccessToken;

impl utoipa::Modify for RegistrationAccessToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "registration_access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The registration access token returned by dynamic client registration \
                         (RFC 7592 §3).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI description of the instance's OAuth settings and of dynamic
/// client registration (RFC 7591, RFC 7592).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <Doc as utoipa::OpenApi>::openapi();
    // An absent body reads as `{}`: the PATCH changes nothing.
    if let Some(body) = doc
        .paths
        .paths
        .get_mut("/v1/instance/oauth_application_settings")
        .and_then(|item| item.patch.as_mut())
        .and_then(|op| op.request_body.as_mut())
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
    doc
}

// ------------------------------------------------------------- settings ----

fn settings_stream(instance_id: &str) -> String {
    format!("oauth_settings:{instance_id}")
}

/// An instance's OAuth settings, as its projection has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// RFC 7591 registration at the issuer (off by default).
    pub dynamic_registration: bool,
    /// Clients identified by a metadata document URL (on by default).
    pub metadata_documents: bool,
    /// Open registration may register `client_credentials` clients (off by
    /// default: anyone could otherwise mint machine tokens).
    pub registration_client_credentials: bool,
    /// Registered clients may ask for custom scopes (off by default: they
    /// get the standard ones).
    pub registration_custom_scopes: bool,
    /// The resource indicators tokens may be bound to; empty: any.
    pub resource_indicators: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dynamic_registration: false,
            metadata_documents: true,
            registration_client_credentials: false,
            registration_custom_scopes: false,
            resource_indicators: Vec::new(),
        }
    }
}

/// Resource indicators one instance may declare.
pub const MAX_RESOURCE_INDICATORS: usize = 50;

/// The OAuth settings aggregate: one stream per instance, each event
/// carrying the whole settings.
pub struct OAuthSettings;

impl Aggregate for OAuthSettings {
    const KIND: &'static str = st::OAUTH_SETTINGS;
    type State = Settings;

    fn apply(s: &mut Settings, ev: &RecordedEvent) -> Result<(), Unreadable> {
        if ev.event_type != et::OAUTH_SETTINGS_CHANGED {
            return Err(Unreadable(format!("no rule for {}", ev.event_type)));
        }
        let m = v1::OAuthSettingsChanged::decode(ev.payload.as_slice())?;
        *s = Settings {
            dynamic_registration: m.dynamic_client_registration,
            metadata_documents: !m.client_id_metadata_documents_disabled,
            registration_client_credentials: m.registration_client_credentials,
            registration_custom_scopes: m.registration_custom_scopes,
            resource_indicators: m.resource_indicators,
        };
        Ok(())
    }
}

pub async fn settings(conn: &impl ConnectionTrait, instance_id: &str) -> Result<Settings, DbErr> {
    let Some(r) = db::query_one(
        conn,
        "SELECT dynamic_client_registration, metadata_documents_disabled, \
         registration_client_credentials, registration_custom_scopes, resource_indicators \
         FROM authz_oauth_settings WHERE instance_id = $1",
        vec![instance_id.into()],
    )
    .await?
    else {
        return Ok(Settings::default());
    };
    let resources: String = col(&r, "resource_indicators")?;
    Ok(Settings {
        dynamic_registration: col(&r, "dynamic_client_registration")?,
        metadata_documents: !col::<bool>(&r, "metadata_documents_disabled")?,
        registration_client_credentials: col(&r, "registration_client_credentials")?,
        registration_custom_scopes: col(&r, "registration_custom_scopes")?,
        resource_indicators: serde_json::from_str(&resources)
            .map_err(|e| DbErr::Custom(format!("resource_indicators: {e}")))?,
    })
}

pub async fn project_settings(
    conn: &impl ConnectionTrait,
    ev: &RecordedEvent,
) -> Result<(), DbErr> {
    if ev.event_type != et::OAUTH_SETTINGS_CHANGED {
        return Ok(());
    }
    let m = v1::OAuthSettingsChanged::decode(ev.payload.as_slice())
        .map_err(|e| DbErr::Custom(format!("undecodable {}: {e}", ev.event_type)))?;
    let resources =
        serde_json::to_string(&m.resource_indicators).map_err(|e| DbErr::Custom(e.to_string()))?;
    db::exec(
        conn,
        "INSERT INTO authz_oauth_settings (instance_id, dynamic_client_registration, \
         metadata_documents_disabled, registration_client_credentials, \
         registration_custom_scopes, resource_indicators, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (instance_id) DO UPDATE SET dynamic_client_registration = $2, \
         metadata_documents_disabled = $3, registration_client_credentials = $4, \
         registration_custom_scopes = $5, resource_indicators = $6, updated_at = $7",
        vec![
            ev.meta.instance_id.clone().into(),
            m.dynamic_client_registration.into(),
            m.client_id_metadata_documents_disabled.into(),
            m.registration_client_credentials.into(),
            m.registration_custom_scopes.into(),
            resources.into(),
            ev.recorded_at_ms.into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn rebuild_settings(db: &DatabaseConnection) -> Result<u64, DbErr> {
    STORE
        .rebuild(
            db,
            &["authz_oauth_settings"],
            Some(st::OAUTH_SETTINGS),
            |txn, ev| Box::pin(project_settings(txn, ev)),
        )
        .await
}

/// An instance's OAuth settings (as `settings_json` builds them).
#[derive(utoipa::ToSchema)]
#[schema(as = OAuthApplicationSettings)]
#[allow(dead_code)]
struct SettingsObject {
    /// Always `oauth_application_settings`.
    #[schema(example = "oauth_application_settings")]
    object: String,
    /// RFC 7591 registration at the issuer (off by default).
    dynamic_oauth_client_registration: bool,
    /// Clients identified by a metadata document URL (on by default).
    client_id_metadata_documents: bool,
    /// Open registration may register `client_credentials` clients (off by
    /// default).
    registration_client_credentials: bool,
    /// Registered clients may ask for the instance's custom scopes (off by
    /// default).
    registration_custom_scopes: bool,
    /// The resources (RFC 8707) tokens may be bound to; empty: any.
    resource_indicators: Vec<String>,
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "object": "oauth_application_settings",
        "dynamic_oauth_client_registration": s.dynamic_registration,
        "client_id_metadata_documents": s.metadata_documents,
        "registration_client_credentials": s.registration_client_credentials,
        "registration_custom_scopes": s.registration_custom_scopes,
        "resource_indicators": s.resource_indicators,
    })
}

#[utoipa::path(
    get,
    path = "/v1/instance/oauth_application_settings",
    tag = "oauth_settings",
    operation_id = "get_oauth_application_settings",
    summary = "Get the instance's OAuth settings",
    responses(
        (status = 200, description = "The settings.", body = SettingsObject),
    ),
    security(("secret_key" = []))
)]
async fn get_settings(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
) -> ApiResult<HttpResponse> {
    let s = settings(platform.db(), auth.instance.id.as_str()).await?;
    Ok(HttpResponse::Ok().json(settings_json(&s)))
}

/// Absent or null fields are left as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(
    as = UpdateOAuthApplicationSettings,
    example = json!({ "dynamic_oauth_client_registration": true })
)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    dynamic_oauth_client_registration: Option<bool>,
    client_id_metadata_documents: Option<bool>,
    registration_client_credentials: Option<bool>,
    registration_custom_scopes: Option<bool>,
    /// Replaces the list: absolute URIs without a fragment, at most 2048
    /// characters each; duplicates are dropped.
    #[schema(max_items = 50)]
    resource_indicators: Option<Vec<String>>,
}

#[utoipa::path(
    patch,
    path = "/v1/instance/oauth_application_settings",
    tag = "oauth_settings",
    operation_id = "update_oauth_application_settings",
    summary = "Change the instance's OAuth settings",
    request_body(content = SettingsBody, content_type = "application/json", description = "Absent or empty: nothing changes."),
    responses(
        (status = 200, description = "The settings as changed.", body = SettingsObject),
        (status = 400, description = "A body that is not JSON.", body = gatehouse_platform::openapi::ErrorBody),
        (status = 409, description = "Settings changed concurrently; retry (`concurrent_modification`).", body = gatehouse_platform::openapi::ErrorBody),
        (status = 422, description = "An invalid field or resource indicator.", body = gatehouse_platform::openapi::ErrorBody),
    ),
    security(("secret_key" = []))
)]
async fn patch_settings(
    InstanceKey(auth): InstanceKey,
    platform: web::Data<Platform>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let b: SettingsBody = parse_json(&body)?;
    let change = settings_commands::Change {
        dynamic_registration: b.dynamic_oauth_client_registration,
        metadata_documents: b.client_id_metadata_documents,
        registration_client_credentials: b.registration_client_credentials,
        registration_custom_scopes: b.registration_custom_scopes,
        resource_indicators: b
            .resource_indicators
            .map(settings_commands::resource_indicators)
            .transpose()?,
    };
    let sid = settings_stream(auth.instance.id.as_str());
    let meta = auth.event_meta();
    let settings = aggregate::run::<OAuthSettings, _, gatehouse_platform::ApiError, _, _, _>(
        &platform,
        Target::new(STORE, &sid, &meta),
        |loaded, _| Ok(settings_commands::change(&loaded.state, &change)),
        async |_, _| Ok(()),
        async |txn, ev| project_settings(txn, ev).await,
    )
    .await?;
    Ok(HttpResponse::Ok().json(settings_json(&settings)))
}

// ---------------------------------------------------------- registration ---

/// RFC 7591 §2 client metadata. Unknown fields are ignored, as the RFC asks.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(
    as = OAuthClientMetadata,
    example = json!({
        "client_name": "Example MCP client",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "openid profile"
    })
)]
pub(super) struct ClientMetadata {
    /// Required with the `authorization_code` grant: https, http on a
    /// loopback host, or a reverse-domain private-use scheme; no fragment.
    #[schema(max_items = 20)]
    pub(super) redirect_uris: Option<Vec<String>>,
    /// 1 to 256 printable characters; `Unnamed client` when absent.
    #[schema(
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb](?:[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]{0,254}[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub(super) client_name: Option<String>,
    /// An https URL.
    #[schema(max_length = 2048)]
    pub(super) client_uri: Option<String>,
    /// An https URL.
    #[schema(max_length = 2048)]
    pub(super) logo_uri: Option<String>,
    /// Space-separated; `openid profile email` when absent. Custom scopes
    /// only where the instance allows them.
    pub(super) scope: Option<String>,
    /// `["authorization_code"]` when absent; `client_credentials` only for
    /// a confidential client, where the instance allows it.
    #[schema(value_type = Option<Vec<GrantTypeSchema>>, min_items = 1)]
    pub(super) grant_types: Option<Vec<String>>,
    /// `["code"]` exactly when `grant_types` has `authorization_code`.
    #[schema(value_type = Option<Vec<ResponseTypeSchema>>)]
    pub(super) response_types: Option<Vec<String>>,
    /// `client_secret_basic` when absent; `none` makes a public client.
    #[schema(value_type = Option<AuthMethodSchema>)]
    pub(super) token_endpoint_auth_method: Option<String>,
    /// Only in RFC 7592 updates, where it must match.
    pub(super) client_id: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[schema(as = TokenEndpointAuthMethod, rename_all = "snake_case")]
#[allow(dead_code)]
enum AuthMethodSchema {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

#[derive(utoipa::ToSchema)]
#[schema(as = OAuthGrantType, rename_all = "snake_case")]
#[allow(dead_code)]
enum GrantTypeSchema {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

#[derive(utoipa::ToSchema)]
#[schema(as = OAuthResponseType, rename_all = "snake_case")]
#[allow(dead_code)]
enum ResponseTypeSchema {
    Code,
}

const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];
const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];

/// A refusal of the application commands this endpoint shares with the
/// Backend API, in RFC 7591/7592 terms: the client is gone (404
/// `invalid_client`), its metadata was refused (400
/// `invalid_client_metadata`: a scope the instance just removed, a
/// conflicting change), or the server failed.
fn refusal(err: gatehouse_platform::ApiError) -> OAuthError {
    let description = err
        .items
        .first()
        .map(|i| i.long_message.clone())
        .unwrap_or_default();
    match err.status.as_u16() {
        404 => OAuthError::new(err.status, OAuthCode::InvalidClient, description),
        400 | 409 | 422 => metadata_error(description),
        s if s >= 500 => OAuthError::internal(description),
        _ => OAuthError::new(err.status, OAuthCode::InvalidRequest, description),
    }
}

fn metadata_error(description: impl Into<String>) -> OAuthError {
    OAuthError::bad_request(OAuthCode::InvalidClientMetadata, description)
}

/// What the instance lets a registrant have.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Policy {
    pub(super) client_credentials: bool,
}

/// The scopes a registered client may ask for: the standard ones, and the
/// instance's custom ones only where it allows them.
fn registrable_scopes(known: Vec<String>, settings: &Settings) -> Vec<String> {
    if settings.registration_custom_scopes {
        return known;
    }
    known
        .into_iter()
        .filter(|s| super::scopes::is_standard(s))
        .collect()
}

/// Validates metadata into application state (without ids, secrets, times).
pub(super) fn to_state(
    m: ClientMetadata,
    known_scopes: &[String],
    policy: Policy,
) -> Result<AppState, OAuthError> {
    let method = m
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    if !AUTH_METHODS.contains(&method.as_str()) {
        return Err(metadata_error(format!(
            "token_endpoint_auth_method must be one of {}",
            AUTH_METHODS.join(", ")
        )));
    }
    let grants = m
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    if grants.is_empty() || grants.iter().any(|g| !GRANT_TYPES.contains(&g.as_str())) {
        return Err(metadata_error(format!(
            "grant_types must be among {}",
            GRANT_TYPES.join(", ")
        )));
    }
    let responses = m.response_types.unwrap_or_else(|| {
        if grants.iter().any(|g| g == "authorization_code") {
            vec!["code".to_owned()]
        } else {
            vec![]
        }
    });
    if responses.iter().any(|r| r != "code") {
        return Err(metadata_error("response_types may only contain \"code\""));
    }
    let code_flow = grants.iter().any(|g| g == "authorization_code");
    if code_flow != responses.iter().any(|r| r == "code") {
        return Err(metadata_error(
            "grant_types authorization_code and response_types code go together (RFC 7591 §2.1)",
        ));
    }
    if grants.iter().any(|g| g == "refresh_token") && !code_flow {
        return Err(metadata_error("refresh_token needs authorization_code"));
    }
    let public = method == "none";
    let machine = grants.iter().any(|g| g == "client_credentials");
    if public && machine {
        return Err(metadata_error(
            "client_credentials needs a confidential client",
        ));
    }
    if machine && !policy.client_credentials {
        return Err(metadata_error(
            "this issuer does not register client_credentials clients openly",
        ));
    }
    let uris = m.redirect_uris.unwrap_or_default();
    if code_flow && uris.is_empty() {
        return Err(OAuthError::bad_request(
            OAuthCode::InvalidRedirectUri,
            "redirect_uris is required for the authorization_code grant",
        ));
    }
    let redirect_uris = validate::redirect_uris(&uris).map_err(|e| {
        OAuthError::bad_request(
            OAuthCode::InvalidRedirectUri,
            e.items
                .first()
                .map(|i| i.long_message.clone())
                .unwrap_or_default(),
        )
    })?;
    let describe = |e: gatehouse_platform::ApiError| {
        metadata_error(
            e.items
                .first()
                .map(|i| i.long_message.clone())
                .unwrap_or_default(),
        )
    };
    let name =
        validate::name(m.client_name.as_deref().unwrap_or("Unnamed client")).map_err(describe)?;
    let scopes = validate::scopes(
        m.scope.as_deref().unwrap_or(validate::DEFAULT_SCOPES),
        known_scopes,
    )
    .map_err(describe)?;
    Ok(AppState {
        name,
        redirect_uris,
        scopes,
        public,
        pkce_required: true,
        consent_screen_enabled: true,
        dynamically_registered: true,
        client_uri: validate::info_url("client_uri", m.client_uri).map_err(describe)?,
        client_image_url: validate::info_url("logo_uri", m.logo_uri).map_err(describe)?,
        token_endpoint_auth_method: method,
        grant_types: grants,
        ..Default::default()
    })
}

/// RFC 7591 §3.2.1 client information (as `registration_json` builds it).
#[derive(utoipa::ToSchema)]
#[schema(as = OAuthClientInformation)]
#[allow(dead_code)]
struct RegisteredClient {
    client_id: String,
    /// Seconds since the Unix epoch.
    client_id_issued_at: i64,
    client_name: String,
    redirect_uris: Vec<String>,
    grant_types: Vec<GrantTypeSchema>,
    response_types: Vec<ResponseTypeSchema>,
    token_endpoint_auth_method: AuthMethodSchema,
    /// Space-separated.
    scope: String,
    /// Where RFC 7592 manages this registration.
    registration_client_uri: String,
    #[schema(nullable = false)]
    client_uri: Option<String>,
    #[schema(nullable = false)]
    logo_uri: Option<String>,
    /// Confidential clients: `0`, the secret does not expire.
    #[schema(nullable = false)]
    client_secret_expires_at: Option<i64>,
    /// Confidential clients, on registration only: shown once.
    #[schema(nullable = false)]
    client_secret: Option<String>,
    /// On registration only: shown once.
    #[schema(nullable = false)]
    registration_access_token: Option<String>,
}

fn registration_json(
    platform: &Platform,
    instance_id: &str,
    a: &AppState,
    secret: Option<&str>,
    access_token: Option<&str>,
) -> Value {
    let issuer = platform.issuer(instance_id);
    let mut v = json!({
        "client_id": a.client_id,
        "client_id_issued_at": a.created_at_ms / 1000,
        "client_name": a.name,
        "redirect_uris": a.redirect_uris,
        "grant_types": a.grant_types,
        "response_types": if a.grant_types.iter().any(|g| g == "authorization_code") { json!(["code"]) } else { json!([]) },
        "token_endpoint_auth_method": a.token_endpoint_auth_method,
        "scope": a.scopes,
        "registration_client_uri": format!("{issuer}/oauth/register/{}", a.client_id),
    });
    if let Some(u) = &a.client_uri {
        v["client_uri"] = json!(u);
    }
    if let Some(u) = &a.client_image_url {
        v["logo_uri"] = json!(u);
    }
    if !a.public {
        v["client_secret_expires_at"] = json!(0);
    }
    if let Some(s) = secret {
        v["client_secret"] = json!(s);
    }
    if let Some(t) = access_token {
        v["registration_access_token"] = json!(t);
    }
    v
}

/// The instance of a registration endpoint and its settings, only when
/// registration is on.
async fn registering_instance(
    platform: &Platform,
    instance_id: &str,
) -> Result<(tenancy::Instance, Settings), OAuthError> {
    let instance = tenancy::active_instance_cached(platform, instance_id)
        .await?
        .ok_or_else(|| {
            OAuthError::new(
                StatusCode::NOT_FOUND,
                OAuthCode::InvalidRequest,
                "No such issuer.",
            )
        })?;
    let settings = settings(platform.db(), instance_id).await?;
    if !settings.dynamic_registration {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            OAuthCode::AccessDenied,
            "Dynamic client registration is not enabled for this instance.",
        ));
    }
    Ok((instance, settings))
}

/// The scopes and policy a registration is checked against.
async fn registration_rules(
    platform: &Platform,
    instance_id: &str,
    settings: &Settings,
) -> Result<(Vec<String>, Policy), OAuthError> {
    let known = super::scopes::known(platform.db(), instance_id).await?;
    let policy = Policy {
        client_credentials: settings.registration_client_credentials,
    };
    Ok((registrable_scopes(known, settings), policy))
}

fn parse_metadata(body: &[u8]) -> Result<ClientMetadata, OAuthError> {
    serde_json::from_slice(body)
        .map_err(|e| metadata_error(format!("The body is not valid client metadata JSON: {e}")))
}

fn no_store(mut res: HttpResponse) -> HttpResponse {
    res.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    res
}

#[utoipa::path(
    post,
    path = "/i/{instance_id}/oauth/register",
    tag = "registration",
    operation_id = "register_oauth_client",
    summary = "Register a client (RFC 7591)",
    params(("instance_id" = String, Path, description = "The instance whose issuer this is (`ins_…`).")),
    request_body(content = ClientMetadata, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered: the client's information with its `registration_access_token` (and `client_secret` for a confidential client), shown only here.", body = RegisteredClient, headers(("cache-control" = String, description = "`no-store`."))),
        (status = 400, description = "Invalid metadata (`invalid_client_metadata`, `invalid_redirect_uri`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 403, description = "Dynamic registration is off for this instance (`access_denied`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 404, description = "No active instance has this issuer (`invalid_request`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 415, description = "A body under a Content-Type other than application/json (`invalid_request`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 429, description = "Too many registrations from this address (`too_many_requests`).", body = gatehouse_platform::openapi::OAuthErrorBody, headers(("retry-after" = String, description = "Seconds to wait."))),
    )
)]
async fn register(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let instance_id = path.into_inner();
    let (instance, settings) = registering_instance(&platform, &instance_id).await?;
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let limiter = platform.rate_limiter();
    if limiter.enabled() {
        let d = limiter
            .check(
                &format!("dcr:{instance_id}:{ip}"),
                instance.environment,
                REGISTRATIONS_PER_IP,
            )
            .await;
        if !d.admitted {
            let mut e = OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                OAuthCode::TooManyRequests,
                "Too many registrations from this address; retry later.",
            );
            e.retry_after = Some(d.retry_after_secs());
            return Err(e);
        }
    }
    let (known, policy) = registration_rules(&platform, &instance_id, &settings).await?;
    let mut state = to_state(parse_metadata(&body)?, &known, policy)?;
    let access_token = gatehouse_platform::ids::random_base62(48);
    state.registration_access_token_hash = hash_secret(&access_token);
    let actor = Authed::other(instance, format!("dynamic_registration:{ip}"));
    let (app, secret) = super::create(&platform, &actor, state)
        .await
        .map_err(refusal)?;
    Ok(no_store(HttpResponse::Created().json(registration_json(
        &platform,
        &instance_id,
        &app,
        secret.as_deref(),
        Some(&access_token),
    ))))
}

/// RFC 7592 §2: the registration access token authenticates management
/// calls; an unknown client or a wrong token is the same 401.
async fn managed(
    platform: &Platform,
    req: &HttpRequest,
    instance_id: &str,
    client_id: &str,
) -> Result<(tenancy::Instance, Settings, AppState), OAuthError> {
    let (instance, settings) = registering_instance(platform, instance_id).await?;
    let unauthorized = || {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            OAuthCode::InvalidToken,
            "The registration access token is missing or invalid for this client.",
        )
    };
    let token = bearer_token(req).ok_or_else(unauthorized)?;
    let app = projection::by_client_id(platform.db(), instance_id, client_id)
        .await?
        .ok_or_else(unauthorized)?;
    let given = hash_secret(token);
    if app.registration_access_token_hash.is_empty()
        || !bool::from(
            given
                .as_bytes()
                .ct_eq(app.registration_access_token_hash.as_bytes()),
        )
    {
        return Err(unauthorized());
    }
    Ok((instance, settings, app))
}

#[utoipa::path(
    get,
    path = "/i/{instance_id}/oauth/register/{client_id}",
    tag = "registration",
    operation_id = "get_oauth_client_registration",
    summary = "Read a client registration (RFC 7592)",
    params(("instance_id" = String, Path, description = "The instance whose issuer this is (`ins_…`)."), ("client_id" = String, Path, description = "The registered client's `client_id`.")),
    responses(
        (status = 200, description = "The client's information (no secrets).", body = RegisteredClient, headers(("cache-control" = String, description = "`no-store`."))),
        (status = 401, description = "The registration access token is missing or wrong, or the client is unknown (`invalid_token`).", body = gatehouse_platform::openapi::OAuthErrorBody, headers(("www-authenticate" = String, description = "`Bearer error=\"invalid_token\"`."))),
        (status = 403, description = "Dynamic registration is off for this instance (`access_denied`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 404, description = "No active instance has this issuer (`invalid_request`).", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("registration_access_token" = []))
)]
async fn read(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OAuthError> {
    let (instance_id, client_id) = path.into_inner();
    let (_, _, app) = managed(&platform, &req, &instance_id, &client_id).await?;
    Ok(no_store(HttpResponse::Ok().json(registration_json(
        &platform,
        &instance_id,
        &app,
        None,
        None,
    ))))
}

#[utoipa::path(
    put,
    path = "/i/{instance_id}/oauth/register/{client_id}",
    tag = "registration",
    operation_id = "update_oauth_client_registration",
    summary = "Replace a client registration (RFC 7592)",
    params(("instance_id" = String, Path, description = "The instance whose issuer this is (`ins_…`)."), ("client_id" = String, Path, description = "The registered client's `client_id`.")),
    request_body(content = ClientMetadata, content_type = "application/json"),
    responses(
        (status = 200, description = "The client's information as updated (no secrets).", body = RegisteredClient, headers(("cache-control" = String, description = "`no-store`."))),
        (status = 400, description = "Invalid metadata, `client_id` missing or different, or a switch between public and confidential (`invalid_client_metadata`, `invalid_redirect_uri`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 401, description = "The registration access token is missing or wrong, or the client is unknown (`invalid_token`).", body = gatehouse_platform::openapi::OAuthErrorBody, headers(("www-authenticate" = String, description = "`Bearer error=\"invalid_token\"`."))),
        (status = 403, description = "Dynamic registration is off for this instance (`access_denied`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 404, description = "No active instance has this issuer (`invalid_request`), or the client was deleted meanwhile (`invalid_client`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 415, description = "A body under a Content-Type other than application/json (`invalid_request`).", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("registration_access_token" = []))
)]
async fn update(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (instance_id, client_id) = path.into_inner();
    let (instance, settings, app) = managed(&platform, &req, &instance_id, &client_id).await?;
    let m = parse_metadata(&body)?;
    if m.client_id.as_deref() != Some(client_id.as_str()) {
        return Err(metadata_error(
            "client_id must be present and equal to the registration's",
        ));
    }
    let (known, mut policy) = registration_rules(&platform, &instance_id, &settings).await?;
    // A client registered with the grant keeps it through updates.
    policy.client_credentials |= app.grant_types.iter().any(|g| g == "client_credentials");
    let next = to_state(m, &known, policy)?;
    if next.public != app.public {
        return Err(metadata_error(
            "token_endpoint_auth_method cannot switch between public and confidential",
        ));
    }
    let actor = Authed::other(instance, format!("registration_access_token:{client_id}"));
    let updated = super::mutate(&platform, &actor, &app.application_id, |current, now| {
        let mut s = current.state.clone();
        s.name = next.name.clone();
        s.redirect_uris = next.redirect_uris.clone();
        s.scopes = next.scopes.clone();
        s.client_uri = next.client_uri.clone();
        s.client_image_url = next.client_image_url.clone();
        s.grant_types = next.grant_types.clone();
        s.token_endpoint_auth_method = next.token_endpoint_auth_method.clone();
        if s == current.state {
            return Ok(Decision::none(s));
        }
        s.updated_at_ms = now.max(s.updated_at_ms);
        Ok(Decision {
            events: vec![event(
                et::OAUTH_APPLICATION_UPDATED,
                &v1::OAuthApplicationUpdated {
                    application: Some(s.clone()),
                    changed_fields: vec!["registration".to_owned()],
                },
            )],
            state: Some(s),
        })
    })
    .await
    .map_err(refusal)?
    .ok_or_else(|| {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            OAuthCode::InvalidToken,
            "The client no longer exists.",
        )
    })?;
    Ok(no_store(HttpResponse::Ok().json(registration_json(
        &platform,
        &instance_id,
        &updated,
        None,
        None,
    ))))
}

#[utoipa::path(
    delete,
    path = "/i/{instance_id}/oauth/register/{client_id}",
    tag = "registration",
    operation_id = "delete_oauth_client_registration",
    summary = "Delete a client registration (RFC 7592)",
    params(("instance_id" = String, Path, description = "The instance whose issuer this is (`ins_…`)."), ("client_id" = String, Path, description = "The registered client's `client_id`.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "The client changed concurrently; retry (`invalid_client_metadata`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 401, description = "The registration access token is missing or wrong, or the client is unknown (`invalid_token`).", body = gatehouse_platform::openapi::OAuthErrorBody, headers(("www-authenticate" = String, description = "`Bearer error=\"invalid_token\"`."))),
        (status = 403, description = "Dynamic registration is off for this instance (`access_denied`).", body = gatehouse_platform::openapi::OAuthErrorBody),
        (status = 404, description = "No active instance has this issuer (`invalid_request`), or the client was deleted meanwhile (`invalid_client`).", body = gatehouse_platform::openapi::OAuthErrorBody),
    ),
    security(("registration_access_token" = []))
)]
async fn delete(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, OAuthError> {
    let (instance_id, client_id) = path.into_inner();
    let (instance, _, app) = managed(&platform, &req, &instance_id, &client_id).await?;
    let actor = Authed::other(instance, format!("registration_access_token:{client_id}"));
    super::mutate(&platform, &actor, &app.application_id, |current, _| {
        Ok(Decision {
            events: vec![event(
                et::OAUTH_APPLICATION_DELETED,
                &v1::OAuthApplicationDeleted {
                    application_id: current.state.application_id.clone(),
                },
            )],
            state: None,
        })
    })
    .await
    .map_err(refusal)?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mounted_route_is_documented() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &super::openapi(),
            &[
                ("GET", "/v1/instance/oauth_application_settings"),
                ("PATCH", "/v1/instance/oauth_application_settings"),
                ("POST", "/i/{instance_id}/oauth/register"),
                ("GET", "/i/{instance_id}/oauth/register/{client_id}"),
                ("PUT", "/i/{instance_id}/oauth/register/{client_id}"),
                ("DELETE", "/i/{instance_id}/oauth/register/{client_id}"),
            ],
        );
    }

    #[test]
    fn management_is_authenticated_with_the_registration_access_token() {
        let doc = super::openapi();
        let schemes = doc.components.as_ref().map(|c| &c.security_schemes);
        assert!(schemes.is_some_and(|s| s.contains_key("registration_access_token")));
        let json = serde_json::to_value(&doc).unwrap_or_default();
        let item = &json["paths"]["/i/{instance_id}/oauth/register/{client_id}"];
        for method in ["get", "put", "delete"] {
            assert_eq!(
                item[method]["security"],
                json!([{ "registration_access_token": [] }]),
                "{method}"
            );
        }
    }

    #[test]
    fn registered_clients_get_standard_scopes_unless_the_instance_allows_custom_ones() {
        let known: Vec<String> = ["openid", "email", "files:read"].map(String::from).to_vec();
        let mut s = Settings::default();
        assert_eq!(registrable_scopes(known.clone(), &s), ["openid", "email"]);
        s.registration_custom_scopes = true;
        assert_eq!(
            registrable_scopes(known, &s),
            ["openid", "email", "files:read"]
        );
    }

    fn known() -> Vec<String> {
        ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec()
    }

    fn meta(v: Value) -> ClientMetadata {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn defaults_follow_rfc_7591() {
        let s = to_state(
            meta(json!({ "redirect_uris": ["https://c.example/cb"] })),
            &known(),
            Policy::default(),
        );
        let s = s.ok().unwrap_or_default();
        assert_eq!(s.token_endpoint_auth_method, "client_secret_basic");
        assert_eq!(s.grant_types, vec!["authorization_code"]);
        assert!(s.consent_screen_enabled && s.dynamically_registered && s.pkce_required);
    }

    #[test]
    fn inconsistent_or_unsafe_metadata_is_refused_with_the_rfc_codes() {
        let err = |v: Value| {
            to_state(meta(v), &known(), Policy::default())
                .err()
                .map(|e| e.error.as_str())
        };
        assert_eq!(err(json!({})), Some("invalid_redirect_uri"));
        assert_eq!(
            err(json!({ "redirect_uris": ["http://evil.example/cb"] })),
            Some("invalid_redirect_uri")
        );
        assert_eq!(
            err(
                json!({ "redirect_uris": ["https://c.example/cb"], "token_endpoint_auth_method": "private_key_jwt" })
            ),
            Some("invalid_client_metadata")
        );
        assert_eq!(
            err(json!({ "redirect_uris": ["https://c.example/cb"], "grant_types": ["implicit"] })),
            Some("invalid_client_metadata")
        );
        assert_eq!(
            err(json!({ "redirect_uris": ["https://c.example/cb"], "response_types": ["token"] })),
            Some("invalid_client_metadata")
        );
        assert_eq!(
            err(
                json!({ "grant_types": ["client_credentials"], "token_endpoint_auth_method": "none" })
            ),
            Some("invalid_client_metadata")
        );
        assert_eq!(
            err(json!({ "redirect_uris": ["https://c.example/cb"], "scope": "admin" })),
            Some("invalid_client_metadata")
        );
        // Open registration gets no machine client unless the instance allows it.
        let machine = json!({ "grant_types": ["client_credentials"] });
        assert_eq!(err(machine.clone()), Some("invalid_client_metadata"));
        let allowed = Policy {
            client_credentials: true,
        };
        assert!(to_state(meta(machine), &known(), allowed).is_ok());
        // Unknown metadata is ignored, not refused.
        assert_eq!(
            err(json!({ "redirect_uris": ["https://c.example/cb"], "software_id": "x" })),
            None
        );
    }
}
