//! Handlers of the hosted pages.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use gatehouse_platform::Platform;
use gatehouse_platform::openapi::ErrorBody;
use gatehouse_platform::tenancy::{self, Authed, Instance};
use gatehouse_proto::v1::UserState;
use subtle::ConstantTimeEq;

use super::sessions;
use crate::users::{self, NewUser, password, projection, validate};

pub(crate) const SESSION_COOKIE: &str = "gh_session";
const CSRF_COOKIE: &str = "gh_csrf";
/// Failed sign-ins per account, and per address, per throttle window;
/// successful ones are not counted.
const ATTEMPTS_PER_ACCOUNT: u32 = 10;
const ATTEMPTS_PER_ADDRESS: u32 = 50;
/// Failures an account may have in the window before answers slow down.
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(2);
const SIGN_UPS_PER_ADDRESS: u32 = 20;
const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
const GENERIC_FAILURE: &str = "The email address or password is incorrect.";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/i/{instance_id}/sign-in")
            .get(sign_in_page)
            .post(sign_in),
    )
    .service(
        web::resource("/i/{instance_id}/sign-up")
            .get(sign_up_page)
            .post(sign_up),
    )
    .service(web::resource("/i/{instance_id}/signed-in").get(signed_in))
    .service(web::resource("/i/{instance_id}/sign-out").post(sign_out));
}

/// The hosted pages' part of the published OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    #[derive(OpenApi)]
    #[openapi(
        paths(sign_in_page, sign_in, sign_up_page, sign_up, signed_in, sign_out),
        components(schemas(CredentialsForm, SignOutForm))
    )]
    struct Doc;
    Doc::openapi()
}

/// The sign-in and sign-up form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CredentialsForm {
    /// The token of the `gh_csrf` cookie the form page set.
    csrf_token: String,
    email: String,
    /// For sign-up, 8 to 256 characters.
    password: String,
    /// A path under `/i/{instance_id}/` to go to once signed in; anything
    /// else means the signed-in page.
    redirect_url: Option<String>,
}

/// The sign-out form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SignOutForm {
    /// The token of the `gh_csrf` cookie the signed-in page set.
    csrf_token: String,
}

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage<'a> {
    sign_up: bool,
    action: &'a str,
    other: &'a str,
    csrf_token: &'a str,
    redirect_url: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "signed_in.html")]
struct SignedInPage<'a> {
    email: &'a str,
    sign_out: &'a str,
    csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    link: Option<&'a str>,
}

pub(crate) fn base(instance: &str) -> String {
    format!("/i/{instance}")
}

/// The content security policy of the pages. No `form-action`: browsers
/// apply it to every redirect that follows a form post, and sign-in and
/// consent posts end, by design, in a redirect to the OAuth client.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every page carries: no framing, no caching, no sniffing.
pub(crate) fn page(status: StatusCode, html: Result<String, askama::Error>) -> HttpResponse {
    page_with_csp(status, html, CSP)
}

/// A page with its own content security policy (the consent screen shows
/// the application's logo from its own host).
pub(crate) fn page_with_csp(
    status: StatusCode,
    html: Result<String, askama::Error>,
    csp: &str,
) -> HttpResponse {
    let html = html.unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_owned()
    });
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header(("content-security-policy", csp.to_owned()))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(html)
}

pub(crate) fn message(
    status: StatusCode,
    title: &str,
    text: &str,
    link: Option<&str>,
) -> HttpResponse {
    page(
        status,
        MessagePage {
            title,
            message: text,
            link,
        }
        .render(),
    )
}

/// The 503 page, after logging what failed.
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "{what} failed");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "Please try again shortly.",
        None,
    )
}

/// The address a user's pages show them as.
pub(crate) fn primary_email(u: &UserState) -> String {
    u.email_addresses
        .iter()
        .find(|e| e.id == u.primary_email_address_id)
        .map(|e| e.email_address.clone())
        .unwrap_or_default()
}

fn secure_cookies(platform: &Platform) -> bool {
    let url = &platform.settings().public_url;
    let local = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    !local
}

pub(crate) fn cookie<'a>(
    platform: &Platform,
    instance: &str,
    name: &'a str,
    value: String,
    same_site: SameSite,
) -> Cookie<'a> {
    Cookie::build(name, value)
        .path(base(instance))
        .http_only(true)
        .secure(secure_cookies(platform))
        .same_site(same_site)
        .finish()
}

