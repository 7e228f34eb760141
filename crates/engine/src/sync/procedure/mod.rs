//! Procedures: downstream validation of changesets (the reference's
//! `Model.defineProcedure(name, {constraints, remote})`), the pure part.
//!
//! The configuration format, the expression language and the differences from the reference
//! are documented on [`Procedure`]. Layout: `expr.rs` (tokens, parser, syntax tree),
//! `eval.rs` (evaluation against a scope), `constraint.rs`, `remote.rs` (URL, headers,
//! body, response), `tests/`.

mod constraint;
mod eval;
mod expr;
mod remote;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tether_proto::jetstream::{FragmentKind, SyncFragment};

use self::constraint::Constraint;
use self::eval::Env;
use self::remote::Remote;
use super::{Schema, ScopeState, Table};

/// A procedure as configured (`[[sync.procedures]]`). Build a [`Procedure`] from it with
/// [`Procedure::new`], which checks it against the schema.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureDef {
    /// `"Model.procedureName"`: what a `ScopeSync`'s `procedure` names.
    pub name: String,
    /// The fragments a call may carry: each must match one of these.
    pub constraints: Vec<ConstraintDef>,
    /// The remote call, if any (without one, a call only checks the constraints).
    #[serde(default)]
    pub remote: Option<RemoteDef>,
}

/// One constraint, with the reference's key names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintDef {
    /// The fragment type.
    #[serde(rename = "type")]
    pub kind: ConstraintType,
    /// The fragment's `clsName` (exactly: not a subtype).
    #[serde(rename = "clsName")]
    pub cls_name: String,
    /// Property name → requirement (see [`Procedure`]).
    #[serde(default)]
    pub properties: Table<Value>,
    /// Whether the fragment may set properties the constraint does not name.
    #[serde(rename = "allowAdditionalProperties", default)]
    pub allow_additional_properties: bool,
}

/// The fragment type a constraint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConstraintType {
    /// `"add"`.
    Add,
    /// `"change"`.
    Change,
}

impl From<ConstraintType> for FragmentKind {
    fn from(t: ConstraintType) -> Self {
        match t {
            ConstraintType::Add => FragmentKind::Add,
            ConstraintType::Change => FragmentKind::Change,
        }
    }
}

/// The remote HTTP call of a procedure (`remote`, of the reference's type `http`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteDef {
    /// `http://` or `https://`, with `:name` placeholders.
    pub url: String,
    /// Placeholder name → value (usually an expression).
    #[serde(default)]
    pub params: Table<Value>,
    /// The HTTP method (any case); `GET` by default.
    #[serde(default)]
    pub method: Option<String>,
    /// Header name → value.
    #[serde(default)]
    pub headers: Table<Value>,
    /// The JSON body: a table or an array, with expressions anywhere.
    #[serde(default)]
    pub body: Option<Value>,
    /// How long the call may take, in milliseconds; 10,000 by default.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The statuses that accept the changeset; `[200]` by default.
    #[serde(default)]
    pub success_status_codes: Option<Vec<u16>>,
    /// The key of the response body's updates; `"_updates"` by default.
    #[serde(default)]
    pub updates_response_key: Option<String>,
    /// Case tables for `$case.name(…)`: name → (key → value).
    #[serde(default)]
    pub cases: Table<Table<Value>>,
}

