//! Identity from trusted proxy headers (realizehit's user/device/zone).
//!
//! A load balancer that authenticates users can tell Tether who is connecting by adding
//! headers. Anyone can send those headers, so they are honoured only when the TCP peer is
//! inside a configured trusted-proxy CIDR; from any other peer they are ignored (and the
//! fact is logged at debug, without the values).

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use tether_proto::Identity;

use crate::config::AuthConfig;

/// Trusted proxies and the header names they use.
#[derive(Debug, Clone)]
pub struct TrustedHeaders {
    proxies: Vec<IpNet>,
    user: HeaderName,
    device: HeaderName,
    zone: HeaderName,
}

impl TrustedHeaders {
    /// From config; the error names the bad option.
    pub fn new(cfg: &AuthConfig) -> Result<Self, String> {
        let proxies = cfg
            .trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("auth.trusted_proxies: '{s}' is not an IP address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = |key: &str, v: &str| {
            HeaderName::try_from(v)
                .map_err(|_| format!("auth.identity_headers.{key}: '{v}' is not a header name"))
        };
        let h = &cfg.identity_headers;
        Ok(Self {
            proxies,
            user: name("user", &h.user)?,
            device: name("device", &h.device)?,
            zone: name("zone", &h.zone)?,
        })
    }

    /// Is `peer` a trusted proxy?
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.proxies.iter().any(|n| n.contains(&peer))
    }

    /// The client's address for per-address limits: the peer itself, or, when the peer is
    /// a trusted proxy, the right-most address in `X-Forwarded-For` that is not itself a
    /// trusted proxy (entries further left are written by the client and can be forged).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in
            headers.get_all(axum::http::header::HeaderName::from_static("x-forwarded-for")).iter().rev()
        {
            let Ok(v) = value.to_str() else { return client };
            for hop in v.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else { return client };
                client = ip;
                if !self.trusts(ip) {
                    return ip;
                }
            }
        }
        client
    }

    /// The identity the headers carry, if the peer is trusted and at least one header is
    /// present and valid. Invalid values (too long, not UTF-8) are ignored with a debug log.
    pub fn identity(&self, peer: IpAddr, headers: &HeaderMap) -> Option<Identity> {
        let present = [&self.user, &self.device, &self.zone].iter().any(|h| headers.contains_key(*h));
        if !present {
            return None;
        }
        if !self.trusts(peer) {
            tracing::debug!(%peer, "identity headers from an untrusted peer ignored");
            return None;
        }
        let get = |h: &HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let identity = Identity { user: get(&self.user), device: get(&self.device), zone: get(&self.zone) };
        let empty = identity.user.is_none() && identity.device.is_none() && identity.zone.is_none();
        if empty || identity.validate().is_err() {
            tracing::debug!(%peer, "invalid identity headers from a trusted proxy ignored");
            return None;
        }
        Some(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(cidrs: &[&str]) -> TrustedHeaders {
        let cfg = AuthConfig {
            trusted_proxies: cidrs.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        TrustedHeaders::new(&cfg).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_read_only_through_trusted_proxies() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.2"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5")]);
        assert_eq!(t.client_ip(ip("127.0.0.2"), &xff), ip("2.2.2.2"), "right-most untrusted hop");
        assert_eq!(t.client_ip(ip("9.9.9.9"), &xff), ip("9.9.9.9"), "untrusted peer: headers ignored");
        assert_eq!(t.client_ip(ip("10.1.1.1"), &HeaderMap::new()), ip("10.1.1.1"));
        let bad = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(t.client_ip(ip("10.1.1.1"), &bad), ip("10.1.1.1"));
        let v6 = "::ffff:127.0.0.2".parse::<IpAddr>().unwrap();
        assert!(t.trusts(v6));
    }

    #[test]
    fn identity_headers_need_a_trusted_peer() {
        let t = trusted(&["127.0.0.2/32"]);
        let h = headers(&[("x-tether-user", "u1"), ("x-tether-zone", "eu")]);
        assert_eq!(t.identity("127.0.0.1".parse().unwrap(), &h), None);
        let id = t.identity("127.0.0.2".parse().unwrap(), &h).unwrap();
        assert_eq!(
            (id.user.as_deref(), id.device.as_deref(), id.zone.as_deref()),
            (Some("u1"), None, Some("eu"))
        );
        let empty = headers(&[("x-tether-user", "  ")]);
        assert_eq!(t.identity("127.0.0.2".parse().unwrap(), &empty), None);
        assert!(
            TrustedHeaders::new(&AuthConfig {
                trusted_proxies: vec!["not-an-ip".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
