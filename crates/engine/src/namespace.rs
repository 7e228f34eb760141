//! Namespaces: per-namespace channel options and the permission rules built on them.
//!
//! A channel `chat:room1` is in namespace `chat`; a channel without `:` is in the default
//! namespace. A channel in a namespace that is not configured is rejected.
//!
//! The rules decide from a verified [`Access`] (who the connection is and which channels
//! its token grants); verifying credentials is the server's job, deciding is the engine's.

use std::collections::HashMap;

use tether_proto::{ChannelName, ChannelPattern, ErrorCode, ProtoError};

/// Who may subscribe to channels of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeRule {
    /// Any connection, including anonymous ones.
    Anyone,
    /// Connections with a user identity.
    Authenticated,
    /// Only connections whose token grants the channel (JWT `channels` claim).
    Granted,
}

/// Who may perform a client action (publish; later presence and history reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRule {
    /// Nobody (the HTTP API still may publish).
    Nobody,
    /// Connections currently subscribed to the channel.
    Subscribers,
    /// Connections with a user identity.
    Authenticated,
    /// Any connection.
    Anyone,
}

/// Options of one namespace. Defaults are the safe choice for production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// Who may subscribe.
    pub subscribe: SubscribeRule,
    /// Who may publish from a client connection.
    pub publish: ClientRule,
    /// Personal channels: `ns:<user>` (or `ns:<user>/…`) may only be subscribed to by that
    /// user.
    pub personal: bool,
    /// Who may read presence.
    pub presence: ClientRule,
    /// Who may read history (over the protocol; the HTTP API always may).
    pub history: ClientRule,
    /// Most publications a channel's history keeps; 0: no history (no offsets, no
    /// recovery).
    pub history_size: usize,
    /// Oldest publication a channel's history keeps, in milliseconds; 0: no age limit.
    pub history_ttl_ms: u64,
    /// Most publications one recovery may return (0: up to `history_size`); a client that
    /// missed more is told `recovered: false`.
    pub recovery_limit: usize,
    /// Keep track of who is subscribed (presence).
    pub track_presence: bool,
    /// Push join and leave events to subscribers (needs `track_presence`).
    pub join_leave: bool,
    /// Most subscribers one channel may have; 0 means unlimited.
    pub max_subscribers: usize,
    /// Largest publication `data`, in bytes, accepted from clients and the HTTP API.
    pub max_message_bytes: usize,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            subscribe: SubscribeRule::Anyone,
            publish: ClientRule::Nobody,
            personal: false,
            presence: ClientRule::Subscribers,
            history: ClientRule::Subscribers,
            history_size: 0,
            history_ttl_ms: 0,
            recovery_limit: 1000,
            track_presence: false,
            join_leave: false,
            max_subscribers: 0,
            max_message_bytes: 65_536,
        }
    }
}

impl NamespaceOptions {
    /// The history bounds, if the namespace keeps history.
    pub fn history_limits(&self) -> Option<crate::history::HistoryLimits> {
        (self.history_size > 0).then_some(crate::history::HistoryLimits {
            max_count: self.history_size,
            max_age_ms: self.history_ttl_ms,
        })
    }
}

/// What a client reads about a channel.
#[derive(Debug, Clone, Copy)]
enum Read {
    History,
    Presence,
}

/// What a connection is allowed by its credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access<'a> {
    /// The verified user id; `None` for anonymous connections.
    pub user: Option<&'a str>,
    /// Channels granted by the connection token.
    pub grants: &'a [ChannelPattern],
}

