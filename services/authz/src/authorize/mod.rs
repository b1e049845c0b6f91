//! `/i/<instance>/oauth/authorize` (authorization code only), the consent
//! screen, and the grants users can list and take back.
//!
//! The code handed to the client is sealed (see
//! `gatehouse_platform::oauth_code`): it carries the whole grant, encrypted
//! and authenticated, so the token service redeems it without asking this
//! service anything; it is good for 60 seconds and the token service
//! enforces single use.

pub mod api;
pub mod consent;
pub mod grants;
pub mod request;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use gatehouse_platform::Platform;
use gatehouse_platform::client_metadata;
use gatehouse_platform::oauth::OAuthCode;
use gatehouse_platform::oauth_code::{AuthorizationCode, CODE_TTL_MS};
use gatehouse_platform::openapi::{ErrorBody, OAuthErrorBody};
use gatehouse_platform::tenancy::Authed;
use gatehouse_proto::v1::UserState;

use crate::hosted::pages::{
    SESSION_COOKIE, base, csrf, csrf_ok, instance_of, message, page, page_with_csp, primary_email,
    unavailable, with_csrf_cookie,
};
use crate::hosted::sessions;
use crate::oauth_apps::documents::{self, DocumentError};
use crate::oauth_apps::{projection as apps, scopes};
use crate::users::projection as users;
use request::{AuthorizeRequest, Prompt, Rejection};

/// The consent screen shows the application's logo from its own host.
const CONSENT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https:; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/i/{instance_id}/oauth/authorize")
            .get(authorize)
            .post(decide),
    )
    .service(web::resource("/i/{instance_id}/account/grants").get(grants_page))
    .service(web::resource("/i/{instance_id}/account/grants/revoke").post(revoke_grant));
    api::configure(cfg);
}

/// The browser side of OAuth's part of the published OpenAPI document:
/// `/oauth/authorize` and the account's grants pages. (The Backend API over
/// grants is [`api::openapi`].)
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(authorize, decide, grants_page, revoke_grant),
        components(schemas(ConsentForm, RevokeGrantForm))
    )]
    struct Doc;
    Doc::openapi()
}

/// The parameters of an authorization request (RFC 6749 §4.1.1, RFC 7636,
/// RFC 8707, OpenID Connect Core §3.1.2.1). Each may appear once; unknown
/// ones are ignored. Until `client_id` and `redirect_uri` check out, errors
/// are an HTML page; after that they go back to the client.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct AuthorizeParams {
    /// Only `code`.
    #[param(value_type = String, required = true, pattern = "^code$")]
    response_type: Option<String>,
    /// A registered client's id, or the URL of a client ID metadata document.
    #[param(value_type = String, required = true, min_length = 1)]
    client_id: Option<String>,
    /// One of the client's redirect URIs; optional when it has one only.
    redirect_uri: Option<String>,
    /// Space-separated; the client's scopes when absent.
    scope: Option<String>,
    /// Returned as is; at most 2048 characters.
    #[param(max_length = 2048)]
    state: Option<String>,
    /// The base64url SHA-256 of the PKCE verifier; required of public
    /// clients and of those that require PKCE.
    #[param(pattern = "^[A-Za-z0-9_-]{43}$")]
    code_challenge: Option<String>,
    /// Only `S256`, with `code_challenge`.
    #[param(pattern = "^S256$")]
    code_challenge_method: Option<String>,
    /// Put in the ID token; at most 512 characters.
    #[param(max_length = 512)]
    nonce: Option<String>,
    /// `none`, `login`, `consent` or `select_account`.
    #[param(pattern = "^(none|login|consent|select_account)?$")]
    prompt: Option<String>,
    /// Seconds since sign-in beyond which the user signs in again.
    #[param(minimum = 0, maximum = 10000000000_i64)]
    max_age: Option<i64>,
    /// The resource the token is for (RFC 8707): an absolute URI without a
    /// fragment.
    resource: Option<String>,
}

/// The consent form: the request's parameters again, the CSRF token and the
/// user's answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ConsentForm {
    /// The token of the `gh_csrf` cookie the consent page set.
    csrf_token: String,
    #[schema(pattern = "^(accept|deny)$")]
    decision: String,
    response_type: String,
    client_id: String,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    nonce: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    resource: Option<String>,
}

