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