fn expired<'a>(platform: &Platform, instance: &str, name: &'a str) -> Cookie<'a> {
    let mut c = cookie(platform, instance, name, String::new(), SameSite::Lax);
    c.make_removal();
    c
}

/// The CSRF token of this browser, minting one if it has none.
pub(crate) fn csrf(req: &HttpRequest) -> (String, bool) {
    match req.cookie(CSRF_COOKIE).map(|c| c.value().to_owned()) {
        Some(v) if v.len() == 32 => (v, false),
        _ => (gatehouse_platform::ids::random_base62(32), true),
    }
}

pub(crate) fn csrf_ok(req: &HttpRequest, form_token: Option<&str>) -> bool {
    match (req.cookie(CSRF_COOKIE), form_token) {
        (Some(c), Some(f)) if !f.is_empty() => bool::from(c.value().as_bytes().ct_eq(f.as_bytes())),
        _ => false,
    }
}

pub(crate) fn with_csrf_cookie(
    mut res: HttpResponse,
    platform: &Platform,
    instance: &str,
    token: String,
    fresh: bool,
) -> HttpResponse {
    if fresh {
        let _ = res.add_cookie(&cookie(
            platform,
            instance,
            CSRF_COOKIE,
            token,
            SameSite::Strict,
        ));
    }
    res
}

/// Only paths under the instance: never an absolute URL, never `//host`.
fn safe_redirect(instance: &str, raw: Option<&str>) -> String {
    let prefix = format!("{}/", base(instance));
    match raw {
        Some(r)
            if r.starts_with(&prefix)
                && !r.contains("//")
                && !r.contains('\\')
                && !r.chars().any(char::is_control) =>
        {
            r.to_owned()
        }
        _ => format!("{}/signed-in", base(instance)),
    }
}

/// A hosted page's form; `None` for one carrying a NUL, which is refused
/// with [`nul_refused`].
pub(crate) fn form(body: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    if gatehouse_platform::http::form_has_nul(body) {
        return None;
    }
    Some(form_urlencoded::parse(body).into_owned().collect())
}

pub(crate) fn nul_refused() -> HttpResponse {
    message(
        StatusCode::BAD_REQUEST,
        "Invalid form",
        "The form contains a NUL character. Please go back and try again.",
        None,
    )
}

pub(crate) fn query(req: &HttpRequest) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

pub(crate) async fn instance_of(platform: &Platform, id: &str) -> Result<Instance, HttpResponse> {
    match tenancy::active_instance_cached(platform, id).await {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Err(message(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such application.",
            None,
        )),
        Err(e) => Err(unavailable("instance lookup", e)),
    }
}

fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The path of the form page and of the other one.
fn form_paths(sign_up: bool) -> (&'static str, &'static str) {
    if sign_up {
        ("sign-up", "sign-in")
    } else {
        ("sign-in", "sign-up")
    }
}

fn credentials_page(
    id: &str,
    sign_up: bool,
    status: StatusCode,
    csrf_token: &str,
    redirect: &str,
    email: &str,
    error: Option<&str>,
) -> HttpResponse {
    let (this, that) = form_paths(sign_up);
    let action = format!("{}/{this}", base(id));
    let other = format!("{}/{that}?redirect_url={}", base(id), url_escape(redirect));
    let html = CredentialsPage {
        sign_up,
        action: &action,
        other: &other,
        csrf_token,
        redirect_url: redirect,
        email,
        error,
    }
    .render();
    page(status, html)
}

async fn show_form(
    platform: &Platform,
    req: &HttpRequest,
    id: &str,
    sign_up: bool,
) -> HttpResponse {
    if let Err(res) = instance_of(platform, id).await {
        return res;
    }
    let (token, fresh) = csrf(req);
    let q = query(req);
    let redirect = safe_redirect(id, q.get("redirect_url").map(String::as_str));
    let res = credentials_page(id, sign_up, StatusCode::OK, &token, &redirect, "", None);
    with_csrf_cookie(res, platform, id, token, fresh)
}

#[utoipa::path(
    get,
    path = "/i/{instance_id}/sign-in",
    tag = "hosted_pages",
    operation_id = "sign_in_page",
    params(("instance_id" = String, Path, description = "The instance."), ("redirect_url" = Option<String>, Query, description = "A path under `/i/{instance_id}/` to go to once signed in (the authorization request, say); anything else means the signed-in page.")),
    responses(
        (status = 200, description = "The sign-in form (sets the `gh_csrf` cookie).", content_type = "text/html", body = String),
        (status = 400, description = "A URL with a NUL character.", body = ErrorBody),
        (status = 404, description = "No active instance has this id.", content_type = "text/html", body = String),
        (status = 503, description = "A lookup or write failed; try again shortly.", content_type = "text/html", body = String),
    )
)]
async fn sign_in_page(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    show_form(&platform, &req, &path, false).await
}