impl Access<'_> {
    fn granted(&self, channel: &ChannelName) -> bool {
        self.grants.iter().any(|g| g.matches(channel))
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

fn deny(code: ErrorCode, message: &str) -> ProtoError {
    ProtoError::new(code, message)
}

/// Is `channel` the personal channel of `user`: local name `user` or `user/…`? A user id
/// containing `/` owns no personal channel, or `a/b`'s channel would be a sub-channel of
/// user `a`'s.
fn is_personal_of(channel: &ChannelName, user: &str) -> bool {
    if user.contains('/') {
        return false;
    }
    let local = channel.local_name();
    local.strip_prefix(user).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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

    /// May a connection with `access` subscribe to `channel`?
    ///
    /// A grant in the token admits the channel whatever the namespace rule says (the
    /// application's backend decided); otherwise personal channels admit only their owner,
    /// and the namespace rule applies.
    pub fn check_subscribe(
        &self,
        channel: &ChannelName,
        access: &Access<'_>,
    ) -> Result<&NamespaceOptions, ProtoError> {
        let opts = self.resolve(channel)?;
        if access.granted(channel) {
            return Ok(opts);
        }
        if opts.personal {
            return match access.user {
                Some(u) if is_personal_of(channel, u) => Ok(opts),
                Some(_) => Err(deny(ErrorCode::PersonalChannel, "this is another user's personal channel")),
                None => Err(deny(ErrorCode::Unauthenticated, "personal channels need a logged-in user")),
            };
        }
        match (opts.subscribe, access.user) {
            (SubscribeRule::Anyone, _) | (SubscribeRule::Authenticated, Some(_)) => Ok(opts),
            (SubscribeRule::Authenticated, None) => Err(deny(
                ErrorCode::Unauthenticated,
                "anonymous connections may not subscribe in this namespace; log in first",
            )),
            (SubscribeRule::Granted, _) => Err(deny(
                ErrorCode::GrantRequired,
                "this namespace only admits channels granted by the connection token",
            )),
        }
    }

    /// May a client connection publish `data_len` bytes to `channel`? `subscribed` says
    /// whether the connection is subscribed to it.
    pub fn check_client_publish(
        &self,
        channel: &ChannelName,
        access: &Access<'_>,
        subscribed: bool,
        data_len: usize,
    ) -> Result<&NamespaceOptions, ProtoError> {
        let opts = self.resolve(channel)?;
        check_rule(opts.publish, access, subscribed, "publish")?;
        Self::check_size(opts, data_len)?;
        Ok(opts)
    }

    /// May a client connection read `channel`'s history (`subscribed`: is it subscribed)?
    /// `history_disabled` if the namespace keeps none (checked first: it says nothing about
    /// the channel).
    pub fn check_history(
        &self,
        channel: &ChannelName,
        access: &Access<'_>,
        subscribed: bool,
    ) -> Result<&NamespaceOptions, ProtoError> {
        self.check_read(channel, access, subscribed, Read::History)
    }

    /// May a client connection read `channel`'s presence (`subscribed`: is it subscribed)?
    /// `presence_disabled` if the namespace does not track it.
    pub fn check_presence(
        &self,
        channel: &ChannelName,
        access: &Access<'_>,
        subscribed: bool,
    ) -> Result<&NamespaceOptions, ProtoError> {
        self.check_read(channel, access, subscribed, Read::Presence)
    }

    fn check_read(
        &self,
        channel: &ChannelName,
        access: &Access<'_>,
        subscribed: bool,
        what: Read,
    ) -> Result<&NamespaceOptions, ProtoError> {
        let opts = self.resolve(channel)?;
        let (enabled, rule, code, off, action) = match what {
            Read::History => (
                opts.history_size > 0,
                opts.history,
                ErrorCode::HistoryDisabled,
                "this namespace keeps no history",
                "read the history",
            ),
            Read::Presence => (
                opts.track_presence,
                opts.presence,
                ErrorCode::PresenceDisabled,
                "this namespace does not track presence",
                "read the presence",
            ),
        };
        if !enabled {
            return Err(deny(code, off));
        }
        check_rule(rule, access, subscribed, action)?;
        if !subscribed {
            // Reading must not reach what subscribing would not (personal channels,
            // grants, the subscribe rule).
            self.check_subscribe(channel, access)?;
        }
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

/// Applies a [`ClientRule`]; `what` names the action in the message.
pub fn check_rule(
    rule: ClientRule,
    access: &Access<'_>,
    subscribed: bool,
    what: &str,
) -> Result<(), ProtoError> {
    let code = if what == "publish" { ErrorCode::PublishNotAllowed } else { ErrorCode::PermissionDenied };
    match rule {
        ClientRule::Anyone => Ok(()),
        ClientRule::Authenticated if access.user.is_some() => Ok(()),
        ClientRule::Subscribers if subscribed => Ok(()),
        ClientRule::Nobody => Err(ProtoError::new(code, format!("clients may not {what} in this namespace"))),
        ClientRule::Authenticated => Err(ProtoError::new(
            ErrorCode::Unauthenticated,
            format!("only logged-in users may {what} in this namespace"),
        )),
        ClientRule::Subscribers if what == "publish" => {
            Err(ProtoError::new(code, "only subscribers of the channel may publish to it"))
        }
        ClientRule::Subscribers => {
            Err(ProtoError::new(code, format!("only subscribers of the channel may {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    const ANON: Access<'static> = Access { user: None, grants: &[] };
    const ALICE: Access<'static> = Access { user: Some("alice"), grants: &[] };

    #[test]
    fn resolution_and_sizes() {
        let mut ns = Namespaces::default();
        ns.named.insert(
            "chat".into(),
            NamespaceOptions { publish: ClientRule::Anyone, max_message_bytes: 10, ..Default::default() },
        );
        assert_eq!(ns.resolve(&ch("x")).unwrap_err().code, ErrorCode::UnknownNamespace);
        assert_eq!(ns.resolve(&ch("other:x")).unwrap_err().code, ErrorCode::UnknownNamespace);
        assert!(ns.resolve(&ch("chat:x")).is_ok());
        let e = ns.check_client_publish(&ch("chat:x"), &ANON, false, 11).unwrap_err();
        assert_eq!(e.code, ErrorCode::MessageTooLarge);
        assert!(ns.check_client_publish(&ch("chat:x"), &ANON, false, 10).is_ok());
        ns.default = Some(NamespaceOptions::default());
        let e = ns.check_client_publish(&ch("x"), &ALICE, true, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::PublishNotAllowed);
        assert!(ns.check_api_publish(&ch("x"), 1).is_ok());
    }

    #[test]
    fn subscribe_rules() {
        let mut ns = Namespaces::default();
        let with = |subscribe, personal| NamespaceOptions { subscribe, personal, ..Default::default() };
        ns.named.insert("pub".into(), with(SubscribeRule::Anyone, false));
        ns.named.insert("auth".into(), with(SubscribeRule::Authenticated, false));
        ns.named.insert("vip".into(), with(SubscribeRule::Granted, false));
        ns.named.insert("me".into(), with(SubscribeRule::Anyone, true));
        let code = |c: &str, a: &Access<'_>| ns.check_subscribe(&ch(c), a).err().map(|e| e.code);
        assert_eq!(code("pub:x", &ANON), None);
        assert_eq!(code("auth:x", &ANON), Some(ErrorCode::Unauthenticated));
        assert_eq!(code("auth:x", &ALICE), None);
        assert_eq!(code("vip:x", &ALICE), Some(ErrorCode::GrantRequired));
        let grants = [ChannelPattern::parse("vip:x*").unwrap()];
        let granted = Access { user: Some("bob"), grants: &grants };
        assert_eq!(code("vip:xy", &granted), None);
        assert_eq!(code("vip:y", &granted), Some(ErrorCode::GrantRequired));
        assert_eq!(code("me:alice", &ALICE), None);
        assert_eq!(code("me:alice/inbox", &ALICE), None);
        assert_eq!(code("me:alicex", &ALICE), Some(ErrorCode::PersonalChannel));
        assert_eq!(code("me:bob", &ALICE), Some(ErrorCode::PersonalChannel));
        assert_eq!(code("me:alice", &ANON), Some(ErrorCode::Unauthenticated));
        // Regression: user `alice/inbox` must not own (and so share) a sub-channel of alice.
        let slashed = Access { user: Some("alice/inbox"), grants: &[] };
        assert_eq!(code("me:alice/inbox", &slashed), Some(ErrorCode::PersonalChannel));
    }

    #[test]
    fn reading_history_and_presence_never_reaches_further_than_subscribing() {
        let mut ns = Namespaces::default();
        let open = NamespaceOptions {
            history: ClientRule::Anyone,
            presence: ClientRule::Anyone,
            history_size: 10,
            track_presence: true,
            ..Default::default()
        };
        ns.named.insert("me".into(), NamespaceOptions { personal: true, ..open });
        ns.named.insert("vip".into(), NamespaceOptions { subscribe: SubscribeRule::Granted, ..open });
        ns.named.insert("subs".into(), NamespaceOptions { history: ClientRule::Subscribers, ..open });
        ns.named.insert("off".into(), NamespaceOptions::default());
        let h = |c: &str, a: &Access<'_>, s| ns.check_history(&ch(c), a, s).err().map(|e| e.code);
        let p = |c: &str, a: &Access<'_>, s| ns.check_presence(&ch(c), a, s).err().map(|e| e.code);
        assert_eq!(h("me:alice", &ALICE, false), None);
        assert_eq!(h("me:bob", &ALICE, false), Some(ErrorCode::PersonalChannel));
        assert_eq!(p("me:bob", &ALICE, false), Some(ErrorCode::PersonalChannel));
        assert_eq!(h("vip:x", &ALICE, false), Some(ErrorCode::GrantRequired));
        assert_eq!(h("subs:x", &ALICE, false), Some(ErrorCode::PermissionDenied));
        assert_eq!(h("subs:x", &ALICE, true), None);
        assert_eq!(h("off:x", &ALICE, true), Some(ErrorCode::HistoryDisabled));
        assert_eq!(p("off:x", &ALICE, true), Some(ErrorCode::PresenceDisabled));
        let e = ns.check_history(&ch("subs:x"), &ALICE, false).unwrap_err();
        assert_eq!(e.message, "only subscribers of the channel may read the history");
    }

    #[test]
    fn publish_rules() {
        let mut ns = Namespaces::default();
        let with = |publish| NamespaceOptions { publish, ..Default::default() };
        ns.named.insert("subs".into(), with(ClientRule::Subscribers));
        ns.named.insert("auth".into(), with(ClientRule::Authenticated));
        let code =
            |c: &str, a: &Access<'_>, s| ns.check_client_publish(&ch(c), a, s, 1).err().map(|e| e.code);
        assert_eq!(code("subs:x", &ALICE, false), Some(ErrorCode::PublishNotAllowed));
        assert_eq!(code("subs:x", &ANON, true), None);
        assert_eq!(code("auth:x", &ANON, true), Some(ErrorCode::Unauthenticated));
        assert_eq!(code("auth:x", &ALICE, false), None);
    }
}
