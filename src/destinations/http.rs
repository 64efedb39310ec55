//! The HTTP client every destination shares: connection pooling, no redirects, and an SSRF
//! guard that refuses non-public addresses both in URLs and in DNS answers (so a hostname that
//! later resolves to 169.254.169.254 is refused at connect time, not just at config time).
//! Rate-limited connections send through [`HttpConnection`] and its one [`send_limited`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::limit::{Limiter, RateSpec};
use super::{DestinationContext, Outcome};
pub use crate::model::excerpt;
use crate::model::{FieldError, error_chain};

/// Builds the shared client. With `allow_private_networks` off, hosts resolving to loopback,
/// private, link-local or otherwise non-public addresses are refused.
pub fn client(allow_private_networks: bool) -> reqwest::Client {
    // No proxy from the environment (`HTTPS_PROXY`): a proxy resolves the destination's name
    // itself, around the guard below.
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60));
    if !allow_private_networks {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    // Building fails only when the TLS backend cannot initialise, which rustls always can.
    builder.build().expect("HTTP client builds")
}

/// A response read to its end.
#[derive(Debug)]
pub struct Received {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// What an answer tells a connection's rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The API asked us to slow down.
    Throttled,
    /// The call went through; the rate may recover.
    Succeeded,
    /// Neither (a failure that says nothing about the rate).
    Unchanged,
}

impl Pace {
    /// By the HTTP status: 429 throttles, 2xx succeeds. Right for APIs that answer a rate
    /// limit with 429.
    pub fn by_status(received: &Received) -> Self {
        match received.status {
            429 => Self::Throttled,
            200..=299 => Self::Succeeded,
            _ => Self::Unchanged,
        }
    }

    /// By the classified outcome, for APIs that say "slow down" in a 200 (Slack's Web API).
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::RateLimited { .. } => Self::Throttled,
            Outcome::Delivered => Self::Succeeded,
            _ => Self::Unchanged,
        }
    }
}

/// The most of a response body Herald reads; the rest is left unread. Vendors' answers fit
/// many times over (a HubSpot batch of 100 contacts answers about 60 KiB), and a destination
/// that streams gigabytes costs no more than this per call.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Reads `response`'s body up to [`MAX_BODY_BYTES`], as text (invalid UTF-8 replaced).
pub async fn read_body(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_BODY_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Waits for the connection's rate limit, sends `request`, reads the response (up to
/// [`MAX_BODY_BYTES`] of its body) and tells
/// the limiter how it went, as `pace` reads the answer (a 429 slows the connection, a success
/// helps it recover). `Err` is the attempt's outcome when no response came back, or when the
/// wait for the limit would be too long (then nothing is sent).
pub async fn send_limited(
    limiter: &Limiter,
    request: reqwest::RequestBuilder,
    pace: impl FnOnce(&Received) -> Pace,
) -> Result<Received, Outcome> {
    if let Err(wait) = limiter.acquire().await {
        return Err(Outcome::RateLimited { after: Some(wait) });
    }
    let response = request.send().await.map_err(|e| transport_failure(&e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_body(response)
        .await
        .map_err(|e| transport_failure(&e))?;
    super::transcript::record(status, &body);
    let received = Received {
        status,
        headers,
        body,
    };
    match pace(&received) {
        Pace::Throttled => limiter.throttled(),
        Pace::Succeeded => limiter.succeeded(),
        Pace::Unchanged => {}
    }
    Ok(received)
}

/// The HTTP side of a rate-limited connection: the shared client, the connection's request
/// timeout and its rate limiter.
#[derive(Debug)]
pub struct HttpConnection {
    client: reqwest::Client,
    timeout: Duration,
    limiter: Limiter,
}

impl HttpConnection {
    /// A connection allowed `rate`, whose requests time out after `timeout`.
    pub fn new(ctx: &DestinationContext, timeout: Duration, rate: RateSpec) -> Self {
        Self {
            client: ctx.http.clone(),
            timeout,
            limiter: Limiter::new(rate, ctx.max_rate_wait),
        }
    }

    /// A request with the connection's timeout.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, url).timeout(self.timeout)
    }

    /// Sends `request` through the connection's limiter ([`send_limited`], paced by status).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Received, Outcome> {
        send_limited(&self.limiter, request, Pace::by_status).await
    }

    /// The connection's limiter, for a destination that reads its answers itself.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

/// Parses a destination URL and applies the SSRF rules to its literal host.
pub fn check_url(
    field: &str,
    raw: &str,
    allow_private_networks: bool,
) -> Result<url::Url, FieldError> {
    // The text is not quoted: it may be a credential (a Slack incoming-webhook URL) resolved
    // from the environment or the credential store.
    let url =
        url::Url::parse(raw).map_err(|e| FieldError::new(field, format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::new(
            field,
            format!(
                "scheme `{}` is not allowed; use https (or http)",
                url.scheme()
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(
            field,
            "credentials in the URL are not allowed",
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| FieldError::new(field, "the URL has no host"))?;
    if !allow_private_networks {
        let ip = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::from([127, 0, 0, 1]))
            }
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = ip.filter(|ip| !is_public(*ip)) {
            return Err(FieldError::new(
                field,
                format!(
                    "{ip} is not a public address; destinations may not reach internal networks \
                     (set destinations.allow_private_networks for local development)"
                ),
            ));
        }
    }
    Ok(url)
}

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let [first, second, third, ..] = v6.segments();
            // Translation and tunnelling prefixes embed an IPv4 address that a gateway on the
            // path may reach (`64:ff9b::a00:1` is 10.0.0.1): refused whatever they embed.
            let nat64 = first == 0x64 && second == 0xff9b && (third == 0 || third == 1);
            let six_to_four = first == 0x2002;
            let teredo = first == 0x2001 && second == 0;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || nat64
                || six_to_four
                || teredo
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated, still routed by some)
                || first == 0x2001 && second == 0x0db8) // documentation
        }
    }
}

