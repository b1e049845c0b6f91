//! Checking an authorization request (RFC 6749 §4.1.1, OAuth 2.1, RFC 7636,
//! RFC 8707). Until the client and its redirect URI are known good, errors
//! are shown to the user and never redirected (no open redirect); after
//! that they go back to the client.

use gatehouse_platform::oauth::OAuthCode;
use gatehouse_proto::v1::OAuthApplicationState as AppState;

/// The parameters this endpoint reads; each may appear once.
const SINGLE: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
    "resource",
];
const MAX_STATE: usize = 2048;
const MAX_NONCE: usize = 512;

/// A checked request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub client: AppState,
    pub redirect_uri: String,
    pub redirect_uri_in_request: bool,
    pub state: Option<String>,
    pub scopes: Vec<String>,
    pub code_challenge: Option<String>,
    pub resource: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    /// OpenID Connect `max_age`: seconds since sign-in beyond which the
    /// user signs in again.
    pub max_age: Option<i64>,
    /// The parameters as received (known ones only), to carry through
    /// sign-in and the consent form.
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Default,
    /// Fail instead of showing anything (`login_required`, `consent_required`).
    None,
    /// Ask for consent even when a grant covers the scopes.
    Consent,
    /// Sign in again, whatever session the browser has.
    Login,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Shown on an error page: the client or redirect URI cannot be trusted.
    Page { title: String, message: String },
    /// Sent to the client's (verified) redirect URI.
    Redirect {
        redirect_uri: String,
        error: OAuthCode,
        description: String,
        state: Option<String>,
    },
}

fn page(title: &str, message: impl Into<String>) -> Rejection {
    Rejection::Page {
        title: title.to_owned(),
        message: message.into(),
    }
}

/// The parameters this endpoint knows, in order, with repeated names listed.
pub fn known_params(pairs: Vec<(String, String)>) -> (Vec<(String, String)>, Vec<String>) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut repeated = Vec::new();
    for (k, v) in pairs {
        if !SINGLE.contains(&k.as_str()) {
            continue;
        }
        if out.iter().any(|(n, _)| *n == k) {
            if !repeated.contains(&k) {
                repeated.push(k);
            }
            continue;
        }
        out.push((k, v));
    }
    (out, repeated)
}

