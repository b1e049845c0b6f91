//! What the consent screen says about a client beyond its name and scopes:
//! where the code goes, whether anyone reviewed the client, and which of
//! its self-declared logo and homepage may be shown. A pure function of the
//! client and the redirect URI, unit-tested here.
//!
//! Clients that described themselves (dynamic registration, metadata
//! documents) are untrusted: the MCP authorization specification asks the
//! consent screen to show where the code is sent, so a registrant calling
//! itself "Google Drive" with Google's logo still shows its own host.

use gatehouse_platform::client_metadata;
use gatehouse_proto::v1::OAuthApplicationState as AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreviewed {
    /// A metadata-document client: its details came from this host.
    Document { host: String },
    /// A dynamically registered client.
    Registered,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Presentation {
    pub logo: Option<String>,
    pub client_uri: Option<String>,
    /// The host (or, for a private-use scheme, the scheme) the code goes to.
    pub redirect_host: String,
    /// The code goes to a program on the user's own machine, and the client
    /// is untrusted: the user is warned.
    pub loopback_warning: bool,
    pub unreviewed: Option<Unreviewed>,
}

fn host_of(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    u.host_str()
        .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `a` and `b` are one host, or one is a subdomain of the other.
fn related(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

pub fn present(client: &AppState, redirect_uri: &str) -> Presentation {
    let document = client_metadata::is_metadata_url(&client.client_id);
    let untrusted = document || client.dynamically_registered;
    let redirect_host = host_of(redirect_uri).unwrap_or_else(|| {
        // A private-use scheme (RFC 8252 §7.1): the app that owns it.
        redirect_uri
            .split_once(':')
            .map_or(redirect_uri, |(scheme, _)| scheme)
            .to_owned()
    });
    let redirect_hosts: Vec<String> = client
        .redirect_uris
        .iter()
        .filter_map(|u| host_of(u))
        .collect();
    // An untrusted client's logo and homepage must be on a host its codes
    // go to; otherwise they are the registrant's claim about someone else.
    let vouched = |uri: &str| {
        !untrusted || host_of(uri).is_some_and(|h| redirect_hosts.iter().any(|r| related(&h, r)))
    };
    let logo = client
        .client_image_url
        .clone()
        .filter(|u| u.starts_with("https://") && vouched(u));
    let client_uri = client.client_uri.clone().filter(|u| vouched(u));
    let unreviewed = if document {
        host_of(&client.client_id).map(|host| Unreviewed::Document { host })
    } else if client.dynamically_registered {
        Some(Unreviewed::Registered)
    } else {
        None
    };
    Presentation {
        logo,
        client_uri,
        loopback_warning: untrusted && is_loopback_host(&redirect_host),
        redirect_host,
        unreviewed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(registered: bool) -> AppState {
        AppState {
            client_id: "28JKiaMmyWFbNnCn9qIbWN9t".into(),
            name: "Google Drive".into(),
            redirect_uris: vec![
                "https://evil.example/cb".into(),
                "http://127.0.0.1/cb".into(),
            ],
            client_image_url: Some("https://www.google.com/favicon.ico".into()),
            client_uri: Some("https://drive.google.com".into()),
            dynamically_registered: registered,
            ..Default::default()
        }
    }

    #[test]
    fn a_registered_client_shows_where_the_code_goes_and_no_borrowed_logo() {
        let p = present(&client(true), "https://evil.example/cb");
        assert_eq!(p.redirect_host, "evil.example");
        assert_eq!(p.logo, None, "a logo on a host it does not redirect to");
        assert_eq!(p.client_uri, None);
        assert_eq!(p.unreviewed, Some(Unreviewed::Registered));
        assert!(!p.loopback_warning);
    }

    #[test]
    fn a_logo_on_the_clients_own_host_or_a_subdomain_stays() {
        let mut c = client(true);
        c.client_image_url = Some("https://cdn.evil.example/logo.png".into());
        c.client_uri = Some("https://evil.example/about".into());
        let p = present(&c, "https://evil.example/cb");
        assert_eq!(p.logo.as_deref(), Some("https://cdn.evil.example/logo.png"));
        assert_eq!(p.client_uri.as_deref(), Some("https://evil.example/about"));
    }

    #[test]
    fn a_loopback_redirect_of_an_untrusted_client_is_warned_about() {
        let p = present(&client(true), "http://127.0.0.1:50123/cb");
        assert_eq!(p.redirect_host, "127.0.0.1");
        assert!(p.loopback_warning);
        let p = present(&client(false), "http://127.0.0.1:50123/cb");
        assert!(
            !p.loopback_warning,
            "the instance's own applications are reviewed"
        );
    }

    #[test]
    fn the_instances_own_applications_keep_their_logo() {
        let p = present(&client(false), "https://evil.example/cb");
        assert!(p.logo.is_some() && p.client_uri.is_some());
        assert_eq!(p.unreviewed, None);
    }

    #[test]
    fn metadata_document_clients_name_the_host_they_came_from() {
        let mut c = client(false);
        c.client_id = "https://mcp.example/client.json".into();
        let p = present(&c, "https://evil.example/cb");
        assert_eq!(
            p.unreviewed,
            Some(Unreviewed::Document {
                host: "mcp.example".into()
            })
        );
        assert_eq!(p.logo, None);
    }

    #[test]
    fn a_private_use_scheme_names_its_app() {
        let p = present(&client(true), "com.example.app:/oauth2redirect");
        assert_eq!(p.redirect_host, "com.example.app");
    }
}