#[utoipa::path(
    get,
    path = "/i/{instance_id}/sign-up",
    tag = "hosted_pages",
    operation_id = "sign_up_page",
    params(("instance_id" = String, Path, description = "The instance."), ("redirect_url" = Option<String>, Query, description = "A path under `/i/{instance_id}/` to go to once signed in (the authorization request, say); anything else means the signed-in page.")),
    responses(
        (status = 200, description = "The sign-up form (sets the `gh_csrf` cookie).", content_type = "text/html", body = String),
        (status = 400, description = "A URL with a NUL character.", body = ErrorBody),
        (status = 404, description = "No active instance has this id.", content_type = "text/html", body = String),
        (status = 503, description = "A lookup or write failed; try again shortly.", content_type = "text/html", body = String),
    )
)]
async fn sign_up_page(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    show_form(&platform, &req, &path, true).await
}

/// A posted sign-in or sign-up form whose CSRF token checked out.
struct Submitted {
    id: String,
    instance: Instance,
    sign_up: bool,
    email: String,
    password: String,
    redirect: String,
    csrf: String,
}

impl Submitted {
    async fn read(
        platform: &Platform,
        req: &HttpRequest,
        id: String,
        body: &[u8],
        sign_up: bool,
    ) -> Result<Self, HttpResponse> {
        let instance = instance_of(platform, &id).await?;
        let f = form(body).ok_or_else(nul_refused)?;
        if !csrf_ok(req, f.get("csrf_token").map(String::as_str)) {
            let (this, _) = form_paths(sign_up);
            return Err(message(
                StatusCode::FORBIDDEN,
                "Form expired",
                "Please go back, reload the page and try again.",
                Some(&format!("{}/{this}", base(&id))),
            ));
        }
        Ok(Self {
            redirect: safe_redirect(&id, f.get("redirect_url").map(String::as_str)),
            email: f
                .get("email")
                .map(|e| e.trim().to_owned())
                .unwrap_or_default(),
            password: f.get("password").cloned().unwrap_or_default(),
            csrf: csrf(req).0,
            instance,
            sign_up,
            id,
        })
    }

    /// The form again, with an error and what the user typed (not the password).
    fn again(&self, status: StatusCode, error: &str) -> HttpResponse {
        credentials_page(
            &self.id,
            self.sign_up,
            status,
            &self.csrf,
            &self.redirect,
            &self.email,
            Some(error),
        )
    }
}

pub(crate) fn url_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A dummy argon2id hash, verified against when the account does not exist
/// or has no password, so every failure costs the same work.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(&[7u8; 16]).ok();
        salt.and_then(|s| {
            argon2::Argon2::default()
                .hash_password(b"gatehouse timing equaliser", &s)
                .ok()
                .map(|h| h.to_string())
        })
        .unwrap_or_default()
    })
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .unwrap_or(false)
}

/// How long a sign-in waits before it is checked, after `failures` failed
/// ones in the window: nothing for the first few, then 100 ms doubling up
/// to [`MAX_DELAY`].
fn progressive_delay(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(n) => (Duration::from_millis(100) * 2u32.saturating_pow(n.min(10))).min(MAX_DELAY),
    }
}

async fn throttled(
    platform: &Platform,
    instance: &Instance,
    key: String,
    limit: u32,
) -> Option<u64> {
    let limiter = platform.rate_limiter();
    let d = limiter
        .check_window(&key, instance.environment, limit, THROTTLE_WINDOW)
        .await;
    (!d.admitted).then(|| d.retry_after_secs())
}

/// Sets the new session cookie (replacing any old one) and redirects.
async fn signed_in_redirect(
    platform: &Platform,
    req: &HttpRequest,
    instance: &Instance,
    actor: &Authed,
    user_id: &str,
    method: &str,
    redirect: &str,
) -> HttpResponse {
    let id = instance.id.as_str();
    // Rotate: a session this browser already had ends here.
    if let Some(old) = req.cookie(SESSION_COOKIE)
        && let Ok(Some((sid, uid))) =
            sessions::current(platform.db(), id, old.value(), platform.now_ms()).await
    {
        let _ = sessions::end(platform, actor, &sid, &uid, "replaced").await;
    }
    match sessions::start(platform, actor, user_id, method).await {
        Ok(token) => {
            let mut res = HttpResponse::SeeOther()
                .insert_header(("location", redirect.to_owned()))
                .insert_header(("cache-control", "no-store"))
                .finish();
            let _ = res.add_cookie(&cookie(platform, id, SESSION_COOKIE, token, SameSite::Lax));
            res
        }
        Err(e) => unavailable("starting a session", e),
    }
}

