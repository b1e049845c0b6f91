//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
//! the client registration the MCP authorization spec prefers): a
//! `client_id` that is an https URL names a JSON document, served at that
//! URL, that describes the client. This module fetches those documents for
//! the authorization server, safely:
//!
//! - the URL must be https, have a path, and be in canonical form (no dot
//!   segments, fragment or credentials; parsing must not change it);
//! - no server-side request forgery: hosts that are, or resolve to,
//!   loopback, private, link-local, shared, multicast or reserved addresses
//!   are refused, and the connection goes to the vetted address (no DNS
//!   rebinding between check and use); no proxies, no redirects;
//! - at most [`MAX_DOCUMENT_BYTES`], within [`FETCH_TIMEOUT`];
//! - cached per process, per the response's `Cache-Control: max-age`
//!   clamped to [`MIN_TTL`]..[`MAX_TTL`] ([`DEFAULT_TTL`] without one);
//!   failures are cached for [`FAILURE_TTL`], and concurrent requests for one
//!   URL share one fetch, so a client ID cannot be used to make Gatehouse
//!   hammer a host.
//!
//! What the document must say is the authorization service's business; the
//! token service only needs [`is_metadata_url`] and [`application_id`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
pub const MAX_URL_LEN: usize = 2048;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
pub const FAILURE_TTL: Duration = Duration::from_secs(30);
const CACHE_ENTRIES: u64 = 10_000;

/// Whether a `client_id` names a metadata document rather than an
/// application registered here (those IDs never contain a scheme).
pub fn is_metadata_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// The application ID grants and token families record for a
/// metadata-document client: stable per URL, opaque, and free of the
/// characters stream names use.
pub fn application_id(client_id: &str) -> String {
    let digest = hex::encode(Sha256::digest(client_id.as_bytes()));
    format!("cimd_{}", &digest[..32])
}

#[derive(Debug, Clone, Default)]
pub struct ClientMetadataSettings {
    /// Allows documents on loopback and private networks. For development
    /// and tests only: it turns the SSRF protection off.
    pub allow_private_networks: bool,
    /// Extra trusted root certificates (PEM), besides the built-in web roots.
    pub extra_roots: Vec<reqwest::Certificate>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the client ID is not an acceptable metadata document URL: {0}")]
    BadUrl(&'static str),
    #[error("the client ID's host is not on the public internet")]
    NotPublic,
    #[error("the metadata document could not be fetched: {0}")]
    Unreachable(String),
    #[error("the metadata document URL answered HTTP {0}")]
    Status(u16),
    #[error("the metadata document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the metadata document is not a JSON object")]
    NotJson,
}

/// A fetched document: its JSON object.
pub type Document = Arc<Map<String, Value>>;

#[derive(Clone)]
struct Entry {
    result: Result<Document, FetchError>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Fetches and caches metadata documents. Cheap to clone.
#[derive(Clone)]
pub struct ClientMetadataFetcher {
    /// `None` when the HTTP client could not be built: every fetch then
    /// fails, never falling back to an unprotected client.
    http: Option<reqwest::Client>,
    cache: moka::future::Cache<String, Entry>,
    allow_private_networks: bool,
}

impl ClientMetadataFetcher {
    pub fn new(settings: &ClientMetadataSettings) -> Self {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("Gatehouse/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(PublicResolver::new(settings.allow_private_networks));
        for root in &settings.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = match builder.build() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "client metadata HTTP client unavailable");
                None
            }
        };
        Self {
            http,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .expire_after(EntryExpiry)
                .build(),
            allow_private_networks: settings.allow_private_networks,
        }
    }

    /// The document at `client_id`, from the cache when it is fresh.
    pub async fn fetch(&self, client_id: &str) -> Result<Document, FetchError> {
        let url = checked_url(client_id)?;
        if !self.allow_private_networks
            && let Some(ip) = literal_ip(&url)
            && !is_public(ip)
        {
            return Err(FetchError::NotPublic);
        }
        let entry = self
            .cache
            .get_with(client_id.to_owned(), self.load(url))
            .await;
        entry.result
    }

    async fn load(&self, url: url::Url) -> Entry {
        match self.download(url.clone()).await {
            Ok((doc, ttl)) => Entry {
                result: Ok(Arc::new(doc)),
                ttl,
            },
            Err(e) => {
                tracing::info!(url = %url, error = %e, "client metadata document refused");
                Entry {
                    result: Err(e),
                    ttl: FAILURE_TTL,
                }
            }
        }
    }

    async fn download(&self, url: url::Url) -> Result<(Map<String, Value>, Duration), FetchError> {
        let Some(http) = &self.http else {
            return Err(FetchError::Unreachable("fetching is unavailable".into()));
        };
        let mut res = http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        if res.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(res.status().as_u16()));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let ttl = cache_ttl(
            res.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| unreachable(&e))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok((map, ttl)),
            _ => Err(FetchError::NotJson),
        }
    }
}

/// Whether a request error came from [`PublicResolver`] refusing a host.
pub fn refused_as_private(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains(NOT_PUBLIC) {
            return true;
        }
        source = s.source();
    }
    false
}

