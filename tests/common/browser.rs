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
