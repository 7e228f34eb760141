//! API keys of the HTTP server API: unrestricted keys from flags/env/config/the generated
//! file, keys limited to channel patterns from config, and keys created with
//! `tether apikey create` (stored hashed in the database, checked on every request so a
//! revocation takes effect at once).

use std::collections::HashMap;
use std::sync::Arc;

use tether_proto::{ChannelName, ChannelPattern};
use tether_store::Store;

use super::token;
use crate::config::ScopedApiKey;

/// What a key may publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every channel.
    All,
    /// Channels matching one of these patterns.
    Channels(Arc<[ChannelPattern]>),
}

impl Scope {
    /// May this key publish to `channel`?
    pub fn allows(&self, channel: &ChannelName) -> bool {
        match self {
            Scope::All => true,
            Scope::Channels(p) => p.iter().any(|p| p.matches(channel)),
        }
    }
}

/// Keys known from configuration, by digest (lookups by digest are timing-safe).
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    configured: HashMap<tether_store::TokenHash, Scope>,
}

impl ApiKeys {
    /// From unrestricted keys and scoped keys.
    pub fn new<'a>(all: impl IntoIterator<Item = &'a String>, scoped: &[ScopedApiKey]) -> Self {
        let mut configured: HashMap<_, _> = all.into_iter().map(|k| (token::hash(k), Scope::All)).collect();
        for s in scoped {
            configured.insert(token::hash(&s.key), Scope::Channels(s.channels.clone().into()));
        }
        Self { configured }
    }

    /// How many keys came from configuration.
    pub fn configured_len(&self) -> usize {
        self.configured.len()
    }

    /// The scope of `key`, `Ok(None)` if it is not a valid key, `Err` if the store could
    /// not be asked (an outage must not look like a bad key).
    pub async fn check(
        &self,
        store: &dyn Store,
        key: &str,
    ) -> Result<Option<Scope>, tether_store::StoreError> {
        let digest = token::hash(key);
        if let Some(s) = self.configured.get(&digest) {
            return Ok(Some(s.clone()));
        }
        if !key.starts_with(token::API_KEY_PREFIX) {
            return Ok(None);
        }
        Ok(store.api_key_by_hash(&digest).await?.map(|k| {
            if k.channels.is_empty() {
                Scope::All
            } else {
                // Patterns were validated when the key was created; one that no longer
                // parses is dropped (fail closed), never widened.
                let p: Vec<ChannelPattern> =
                    k.channels.iter().filter_map(|c| ChannelPattern::parse(c).ok()).collect();
                Scope::Channels(p.into())
            }
        }))
    }
}

/// A new API key: `tak_<id>_<secret>`; the id is public (`apikey list`), the whole key
/// is the secret. Returns `(key_id, key)`.
pub fn generate() -> (String, String) {
    let secret = token::random_secret();
    let id: String = token::random_secret().chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let key = format!("{}{id}_{secret}", token::API_KEY_PREFIX);
    (id, key)
}
