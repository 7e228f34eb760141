//! The client-message decoder: the rules of the reference's `lib/message/*.js` and
//! `lib/sync_fragment.js`, checked in the reference's order so that a message the
//! reference refuses gets the reference's error message.
//!
//! Where Tether is stricter than the reference (a fragment `uuid` must be a UUID, `params`
//! must be an object, [`MAX_FRAGMENTS_PER_MESSAGE`]), the extra check runs after every
//! check the reference makes, except the fragment bound, which runs first so that an
//! oversized message costs no per-fragment work.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::tree::{self, Node};
use super::{
    ClientMessage, FragmentKind, Frame, FrameError, MAX_FRAGMENTS_PER_MESSAGE, MAX_MESSAGES_PER_FRAME,
    Rejected, ScopeSync, SyncFragment, Uuid, is_valid_semver,
};

/// `AbstractNetworkMessage`'s error for a missing or non-integer `index`.
const NO_INDEX: &str = "Message requires to be reliably sent with an index";
/// `NetworkMessageParser`'s error for a type it does not parse.
const UNRECOGNIZED: &str = "Unrecognized message type";
/// `ScopeSyncMessage`/`ScopeStateMessage`'s error when `fragments` is not an array.
const NO_FRAGMENTS: &str = "SyncFragments not on `fragments`";
/// Tether's own rule (the reference takes any string as a fragment `uuid`).
const BAD_UUID: &str = "Invalid uuid: must be a UUID (8-4-4-4-12 hex digits)";

impl Frame {
    /// Decodes one text frame: a JSON object (one message) or a JSON array of messages.
    ///
    /// `Err` only when the frame as a whole is unusable: not JSON, not an object or array,
    /// nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH), or more than
    /// [`MAX_MESSAGES_PER_FRAME`] messages. Otherwise one entry per message, in the order
    /// the reference dispatches them: sorted by `index` (stable, so equal indices keep
    /// their order), with the entries whose `index` could not be read last.
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        match tree::parse(text.as_bytes(), Some(MAX_MESSAGES_PER_FRAME))? {
            node @ Node::Object(_) => Ok(Self { batch: false, messages: vec![decode_message(node)] }),
            Node::Array(items) => {
                let mut messages: Vec<_> = items.into_iter().map(decode_message).collect();
                // lodash's `_.sortBy(json, 'index')` is stable and puts `undefined` last.
                messages.sort_by_key(|m| {
                    let index = match m {
                        Ok(m) => Some(m.index()),
                        Err(r) => r.index,
                    };
                    index.map_or((1, 0), |i| (0, i))
                });
                Ok(Self { batch: true, messages })
            }
            other => Err(FrameError::NotMessages(other.kind())),
        }
    }
}

/// Decodes one text frame: a JSON object (one message) or a JSON array of messages.
///
/// `Err` only when the frame as a whole is unusable (see [`Frame::decode`], which also
/// tells whether the frame was an array); otherwise one entry per message, sorted by
/// `index` (stable), each either a decoded [`ClientMessage`] or a [`Rejected`] carrying
/// whatever could be read of it (type, index, fragment count).
///
/// Note that the reference drops a whole array frame when any one of its messages fails
/// to parse (`async.map` stops at the first error and nothing is dispatched); whether to
/// do the same is the dialect's decision, which is why each message has its own result.
pub fn decode_frame(text: &str) -> Result<Vec<Result<ClientMessage, Rejected>>, FrameError> {
    Frame::decode(text).map(|f| f.messages)
}

