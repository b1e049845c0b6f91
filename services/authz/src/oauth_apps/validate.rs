//! Rules for OAuth application metadata: redirect URIs (exact strings,
//! RFC 8252 for native apps, OAuth 2.1 §2.3.1), scopes, URLs, names.

use gatehouse_platform::{ApiError, ApiResult};

pub const DEFAULT_SCOPES: &str = "openid profile email";
pub const MAX_REDIRECT_URIS: usize = 20;
pub const MAX_URI_LEN: usize = 2048;

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// A redirect URI an application may register: absolute, no fragment, and
/// either `https`, `http` on a loopback host (native apps and development),
/// or a private-use scheme in reverse-domain form (`com.example.app:/cb`).
pub fn redirect_uri(raw: &str) -> ApiResult<String> {
    let invalid = |why: &str| {
        ApiError::invalid_param(
            "redirect_uris",
            format!("{raw:?} is not an acceptable redirect URI: {why}."),
        )
    };
    if raw.is_empty()
        || raw.len() > MAX_URI_LEN
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("empty, too long or containing spaces"));
    }
    let url = url::Url::parse(raw).map_err(|_| invalid("not an absolute URI"))?;
    if url.fragment().is_some() || raw.contains('#') {
        return Err(invalid("fragments are not allowed"));
    }
    match url.scheme() {
        "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("no host"));
            }
        }
        "http" => {
            if !url.host_str().is_some_and(is_loopback) {
                return Err(invalid(
                    "http is only allowed for localhost, 127.0.0.1 and [::1]",
                ));
            }
        }
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            return Err(invalid("this scheme is not allowed"));
        }
        scheme if scheme.contains('.') => {}
        _ => {
            return Err(invalid(
                "custom schemes must be reverse-domain names such as com.example.app",
            ));
        }
    }
    Ok(raw.to_owned())
}

pub fn redirect_uris(list: &[String]) -> ApiResult<Vec<String>> {
    if list.len() > MAX_REDIRECT_URIS {
        return Err(ApiError::invalid_param(
            "redirect_uris",
            format!("At most {MAX_REDIRECT_URIS} redirect URIs."),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for raw in list {
        let u = redirect_uri(raw)?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

/// Space-separated scopes, each one the instance knows (standard or its
/// custom scopes), normalised to single spaces without duplicates.
pub fn scopes(raw: &str, known: &[String]) -> ApiResult<String> {
    let mut out: Vec<&str> = Vec::new();
    for s in raw.split_ascii_whitespace() {
        if !known.iter().any(|k| k == s) {
            return Err(ApiError::invalid_param(
                "scopes",
                format!(
                    "Unknown scope {:?}; define custom scopes with POST /v1/oauth_scopes.",
                    gatehouse_platform::error::clip(s)
                ),
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out.join(" "))
}

/// An informational URL (homepage, logo): https, or http on loopback.
pub fn info_url(field: &str, raw: Option<String>) -> ApiResult<Option<String>> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let ok = raw.len() <= MAX_URI_LEN
        && !raw.chars().any(|c| c.is_control() || c.is_whitespace())
        && url::Url::parse(&raw).is_ok_and(|u| {
            u.scheme() == "https" || (u.scheme() == "http" && u.host_str().is_some_and(is_loopback))
        });
    if !ok {
        return Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be an https URL."),
        ));
    }
    Ok(Some(raw))
}

/// Unicode format characters (general category Cf): invisible, and some
/// (bidi overrides such as U+202E) reorder what a name shows, so a consent
/// screen could be made to read as another application's.
pub fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

pub fn name(raw: &str) -> ApiResult<String> {
    let n = raw.trim();
    if n.is_empty()
        || n.chars().count() > 256
        || n.chars().any(|c| c.is_control() || is_format_char(c))
    {
        return Err(ApiError::invalid_param(
            "name",
            "`name` must be 1 to 256 printable characters.",
        ));
    }
    Ok(n.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_follow_oauth_2_1_and_rfc_8252() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com/cb?x=1",
            "http://localhost:3000/cb",
            "http://127.0.0.1:51000/cb",
            "http://[::1]/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/relative",
            "http://example.com/cb",
            "https://app.example.com/cb#frag",
            "javascript:alert(1)",
            "data:text/html,x",
            "myapp:/cb",
            "https://exa mple.com/",
        ] {
            assert!(redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_are_known_normalised_and_deduplicated() {
        let known: Vec<String> = ["openid", "email", "read:docs"].map(String::from).to_vec();
        assert_eq!(
            scopes(" openid  email openid ", &known).ok().as_deref(),
            Some("openid email")
        );
        assert!(scopes("openid admin", &known).is_err());
        assert_eq!(
            scopes("read:docs", &known).ok().as_deref(),
            Some("read:docs")
        );
        assert_eq!(scopes("", &known).ok().as_deref(), Some(""));
    }

    #[test]
    fn names_refuse_control_and_format_characters() {
        assert_eq!(name("  Drive sync ").ok().as_deref(), Some("Drive sync"));
        assert!(name("Ünïcödé 応用").is_ok());
        for bad in [
            "",
            "a\u{0}b",
            "evil\u{202E}elgooG",
            "a\u{200B}b",
            "\u{FEFF}x",
            "x\u{2066}y",
        ] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn info_urls_must_be_https() {
        assert!(info_url("client_uri", Some("https://x.example".into())).is_ok());
        assert!(info_url("client_uri", Some("http://x.example".into())).is_err());
        assert!(info_url("client_uri", Some("javascript:alert(1)".into())).is_err());
        assert_eq!(info_url("client_uri", None).ok(), Some(None));
    }
}
