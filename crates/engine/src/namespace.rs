//! Namespaces: per-namespace channel options and the permission rules built on them.
//!
//! A channel `chat:room1` is in namespace `chat`; a channel without `:` is in the default
//! namespace. A channel in a namespace that is not configured is rejected.

use std::collections::HashMap;

use tether_proto::{ChannelName, ErrorCode, ProtoError};

/// Options of one namespace. Defaults are the safe choice for production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// May connected clients publish into this namespace? (The HTTP API always may.)
    pub allow_publish: bool,
    /// May connections without an identity subscribe?
    pub allow_anonymous_subscribe: bool,
    /// Most subscribers one channel may have; 0 means unlimited.
    pub max_subscribers: usize,
    /// Largest publication `data`, in bytes, accepted from clients and the HTTP API.
    pub max_message_bytes: usize,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            allow_publish: false,
            allow_anonymous_subscribe: true,
            max_subscribers: 0,
            max_message_bytes: 65_536,
        }
    }
}

/// The configured namespaces.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// Options of channels without a namespace; `None` rejects such channels.
    pub default: Option<NamespaceOptions>,
    /// Named namespaces.
    pub named: HashMap<String, NamespaceOptions>,
}

impl Namespaces {
    /// The options that apply to `channel`, or `unknown_namespace`.
    pub fn resolve(&self, channel: &ChannelName) -> Result<&NamespaceOptions, ProtoError> {
        let found = match channel.namespace() {
            None => self.default.as_ref(),
            Some(ns) => self.named.get(ns),
        };
        found.ok_or_else(|| {
            ProtoError::new(
                ErrorCode::UnknownNamespace,
                match channel.namespace() {
                    Some(ns) => format!("namespace '{ns}' is not configured"),
                    None => "channels without a namespace are not enabled".to_owned(),
                },
            )
        })
    }

    /// May a connection (anonymous or not) subscribe to `channel`?
    pub fn check_subscribe(
        &self,
        channel: &ChannelName,
        anonymous: bool,
    ) -> Result<&NamespaceOptions, ProtoError> {
        let opts = self.resolve(channel)?;
        if anonymous && !opts.allow_anonymous_subscribe {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "anonymous connections may not subscribe in this namespace",
            ));
        }
        Ok(opts)
    }

    /// May a connected client publish `data_len` bytes to `channel`?
    pub fn check_client_publish(
        &self,
        channel: &ChannelName,
        data_len: usize,
    ) -> Result<&NamespaceOptions, ProtoError> {
        let opts = self.resolve(channel)?;
        if !opts.allow_publish {
            return Err(ProtoError::new(
                ErrorCode::PublishNotAllowed,
                "clients may not publish in this namespace",
            ));
        }
        Self::check_size(opts, data_len)?;
        Ok(opts)
    }

    /// May the server API publish `data_len` bytes to `channel`?
    pub fn check_api_publish(
        &self,
        channel: &ChannelName,
        data_len: usize,
    ) -> Result<&NamespaceOptions, ProtoError> {
        let opts = self.resolve(channel)?;
        Self::check_size(opts, data_len)?;
        Ok(opts)
    }

    fn check_size(opts: &NamespaceOptions, data_len: usize) -> Result<(), ProtoError> {
        if data_len > opts.max_message_bytes {
            return Err(ProtoError::new(
                ErrorCode::MessageTooLarge,
                format!("data is {data_len} bytes; this namespace allows {}", opts.max_message_bytes),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_and_rules() {
        let mut ns = Namespaces::default();
        ns.named.insert(
            "chat".into(),
            NamespaceOptions {
                allow_publish: true,
                allow_anonymous_subscribe: false,
                max_message_bytes: 10,
                ..Default::default()
            },
        );
        let ch = |s| ChannelName::parse(s).unwrap();
        assert_eq!(ns.resolve(&ch("x")).unwrap_err().code, ErrorCode::UnknownNamespace);
        assert_eq!(ns.resolve(&ch("other:x")).unwrap_err().code, ErrorCode::UnknownNamespace);
        assert!(ns.resolve(&ch("chat:x")).is_ok());
        assert_eq!(ns.check_subscribe(&ch("chat:x"), true).unwrap_err().code, ErrorCode::PermissionDenied);
        assert!(ns.check_subscribe(&ch("chat:x"), false).is_ok());
        assert_eq!(ns.check_client_publish(&ch("chat:x"), 11).unwrap_err().code, ErrorCode::MessageTooLarge);
        assert!(ns.check_client_publish(&ch("chat:x"), 10).is_ok());
        ns.default = Some(NamespaceOptions::default());
        assert_eq!(ns.check_client_publish(&ch("x"), 1).unwrap_err().code, ErrorCode::PublishNotAllowed);
        assert!(ns.check_api_publish(&ch("x"), 1).is_ok());
    }
}
