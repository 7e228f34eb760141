//! The remote HTTP call of a procedure (`lib/procedures/remote_http_sync_procedure.js`):
//! its validated form, binding it to a request, reading the response.

use std::time::Duration;

use serde_json::{Map, Value};
use tether_proto::jetstream::FragmentKind;

use super::eval::{Cases, Env, js_number, prop_of};
use super::expr::{self, Expr, Field, Index};
use super::{ProcedureError, ProcedureUpdate, RemoteDef, RemoteRequest};
use crate::sync::schema::Schema;

/// The methods the reference accepts (`CONST.HTTP_VERBS`).
const METHODS: [&str; 7] = ["GET", "DELETE", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];

/// The reference's defaults.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_SUCCESS: [u16; 1] = [200];
const DEFAULT_UPDATES_KEY: &str = "_updates";

/// A value of the configuration in which strings starting with `$` are expressions.
#[derive(Debug)]
pub(crate) enum Template {
    /// Sent as is.
    Lit(Value),
    /// Evaluated per call.
    Expr(Expr),
    /// An array of templates.
    Arr(Vec<Template>),
    /// An object of templates, in order.
    Obj(Vec<(String, Template)>),
}

/// A piece of the URL: text, or the value of a param (its index in `params`).
#[derive(Debug)]
enum UrlPart {
    Lit(String),
    Param(usize),
}

/// A validated remote call.
#[derive(Debug)]
pub(crate) struct Remote {
    method: String,
    url: Vec<UrlPart>,
    params: Vec<(String, Template)>,
    headers: Vec<(String, Template)>,
    body: Option<Template>,
    timeout: Duration,
    success: Vec<u16>,
    updates_key: String,
    cases: Vec<(String, Vec<(String, Value)>)>,
}

/// A configuration error: (where, what), where relative to the procedure.
type ConfigError = (String, String);

impl Remote {
    /// Validates a definition: every expression parsed and checked against the schema and
    /// the case tables, URL placeholders matched with params.
    pub(crate) fn new(def: &RemoteDef, schema: &Schema) -> Result<Self, ConfigError> {
        let err = |at: &str, m: String| Err((format!("remote.{at}"), m));

        let method = def.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return err("method", format!("'{method}' is not one of {}", METHODS.join(", ")));
        }

        let mut cases = Vec::with_capacity(def.cases.0.len());
        for (name, entries) in &def.cases.0 {
            if entries.0.is_empty() {
                return err(&format!("cases.{name}"), "has no entries".to_owned());
            }
            // Case values are literals: a string starting with '$' is sent as written.
            cases.push((name.clone(), entries.0.clone()));
        }

        let check = |at: &str, v: &Value| template(v, &format!("remote.{at}"), schema, &cases);

        let mut params = Vec::with_capacity(def.params.0.len());
        for (k, v) in &def.params.0 {
            let at = format!("params.{k}");
            let t = check(&at, v)?;
            if !matches!(
                &t,
                Template::Expr(_) | Template::Lit(Value::String(_) | Value::Number(_) | Value::Bool(_))
            ) {
                return err(
                    &at,
                    "a URL parameter must be a string, number, boolean or expression".to_owned(),
                );
            }
            params.push((k.clone(), t));
        }
        let url = parse_url(&def.url, &params).map_err(|m| ("remote.url".to_owned(), m))?;
        if let Some((k, _)) = params
            .iter()
            .enumerate()
            .find(|(i, _)| !url.iter().any(|p| matches!(p, UrlPart::Param(j) if j == i)))
            .map(|(_, p)| p)
        {
            return err(&format!("params.{k}"), format!("the url has no placeholder ':{k}'"));
        }