/// A validated procedure: downstream validation of changesets.
///
/// A client sends a `ScopeSync` with `atomic` and `procedure: "Model.name"`. The server
/// finds the procedure, then, before any fragment applies:
///
/// 1. [`Procedure::check_constraints`]: every fragment must match one of the procedure's
///    constraints, or the whole message is refused;
/// 2. [`Procedure::bind`]: evaluates the remote call's expressions against the fragments,
///    the scope's name and params and its current state, giving a [`RemoteRequest`];
/// 3. the server makes the request (IO: not here), then [`Procedure::read_response`]: a
///    status outside `success_status_codes` refuses the whole message; otherwise the
///    [`ProcedureUpdate`]s found in the response body are for the server to apply after
///    the changeset.
///
/// Any error refuses the whole message; the server replies to every fragment with
/// `Could not apply SyncMessage: <error>` (type `could-not-apply-sync-message`), as the
/// reference. The [`ProcedureError`] is that `<error>`.
///
/// # Configuration
///
/// A [`ProcedureDef`] (TOML, unknown keys are errors), checked against the schema by
/// [`Procedure::new`]:
///
/// ```toml
/// [[sync.procedures]]
/// name = "ChatRoom.postMessage"            # "Model.procedureName"; Model is in the schema
/// constraints = [
///   { type = "change", clsName = "ChatRoom", properties = { messages = { "$array" = "insert" } } },
///   { type = "add", clsName = "Message", properties = { author = "$hasNewValue", text = "$hasNewValue" },
///     allowAdditionalProperties = true },
/// ]
///
/// [sync.procedures.remote]                 # optional: without it, constraints only
/// url = "http://127.0.0.1:9000/room/:id/messages"
/// params = { id = "$incoming.ChatRoom.change.uuid" }   # one per :placeholder of the url
/// method = "POST"                          # GET (default), DELETE, HEAD, OPTIONS, PATCH, POST, PUT
/// headers = { Authorization = "$scope.params.token", "X-Locale" = "$rootModel.attributes.locale" }
/// body = { text = "$incoming.Message.add.text", room = "$rootModel.name",
///          status = "$case.statusName($rootModel.attributes.status)", tags = ["a", "b"] }
/// timeout_ms = 10000                       # default 10000
/// success_status_codes = [200]             # default [200]
/// updates_response_key = "_updates"        # default "_updates"
/// cases = { statusName = { "0" = "open", "1" = "closed" } }
/// ```
///
/// - **Constraints** (`type`, `clsName`, `properties`, `allowAdditionalProperties`, default
///   `false`): a fragment matches a constraint when it has the same type and `clsName` (a
///   model the scope can hold), sets every property the constraint names, and, unless
///   additional properties are allowed, no other. Each property's requirement is one of:
///   `"$hasNewValue"` (set, to anything); `{ "$array" = "insert" }` (a collection whose new
///   array is longer than the object's current one; on an `add`, any array);
///   `{ "$array" = "remove" }` (shorter than the current one; `change` only); a string,
///   number or boolean the value must equal (`"$$x"` for the string `"$x"`). A constraint
///   without properties matches fragments without properties (or any, with
///   `allowAdditionalProperties`).
/// - **Values** of `params`, `headers` and `body` (at any depth): a string starting with `$`
///   is an expression; `$$` starts a literal string with one `$` (`"$$5"` is `"$5"`); any
///   other value is sent as written. `cases` values are literals, as written.
/// - **URL**: `http://` or `https://`. A placeholder is `:name` starting a path segment or a
///   query value (`/room/:id`, `?room=:id`); each needs a `params` entry and each entry a
///   placeholder. Bound values are percent-encoded (all but `A-Z a-z 0-9 - . _ ~`).
/// - **Headers**: `Content-Type: application/json` and `Accept: application/json` unless
///   configured; then the configured ones, in order. A header whose value is `null` or
///   undefined is left out.
/// - **Body**: a table or an array, sent as JSON; none without `body`. An undefined value
///   leaves its key out (`null` in an array), as `JSON.stringify` does.
///
/// Every problem is reported at load, naming the procedure and the value, e.g.
/// `procedure 'ChatRoom.postMessage', remote.body.text: unexpected ')' at 27, expected end`
/// for `text = "$incoming.Message.add.text)"`.
///
/// # Expressions
///
/// ```text
/// expr     = incoming | scope | root | model | case
/// incoming = "$incoming." Name "." ("add" | "change") "." ("uuid" | Name [ "[" index "]" ])
/// index    = Int | ("inserted" | "removed") "[" Int "]"
/// scope    = "$scope.name" | "$scope.params" ("." Word)+
/// root     = "$rootModel" path
/// model    = "$model.find(" expr ")" path
/// case     = "$case." Name "(" expr ")"
/// path     = ("." Name [ "[" Int "]" | "." Int ])* "." ("uuid" | Name [ "[" Int "]" ])
/// Word     = [A-Za-z0-9_-]+      Name = a Word starting with a letter or "_"      Int = -?[0-9]+
/// ```
///
/// No blanks. Positions in errors are 1-based characters.
///
/// | expression | value |
/// |---|---|
/// | `$incoming.Cls.add.f` | property `f` of the changeset's `add` fragment of model `Cls` (the last one, if several); UUIDs of reference properties in lower case |
/// | `$incoming.Cls.change.uuid` | that fragment's UUID |
/// | `….f[n]`, `….f[-1]` | element `n` of the array (from the end if negative) |
/// | `….f[inserted[n]]`, `….f[removed[n]]` | element `n` of the elements the new array has and the object's current one has not (or the reverse); `change` only |
/// | `$scope.name`, `$scope.params.a.b` | the scope's name; a scope param |
/// | `$rootModel.a.b[0].p` | from the root object, follow references `a`, then element 0 of collection `b`, then read value property `p` (`uuid`: the object's UUID) |
/// | `$model.find(<expr>).a.p` | the same from the object whose UUID `<expr>` gives |
/// | `$case.name(<expr>)` | the entry of case table `name` whose key is `<expr>`'s value as a string (`0` → `"0"`) |
///
/// Objects are read as they are before the changeset. Dates are epoch seconds (as on the
/// wire); enumerations their value; value collections arrays. An index past the end is
/// undefined (see body and headers above; a URL parameter refuses it). Everything else
/// that cannot be evaluated (no such fragment, field, param, object, property, case entry)
/// refuses the message with the reference's message, ending in `; expr: '<expr>'`.
///
/// # Differences from the reference
///
/// - A `remove` array constraint requires the new array to be shorter than the current one
///   (the reference tested "longer", as for `insert`, so it accepted inserts and refused
///   every removal).
/// - Expressions are parsed and checked against the schema at load (the reference parsed
///   them at each call), and may appear anywhere in the body (the reference sent an
///   expression inside an array as an object describing the expression).
/// - Strings starting with `$` are expressions (the reference needed `jetstream.expr(…)`,
///   which TOML cannot say); `$$` escapes.
/// - URL placeholders only start a path segment or a query value, and their values are
///   percent-encoded (the reference replaced `:key` anywhere, ports included, and inserted
///   values as they were: a `/` in a value changed the path). An undefined or `null` URL
///   parameter is an error (the reference wrote `undefined` or `null` into the URL).
/// - `null` header values leave the header out (Node threw on them).
/// - Incoming UUIDs of reference properties are compared and sent in lower case (the
///   reference lower-cased them only after the procedure ran, so `inserted[n]` saw every
///   upper-case UUID as new).
/// - An index on a single reference in a path is an error (the reference ignored it).
/// - Dates read from objects are epoch seconds (the reference sent `Date` objects: ISO
///   strings in JSON bodies).
/// - An `_updates` that is not an array, or an update without an `update` object, refuses
///   the message with `Invalid updates: …` (the reference threw from a callback, which
///   ended the process, or logged and skipped the update).
/// - A remote failure other than a status is `ETIMEDOUT` for a timeout (the `request`
///   library's message) and `Remote procedure call failed` otherwise (the reference passed
///   on the socket error, e.g. `connect ECONNREFUSED 127.0.0.1:9000`, naming the backend to
///   clients).
#[derive(Debug)]
pub struct Procedure {
    name: String,
    /// Where the `.` of the name is.
    dot: usize,
    constraints: Vec<Constraint>,
    remote: Option<Remote>,
}

