//! Which URLs the engine may call: hosts the spec allows, over public addresses,
//! unless the deployment explicitly allows private ones (sandboxes, tests).
//!
//! The check runs twice: on the URL before a request (host pattern, literal
//! addresses, scheme), and in the DNS resolver, so a permitted name that
//! resolves to a private address is refused too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use globset::GlobSet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefused {
    #[error("host `{0}` is not in the spec's allowed_hosts")]
    NotAllowed(String),
    #[error("host `{0}` is a loopback or private address; allow private hosts (--allow-private-hosts, TRIBUTARY_ALLOW_PRIVATE_HOSTS=1) for sandboxes and tests")]
    Private(String),
    #[error("`{0}` uses plain http; public providers are reached over https only")]
    PlainHttp(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("unsupported URL scheme `{0}`")]
    Scheme(String),
}

/// Loopback, private, link-local, shared (CGNAT), unspecified or multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Check a URL against the spec's host patterns and the private-address rule.
pub fn check_url(url: &Url, allowed: &GlobSet, allow_private: bool) -> Result<(), HostRefused> {
    let scheme = url.scheme();
    if scheme != "https" && scheme != "http" {
        return Err(HostRefused::Scheme(scheme.to_string()));
    }
    let host = url
        .host()
        .ok_or_else(|| HostRefused::NoHost(url.as_str().to_string()))?;
    let (name, private) = match host {
        Host::Ipv4(ip) => (ip.to_string(), is_private(IpAddr::V4(ip))),
        Host::Ipv6(ip) => (ip.to_string(), is_private(IpAddr::V6(ip))),
        Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            let local = d == "localhost" || d.ends_with(".localhost");
            (d, local)
        }
    };
    if private {
        return if allow_private {
            Ok(())
        } else {
            Err(HostRefused::Private(name))
        };
    }
    if !allowed.is_match(&name) {
        return Err(HostRefused::NotAllowed(name));
    }
    if scheme == "http" && !allow_private {
        return Err(HostRefused::PlainHttp(url.origin().ascii_serialization()));
    }
    Ok(())
}

/// Parse a URL (a token endpoint, say) and check it like any other.
pub fn checked_url(text: &str, allowed: &GlobSet, allow_private: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("URL `{text}`: {e}"))?;
    check_url(&url, allowed, allow_private).map_err(|e| e.to_string())?;
    Ok(url)
}

/// A DNS resolver that drops private addresses unless they are allowed.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(HostRefused::Private(host));
                return Err(err);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

pub fn resolver(allow_private: bool) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { allow_private })
}

#[cfg(test)]
mod tests {
    use super::*;
    use globset::{Glob, GlobSetBuilder};

    fn hosts(patterns: &[&str]) -> GlobSet {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(Glob::new(p).unwrap());
        }
        b.build().unwrap()
    }

    #[test]
    fn allowed_patterns_and_private_addresses() {
        let set = hosts(&["*.crm.example.com", "api.example.net"]);
        let ok = |u: &str, p: bool| check_url(&Url::parse(u).unwrap(), &set, p);
        assert!(ok("https://acme.crm.example.com/x", false).is_ok());
        assert!(ok("https://api.example.net/x", false).is_ok());
        assert_eq!(
            ok("https://evil.example.com/x", false),
            Err(HostRefused::NotAllowed("evil.example.com".into()))
        );
        assert_eq!(
            ok("https://evil.example.com/x", true),
            Err(HostRefused::NotAllowed("evil.example.com".into()))
        );
        assert!(matches!(
            ok("http://127.0.0.1:8080/x", false),
            Err(HostRefused::Private(_))
        ));
        assert!(ok("http://127.0.0.1:8080/x", true).is_ok());
        assert!(matches!(
            ok("http://10.1.2.3/x", false),
            Err(HostRefused::Private(_))
        ));
        assert!(matches!(
            ok("http://[::1]/x", false),
            Err(HostRefused::Private(_))
        ));
        assert!(matches!(
            ok("http://localhost/x", false),
            Err(HostRefused::Private(_))
        ));
        assert!(matches!(
            ok("http://api.example.net/x", false),
            Err(HostRefused::PlainHttp(_))
        ));
        assert!(matches!(
            ok("ftp://api.example.net/x", false),
            Err(HostRefused::Scheme(_))
        ));
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "104.16.0.1", "2606:4700::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
