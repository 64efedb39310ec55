//! `herald healthcheck`: a container health check that needs no curl in the image. It GETs
//! `/healthz` (or `/readyz` with `--ready`) of a running `herald run` and exits 0 on a 2xx,
//! 1 otherwise, printing nothing unless it fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The processor's HTTP address (default: `http.listen` of this configuration, on the
    /// loopback address when it listens on all of them).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Ask `/readyz` (consuming, workspaces loaded) instead of `/healthz` (alive).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this long; a health check that hangs is a failed one.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// The base URL `http.listen` is reached at from the same host or container.
fn local_url(listen: &str) -> anyhow::Result<String> {
    let mut addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("http.listen: `{listen}` is not an address"))?;
    // A server bound to every address answers on the loopback one.
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    Ok(format!("http://{addr}"))
}

pub async fn check(settings: &Settings, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => local_url(&settings.http.listen)?,
    };
    let url = format!("{base}/{}", if args.ready { "readyz" } else { "healthz" });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url}: no answer"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        bail!("{url}: {status} {}", body.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_is_the_listen_address_on_loopback() {
        for (listen, url) in [
            ("0.0.0.0:8080", "http://127.0.0.1:8080"),
            ("[::]:9000", "http://[::1]:9000"),
            ("203.0.113.7:8080", "http://203.0.113.7:8080"),
        ] {
            assert_eq!(local_url(listen).unwrap(), url, "{listen}");
        }
        assert!(local_url("localhost").is_err());
    }
}