#[utoipa::path(
    post,
    path = "/i/{instance_id}/sign-in",
    tag = "hosted_pages",
    operation_id = "sign_in",
    description = "Signs in with an email address and password. Needs the `gh_csrf` cookie (matching `csrf_token`). Failed attempts are throttled per account and per address, and slow down as they add up.",
    params(("instance_id" = String, Path, description = "The instance.")),
    request_body(content = CredentialsForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in (sets the `gh_session` cookie): to `redirect_url`. Or, for an address of an SSO connection, to that connection.", headers(("location" = String, description = "Where the browser goes next."))),
        (status = 400, description = "A form (HTML page) or a URL (JSON error) with a NUL character.", content((String = "text/html"), (ErrorBody = "application/json"))),
        (status = 401, description = "The form again: the email address or password is incorrect (or the user is banned).", content_type = "text/html", body = String),
        (status = 403, description = "The CSRF token is missing or does not match the `gh_csrf` cookie.", content_type = "text/html", body = String),
        (status = 404, description = "No active instance has this id.", content_type = "text/html", body = String),
        (status = 429, description = "The form again: too many failed attempts for this account or from this address (with `Retry-After`); or, as a JSON error, too many requests in flight from this address.", content((String = "text/html"), (ErrorBody = "application/json")), headers(("retry-after" = String, description = "Seconds until another attempt is admitted (on the HTML answer)."))),
        (status = 503, description = "A lookup or write failed; try again shortly.", content_type = "text/html", body = String),
    )
)]
async fn sign_in(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let sub = match Submitted::read(&platform, &req, path.into_inner(), &body, false).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let (id, instance, email) = (&sub.id, &sub.instance, &sub.email);
    let ip = peer(&req);
    // Failures only are counted: a throttle asked first, a failure recorded
    // after; so the right password is never refused for others' guesses
    // until they are at the limit, and guesses slow down as they add up.
    let limiter = platform.rate_limiter();
    let throttles = [
        (
            format!("signin:fail:acct:{id}:{}", email.to_lowercase()),
            ATTEMPTS_PER_ACCOUNT,
        ),
        (format!("signin:fail:ip:{id}:{ip}"), ATTEMPTS_PER_ADDRESS),
    ];
    let mut account_failures = 0;
    for (i, (key, limit)) in throttles.iter().enumerate() {
        let d = limiter
            .peek_window(key, instance.environment, *limit, THROTTLE_WINDOW)
            .await;
        if !d.admitted {
            let secs = d.retry_after_secs();
            let minutes = secs.div_ceil(60);
            let mut res = sub.again(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many attempts. Try again in {minutes} minute(s)."),
            );
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return res;
        }
        if i == 0 {
            account_failures = limit.saturating_sub(d.remaining);
        }
    }
    tokio::time::sleep(progressive_delay(account_failures)).await;
    if let Some(connection) = super::sso_connection_for(id, email) {
        return HttpResponse::SeeOther()
            .insert_header(("location", connection))
            .finish();
    }
    let found = projection::credentials_by_email(platform.db(), id, email).await;
    let (user_id, banned, hash) = match found {
        Ok(Some((u, b, h))) => (Some(u), b, h),
        Ok(None) => (None, false, None),
        Err(e) => return unavailable("credential lookup", e),
    };
    let has_hash = hash.is_some();
    let ok = verify_password(
        sub.password.clone(),
        hash.unwrap_or_else(|| dummy_hash().to_owned()),
    )
    .await
        && has_hash;
    match user_id {
        Some(uid) if ok && !banned => {
            let actor = Authed::other(instance.clone(), format!("user:{uid}"));
            signed_in_redirect(
                &platform,
                &req,
                instance,
                &actor,
                &uid,
                "sign_in",
                &sub.redirect,
            )
            .await
        }
        _ => {
            for (key, limit) in throttles {
                limiter
                    .check_window(&key, instance.environment, limit, THROTTLE_WINDOW)
                    .await;
            }
            sub.again(StatusCode::UNAUTHORIZED, GENERIC_FAILURE)
        }
    }
}

