//! A cookie-keeping HTTP client that behaves like a browser on the hosted
//! pages (session and CSRF cookies, no redirect following).

use reqwest::header::HeaderMap;

use super::Gatehouse;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of a Set-Cookie for `name`, with its attributes.
pub fn set_cookie(h: &HeaderMap, name: &str) -> Option<(String, String)> {
    h.get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
        let (n, value) = pair.split_once('=')?;
        (n == name).then(|| (value.to_owned(), attrs.to_owned()))
    })
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub struct Browser {
    pub c: reqwest::Client,
    pub root: String,
    pub base: String,
    pub csrf: Option<String>,
    pub session: Option<String>,
}

impl Browser {
    pub fn new(g: &Gatehouse, instance: &str) -> Self {
        Self {
            c: client(),
            root: g.base.clone(),
            base: g.url(&format!("/i/{instance}")),
            csrf: None,
            session: None,
        }
    }

    /// Paths are relative to the instance (`/sign-in`), or from the root
    /// when they start with `/i/` (a `Location` the server sent).
    fn resolve(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else if path.starts_with("/i/") {
            format!("{}{path}", self.root)
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub fn cookies(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.csrf {
            parts.push(format!("gh_csrf={c}"));
        }
        if let Some(s) = &self.session {
            parts.push(format!("gh_session={s}"));
        }
        parts.join("; ")
    }

    pub async fn get(&mut self, path: &str) -> (u16, HeaderMap, String) {
        let res = self
            .c
            .get(self.resolve(path))
            .header("cookie", self.cookies())
            .send()
            .await
            .unwrap();
        let (s, h) = (res.status().as_u16(), res.headers().clone());
        if let Some((v, _)) = set_cookie(&h, "gh_csrf") {
            self.csrf = Some(v);
        }
        (s, h, res.text().await.unwrap())
    }

    /// Answers a redirect to the sign-in page (`sign_in`, its `Location`) by
    /// signing up a new user; returns the user's email and where sign-up
    /// sends the browser back.
    pub async fn sign_up_from(&mut self, sign_in: &str) -> (String, String) {
        let back = param(sign_in, "redirect_url")
            .unwrap_or_else(|| panic!("not a sign-in redirect: {sign_in}"));
        let (_, _, html) = self.get("/sign-up").await;
        let csrf = hidden(&html, "csrf_token");
        let email = format!("{}@example.com", super::unique("user"));
        let (s, h, _) = self
            .post(
                "/sign-up",
                &[
                    ("csrf_token", &csrf),
                    ("email", &email),
                    ("password", "correct horse battery"),
                    ("redirect_url", &back),
                ],
            )
            .await;
        assert_eq!(s, 303, "sign-up failed");
        (email, location(&h))
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let res = self
            .c
            .post(self.resolve(path))
            .header("cookie", self.cookies())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let (s, h) = (res.status().as_u16(), res.headers().clone());
        if let Some((v, _)) = set_cookie(&h, "gh_session") {
            self.session = (!v.is_empty()).then_some(v);
        }
        (s, h, res.text().await.unwrap())
    }
}

pub fn location(h: &HeaderMap) -> String {
    h.get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The query parameters of a URL.
pub fn params_of(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

pub fn param(url: &str, name: &str) -> Option<String> {
    params_of(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Every hidden field of the consent form.
pub fn consent_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in html.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = part.split_once('"').unwrap();
        let value = rest
            .split("value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        out.push((name.to_owned(), html_unescape(value)));
    }
    out
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x3a;", ":")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

pub async fn submit_consent(b: &mut Browser, html: &str, decision: &str) -> (u16, String) {
    let mut fields = consent_fields(html);
    fields.push(("decision".into(), decision.into()));
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (s, h, _) = b.post("/oauth/authorize", &pairs).await;
    (s, location(&h))
}