        let mut headers: Vec<(String, Template)> = Vec::with_capacity(def.headers.0.len());
        for (name, v) in &def.headers.0 {
            let at = format!("headers.{name}");
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return err(&at, format!("'{name}' is not a valid header name"));
            }
            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return err(&at, format!("header '{name}' is set twice"));
            }
            let t = check(&at, v)?;
            match &t {
                Template::Lit(Value::String(s)) if !is_header_value(s) => {
                    return err(&at, "control characters are not allowed in a header value".to_owned());
                }
                Template::Expr(_) | Template::Lit(Value::String(_) | Value::Number(_) | Value::Bool(_)) => {}
                _ => {
                    return err(
                        &at,
                        "a header value must be a string, number, boolean or expression".to_owned(),
                    );
                }
            }
            headers.push((name.clone(), t));
        }

        let body = match &def.body {
            None => None,
            Some(v @ (Value::Object(_) | Value::Array(_))) => Some(check("body", v)?),
            Some(_) => return err("body", "must be a table or an array".to_owned()),
        };

        let timeout = match def.timeout_ms {
            None => DEFAULT_TIMEOUT_MS,
            Some(0) => return err("timeout_ms", "must be at least 1".to_owned()),
            Some(ms) => ms,
        };
        let success = def.success_status_codes.clone().unwrap_or_else(|| DEFAULT_SUCCESS.to_vec());
        if success.is_empty() {
            return err("success_status_codes", "is empty: every call would fail".to_owned());
        }
        if let Some(c) = success.iter().find(|c| !(100..=599).contains(*c)) {
            return err("success_status_codes", format!("{c} is not an HTTP status code"));
        }
        let updates_key = def.updates_response_key.clone().unwrap_or_else(|| DEFAULT_UPDATES_KEY.to_owned());
        if updates_key.is_empty() {
            return err("updates_response_key", "is empty".to_owned());
        }

        Ok(Self {
            method,
            url,
            params,
            headers,
            body,
            timeout: Duration::from_millis(timeout),
            success,
            updates_key,
            cases,
        })
    }

    /// The case tables.
    pub(crate) fn cases(&self) -> &Cases {
        &self.cases
    }

    /// The request for one call. An error is the reason the call cannot be made.
    pub(crate) fn bind(&self, env: &Env<'_>) -> Result<RemoteRequest, String> {
        let mut params = Vec::with_capacity(self.params.len());
        for (name, t) in &self.params {
            let v = fill(t, env)?;
            let s = match &v {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => js_number(n),
                Some(Value::Bool(b)) => b.to_string(),
                other => {
                    // The reference wrote "undefined", "null" or "[object Object]" into the URL.
                    let what = match other {
                        None => "undefined",
                        Some(Value::Null) => "null",
                        _ => "not a string, number or boolean",
                    };
                    return Err(with_expr(format!("URL parameter '{name}' is {what}"), t));
                }
            };
            params.push(s);
        }
        let mut url = String::new();
        for part in &self.url {
            match part {
                UrlPart::Lit(s) => url.push_str(s),
                UrlPart::Param(i) => percent_encode(&params[*i], &mut url),
            }
        }

        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        // The reference's default header, and the one `request` adds for `json: true`.
        for (n, v) in [("Content-Type", "application/json"), ("Accept", "application/json")] {
            if !self.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)) {
                headers.push((n.to_owned(), v.to_owned()));
            }
        }
        for (name, t) in &self.headers {
            let value = match fill(t, env)? {
                // No value, no header (the reference passed `null` on to Node, which throws).
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s,
                Some(Value::Number(n)) => js_number(&n),
                Some(Value::Bool(b)) => b.to_string(),
                Some(_) => {
                    return Err(with_expr(
                        format!("Header '{name}' value is not a string, number or boolean"),
                        t,
                    ));
                }
            };
            if !is_header_value(&value) {
                return Err(with_expr(format!("Header '{name}' value has control characters"), t));
            }
            headers.push((name.clone(), value));
        }

        let body = match &self.body {
            Some(t) => fill(t, env)?,
            None => None,
        };
        Ok(RemoteRequest { method: self.method.clone(), url, headers, body, timeout: self.timeout })
    }

    /// Reads the response: the status must be a success code; the updates are the array at
    /// the updates key of a JSON object body.
    pub(crate) fn read_response(
        &self,
        status: u16,
        body: &[u8],
    ) -> Result<Vec<ProcedureUpdate>, ProcedureError> {
        if !self.success.contains(&status) {
            let expected = self.success.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
            return Err(ProcedureError::Status { expected, received: status });
        }
        // `request` with `json: true` leaves a body that is not JSON as a string, which has
        // no updates key: no updates, not an error.
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(body) else {
            return Ok(Vec::new());
        };
        let updates = match body.remove(&self.updates_key) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            // `SyncProcedureResult` threw "Invalid updates" (from a callback: the process died).
            Some(_) => {
                return Err(ProcedureError::InvalidUpdates(format!(
                    "'{}' is not an array",
                    self.updates_key
                )));
            }
        };
        updates
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let bad = |m: &str| ProcedureError::InvalidUpdates(format!("update {i} {m}"));
                let Value::Object(mut u) = u else {
                    return Err(bad("is not an object"));
                };
                // `options` is accepted and ignored: the reference merged it into each
                // operation's options, which read none of it.
                let query = match u.remove("query") {
                    None | Some(Value::Null) => Value::Null,
                    Some(q @ Value::Object(_)) => q,
                    Some(_) => return Err(bad("has a query that is not an object")),
                };
                match u.remove("update") {
                    Some(update @ Value::Object(_)) => Ok(ProcedureUpdate { query, update }),
                    _ => Err(bad("has no update object")),
                }
            })
            .collect()
    }
}