#[utoipa::path(
    post,
    path = "/i/{instance_id}/sign-up",
    tag = "hosted_pages",
    operation_id = "sign_up",
    description = "Creates a user with an email address (unverified: no email is sent) and password, and signs them in. Needs the `gh_csrf` cookie (matching `csrf_token`). Sign-ups are throttled per address.",
    params(("instance_id" = String, Path, description = "The instance.")),
    request_body(content = CredentialsForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed up and in (sets the `gh_session` cookie): to `redirect_url`.", headers(("location" = String, description = "Where the browser goes next."))),
        (status = 400, description = "A form (HTML page) or a URL (JSON error) with a NUL character.", content((String = "text/html"), (ErrorBody = "application/json"))),
        (status = 403, description = "The CSRF token is missing or does not match the `gh_csrf` cookie.", content_type = "text/html", body = String),
        (status = 404, description = "No active instance has this id.", content_type = "text/html", body = String),
        (status = 409, description = "The form again: an account with this email address exists.", content_type = "text/html", body = String),
        (status = 422, description = "The form again: the email address is not valid, or the password is not 8 to 256 characters.", content_type = "text/html", body = String),
        (status = 429, description = "The form again: too many sign-ups from this address; or, as a JSON error, too many requests in flight from this address.", content((String = "text/html"), (ErrorBody = "application/json"))),
        (status = 503, description = "A lookup or write failed; try again shortly.", content_type = "text/html", body = String),
    )
)]
async fn sign_up(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let sub = match Submitted::read(&platform, &req, path.into_inner(), &body, true).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let (id, instance, email) = (&sub.id, &sub.instance, &sub.email);
    if let Some(secs) = throttled(
        &platform,
        instance,
        format!("signup:ip:{id}:{}", peer(&req)),
        SIGN_UPS_PER_ADDRESS,
    )
    .await
    {
        return sub.again(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many sign-ups from your network. Try again in {} minute(s).",
                secs.div_ceil(60)
            ),
        );
    }
    let email_ok = match validate::email(email) {
        Ok(e) => e,
        Err(_) => {
            return sub.again(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Enter a valid email address.",
            );
        }
    };
    if validate::password(&sub.password, false).is_err() {
        return sub.again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a password of at least 8 characters.",
        );
    }
    let hash = match password::hash(sub.password.clone()).await {
        Ok(h) => h,
        Err(e) => return unavailable("password hashing", e),
    };
    let actor = Authed::other(instance.clone(), gatehouse_proto::SIGN_UP_ACTOR.to_owned());
    let new = NewUser {
        email_addresses: vec![email_ok],
        // Nothing checks the address: no email is sent.
        email_verified: false,
        password_hash: Some(hash),
        first_name: None,
        last_name: None,
        external_id: None,
        username: None,
        public_metadata: serde_json::json!({}),
        private_metadata: serde_json::json!({}),
        unsafe_metadata: serde_json::json!({}),
    };
    match users::create(&platform, &actor, new).await {
        Ok(user) => {
            signed_in_redirect(
                &platform,
                &req,
                instance,
                &actor,
                &user.user_id,
                "sign_up",
                &sub.redirect,
            )
            .await
        }
        Err(e) if e.code() == "form_identifier_exists" => sub.again(
            StatusCode::CONFLICT,
            "An account with this email address already exists. Sign in instead.",
        ),
        Err(e) => unavailable("sign-up", e),
    }
}

