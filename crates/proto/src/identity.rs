//! Who a connection is, and which identities a publication is addressed to.

use serde::{Deserialize, Serialize};

/// Longest user, device or zone identifier, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most identifiers in one list of a [`Target`].
pub const MAX_TARGET_IDS: usize = 1024;

/// The identity of a connection: who (user), on what (device), where (zone).
/// Every part is optional; an anonymous connection has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Zone (region, shard, tenant…) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Identity {
    /// True if no part is set.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none() && self.device.is_none() && self.zone.is_none()
    }

    /// Checks lengths and emptiness.
    pub fn validate(&self) -> Result<(), &'static str> {
        for id in [&self.user, &self.device, &self.zone].into_iter().flatten() {
            if id.is_empty() || id.len() > MAX_ID_LEN {
                return Err("identity parts must be 1-128 bytes");
            }
        }
        Ok(())
    }
}

/// Identity targeting of a publication. A connection receives a targeted publication only
/// if, for every non-empty list, its identity has that part and the part is in the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Allowed user ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Allowed device ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Allowed zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

impl Target {
    /// True if no list is set (the publication is not targeted).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.devices.is_empty() && self.zones.is_empty()
    }

    /// Checks list sizes and id lengths; sorts and deduplicates every list so that
    /// [`Target::admits`] can binary-search.
    pub fn normalize(mut self) -> Result<Self, &'static str> {
        for list in [&mut self.users, &mut self.devices, &mut self.zones] {
            if list.len() > MAX_TARGET_IDS {
                return Err("a target list has more than 1024 ids");
            }
            if list.iter().any(|id| id.is_empty() || id.len() > MAX_ID_LEN) {
                return Err("target ids must be 1-128 bytes");
            }
            list.sort_unstable();
            list.dedup();
        }
        Ok(self)
    }

    /// True if a connection with `identity` may receive the publication.
    /// Requires [`Target::normalize`] to have run.
    pub fn admits(&self, identity: &Identity) -> bool {
        fn ok(list: &[String], part: Option<&String>) -> bool {
            list.is_empty() || part.is_some_and(|p| list.binary_search(p).is_ok())
        }
        ok(&self.users, identity.user.as_ref())
            && ok(&self.devices, identity.device.as_ref())
            && ok(&self.zones, identity.zone.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits() {
        let t =
            Target { users: vec!["b".into(), "a".into()], zones: vec!["eu".into()], ..Default::default() }
                .normalize()
                .unwrap();
        let id = |u: Option<&str>, z: Option<&str>| Identity {
            user: u.map(Into::into),
            device: None,
            zone: z.map(Into::into),
        };
        assert!(t.admits(&id(Some("a"), Some("eu"))));
        assert!(!t.admits(&id(Some("a"), Some("us"))));
        assert!(!t.admits(&id(Some("c"), Some("eu"))));
        assert!(!t.admits(&id(None, Some("eu"))));
        assert!(Target::default().admits(&Identity::default()));
    }
}