/// `reason; expr: '<e>'` for an expression template, `reason` for a literal.
fn with_expr(reason: String, t: &Template) -> String {
    match t {
        Template::Expr(e) => format!("{reason}; expr: '{e}'"),
        _ => reason,
    }
}

/// Evaluates a template. `None` (`undefined`) leaves an object key out and is `null` in
/// an array, as `JSON.stringify` writes them.
fn fill(t: &Template, env: &Env<'_>) -> Result<Option<Value>, String> {
    Ok(match t {
        Template::Lit(v) => Some(v.clone()),
        Template::Expr(e) => env.eval(e)?,
        Template::Arr(ts) => {
            let mut out = Vec::with_capacity(ts.len());
            for t in ts {
                out.push(fill(t, env)?.unwrap_or(Value::Null));
            }
            Some(Value::Array(out))
        }
        Template::Obj(kv) => {
            let mut out = Map::new();
            for (k, t) in kv {
                if let Some(v) = fill(t, env)? {
                    out.insert(k.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
    })
}

/// Reads a configured value: strings starting with `$` are expressions (`$$` starts a
/// string with a literal `$`), arrays and tables are walked, anything else is a literal.
/// `at` names the value in errors (`remote.body.tags[0]`).
pub(crate) fn template(v: &Value, at: &str, schema: &Schema, cases: &Cases) -> Result<Template, ConfigError> {
    Ok(match v {
        Value::String(s) if s.starts_with("$$") => Template::Lit(Value::String(s[1..].to_owned())),
        Value::String(s) if s.starts_with('$') => {
            let e = expr::parse(s).map_err(|e| (at.to_owned(), e.to_string()))?;
            check(&e, schema, cases).map_err(|m| (at.to_owned(), format!("{m}; expr: '{s}'")))?;
            Template::Expr(e)
        }
        Value::Array(a) => Template::Arr(
            a.iter()
                .enumerate()
                .map(|(i, v)| template(v, &format!("{at}[{i}]"), schema, cases))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Template::Obj(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), template(v, &format!("{at}.{k}"), schema, cases)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
        v => Template::Lit(v.clone()),
    })
}

/// What can be checked before any call: `$incoming` names a model and one of its
/// properties (a collection if indexed; `inserted`/`removed` compare with the object's
/// current value, so only on changes), `$case` names a case table. Paths from objects
/// (`$rootModel`, `$model.find`) depend on the scope and are checked when evaluated.
pub(crate) fn check(e: &Expr, schema: &Schema, cases: &Cases) -> Result<(), String> {
    match e {
        Expr::Incoming { cls, kind, field } => {
            if !schema.has_model(cls) {
                return Err(format!("no model '{cls}' in the schema"));
            }
            let Field::Prop { name, index } = field else {
                return Ok(());
            };
            let Some(p) = prop_of(schema, cls, name) else {
                return Err(format!("model '{cls}' has no property '{name}'"));
            };
            match index {
                Some(_) if !p.collection => Err(format!("'{name}' of '{cls}' is not a collection: it has no index")),
                Some(Index::Inserted(_) | Index::Removed(_)) if *kind == FragmentKind::Add => Err(
                    "inserted[n] and removed[n] compare with the object's current value: $incoming.<Model>.change only"
                        .to_owned(),
                ),
                _ => Ok(()),
            }
        }
        Expr::ScopeName | Expr::ScopeParam(_) | Expr::RootModel(_) => Ok(()),
        Expr::Model { find, .. } => check(find, schema, cases),
        Expr::Case { name, of } => {
            if !cases.iter().any(|(n, _)| n == name) {
                return Err(format!("no case '{name}' in remote.cases"));
            }
            check(of, schema, cases)
        }
    }
}

/// Splits the URL into text and placeholders. A placeholder is `:name` (`name` is
/// `[A-Za-z][A-Za-z0-9_-]*`) at the start of a path segment or of a query value, after the
/// authority, so that ports and schemes are never taken for one (the reference replaced
/// `:key` anywhere in the URL, ports included).
fn parse_url(url: &str, params: &[(String, Template)]) -> Result<Vec<UrlPart>, String> {
    let lower = url.to_ascii_lowercase();
    let Some(scheme_len) = ["http://", "https://"].iter().find(|s| lower.starts_with(*s)).map(|s| s.len())
    else {
        return Err(format!("'{url}' is not an http:// or https:// URL"));
    };
    if let Some(c) = url.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{:?} is not allowed in a URL (percent-encode it)", c.to_string()));
    }
    let rest = &url[scheme_len..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_len == 0 {
        return Err(format!("'{url}' has no host"));
    }
    let path_start = scheme_len + authority_len;
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    let mut lit = url[..path_start].to_owned();
    let bytes = url.as_bytes();
    let mut i = path_start;
    while i < bytes.len() {
        let starts_placeholder = bytes[i] == b':'
            && matches!(bytes[i - 1], b'/' | b'=')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic);
        if !starts_placeholder {
            // On to the next ':' (by characters: the URL may hold non-ASCII text).
            let next =
                url[i..].char_indices().skip(1).find(|&(_, c)| c == ':').map_or(url.len(), |(j, _)| i + j);
            lit.push_str(&url[i..next]);
            i = next;
            continue;
        }
        let end = bytes[i + 1..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
            .map_or(bytes.len(), |j| i + 1 + j);
        let name = &url[i + 1..end];
        match params.iter().position(|(k, _)| k == name) {
            Some(p) => {
                parts.push(UrlPart::Lit(std::mem::take(&mut lit)));
                parts.push(UrlPart::Param(p));
            }
            None => missing.push(format!("':{name}'")),
        }
        i = end;
    }
    if !missing.is_empty() {
        return Err(format!("no value in remote.params for the placeholders {}", missing.join(", ")));
    }
    parts.push(UrlPart::Lit(lit));
    parts.retain(|p| !matches!(p, UrlPart::Lit(s) if s.is_empty()));
    Ok(parts)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that a value stays
/// inside its path segment or query value whatever it holds (`/`, `?`, `&`, `#`, `%`).
fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// RFC 9110 `tchar`: the characters of a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value has no control characters but tab (CR and LF would split the request:
/// values may come from clients).
fn is_header_value(s: &str) -> bool {
    !s.chars().any(|c| c.is_ascii_control() && c != '\t')
}