#[utoipa::path(
    get,
    path = "/i/{instance_id}/signed-in",
    tag = "hosted_pages",
    operation_id = "signed_in_page",
    description = "Where sign-in lands without a `redirect_url`: who is signed in (`gh_session` cookie), with a sign-out button.",
    params(("instance_id" = String, Path, description = "The instance.")),
    responses(
        (status = 200, description = "The signed-in page (sets the `gh_csrf` cookie).", content_type = "text/html", body = String),
        (status = 303, description = "Not signed in: to the sign-in page.", headers(("location" = String, description = "The sign-in page."))),
        (status = 400, description = "A URL with a NUL character.", body = ErrorBody),
        (status = 404, description = "No active instance has this id.", content_type = "text/html", body = String),
        (status = 503, description = "A lookup or write failed; try again shortly.", content_type = "text/html", body = String),
    )
)]
async fn signed_in(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = path.into_inner();
    if let Err(res) = instance_of(&platform, &id).await {
        return res;
    }
    let session = match req.cookie(SESSION_COOKIE) {
        Some(c) => sessions::current(platform.db(), &id, c.value(), platform.now_ms())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let Some((_, user_id)) = session else {
        return HttpResponse::SeeOther()
            .insert_header(("location", format!("{}/sign-in", base(&id))))
            .finish();
    };
    let user = projection::get(platform.db(), &id, &user_id)
        .await
        .ok()
        .flatten();
    let email = user.as_ref().map(primary_email).unwrap_or_default();
    let (token, fresh) = csrf(&req);
    let sign_out = format!("{}/sign-out", base(&id));
    let html = SignedInPage {
        email: &email,
        sign_out: &sign_out,
        csrf_token: &token,
    }
    .render();
    with_csrf_cookie(page(StatusCode::OK, html), &platform, &id, token, fresh)
}

#[utoipa::path(
    post,
    path = "/i/{instance_id}/sign-out",
    tag = "hosted_pages",
    operation_id = "sign_out",
    description = "Ends this browser's session (`gh_session` cookie), if any. Needs the `gh_csrf` cookie (matching `csrf_token`).",
    params(("instance_id" = String, Path, description = "The instance.")),
    request_body(content = SignOutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out (the `gh_session` cookie is removed): to the sign-in page.", headers(("location" = String, description = "The sign-in page."))),
        (status = 400, description = "A form (HTML page) or a URL (JSON error) with a NUL character.", content((String = "text/html"), (ErrorBody = "application/json"))),
        (status = 403, description = "The CSRF token is missing or does not match the `gh_csrf` cookie.", content_type = "text/html", body = String),
        (status = 404, description = "No active instance has this id.", content_type = "text/html", body = String),
        (status = 503, description = "A lookup or write failed; try again shortly.", content_type = "text/html", body = String),
    )
)]
async fn sign_out(
    platform: web::Data<Platform>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = path.into_inner();
    let instance = match instance_of(&platform, &id).await {
        Ok(i) => i,
        Err(res) => return res,
    };
    let Some(f) = form(&body) else {
        return nul_refused();
    };
    if !csrf_ok(&req, f.get("csrf_token").map(String::as_str)) {
        return message(
            StatusCode::FORBIDDEN,
            "Form expired",
            "Please go back, reload the page and try again.",
            None,
        );
    }
    if let Some(c) = req.cookie(SESSION_COOKIE)
        && let Ok(Some((sid, uid))) =
            sessions::current(platform.db(), &id, c.value(), platform.now_ms()).await
    {
        let actor = Authed::other(instance.clone(), format!("user:{uid}"));
        if let Err(e) = sessions::end(&platform, &actor, &sid, &uid, "sign_out").await {
            return unavailable("ending a session", e);
        }
    }
    let mut res = HttpResponse::SeeOther()
        .insert_header(("location", format!("{}/sign-in", base(&id))))
        .finish();
    let _ = res.add_cookie(&expired(&platform, &id, SESSION_COOKIE));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route() {
        gatehouse_platform::openapi::assert_documents_exactly(
            &openapi(),
            &[
                ("GET", "/i/{instance_id}/sign-in"),
                ("POST", "/i/{instance_id}/sign-in"),
                ("GET", "/i/{instance_id}/sign-up"),
                ("POST", "/i/{instance_id}/sign-up"),
                ("GET", "/i/{instance_id}/signed-in"),
                ("POST", "/i/{instance_id}/sign-out"),
            ],
        );
    }

    #[test]
    fn redirects_stay_inside_the_instance() {
        let ins = "ins_x";
        assert_eq!(
            safe_redirect(ins, Some("/i/ins_x/oauth/authorize?a=1")),
            "/i/ins_x/oauth/authorize?a=1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/i/ins_y/x",
            "/i/ins_x//evil",
            "/i/ins_x/\\evil",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_redirect(ins, Some(bad)), "/i/ins_x/signed-in", "{bad}");
        }
        assert_eq!(safe_redirect(ins, None), "/i/ins_x/signed-in");
    }

    #[test]
    fn sign_in_answers_slow_down_as_failures_add_up() {
        let waits: Vec<u128> = (0..12).map(|n| progressive_delay(n).as_millis()).collect();
        assert_eq!(
            waits,
            [0, 0, 0, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000]
        );
        assert_eq!(progressive_delay(u32::MAX), MAX_DELAY);
    }
}
