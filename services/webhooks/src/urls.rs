//! Which URLs may receive webhooks: https, to a host that is not and does
//! not resolve to a loopback, private, link-local, shared, metadata or
//! otherwise non-public address (checked here when the endpoint is saved,
//! and again at delivery against DNS rebinding). The one exception is an
//! operator's switch (`--webhooks-allow-loopback`, off by default and not a
//! flag of `serve`): with it, development instances may use http or https on
//! `localhost`, `127.0.0.1` and `[::1]`, and only those. Any tenant has a
//! development instance, so without the switch no tenant can make the
//! platform call (and show it the answers of) services on its own host.
//! Credentials in the URL, fragments, whitespace and control characters are
//! refused everywhere.

use std::net::IpAddr;

use gatehouse_platform::ApiError;
use gatehouse_platform::client_metadata::is_public;
use gatehouse_platform::tenancy::Environment;

pub const MAX_URL_LEN: usize = 2048;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_param("url", message)
}

/// The loopback names a switched-on deployment delivers to. `localhost` is
/// never looked up: it connects to 127.0.0.1 or ::1 only.
pub fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Whether `url` is one of the loopback endpoints of [`is_loopback_name`].
pub fn is_loopback_url(url: &url::Url) -> bool {
    url.host_str().is_some_and(is_loopback_name)
}

/// Checks `raw` for an endpoint of an instance in `env`, resolving its host
/// unless it is an allowed loopback one; returns it unchanged when
/// acceptable. `allow_loopback` is the operator's switch.
pub async fn check(raw: &str, env: Environment, allow_loopback: bool) -> Result<String, ApiError> {
    // The parser would percent-encode a control character in the path or
    // query, but the URL is kept as given, and NUL cannot be stored.
    if raw.is_empty()
        || raw.len() > MAX_URL_LEN
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "`url` must be an absolute URL of at most 2048 characters, without spaces or \
             control characters.",
        ));
    }
    let url = url::Url::parse(raw).map_err(|_| invalid("`url` must be an absolute URL."))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("`url` must not carry credentials."));
    }
    if url.fragment().is_some() {
        return Err(invalid("`url` must not have a fragment."));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("`url` must have a host."))?;
    let production = env == Environment::Production;
    let loopback_ok = allow_loopback && !production;
    match url.scheme() {
        "https" | "http" if loopback_ok && is_loopback_name(host) => return Ok(raw.to_owned()),
        "https" => {}
        "http" if production || !allow_loopback => {
            return Err(invalid("`url` must use https."));
        }
        "http" => {
            return Err(invalid(
                "`url` must use https (http is allowed for localhost in development).",
            ));
        }
        _ => return Err(invalid("`url` must use https.")),
    }
    public_host(&url).await?;
    Ok(raw.to_owned())
}

/// Every address the host names or resolves to is public.
pub async fn public_host(url: &url::Url) -> Result<(), ApiError> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| invalid(format!("The host {name:?} does not resolve.")))?
            .map(|a| a.ip())
            .collect(),
        None => Vec::new(),
    };
    if addrs.is_empty() || !addrs.into_iter().all(is_public) {
        return Err(invalid(
            "`url` must point at a public address, not a loopback, private, link-local or \
             metadata one.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn control_characters_are_refused() {
        for raw in [
            "https://1.1.1.1/\0",
            "https://1.1.1.1/a?b=\u{1}",
            "https://1.1.1.1/\u{85}",
        ] {
            assert!(
                check(raw, Environment::Production, false).await.is_err(),
                "{raw:?}"
            );
        }
        assert!(
            check("https://1.1.1.1/hooks", Environment::Production, false)
                .await
                .is_ok()
        );
    }
}