/// First step: the parameters that decide where errors may go.
pub fn client_id(params: &[(String, String)], repeated: &[String]) -> Result<String, Rejection> {
    if repeated.iter().any(|r| r == "client_id") {
        return Err(page(
            "Invalid request",
            "The request names more than one client.",
        ));
    }
    match get(params, "client_id") {
        Some(c) if !c.is_empty() => Ok(c.to_owned()),
        _ => Err(page(
            "Invalid request",
            "The request does not say which application is asking.",
        )),
    }
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The rest, once the client is known.
pub fn check(
    client: AppState,
    params: Vec<(String, String)>,
    repeated: &[String],
    declared_resources: &[String],
) -> Result<AuthorizeRequest, Rejection> {
    if repeated.iter().any(|r| r == "redirect_uri") {
        return Err(page(
            "Invalid request",
            "The request names more than one redirect URI.",
        ));
    }
    let given = get(&params, "redirect_uri").map(str::to_owned);
    let redirect_uri = match &given {
        Some(uri)
            if client
                .redirect_uris
                .iter()
                .any(|r| redirect_matches(r, uri)) =>
        {
            uri.clone()
        }
        Some(_) => {
            return Err(page(
                "Invalid redirect URI",
                format!(
                    "The redirect URI of this request is not registered for {}. \
                     You have not been sent anywhere.",
                    client.name
                ),
            ));
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return Err(page(
                "Invalid request",
                "The request does not name a redirect URI and the application has several.",
            ));
        }
    };
    let state = get(&params, "state").map(str::to_owned);
    let fail = |error: OAuthCode, description: String| Rejection::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        description,
        state: state.clone().filter(|s| s.len() <= MAX_STATE),
    };
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return Err(fail(
            OAuthCode::InvalidRequest,
            format!("state is longer than {MAX_STATE} characters"),
        ));
    }
    if repeated.iter().any(|r| r == "resource") {
        return Err(fail(
            OAuthCode::InvalidTarget,
            "one resource per authorization request".into(),
        ));
    }
    if let Some(name) = repeated.first() {
        return Err(fail(
            OAuthCode::InvalidRequest,
            format!("{name} appears more than once"),
        ));
    }
    match get(&params, "response_type") {
        Some("code") => {}
        None | Some("") => {
            return Err(fail(
                OAuthCode::InvalidRequest,
                "response_type is required".into(),
            ));
        }
        Some(_) => {
            return Err(fail(
                OAuthCode::UnsupportedResponseType,
                "only response_type=code is supported".into(),
            ));
        }
    }
    let allowed: Vec<&str> = client.scopes.split(' ').filter(|s| !s.is_empty()).collect();
    let scopes: Vec<String> = match get(&params, "scope") {
        Some(raw) => {
            let mut out: Vec<String> = Vec::new();
            for s in raw.split(' ').filter(|s| !s.is_empty()) {
                if !allowed.contains(&s) {
                    return Err(fail(
                        OAuthCode::InvalidScope,
                        format!("scope {s:?} is not allowed for this application"),
                    ));
                }
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
            out
        }
        None => allowed.iter().map(|s| (*s).to_owned()).collect(),
    };
    if scopes.is_empty() {
        return Err(fail(OAuthCode::InvalidScope, "no scope requested".into()));
    }
    let challenge = get(&params, "code_challenge").filter(|c| !c.is_empty());
    let method = get(&params, "code_challenge_method").filter(|m| !m.is_empty());
    match (challenge, method) {
        (_, Some(m)) if m != "S256" => {
            return Err(fail(
                OAuthCode::InvalidRequest,
                "code_challenge_method must be S256 (plain is not accepted)".into(),
            ));
        }
        (Some(_), None) => {
            return Err(fail(
                OAuthCode::InvalidRequest,
                "code_challenge_method=S256 is required with a code_challenge".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(fail(
                OAuthCode::InvalidRequest,
                "code_challenge_method without code_challenge".into(),
            ));
        }
        _ => {}
    }
    if let Some(c) = challenge
        && !valid_s256_challenge(c)
    {
        return Err(fail(
            OAuthCode::InvalidRequest,
            "code_challenge must be the 43-character base64url SHA-256 of the verifier".into(),
        ));
    }
    if challenge.is_none() && (client.public || client.pkce_required) {
        return Err(fail(
            OAuthCode::InvalidRequest,
            "this client must use PKCE: code_challenge and code_challenge_method=S256 are required"
                .into(),
        ));
    }
    let resource = match get(&params, "resource") {
        Some(r) => match valid_resource(r) {
            Some(r) if gatehouse_platform::oauth::resource_allowed(declared_resources, &r) => {
                Some(r)
            }
            Some(_) => {
                return Err(fail(
                    OAuthCode::InvalidTarget,
                    "resource is not one of this issuer's resources".into(),
                ));
            }
            None => {
                return Err(fail(
                    OAuthCode::InvalidTarget,
                    "resource must be an absolute URI without a fragment".into(),
                ));
            }
        },
        None => None,
    };
    let nonce = get(&params, "nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
        return Err(fail(
            OAuthCode::InvalidRequest,
            format!("nonce is longer than {MAX_NONCE} characters"),
        ));
    }
    let prompt = match get(&params, "prompt") {
        None | Some("") | Some("select_account") => Prompt::Default,
        Some("login") => Prompt::Login,
        Some("none") => Prompt::None,
        Some("consent") => Prompt::Consent,
        Some(p) => {
            return Err(fail(
                OAuthCode::InvalidRequest,
                format!("prompt {p:?} is not supported"),
            ));
        }
    };
    let max_age = match get(&params, "max_age").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => match m.parse::<i64>() {
            Ok(secs)
                if (0..=10_i64.pow(10)).contains(&secs)
                    && m.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(secs)
            }
            _ => {
                return Err(fail(
                    OAuthCode::InvalidRequest,
                    "max_age must be a non-negative number of seconds".into(),
                ));
            }
        },
    };
    Ok(AuthorizeRequest {
        max_age,
        code_challenge: challenge.map(str::to_owned),
        redirect_uri_in_request: given.is_some(),
        client,
        redirect_uri,
        state,
        scopes,
        resource,
        nonce,
        prompt,
        params,
    })
}

