//! Where webhook posts and pushes may go. An owner's webhook URL or a person's push endpoint must
//! not turn Huddle into a way to reach the machines beside it: loopback, private, link-local
//! (cloud metadata) and other non-public addresses are refused, whether the URL names them or a
//! host name resolves to them (checked on the addresses actually connected to, by the HTTP
//! client's resolver), unless the operator allows them (`HUDDLE_OUTBOUND_ALLOW_PRIVATE`).

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an address is one Huddle posts to only when allowed to.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                // Carrier-grade NAT, and "this network".
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                // Unique local (fc00::/7) and link-local (fe80::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why a URL's literal address may not be posted to (host names are checked when resolved).
pub fn refused_literal(url: &url::Url, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            return Some("localhost is not a public address".into());
        }
        url::Host::Domain(_) => return None,
    };
    is_private(ip).then(|| format!("{ip} is not a public address"))
}

/// The system's resolver, keeping public addresses only.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_refused_public_ones_not() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        let url = |u: &str| url::Url::parse(u).unwrap();
        assert!(refused_literal(&url("http://127.0.0.1:9/x"), false).is_some());
        assert!(refused_literal(&url("http://[::1]/x"), false).is_some());
        assert!(refused_literal(&url("http://localhost/x"), false).is_some());
        assert!(refused_literal(&url("https://hooks.example/x"), false).is_none());
        assert!(refused_literal(&url("http://127.0.0.1:9/x"), true).is_none());
    }
}
