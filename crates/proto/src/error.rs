//! Stable error codes shared by every transport of the native protocol.
//!
//! Codes are part of the public contract (`docs/protocol.md` § Errors): they never change
//! meaning and are never reused. Messages are human-readable and may change; they never
//! contain internal details.

use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident => $text:literal, )*) => {
        /// A stable, documented error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order (used to pre-register metrics).
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $text, )* }
            }

            /// Looks a wire code up.
            pub fn from_wire(s: &str) -> Option<Self> {
                match s { $( $text => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

codes! {
    /// The frame or body is not valid JSON.
    MalformedJson => "malformed_json",
    /// Valid JSON, but not a valid message: missing field, wrong type, not an object.
    InvalidMessage => "invalid_message",
    /// The `op` is not one this server knows.
    UnknownOp => "unknown_op",
    /// A channel name outside the grammar.
    InvalidChannel => "invalid_channel",
    /// A filter outside the grammar.
    InvalidFilter => "invalid_filter",
    /// Tags outside the rules (count, key grammar, value length).
    InvalidTags => "invalid_tags",
    /// A malformed identity target (`to`).
    InvalidTarget => "invalid_target",
    /// The channel's namespace is not configured.
    UnknownNamespace => "unknown_namespace",
    /// A request other than `connect` before `connect` succeeded.
    NotConnected => "not_connected",
    /// A second `connect` on the same connection.
    AlreadyConnected => "already_connected",
    /// Credentials are missing, unknown or malformed.
    Unauthenticated => "unauthenticated",
    /// The credentials are valid but do not allow this action.
    PermissionDenied => "permission_denied",
    /// Client publishing is not allowed in this namespace.
    PublishNotAllowed => "publish_not_allowed",
    /// The connection is already subscribed to this channel.
    AlreadySubscribed => "already_subscribed",
    /// The connection is not subscribed to this channel.
    NotSubscribed => "not_subscribed",
    /// The connection reached its subscription limit.
    TooManySubscriptions => "too_many_subscriptions",
    /// The channel reached its subscriber limit.
    ChannelFull => "channel_full",
    /// The message or its data is larger than allowed.
    MessageTooLarge => "message_too_large",
    /// The inbound rate limit was exceeded; the request was dropped.
    RateLimited => "rate_limited",
    /// An HTTP request body is larger than allowed.
    PayloadTooLarge => "payload_too_large",
    /// An HTTP request has a content type other than JSON.
    UnsupportedMediaType => "unsupported_media_type",
    /// No such HTTP route.
    NotFound => "not_found",
    /// The HTTP method is not allowed on this route.
    MethodNotAllowed => "method_not_allowed",
    /// Too many items in one batch or broadcast request.
    TooManyItems => "too_many_items",
    /// The server or this client's address has too many connections.
    TooManyConnections => "too_many_connections",
    /// The server is shutting down.
    ShuttingDown => "shutting_down",
    /// Something failed inside the server; details are in its logs.
    Internal => "internal",
    /// A token (session token or JWT) that fails verification: malformed, bad signature,
    /// algorithm not allowed, wrong issuer or audience, not yet valid, unknown or revoked.
    InvalidToken => "invalid_token",
    /// A token that was valid but has expired; obtain a fresh one.
    TokenExpired => "token_expired",
    /// Login failed: unknown user or wrong password (deliberately indistinguishable).
    InvalidCredentials => "invalid_credentials",
    /// Registration with a user name that is already taken.
    UsernameTaken => "username_taken",
    /// A user name outside the configured rules.
    InvalidUsername => "invalid_username",
    /// A password outside the configured rules.
    InvalidPassword => "invalid_password",
    /// A missing or malformed email address where one is required.
    InvalidEmail => "invalid_email",
    /// The namespace only admits channels granted by the connection token.
    GrantRequired => "grant_required",
    /// A personal channel of another user.
    PersonalChannel => "personal_channel",
    /// The API key may not publish to this channel.
    ChannelNotAllowed => "channel_not_allowed",
    /// Accounts are disabled on this server.
    AccountsDisabled => "accounts_disabled",
    /// A server-side write to a model-sync scope was refused by the scope's validation
    /// (nothing changed); `details` lists why.
    UpdateRejected => "update_rejected",
    /// The channel's namespace keeps no history (`history_size = 0`).
    HistoryDisabled => "history_disabled",
    /// The channel's namespace does not track presence (`track_presence = false`).
    PresenceDisabled => "presence_disabled",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error as sent to a client: a stable code plus a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation. Never contains internal details.
    pub message: String,
}

impl ProtoError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(ErrorCode::from_wire(c.as_str()), Some(*c));
        }
    }
}