/// Taking back one grant on the account's grants page.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RevokeGrantForm {
    /// The token of the `gh_csrf` cookie the grants page set.
    csrf_token: String,
    /// The application whose grant ends; one with none is ignored.
    application_id: String,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    app_name: &'a str,
    logo: Option<&'a str>,
    client_uri: Option<&'a str>,
    /// For a metadata-document client: the host its details came from.
    described_by: Option<&'a str>,
    /// A dynamically registered client: nobody reviewed it.
    self_registered: bool,
    /// Where the code goes.
    redirect_host: &'a str,
    loopback_warning: bool,
    email: &'a str,
    scopes: Vec<(String, String)>,
    resource: Option<&'a str>,
    action: &'a str,
    csrf_token: &'a str,
    params: &'a [(String, String)],
}

struct GrantView {
    application_id: String,
    name: String,
    scopes: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "grants.html")]
struct GrantsPage<'a> {
    email: &'a str,
    grants: Vec<GrantView>,
    revoke: &'a str,
    csrf_token: &'a str,
}

fn redirect(status: StatusCode, location: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("location", location))
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .finish()
}

/// An error answer: a page when the client or redirect URI is untrusted,
/// else a redirect carrying `error`, `state` and `iss` (RFC 9207).
fn reject(
    platform: &Platform,
    instance_id: &str,
    r: Rejection,
    status: StatusCode,
) -> HttpResponse {
    match r {
        Rejection::Page {
            title,
            message: text,
        } => message(StatusCode::BAD_REQUEST, &title, &text, None),
        Rejection::Redirect {
            redirect_uri,
            error,
            description,
            state,
        } => {
            let iss = platform.issuer(instance_id);
            let mut pairs = vec![
                ("error", error.as_str()),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = state.as_deref() {
                pairs.push(("state", s));
            }
            pairs.push(("iss", iss.as_str()));
            redirect(status, request::redirect_with(&redirect_uri, &pairs))
        }
    }
}

fn back_to_client(req: &AuthorizeRequest, error: OAuthCode, description: &str) -> Rejection {
    Rejection::Redirect {
        redirect_uri: req.redirect_uri.clone(),
        error,
        description: description.to_owned(),
        state: req.state.clone(),
    }
}

/// Reads and checks the request parameters (query or form).
async fn parse(
    platform: &Platform,
    instance_id: &str,
    pairs: Vec<(String, String)>,
) -> Result<AuthorizeRequest, Rejection> {
    let (params, repeated) = request::known_params(pairs);
    let client_id = request::client_id(&params, &repeated)?;
    let declared = match crate::oauth_apps::registration::settings(platform.db(), instance_id).await
    {
        Ok(s) => s.resource_indicators,
        Err(e) => {
            tracing::error!(error = %e, "settings lookup failed");
            return Err(Rejection::Page {
                title: "Unavailable".into(),
                message: "Please try again shortly.".into(),
            });
        }
    };
    if client_metadata::is_metadata_url(&client_id) {
        let client = documents::resolve(platform, instance_id, &client_id)
            .await
            .map_err(|e| match e {
                DocumentError::Store(e) => {
                    tracing::error!(error = %e, "scope lookup failed");
                    Rejection::Page {
                        title: "Unavailable".into(),
                        message: "Please try again shortly.".into(),
                    }
                }
                e => Rejection::Page {
                    title: "Unknown application".into(),
                    message: format!("{e}. You have not been sent anywhere."),
                },
            })?;
        return request::check(client, params, &repeated, &declared);
    }
    let client = match apps::by_client_id(platform.db(), instance_id, &client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(Rejection::Page {
                title: "Unknown application".into(),
                message: "No application with this client ID is registered here. \
                          You have not been sent anywhere."
                    .into(),
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(Rejection::Page {
                title: "Unavailable".into(),
                message: "Please try again shortly.".into(),
            });
        }
    };
    request::check(client, params, &repeated, &declared)
}

/// The signed-in user of this browser, if any (banned users are not).
async fn signed_in(
    platform: &Platform,
    req: &HttpRequest,
    instance_id: &str,
) -> Result<Option<UserState>, HttpResponse> {
    Ok(session_user(platform, req, instance_id)
        .await?
        .map(|(user, _)| user))
}

/// The signed-in user of this browser and when they signed in (ms).
async fn session_user(
    platform: &Platform,
    req: &HttpRequest,
    instance_id: &str,
) -> Result<Option<(UserState, i64)>, HttpResponse> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let session = sessions::current_since(
        platform.db(),
        instance_id,
        cookie.value(),
        platform.now_ms(),
    )
    .await
    .map_err(|e| unavailable("authorize", e))?;
    let Some((_, user_id, since)) = session else {
        return Ok(None);
    };
    let user = users::get(platform.db(), instance_id, &user_id)
        .await
        .map_err(|e| unavailable("authorize", e))?;
    Ok(user.filter(|u| !u.banned).map(|u| (u, since)))
}

/// The authorize URL of a request, for returning to it after sign-in.
fn return_url(instance_id: &str, params: &[(String, String)]) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("{}/oauth/authorize?{q}", base(instance_id))
}