fn unreachable(e: &reqwest::Error) -> FetchError {
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        // The resolver's refusal of private addresses arrives as a
        // connect error; say which without leaking internals.
        if refused_as_private(e) {
            return FetchError::NotPublic;
        }
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    FetchError::Unreachable(what)
}

/// Checks the URL form the draft requires, returning it parsed.
pub fn checked_url(client_id: &str) -> Result<url::Url, FetchError> {
    if !is_metadata_url(client_id) {
        return Err(FetchError::BadUrl("it must be an https URL"));
    }
    if client_id.len() > MAX_URL_LEN {
        return Err(FetchError::BadUrl("it is too long"));
    }
    let url =
        url::Url::parse(client_id).map_err(|_| FetchError::BadUrl("it does not parse as a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::BadUrl("it must not carry credentials"));
    }
    if client_id.contains('#') {
        return Err(FetchError::BadUrl("it must not have a fragment"));
    }
    if url.path() == "/" {
        return Err(FetchError::BadUrl("it must have a path"));
    }
    // Dot segments, an upper-case host, a default port or stray
    // percent-encoding all change on parsing: one canonical spelling only.
    if url.as_str() != client_id {
        return Err(FetchError::BadUrl("it must be in canonical form"));
    }
    Ok(url)
}

fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// `Cache-Control: max-age`, clamped; `no-store`/`no-cache` mean the least.
fn cache_ttl(header: Option<&str>) -> Duration {
    let Some(h) = header else {
        return DEFAULT_TTL;
    };
    let mut ttl = DEFAULT_TTL;
    for directive in h.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return MIN_TTL;
        }
        if let Some(v) = lower.strip_prefix("max-age=")
            && let Ok(secs) = v.trim_matches('"').parse::<u64>()
        {
            ttl = Duration::from_secs(secs);
        }
    }
    ttl.clamp(MIN_TTL, MAX_TTL)
}

const NOT_PUBLIC: &str = "resolves only to non-public addresses";

/// Resolves names and keeps only public addresses, so the connection goes
/// to an address that was checked. Any outbound client that must stay off
/// private networks (metadata documents, webhooks) uses it.
pub struct PublicResolver {
    allow_private_networks: bool,
}

impl PublicResolver {
    pub fn new(allow_private_networks: bool) -> Arc<Self> {
        Arc::new(Self {
            allow_private_networks,
        })
    }
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private_networks;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(NOT_PUBLIC.into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether an address is on the public internet (not loopback, private,
/// shared, link-local, documentation, benchmarking, multicast, reserved or
/// unspecified; IPv4 inside IPv6 judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96, and the local-use 64:ff9b:1::/48 of RFC 8215)
    // carries an IPv4 address in its last 32 bits.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        let [.., hi, lo] = s;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0] & 0xfe00 == 0xfc00 // unique local fc00::/7
        || s[0] & 0xffc0 == 0xfe80 // link-local fe80::/10
        || s[0] & 0xffc0 == 0xfec0 // site-local (deprecated) fec0::/10
        || s[0] & 0xff00 == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard 100::/64
        || s[0] == 0 // ::/16 and IPv4-compatible, all reserved
        || s[0] == 0x2002 // 6to4 relays to arbitrary IPv4
        || (s[0] == 0x2001 && s[1] == 0)) // Teredo tunnels to arbitrary IPv4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_https_urls_with_a_path_name_documents() {
        assert!(checked_url("https://client.example/oauth/metadata.json").is_ok());
        assert!(checked_url("https://client.example:8443/c?v=1").is_ok());
        for bad in [
            "http://client.example/meta.json",
            "https://client.example",
            "https://client.example/",
            "https://user:pw@client.example/meta.json",
            "https://client.example/meta.json#frag",
            "https://client.example/a/../meta.json",
            "https://client.example/./meta.json",
            "https://CLIENT.example/meta.json",
            "https://client.example:443/meta.json",
            "https://client.example/%2e%2e/meta.json",
            "client.example/meta.json",
        ] {
            assert!(checked_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "2002:7f00:1::",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as private");
        }
    }

    #[test]
    fn cache_lifetime_follows_max_age_within_bounds() {
        assert_eq!(cache_ttl(None), DEFAULT_TTL);
        assert_eq!(
            cache_ttl(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(cache_ttl(Some("max-age=1")), MIN_TTL);
        assert_eq!(cache_ttl(Some("max-age=99999999")), MAX_TTL);
        assert_eq!(cache_ttl(Some("no-store")), MIN_TTL);
        assert_eq!(cache_ttl(Some("max-age=abc")), DEFAULT_TTL);
    }

    #[test]
    fn application_ids_are_stable_and_distinct() {
        let a = application_id("https://a.example/c.json");
        assert_eq!(a, application_id("https://a.example/c.json"));
        assert_ne!(a, application_id("https://b.example/c.json"));
        assert!(a.starts_with("cimd_") && a.len() == 37);
    }
}