/// The request a procedure call makes. The server sends it (`body` as JSON) and passes the
/// response to [`Procedure::read_response`].
#[derive(Clone, PartialEq)]
pub struct RemoteRequest {
    /// The HTTP method, upper case.
    pub method: String,
    /// The URL, placeholders bound and percent-encoded.
    pub url: String,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The JSON body, if the procedure has one.
    pub body: Option<Value>,
    /// How long the whole call may take; past it the call fails with
    /// [`ProcedureError::Timeout`].
    pub timeout: Duration,
}

/// Header values and the body may hold credentials (`$scope.params.token`): left out.
impl fmt::Debug for RemoteRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(|_| ".."))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One follow-up update from a procedure's response (`{query?, update, options?}`), for the
/// server to apply to the scope after the changeset.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcedureUpdate {
    /// `null` (the root object) or an object (`{"$uuid", "$cls"}` in the reference).
    pub query: Value,
    /// The update operators, e.g. `{"$set": {"attributes.topic": "…"}}`.
    pub update: Value,
}

/// Why a procedure definition is invalid or a call is refused. The `Display` form of a
/// call's error is the reason the server puts after `Could not apply SyncMessage: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcedureError {
    /// The definition is invalid: `procedure 'M.p', <where>: <what>`.
    #[error("{0}")]
    Config(String),
    /// A fragment matches none of the constraints (the reference's message).
    #[error("Changes do not match the procedure constraints")]
    ConstraintsNotMatched,
    /// An expression of the remote call has no value, or one that cannot go where it is
    /// used (the reference's messages where it had one, ending in `; expr: '<expr>'`).
    #[error("{0}")]
    Binding(String),
    /// The remote answered with a status not in `success_status_codes` (the reference's
    /// message).
    #[error("Expected response {expected} status code, received {received} status code")]
    Status {
        /// The success codes, comma-separated.
        expected: String,
        /// The status received.
        received: u16,
    },
    /// The response's updates are malformed.
    #[error("Invalid updates: {0}")]
    InvalidUpdates(String),
    /// The call took longer than its timeout (for the server to report; `request`'s
    /// message, which the reference passed on).
    #[error("ETIMEDOUT")]
    Timeout,
    /// The call failed without a response (for the server to report; the details go to
    /// the log, not to clients).
    #[error("Remote procedure call failed")]
    RemoteFailed,
}