fn to_sign_in(instance_id: &str, params: &[(String, String)]) -> HttpResponse {
    let back = return_url(instance_id, params);
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("redirect_url", &back)
        .finish();
    redirect(
        StatusCode::FOUND,
        format!("{}/sign-in?{q}", base(instance_id)),
    )
}

/// Seals a code for the request and sends the browser back to the client.
fn issue_code(
    platform: &Platform,
    instance_id: &str,
    req: &AuthorizeRequest,
    user_id: &str,
    auth_time_ms: i64,
    status: StatusCode,
) -> HttpResponse {
    let code = AuthorizationCode {
        id: gatehouse_platform::ids::random_base62(22),
        instance_id: instance_id.to_owned(),
        client_id: req.client.client_id.clone(),
        user_id: user_id.to_owned(),
        redirect_uri: req.redirect_uri.clone(),
        redirect_uri_in_request: req.redirect_uri_in_request,
        code_challenge: req.code_challenge.clone(),
        scope: req.scopes.join(" "),
        resource: req.resource.clone(),
        nonce: req.nonce.clone(),
        auth_time_ms,
        expires_at_ms: platform.now_ms() + CODE_TTL_MS,
    };
    let sealed = platform.code_sealer().seal(&code);
    let iss = platform.issuer(instance_id);
    let mut pairs = vec![("code", sealed.as_str())];
    if let Some(s) = req.state.as_deref() {
        pairs.push(("state", s));
    }
    pairs.push(("iss", iss.as_str()));
    redirect(status, request::redirect_with(&req.redirect_uri, &pairs))
}

/// The instance's scope descriptions: the standard ones, then its custom ones.
async fn descriptions(
    platform: &Platform,
    instance_id: &str,
) -> Result<Vec<(String, String)>, HttpResponse> {
    let mut all: Vec<(String, String)> = scopes::STANDARD
        .iter()
        .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
        .collect();
    all.extend(
        scopes::custom(platform.db(), instance_id)
            .await
            .map_err(|e| unavailable("authorize", e))?,
    );
    Ok(all)
}

/// Each scope with its plain-language description (its name when it has none).
fn describe(all: &[(String, String)], names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let text = all
                .iter()
                .find(|(s, _)| s == n)
                .map_or_else(|| n.clone(), |(_, d)| d.clone());
            (n.clone(), text)
        })
        .collect()
}

fn actor_for(instance: &gatehouse_platform::tenancy::Instance, user_id: &str) -> Authed {
    Authed::other(instance.clone(), format!("user:{user_id}"))
}