/// Whether `given` is the registered redirect URI: the same string, or for
/// a loopback IP literal (`http://127.0.0.1`, `http://[::1]`) the same URI
/// on any port, since native clients bind an ephemeral one (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(r), Ok(g)) = (url::Url::parse(registered), url::Url::parse(given)) else {
        return false;
    };
    let loopback_ip = |u: &url::Url| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                _ => false,
            }
    };
    loopback_ip(&r)
        && r.host() == g.host()
        && r.scheme() == g.scheme()
        && r.path() == g.path()
        && r.query() == g.query()
        && r.fragment().is_none()
        && g.fragment().is_none()
        && g.username().is_empty()
        && g.password().is_none()
        // Only the port may differ; the given URI must be written as the
        // registered one is otherwise (no userinfo, same path and query).
        && given.starts_with("http://")
}

/// Whether the user, signed in at `auth_time_ms`, must sign in again
/// before this request is answered: `prompt=login`, or `max_age` passed
/// (OpenID Connect Core §3.1.2.1; `max_age=0` is `prompt=login`).
pub fn needs_login(req: &AuthorizeRequest, auth_time_ms: i64, now_ms: i64) -> bool {
    req.prompt == Prompt::Login
        || req
            .max_age
            .is_some_and(|secs| now_ms.saturating_sub(auth_time_ms) >= secs.saturating_mul(1000))
}

/// BASE64URL(SHA-256(verifier)) without padding is always 43 characters.
fn valid_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 8707 §2: an absolute URI, no fragment.
fn valid_resource(raw: &str) -> Option<String> {
    gatehouse_platform::oauth::resource_indicator(raw).map(str::to_owned)
}