impl Procedure {
    /// Validates a definition against the schema: the name, every constraint (models,
    /// properties, requirements), the URL and its params, every expression (syntax, and the
    /// models, properties and case tables it names), headers, method, timeout and codes.
    pub fn new(def: ProcedureDef, schema: &Schema) -> Result<Procedure, ProcedureError> {
        let name = def.name;
        let err = |at: &str, m: &str| ProcedureError::Config(format!("procedure '{name}', {at}: {m}"));
        let dot = match name.split_once('.') {
            Some((model, proc)) if !model.is_empty() && !proc.is_empty() && !proc.contains('.') => {
                model.len()
            }
            _ => {
                return Err(ProcedureError::Config(format!(
                    "procedure '{name}': the name must be \"Model.procedureName\""
                )));
            }
        };
        if !schema.has_model(&name[..dot]) {
            return Err(ProcedureError::Config(format!(
                "procedure '{name}': no model '{}' in the schema",
                &name[..dot]
            )));
        }
        let constraints = def
            .constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Constraint::new(c, schema).map_err(|(at, m)| err(&format!("constraints[{i}].{at}"), &m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let remote = match &def.remote {
            Some(r) => Some(Remote::new(r, schema).map_err(|(at, m)| err(&at, &m))?),
            None => None,
        };
        Ok(Procedure { name, dot, constraints, remote })
    }

    /// `"Model.procedureName"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model the procedure is declared on.
    pub fn model(&self) -> &str {
        &self.name[..self.dot]
    }

    /// True if a call makes a remote request ([`bind`](Self::bind) returns one).
    pub fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Checks a changeset against the constraints: every fragment must match one, judged
    /// on the scope as it is before the changeset. An empty changeset passes, as in the
    /// reference.
    pub fn check_constraints(
        &self,
        state: &ScopeState,
        fragments: &[SyncFragment],
    ) -> Result<(), ProcedureError> {
        if fragments.iter().all(|f| self.constraints.iter().any(|c| c.matches(state, f))) {
            Ok(())
        } else {
            Err(ProcedureError::ConstraintsNotMatched)
        }
    }

    /// Binds the remote call: evaluates every expression against the fragments, the scope's
    /// name and params and its state (before the changeset) and returns the request to
    /// make, or `None` for a procedure without a remote call.
    pub fn bind(
        &self,
        state: &ScopeState,
        scope_name: &str,
        scope_params: &Map<String, Value>,
        fragments: &[SyncFragment],
    ) -> Result<Option<RemoteRequest>, ProcedureError> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let env = Env::new(state, scope_name, scope_params, fragments, remote.cases());
        remote.bind(&env).map(Some).map_err(ProcedureError::Binding)
    }

    /// Reads the remote's response: a status outside `success_status_codes` is an error;
    /// otherwise the updates at `updates_response_key` of a JSON object body (none if the
    /// body is not JSON, not an object, or has no such key). Without a remote call: none.
    pub fn read_response(&self, status: u16, body: &[u8]) -> Result<Vec<ProcedureUpdate>, ProcedureError> {
        match &self.remote {
            Some(r) => r.read_response(status, body),
            None => Ok(Vec::new()),
        }
    }
}