#[utoipa::path(
    get,
    path = "/i/{instance_id}/oauth/authorize",
    tag = "authorize",
    operation_id = "authorize",
    description = "The authorization endpoint (authorization code only). A browser with the `gh_session` cookie of a signed-in user gets a code, or the consent screen; one without is sent to sign in first.",
    params(("instance_id" = String, Path, description = "The instance (its issuer is `<public url>/i/{instance_id}`)."), AuthorizeParams),
    responses(
        (status = 200, description = "The consent screen (sets the `gh_csrf` cookie).", content_type = "text/html", body = String),
        (status = 302, description = "Back to the client's redirect URI with `code`, `state` and `iss`, or with `error` (`invalid_request`, `unsupported_response_type`, `invalid_scope`, `invalid_target`, `login_required`, `consent_required`), `error_description`, `state` and `iss`; or to the sign-in page, which returns here.", headers(("location" = String, description = "Where the browser goes next."))),
        (status = 400, description = "An HTML error page: no, an unknown or an unusable client, a redirect URI not registered for it, or a repeated `client_id` or `redirect_uri` (nobody is redirected); an RFC 6749 error for a URL with a NUL character.", content((String = "text/html"), (OAuthErrorBody = "application/json"))),
        (status = 404, description = "No active instance has this id (HTML).", content_type = "text/html", body = String),
        (status = 413, description = "A declared body over 1 MiB.", body = OAuthErrorBody),
        (status = 429, description = "Too many requests in flight from this address.", body = OAuthErrorBody),
        (status = 503, description = "A lookup failed; try again shortly (HTML).", content_type = "text/html", body = String),
    )
)]
async fn authorize(
    platform: web::Data<Platform>,
    http: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = path.into_inner();
    let instance = match instance_of(&platform, &id).await {
        Ok(i) => i,
        Err(res) => return res,
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(http.query_string().as_bytes())
        .into_owned()
        .collect();
    let req = match parse(&platform, &id, pairs).await {
        Ok(r) => r,
        Err(r) => return reject(&platform, &id, r, StatusCode::FOUND),
    };
    let user = match session_user(&platform, &http, &id).await {
        Ok(u) => u,
        Err(res) => return res,
    };
    let Some((user, auth_time)) = user else {
        if req.prompt == Prompt::None {
            let r = back_to_client(&req, OAuthCode::LoginRequired, "the user is not signed in");
            return reject(&platform, &id, r, StatusCode::FOUND);
        }
        return to_sign_in(&id, &req.params);
    };
    // OpenID Connect Core §3.1.2.1: prompt=login and an exceeded max_age ask
    // the user to sign in again. The way back drops both, so the fresh
    // session answers them instead of asking again.
    if request::needs_login(&req, auth_time, platform.now_ms()) {
        if req.prompt == Prompt::None {
            let r = back_to_client(
                &req,
                OAuthCode::LoginRequired,
                "the user must sign in again",
            );
            return reject(&platform, &id, r, StatusCode::FOUND);
        }
        let again: Vec<(String, String)> = req
            .params
            .iter()
            .filter(|(k, _)| k != "prompt" && k != "max_age")
            .cloned()
            .collect();
        return to_sign_in(&id, &again);
    }
    let granted = match grants::get(
        platform.db(),
        &id,
        &user.user_id,
        &req.client.application_id,
    )
    .await
    {
        Ok(g) => g.map(|g| g.scopes).unwrap_or_default(),
        Err(e) => return unavailable("authorize", e),
    };
    let covered = req.scopes.iter().all(|s| granted.contains(s));
    if req.client.consent_screen_enabled && (!covered || req.prompt == Prompt::Consent) {
        if req.prompt == Prompt::None {
            let r = back_to_client(
                &req,
                OAuthCode::ConsentRequired,
                "the user has not consented",
            );
            return reject(&platform, &id, r, StatusCode::FOUND);
        }
        return consent_page(&platform, &http, &id, &req, &user).await;
    }
    // Consent off (the documented risk) or already given: grant silently.
    let record = (!covered).then_some(false);
    let signed = (&user, auth_time);
    grant_and_issue(
        &platform,
        &instance,
        &req,
        signed,
        record,
        StatusCode::FOUND,
    )
    .await
}

/// Records the grant when `consented` is given, then issues the code.
async fn grant_and_issue(
    platform: &Platform,
    instance: &gatehouse_platform::tenancy::Instance,
    req: &AuthorizeRequest,
    (user, auth_time_ms): (&UserState, i64),
    consented: Option<bool>,
    status: StatusCode,
) -> HttpResponse {
    if let Some(consented) = consented {
        let actor = actor_for(instance, &user.user_id);
        let accepted = grants::accept(
            platform,
            &actor,
            &user.user_id,
            &req.client,
            &req.scopes,
            consented,
        )
        .await;
        if let Err(e) = accepted {
            return unavailable("authorize", e);
        }
    }
    let user_id = &user.user_id;
    issue_code(
        platform,
        instance.id.as_str(),
        req,
        user_id,
        auth_time_ms,
        status,
    )
}

async fn consent_page(
    platform: &Platform,
    http: &HttpRequest,
    id: &str,
    req: &AuthorizeRequest,
    user: &UserState,
) -> HttpResponse {
    let described = match descriptions(platform, id).await {
        Ok(all) => describe(&all, &req.scopes),
        Err(res) => return res,
    };
    let (token, fresh) = csrf(http);
    let action = format!("{}/oauth/authorize", base(id));
    let email = primary_email(user);
    let shown = consent::present(&req.client, &req.redirect_uri);
    let described_by = match &shown.unreviewed {
        Some(consent::Unreviewed::Document { host }) => Some(host.as_str()),
        _ => None,
    };
    let html = ConsentPage {
        app_name: &req.client.name,
        logo: shown.logo.as_deref(),
        client_uri: shown.client_uri.as_deref(),
        described_by,
        self_registered: shown.unreviewed == Some(consent::Unreviewed::Registered),
        redirect_host: &shown.redirect_host,
        loopback_warning: shown.loopback_warning,
        email: &email,
        scopes: described,
        resource: req.resource.as_deref(),
        action: &action,
        csrf_token: &token,
        params: &req.params,
    }
    .render();
    let res = page_with_csp(StatusCode::OK, html, CONSENT_CSP);
    with_csrf_cookie(res, platform, id, token, fresh)
}

/// The consent form's answer.
#[utoipa::path(
    post,
    path = "/i/{instance_id}/oauth/authorize",
    tag = "authorize",
    operation_id = "authorize_decide",
    description = "The consent screen's form. Needs the `gh_csrf` cookie (matching `csrf_token`) and the `gh_session` cookie.",
    params(("instance_id" = String, Path, description = "The instance (its issuer is `<public url>/i/{instance_id}`).")),
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 302, description = "Not signed in: to the sign-in page, which returns to the authorization request.", headers(("location" = String, description = "The sign-in page."))),
        (status = 303, description = "Back to the client's redirect URI with `code`, `state` and `iss` (accepted), or with `error` (`access_denied` when denied, or a request error), `error_description`, `state` and `iss`.", headers(("location" = String, description = "The client's redirect URI with the answer."))),
        (status = 400, description = "An HTML error page: a form with a NUL character, no `decision` of `accept` or `deny`, or a request whose client or redirect URI cannot be trusted; an RFC 6749 error for a URL with a NUL character.", content((String = "text/html"), (OAuthErrorBody = "application/json"))),
        (status = 403, description = "The CSRF token is missing or does not match the `gh_csrf` cookie (HTML).", content_type = "text/html", body = String),
        (status = 404, description = "No active instance has this id (HTML).", content_type = "text/html", body = String),
        (status = 408, description = "The request body did not arrive in time.", body = OAuthErrorBody),
        (status = 413, description = "The request body is over 1 MiB.", body = OAuthErrorBody),
        (status = 429, description = "Too many requests in flight from this address.", body = OAuthErrorBody),
        (status = 503, description = "Recording the grant or a lookup failed; try again shortly (HTML).", content_type = "text/html", body = String),
    )
)]
async fn decide(
    platform: web::Data<Platform>,
    http: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = path.into_inner();
    let instance = match instance_of(&platform, &id).await {
        Ok(i) => i,
        Err(res) => return res,
    };
    if gatehouse_platform::http::form_has_nul(&body) {
        return crate::hosted::pages::nul_refused();
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (csrf_token, decision) = (field("csrf_token"), field("decision"));
    if !csrf_ok(&http, csrf_token.as_deref()) {
        return message(
            StatusCode::FORBIDDEN,
            "Form expired",
            "Please go back to the application and start again.",
            None,
        );
    }
    let req = match parse(&platform, &id, pairs).await {
        Ok(r) => r,
        Err(r) => return reject(&platform, &id, r, StatusCode::SEE_OTHER),
    };
    let (user, auth_time) = match session_user(&platform, &http, &id).await {
        Ok(Some(u)) => u,
        Ok(None) => return to_sign_in(&id, &req.params),
        Err(res) => return res,
    };
    match decision.as_deref() {
        Some("accept") => {
            grant_and_issue(
                &platform,
                &instance,
                &req,
                (&user, auth_time),
                Some(true),
                StatusCode::SEE_OTHER,
            )
            .await
        }
        Some("deny") => {
            let r = back_to_client(&req, OAuthCode::AccessDenied, "the user denied the request");
            reject(&platform, &id, r, StatusCode::SEE_OTHER)
        }
        _ => message(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Choose Allow or Deny.",
            None,
        ),
    }
}

#[utoipa::path(
    get,
    path = "/i/{instance_id}/account/grants",
    tag = "authorize",
    operation_id = "account_grants_page",
    description = "The signed-in user's grants (`gh_session` cookie), each with a button to take it back.",
    params(("instance_id" = String, Path, description = "The instance (its issuer is `<public url>/i/{instance_id}`).")),
    responses(
        (status = 200, description = "The grants page (sets the `gh_csrf` cookie).", content_type = "text/html", body = String),
        (status = 302, description = "Not signed in: to the sign-in page, which returns here.", headers(("location" = String, description = "The sign-in page."))),
        (status = 400, description = "A URL with a NUL character.", body = ErrorBody),
        (status = 404, description = "No active instance has this id (HTML).", content_type = "text/html", body = String),
        (status = 503, description = "A lookup failed; try again shortly (HTML).", content_type = "text/html", body = String),
    )
)]
async fn grants_page(
    platform: web::Data<Platform>,
    http: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = path.into_inner();
    if let Err(res) = instance_of(&platform, &id).await {
        return res;
    }
    let user = match signed_in(&platform, &http, &id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("redirect_url", &format!("{}/account/grants", base(&id)))
                .finish();
            return redirect(StatusCode::FOUND, format!("{}/sign-in?{q}", base(&id)));
        }
        Err(res) => return res,
    };
    let list = match grants::list(platform.db(), &id, &user.user_id).await {
        Ok(l) => l,
        Err(e) => return unavailable("authorize", e),
    };
    let all = match descriptions(&platform, &id).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let views: Vec<GrantView> = list
        .into_iter()
        .map(|g| GrantView {
            scopes: describe(&all, &g.scopes),
            application_id: g.application_id,
            name: g.application_name,
        })
        .collect();
    let (token, fresh) = csrf(&http);
    let revoke = format!("{}/account/grants/revoke", base(&id));
    let email = primary_email(&user);
    let html = GrantsPage {
        email: &email,
        grants: views,
        revoke: &revoke,
        csrf_token: &token,
    }
    .render();
    with_csrf_cookie(page(StatusCode::OK, html), &platform, &id, token, fresh)
}