/// A resolver that drops non-public addresses and fails when none is left.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address (SSRF guard)").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Reads `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The outcome of a request that got no response.
pub fn transport_failure(err: &reqwest::Error) -> Outcome {
    let reason = if err.is_timeout() {
        "request timed out".to_owned()
    } else if err.is_connect() {
        format!("could not connect: {}", redacted_chain(err))
    } else {
        format!("request failed: {}", redacted_chain(err))
    };
    Outcome::Retry {
        after: None,
        reason,
    }
}

/// An error's chain without its URL: reqwest names the URL it called, and a URL can be the
/// credential itself (a Slack incoming webhook) or carry one in its query. Only the scheme and
/// host remain.
pub fn redacted_chain(err: &reqwest::Error) -> String {
    let mut text = error_chain(err);
    if let Some(url) = err.url() {
        let shown = format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("?"));
        text = text.replace(url.as_str(), &shown);
        // Some layers print the URL without its query or fragment.
        let mut bare = url.clone();
        bare.set_query(None);
        bare.set_fragment(None);
        text = text.replace(bare.as_str(), &shown);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_does_not_parse_is_named_not_quoted() {
        // A Slack incoming-webhook URL is the credential itself.
        let err = check_url("credentials.webhook_url", "hooks canary-secret", true).unwrap_err();
        assert_eq!(err.path, "credentials.webhook_url");
        assert!(!err.to_string().contains("canary"), "{err}");
    }

    #[tokio::test]
    async fn transport_failures_do_not_quote_the_url() {
        // Nothing listens on port 9 of loopback: the call fails to connect.
        let url = "http://127.0.0.1:9/services/T0/B0/canary-url-secret?token=canary-query";
        let err = client(true).post(url).send().await.unwrap_err();
        assert!(
            err.to_string().contains("canary"),
            "reqwest names the URL: {err}"
        );
        let reason = transport_failure(&err).reason().unwrap_or_default();
        assert!(!reason.contains("canary"), "{reason}");
        assert!(reason.contains("127.0.0.1"), "{reason}");
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
            "http://192.0.0.170/",
            "http://[64:ff9b::a00:1]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[2002:a00:1::1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[fec0::1]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let err = check_url("url", url, false).unwrap_err();
            assert_eq!(err.path, "url");
            assert!(err.message.contains("not a public address"), "{url}: {err}");
            assert!(check_url("url", url, true).is_ok(), "{url}");
        }
        assert!(check_url("url", "https://hooks.example.com/x", false).is_ok());
        assert!(check_url("url", "http://[2a00:1450:4001:80b::200e]/", false).is_ok());
        assert!(check_url("url", "http://8.8.8.8/", false).is_ok());
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_bound_and_no_further() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Announces 1 GiB and streams until the client hangs up.
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let mut read = 0;
            while !request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                read += socket.read(&mut request[read..]).await.unwrap();
            }
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0usize;
            while socket.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let response = client(true)
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap();
        let body = read_body(response).await.unwrap();
        assert_eq!(body.len(), MAX_BODY_BYTES);
        let sent = server.await.unwrap();
        assert!(
            sent < 64 * 1024 * 1024,
            "the client stopped reading: {sent} bytes sent"
        );
    }

    #[test]
    fn only_http_urls_without_userinfo_are_accepted() {
        assert!(check_url("url", "file:///etc/passwd", true).is_err());
        assert!(check_url("url", "gopher://x", true).is_err());
        assert!(check_url("url", "https://user:pw@example.com", true).is_err());
        assert!(check_url("url", "not a url", true).is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