/// Decodes a JSON array of fragments as [`encode_fragments`](super::encode_fragments)
/// writes it (a stored scope snapshot or changeset), with the same rules as fragments in a
/// message. Meant for the server's own data: there is no bound on the number of fragments.
pub fn decode_fragments(json: &[u8]) -> Result<Vec<SyncFragment>, FrameError> {
    let items = match tree::parse(json, None)? {
        Node::Array(items) => items,
        other => return Err(FrameError::NotFragments(other.kind())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(position, node)| {
            let pending =
                pending_fragment(node).map_err(|reason| FrameError::Fragment { position, reason })?;
            pending.finish().ok_or_else(|| FrameError::Fragment { position, reason: BAD_UUID.to_owned() })
        })
        .collect()
}

/// The fields of one message object. Values are taken out as they are used.
struct Fields<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn take(&mut self, key: &str) -> Option<Node<'a>> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| std::mem::replace(v, Node::Null))
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Node::as_str)
    }

    fn uint(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(uint)
    }

    fn index(&self) -> Result<u64, String> {
        self.uint("index").ok_or_else(|| NO_INDEX.to_owned())
    }
}

/// An unsigned integer as the reference's `robb.isUnsignedInt` accepts it, restricted to
/// JSON numbers that fit `u64`.
///
/// The reference tests `/^[0-9]+$/` against `String(value)`, so it also accepts `1.0`,
/// `1e2` and `-0` (Tether does: the parser already made those the integers 1, 100 and 0),
/// and, by accident of the string conversion, numeric strings (`"5"`) and arrays holding
/// one (`[5]`), and integers from 2^64 up to 1e21 (stored lossily). Tether refuses those:
/// no client sends them.
fn uint(node: &Node<'_>) -> Option<u64> {
    match node {
        Node::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn decode_message(node: Node<'_>) -> Result<ClientMessage, Rejected> {
    let entries = match node {
        Node::Object(entries) => entries,
        // `NetworkMessageParser.parseAsJSON`: `if (!json)` comes first; any other value has
        // no `type`. A nested array would be parsed recursively by the reference and then
        // refused by the client dispatcher ("Client received invalid message").
        other => {
            let reason = match other {
                Node::Array(_) => "A message must be an object, not an array",
                n if !n.is_truthy() => "No message(s) to parse",
                _ => UNRECOGNIZED,
            };
            return Err(Rejected {
                type_name: None,
                index: None,
                fragment_count: None,
                reason: reason.to_owned(),
            });
        }
    };
    let mut f = Fields(entries);
    let type_name = f.str("type").map(str::to_owned);
    let index = f.uint("index");
    let fragment_count = match (type_name.as_deref(), f.get("fragments")) {
        (Some("ScopeSync"), Some(Node::Array(a))) => Some(a.len()),
        _ => None,
    };
    let decoded = match type_name.as_deref() {
        Some("Reply") => reply(&f),
        Some("SessionCreate") => session_create(&mut f),
        Some("SessionCreateReply") => session_create_reply(&f),
        Some("ScopeFetch") => scope_fetch(&mut f),
        Some("ScopeState") => scope_state(&mut f),
        Some("ScopeSync") => scope_sync(&mut f),
        Some("Ping") => ping(&f),
        _ => Err(UNRECOGNIZED.to_owned()),
    };
    decoded.map_err(|reason| Rejected { type_name, index, fragment_count, reason })
}

/// `ReplyMessage`: `replyTo` must be an unsigned integer.
fn reply(f: &Fields<'_>) -> Result<ClientMessage, String> {
    let index = f.index()?;
    f.uint("replyTo").ok_or("Invalid replyTo index specified")?;
    Ok(ClientMessage::Ignored { type_name: "Reply", index })
}

/// `SessionCreateMessage`: `version` a string that node-semver@4 `valid()` accepts.
fn session_create(f: &mut Fields<'_>) -> Result<ClientMessage, String> {
    let index = f.index()?;
    let version = f.str("version").ok_or("Requires version")?;
    if !is_valid_semver(version) {
        return Err("Requires valid version".to_owned());
    }
    let version = version.to_owned();
    let params = params(f.take("params"))?;
    Ok(ClientMessage::SessionCreate { index, version, params })
}

/// `SessionCreateReplyMessage`, as a client could send it: the `error` branch needs an
/// `Error` instance, which JSON cannot produce, so `sessionToken` must be a string.
fn session_create_reply(f: &Fields<'_>) -> Result<ClientMessage, String> {
    let index = f.index()?;
    f.str("sessionToken").ok_or("Requires sessionToken or error")?;
    Ok(ClientMessage::Ignored { type_name: "SessionCreateReply", index })
}

/// `ScopeFetchMessage`: `name` a string.
fn scope_fetch(f: &mut Fields<'_>) -> Result<ClientMessage, String> {
    let index = f.index()?;
    let name = f.str("name").ok_or("Invalid name")?.to_owned();
    let params = params(f.take("params"))?;
    Ok(ClientMessage::ScopeFetch { index, name, params })
}

/// `params`: the reference keeps `params || {}`, whatever it is; Tether's type is an
/// object, so a truthy non-object (an array, `"x"`, `1`, `true`) is refused rather than
/// silently replaced.
fn params(node: Option<Node<'_>>) -> Result<Map<String, Value>, String> {
    match node {
        None => Ok(Map::new()),
        Some(n) if !n.is_truthy() => Ok(Map::new()),
        Some(n) => {
            let kind = n.kind();
            n.into_map().ok_or_else(|| format!("Invalid params: must be an object, not {kind}"))
        }
    }
}

/// `ScopeStateMessage` (a server message the reference also parses from clients): the
/// fragments first, then `index`, `scopeIndex` and `rootUUID` (any string).
fn scope_state(f: &mut Fields<'_>) -> Result<ClientMessage, String> {
    let pending = fragments(f)?;
    let index = f.index()?;
    f.uint("scopeIndex").ok_or("Invalid scopeIndex")?;
    f.str("rootUUID").ok_or("Invalid rootUUID")?;
    finish_all(pending)?;
    Ok(ClientMessage::Ignored { type_name: "ScopeState", index })
}

/// `ScopeSyncMessage`: the fragments first, then `index`, `scopeIndex`, `atomic` and
/// `procedure`.
fn scope_sync(f: &mut Fields<'_>) -> Result<ClientMessage, String> {
    let pending = fragments(f)?;
    let index = f.index()?;
    let scope_index = f.uint("scopeIndex").ok_or("Invalid scopeIndex")?;
    // `hasOwnProperty('atomic')`: a present `null` is not a boolean.
    let atomic = match f.get("atomic") {
        None => None,
        Some(Node::Bool(b)) => Some(*b),
        Some(_) => return Err("Invalid atomic".to_owned()),
    };
    let procedure = match f.get("procedure") {
        None => None,
        Some(Node::String(p)) => {
            if atomic.is_none() {
                return Err("Procedure requires to be atomic".to_owned());
            }
            // `procedure.split('.').length !== 2`: exactly one dot, either side may be empty.
            if p.split('.').count() != 2 {
                return Err(r#"Procedure must be of the format "ModelName.procedureName""#.to_owned());
            }
            Some(p.clone().into_owned())
        }
        Some(_) => return Err("Invalid procedure".to_owned()),
    };
    let fragments = finish_all(pending)?;
    Ok(ClientMessage::ScopeSync(ScopeSync { index, scope_index, fragments, atomic, procedure }))
}

/// `PingMessage`: `ack` an unsigned integer. `resendMissing` is not validated: anything but
/// `true` (absent, `1`, `"yes"`) is `false`.
fn ping(f: &Fields<'_>) -> Result<ClientMessage, String> {
    let index = f.index()?;
    let ack = f.uint("ack").ok_or("Invalid ack")?;
    let resend_missing = matches!(f.get("resendMissing"), Some(Node::Bool(true)));
    Ok(ClientMessage::Ping { index, ack, resend_missing })
}

/// Reads `fragments` with the reference's per-fragment rules; the UUID check is left to
/// [`finish_all`].
fn fragments(f: &mut Fields<'_>) -> Result<Vec<PendingFragment>, String> {
    let Some(Node::Array(items)) = f.take("fragments") else { return Err(NO_FRAGMENTS.to_owned()) };
    if items.len() > MAX_FRAGMENTS_PER_MESSAGE {
        return Err(format!("Too many fragments: {} (at most {MAX_FRAGMENTS_PER_MESSAGE})", items.len()));
    }
    items.into_iter().map(pending_fragment).collect()
}

fn finish_all(pending: Vec<PendingFragment>) -> Result<Vec<SyncFragment>, String> {
    pending
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.finish().ok_or_else(|| format!("Fragment {i}: {BAD_UUID}")))
        .collect()
}

/// A fragment that passed the reference's checks; its `uuid` is not yet known to be a
/// UUID (the reference takes any string and lower-cases it).
struct PendingFragment {
    kind: FragmentKind,
    uuid: Option<Uuid>,
    cls_name: String,
    properties: Vec<(String, Value)>,
}

impl PendingFragment {
    /// The fragment, if its `uuid` is a UUID.
    fn finish(self) -> Option<SyncFragment> {
        let uuid = self.uuid?;
        Some(SyncFragment { kind: self.kind, uuid, cls_name: self.cls_name, properties: self.properties })
    }
}

/// `new SyncFragment(json)` for a fragment from the wire.
///
/// The reference also accepts a truthy `modelObject` in place of `uuid` and `clsName` (an
/// in-process option that leaks into the wire format); Tether treats it as any unknown
/// key.
fn pending_fragment(node: Node<'_>) -> Result<PendingFragment, String> {
    // Anything that is not an object has no `type`.
    let Node::Object(entries) = node else { return Err("Invalid type".to_owned()) };
    let mut f = Fields(entries);
    let kind = match f.str("type") {
        Some("add") => FragmentKind::Add,
        Some("change") => FragmentKind::Change,
        _ => return Err("Invalid type".to_owned()),
    };
    let uuid = f.str("uuid").ok_or("Requires uuid or modelObject")?;
    let uuid = Uuid::parse(uuid);
    let cls_name = f.str("clsName").ok_or("Requires clsName or modelObject")?.to_owned();
    let properties = match f.take("properties") {
        // `if (options.properties)`: absent or falsy is "no properties".
        None => Vec::new(),
        Some(n) if !n.is_truthy() => Vec::new(),
        Some(Node::Object(entries)) => properties(entries)?,
        // `_.each` over an array passes numeric keys: an empty array is `{}`, any other
        // fails the key check.
        Some(Node::Array(items)) if items.is_empty() => Vec::new(),
        Some(Node::Array(_)) => return Err("Property key not a string".to_owned()),
        Some(_) => return Err("Requires properties".to_owned()),
    };
    Ok(PendingFragment { kind, uuid, cls_name, properties })
}

/// `setPropertiesOrThrow`: each value a string, number, boolean, `null` or an array of
/// one of those types (no nested arrays, no objects, every element of the same type, where
/// `null` is a type of its own).
///
/// The reference iterates with lodash 2.4's `_.each`, which treats an object with a
/// numeric `length` key as array-like (so `{"length":0,"x":1}` loses every property and
/// `{"length":2}` fails the key check); that is a bug Tether does not copy: `length` is a
/// key like any other.
fn properties(entries: Vec<(Cow<'_, str>, Node<'_>)>) -> Result<Vec<(String, Value)>, String> {
    let not_a = |key: &str| format!("Property '{key}' not a string, number, boolean, array, date, null");
    for (key, value) in &entries {
        match value {
            Node::Null | Node::Bool(_) | Node::Number(_) | Node::String(_) => {}
            Node::Object(_) => return Err(not_a(key)),
            Node::Array(items) => {
                let mut first: Option<&'static str> = None;
                for item in items {
                    let kind = match item {
                        Node::Object(_) => return Err(not_a(key)),
                        Node::Array(_) => {
                            return Err(format!("Property '{key}' cannot have arrays in an array"));
                        }
                        other => other.kind(),
                    };
                    match first {
                        None => first = Some(kind),
                        Some(k) if k != kind => {
                            return Err(format!("Property '{key}' not all array value types match"));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    Ok(entries.into_iter().map(|(k, v)| (k.into_owned(), v.into_value())).collect())
}