#[utoipa::path(
    post,
    path = "/i/{instance_id}/account/grants/revoke",
    tag = "authorize",
    operation_id = "account_revoke_grant",
    description = "Takes back one of the signed-in user's grants. Needs the `gh_csrf` cookie (matching `csrf_token`) and the `gh_session` cookie.",
    params(("instance_id" = String, Path, description = "The instance (its issuer is `<public url>/i/{instance_id}`).")),
    request_body(content = RevokeGrantForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the grants page (the grant, if there was one, is revoked), or to the sign-in page when not signed in.", headers(("location" = String, description = "The grants page or the sign-in page."))),
        (status = 400, description = "A form (HTML page) or a URL (JSON error) with a NUL character.", content((String = "text/html"), (ErrorBody = "application/json"))),
        (status = 403, description = "The CSRF token is missing or does not match the `gh_csrf` cookie (HTML).", content_type = "text/html", body = String),
        (status = 404, description = "No active instance has this id (HTML).", content_type = "text/html", body = String),
        (status = 503, description = "Revoking failed, or concurrent changes to the grant kept winning; try again shortly (HTML).", content_type = "text/html", body = String),
    )
)]
async fn revoke_grant(
    platform: web::Data<Platform>,
    http: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = path.into_inner();
    let instance = match instance_of(&platform, &id).await {
        Ok(i) => i,
        Err(res) => return res,
    };
    let Some(f) = crate::hosted::pages::form(&body) else {
        return crate::hosted::pages::nul_refused();
    };
    if !csrf_ok(&http, f.get("csrf_token").map(String::as_str)) {
        return message(
            StatusCode::FORBIDDEN,
            "Form expired",
            "Please go back, reload the page and try again.",
            None,
        );
    }
    let user = match signed_in(&platform, &http, &id).await {
        Ok(Some(u)) => u,
        Ok(None) => return redirect(StatusCode::SEE_OTHER, format!("{}/sign-in", base(&id))),
        Err(res) => return res,
    };
    let app = f.get("application_id").cloned().unwrap_or_default();
    let actor = actor_for(&instance, &user.user_id);
    match grants::revoke(&platform, &actor, &user.user_id, &app, "user").await {
        Ok(_) => redirect(
            StatusCode::SEE_OTHER,
            format!("{}/account/grants", base(&id)),
        ),
        Err(e) => unavailable("revoking a grant", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &openapi(),
            &[
                ("GET", "/i/{instance_id}/oauth/authorize"),
                ("POST", "/i/{instance_id}/oauth/authorize"),
                ("GET", "/i/{instance_id}/account/grants"),
                ("POST", "/i/{instance_id}/account/grants/revoke"),
            ],
        );
        let v = serde_json::to_value(openapi()).unwrap_or_default();
        // The form posts are urlencoded.
        let body = &v["paths"]["/i/{instance_id}/oauth/authorize"]["post"]["requestBody"];
        assert!(body["content"]["application/x-www-form-urlencoded"].is_object());
    }
}