/// Where an error or a code goes: the redirect URI with parameters added
/// to its query (keeping the query it has).
pub fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        // Registered URIs are validated absolute URLs; this is unreachable
        // in practice, and a bare query is still a correct answer.
        Err(_) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            let sep = if redirect_uri.contains('?') { '&' } else { '?' };
            format!("{redirect_uri}{sep}{q}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn app(public: bool) -> AppState {
        AppState {
            name: "App".into(),
            client_id: "cid".into(),
            public,
            scopes: "openid email files:read".into(),
            redirect_uris: vec!["https://app.example/cb".into()],
            ..Default::default()
        }
    }

    fn params(pairs: &[(&str, &str)]) -> (Vec<(String, String)>, Vec<String>) {
        known_params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn error_of(r: Result<AuthorizeRequest, Rejection>) -> &'static str {
        match r {
            Err(Rejection::Redirect { error, .. }) => error.as_str(),
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_public_request_passes() {
        let (p, rep) = params(&[
            ("response_type", "code"),
            ("client_id", "cid"),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "openid files:read"),
            ("state", "xyz"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("resource", "https://mcp.example/mcp"),
            ("utm", "ignored"),
        ]);
        let r = check(app(true), p, &rep, &[]).unwrap();
        assert_eq!(r.scopes, ["openid", "files:read"]);
        assert_eq!(r.resource.as_deref(), Some("https://mcp.example/mcp"));
        assert_eq!(r.state.as_deref(), Some("xyz"));
        assert!(r.redirect_uri_in_request);
        assert!(!r.params.iter().any(|(k, _)| k == "utm"));
    }

    #[test]
    fn untrusted_redirects_are_pages_and_the_rest_redirect() {
        let (p, rep) = params(&[("redirect_uri", "https://evil.example/cb")]);
        assert!(matches!(
            check(app(false), p, &rep, &[]),
            Err(Rejection::Page { .. })
        ));
        let (p, rep) = params(&[
            ("redirect_uri", "https://app.example/cb"),
            ("redirect_uri", "https://evil.example/cb"),
        ]);
        assert!(matches!(
            check(app(false), p, &rep, &[]),
            Err(Rejection::Page { .. })
        ));
        let (p, rep) = params(&[("client_id", "a"), ("client_id", "b")]);
        assert!(client_id(&p, &rep).is_err());

        let base = [("response_type", "code"), ("client_id", "cid")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            params(&all)
        };
        let (p, rep) = with(&[]);
        assert_eq!(error_of(check(app(true), p, &rep, &[])), "invalid_request"); // no PKCE
        let (p, rep) = with(&[
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "plain"),
        ]);
        assert_eq!(error_of(check(app(true), p, &rep, &[])), "invalid_request");
        let (p, rep) = with(&[("code_challenge", CHALLENGE)]);
        assert_eq!(error_of(check(app(true), p, &rep, &[])), "invalid_request");
        let (p, rep) = with(&[("scope", "openid admin")]);
        assert_eq!(error_of(check(app(false), p, &rep, &[])), "invalid_scope");
        let (p, rep) = with(&[("resource", "https://a.example/#frag")]);
        assert_eq!(error_of(check(app(false), p, &rep, &[])), "invalid_target");
        let (p, rep) = with(&[("resource", "a"), ("resource", "b")]);
        assert_eq!(error_of(check(app(false), p, &rep, &[])), "invalid_target");
        // OpenID Connect Core §3.1.2.1: prompt=login and max_age.
        let (p, rep) = with(&[("prompt", "login")]);
        let r = check(app(false), p, &rep, &[]).unwrap();
        assert!(needs_login(&r, 1_000, 1_001));
        let (p, rep) = with(&[("max_age", "60")]);
        let r = check(app(false), p, &rep, &[]).unwrap();
        assert!(!needs_login(&r, 0, 59_999));
        assert!(needs_login(&r, 0, 60_000));
        let (p, rep) = with(&[("max_age", "0")]);
        let r = check(app(false), p, &rep, &[]).unwrap();
        assert!(needs_login(&r, 5, 5), "max_age=0 is prompt=login");
        let (p, rep) = with(&[]);
        assert!(!needs_login(
            &check(app(false), p, &rep, &[]).unwrap(),
            0,
            i64::MAX
        ));
        for bad in ["-1", "1.5", "soon", "+3", "99999999999"] {
            let (p, rep) = with(&[("max_age", bad)]);
            assert_eq!(
                error_of(check(app(false), p, &rep, &[])),
                "invalid_request",
                "{bad}"
            );
        }
        // RFC 8252 §7.3: a loopback IP redirect URI takes any port.
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:53121/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:8000/cb",
            "http://127.0.0.1:9/cb"
        ));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:4000/cb"));
        for (registered, given) in [
            ("http://127.0.0.1/cb", "http://127.0.0.1:5000/other"),
            ("http://127.0.0.1/cb", "http://[::1]:5000/cb"),
            ("http://localhost/cb", "http://localhost:5000/cb"),
            ("https://app.example/cb", "https://app.example:8443/cb"),
            ("http://127.0.0.1/cb", "http://u:p@127.0.0.1:5000/cb"),
            ("http://127.0.0.1/cb?a=1", "http://127.0.0.1:5000/cb?a=2"),
        ] {
            assert!(
                !redirect_matches(registered, given),
                "{given} for {registered}"
            );
        }
        // RFC 8707 §2: an instance that declared its resources takes no other.
        let declared = ["https://mcp.example/mcp".to_owned()];
        let (p, rep) = with(&[("resource", "https://other.example/api")]);
        assert_eq!(
            error_of(check(app(false), p, &rep, &declared)),
            "invalid_target"
        );
        let (p, rep) = with(&[("resource", "https://mcp.example/mcp")]);
        let r = check(app(false), p, &rep, &declared).unwrap();
        assert_eq!(r.resource.as_deref(), Some("https://mcp.example/mcp"));
        let (p, rep) = with(&[("scope", "openid"), ("scope", "email")]);
        assert_eq!(error_of(check(app(false), p, &rep, &[])), "invalid_request");
        let (p, rep) = params(&[("response_type", "token"), ("client_id", "cid")]);
        assert_eq!(
            error_of(check(app(false), p, &rep, &[])),
            "unsupported_response_type"
        );
        // A confidential client may skip PKCE unless it is required.
        let (p, rep) = with(&[]);
        let r = check(app(false), p, &rep, &[]).unwrap();
        assert_eq!(r.scopes, ["openid", "email", "files:read"]);
        assert!(!r.redirect_uri_in_request);
    }

    #[test]
    fn parameters_are_added_to_the_redirect_query() {
        assert_eq!(
            redirect_with(
                "https://a.example/cb?x=1",
                &[("code", "c"), ("state", "a b")]
            ),
            "https://a.example/cb?x=1&code=c&state=a+b"
        );
        assert_eq!(
            redirect_with("com.example.app:/cb", &[("error", "access_denied")]),
            "com.example.app:/cb?error=access_denied"
        );
    }
}
