//! The expression language of procedures: tokens, the parser, the syntax tree and its
//! canonical text. Evaluation is in `eval.rs`; the grammar is documented on
//! [`Procedure`](super::Procedure).
//!
//! The reference splits expression strings on `.` and matches pieces with regular
//! expressions at every call, so a malformed expression is only noticed when a client calls
//! the procedure. Here expressions are parsed once, at configuration load, with the position
//! of the first problem.

use std::fmt;

use tether_proto::jetstream::FragmentKind;

/// Expressions nested deeper than this (`$case.a($case.a(…))`) are refused, so that
/// parsing and evaluation recurse a bounded number of times whatever the input.
const MAX_DEPTH: usize = 16;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `$incoming.Cls.add|change.field`: a value of the changeset's fragment of that model
    /// and type.
    Incoming {
        /// The fragment's `clsName`.
        cls: String,
        /// The fragment's type.
        kind: FragmentKind,
        /// What of it.
        field: Field,
    },
    /// `$scope.name`.
    ScopeName,
    /// `$scope.params.a.b`: a scope param (the keys walk nested objects).
    ScopeParam(Vec<String>),
    /// `$rootModel.path.prop`: a value reached from the scope's root object.
    RootModel(Path),
    /// `$model.find(<expr>).path.prop`: a value reached from the object whose UUID the
    /// inner expression yields.
    Model {
        /// The expression giving the UUID.
        find: Box<Expr>,
        /// The path from that object.
        path: Path,
    },
    /// `$case.name(<expr>)`: the entry of case table `name` for the inner value.
    Case {
        /// The case table's name (a key of `remote.cases`).
        name: String,
        /// The expression giving the key.
        of: Box<Expr>,
    },
}

/// The field of an `$incoming` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    /// `uuid`: the fragment's UUID.
    Uuid,
    /// A property, maybe indexed.
    Prop {
        /// The property name.
        name: String,
        /// `[…]`.
        index: Option<Index>,
    },
}

/// An index into the array value of an incoming property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Index {
    /// `[n]`: element `n`, from the end when negative (`-1` is the last).
    At(i64),
    /// `[inserted[n]]`: element `n` of the elements of the new array that the object's
    /// current array does not hold.
    Inserted(i64),
    /// `[removed[n]]`: element `n` of the elements of the object's current array that the
    /// new array does not hold.
    Removed(i64),
}

/// A key path from an object: references to follow, then what to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    /// The reference properties followed, in order (a collection needs an index).
    pub(crate) steps: Vec<Step>,
    /// The last segment.
    pub(crate) last: Target,
}

/// One reference followed in a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// The property name.
    pub(crate) name: String,
    /// `[n]` (or `.n`): the element of a collection.
    pub(crate) index: Option<i64>,
}

/// The last segment of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `uuid`: the object's UUID.
    Uuid,
    /// A value property (maybe an element of a value collection).
    Prop(Step),
}

/// Why an expression does not parse: a message and the 1-based character position it
/// refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// What is wrong, e.g. `unexpected ')'`.
    pub(crate) message: String,
    /// 1-based character position in the expression (one past the end for "end").
    pub(crate) pos: usize,
    /// What was expected there, if one thing can be named.
    pub(crate) expected: Option<&'static str>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.message, self.pos)?;
        if let Some(e) = self.expected {
            write!(f, ", expected {e}")?;
        }
        Ok(())
    }
}

/// One token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// `$name`: the name without the `$`.
    Var(&'a str),
    /// A run of `[A-Za-z0-9_-]`: a name, an integer or a param key, told apart by the parser.
    Word(&'a str),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    End,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Var(v) => write!(f, "'${v}'"),
            Tok::Word(w) => write!(f, "'{w}'"),
            Tok::Dot => f.write_str("'.'"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBracket => f.write_str("'['"),
            Tok::RBracket => f.write_str("']'"),
            Tok::End => f.write_str("end"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A name (model, property, case): a word starting with a letter or `_`.
fn is_name(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

/// Splits `src` into tokens with their 1-based character positions; the last is `End`.
fn lex(src: &str) -> Result<Vec<(Tok<'_>, usize)>, ParseError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    // The byte offset where the word starting at character `k` ends, and the character
    // after it.
    let word_end = |mut k: usize| {
        while k < chars.len() && is_word_char(chars[k].1) {
            k += 1;
        }
        (chars.get(k).map_or(src.len(), |&(b, _)| b), k)
    };
    let mut out = Vec::new();
    let mut k = 0;
    while let Some(&(b, c)) = chars.get(k) {
        let at = k + 1;
        let (tok, next) = match c {
            '.' => (Tok::Dot, k + 1),
            '(' => (Tok::LParen, k + 1),
            ')' => (Tok::RParen, k + 1),
            '[' => (Tok::LBracket, k + 1),
            ']' => (Tok::RBracket, k + 1),
            '$' => {
                let (end, next) = word_end(k + 1);
                let name = &src[b + 1..end];
                if name.is_empty() {
                    return Err(ParseError {
                        message: "'$' without a name".to_owned(),
                        pos: at,
                        expected: Some("$incoming, $scope, $rootModel, $model or $case"),
                    });
                }
                (Tok::Var(name), next)
            }
            c if is_word_char(c) => {
                let (end, next) = word_end(k);
                (Tok::Word(&src[b..end]), next)
            }
            c => {
                // Quoted as Rust does (`" "`, `"\n"`), so that blanks and control characters
                // are visible in the message.
                let shown = if c.is_control() || c.is_whitespace() {
                    format!("{:?}", c.to_string())
                } else {
                    format!("'{c}'")
                };
                return Err(ParseError { message: format!("unexpected {shown}"), pos: at, expected: None });
            }
        };
        out.push((tok, at));
        k = next;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

/// Parses an expression (the whole string: nothing may follow it).
pub(crate) fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = lex(src)?;
    let mut p = Parser { tokens, at: 0 };
    let e = p.expr(0)?;
    p.expect(Tok::End, "end")?;
    Ok(e)
}

struct Parser<'a> {
    tokens: Vec<(Tok<'a>, usize)>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> (Tok<'a>, usize) {
        // The list ends with `End`, which is never consumed past.
        self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn peek2(&self) -> Tok<'a> {
        self.tokens[(self.at + 1).min(self.tokens.len() - 1)].0
    }

    fn bump(&mut self) -> (Tok<'a>, usize) {
        let t = self.peek();
        if t.0 != Tok::End {
            self.at += 1;
        }
        t
    }

    fn unexpected(t: (Tok<'a>, usize), expected: &'static str) -> ParseError {
        ParseError { message: format!("unexpected {}", t.0), pos: t.1, expected: Some(expected) }
    }

    fn expect(&mut self, want: Tok<'static>, what: &'static str) -> Result<(), ParseError> {
        let t = self.bump();
        if t.0 == want { Ok(()) } else { Err(Self::unexpected(t, what)) }
    }

    /// A word that is a name.
    fn name(&mut self, what: &'static str) -> Result<(String, usize), ParseError> {
        match self.bump() {
            (Tok::Word(w), at) if is_name(w) => Ok((w.to_owned(), at)),
            t => Err(Self::unexpected(t, what)),
        }
    }

    /// A word that is an integer (`-?[0-9]+`, within an `i64`).
    fn int(&mut self) -> Result<i64, ParseError> {
        match self.bump() {
            (Tok::Word(w), at) if is_int(w) => w.parse::<i64>().map_err(|_| ParseError {
                message: format!("index '{w}' out of range"),
                pos: at,
                expected: None,
            }),
            t => Err(Self::unexpected(t, "an integer")),
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let t = self.bump();
        if depth >= MAX_DEPTH {
            return Err(ParseError {
                message: format!("expression nested more than {MAX_DEPTH} deep"),
                pos: t.1,
                expected: None,
            });
        }
        match t.0 {
            Tok::Var("incoming") => self.incoming(),
            Tok::Var("scope") => self.scope(),
            Tok::Var("rootModel") => Ok(Expr::RootModel(self.path()?)),
            Tok::Var("model") => {
                self.expect(Tok::Dot, "'.'")?;
                match self.bump() {
                    (Tok::Word("find"), _) => {}
                    t => return Err(Self::unexpected(t, "'find'")),
                }
                self.expect(Tok::LParen, "'('")?;
                let find = self.expr(depth + 1)?;
                self.expect(Tok::RParen, "')'")?;
                let path = self.path()?;
                Ok(Expr::Model { find: Box::new(find), path })
            }
            Tok::Var("case") => {
                self.expect(Tok::Dot, "'.'")?;
                let (name, _) = self.name("a case name")?;
                self.expect(Tok::LParen, "'('")?;
                let of = self.expr(depth + 1)?;
                self.expect(Tok::RParen, "')'")?;
                Ok(Expr::Case { name, of: Box::new(of) })
            }
            Tok::Var(v) => Err(ParseError {
                message: format!("unknown expression '${v}'"),
                pos: t.1,
                expected: Some("$incoming, $scope, $rootModel, $model or $case"),
            }),
            _ => Err(Self::unexpected(t, "an expression ($incoming, $scope, $rootModel, $model or $case)")),
        }
    }

    /// After `$incoming`: `.Cls.add|change.field`.
    fn incoming(&mut self) -> Result<Expr, ParseError> {
        self.expect(Tok::Dot, "'.'")?;
        let (cls, _) = self.name("a model name")?;
        self.expect(Tok::Dot, "'.'")?;
        let kind = match self.bump() {
            (Tok::Word("add"), _) => FragmentKind::Add,
            (Tok::Word("change"), _) => FragmentKind::Change,
            t => return Err(Self::unexpected(t, "add or change")),
        };
        self.expect(Tok::Dot, "'.'")?;
        let (name, _) = self.name("a property name or uuid")?;
        let index = if self.peek().0 == Tok::LBracket {
            let bracket = self.peek();
            if name == "uuid" {
                return Err(Self::unexpected(bracket, "end ('uuid' cannot be indexed)"));
            }
            self.bump();
            let index = match self.peek() {
                (Tok::Word(w @ ("inserted" | "removed")), _) => {
                    self.bump();
                    self.expect(Tok::LBracket, "'['")?;
                    let n = self.int()?;
                    self.expect(Tok::RBracket, "']'")?;
                    if w == "inserted" { Index::Inserted(n) } else { Index::Removed(n) }
                }
                (Tok::Word(w), _) if is_int(w) => Index::At(self.int()?),
                t => return Err(Self::unexpected(t, "an integer, inserted[n] or removed[n]")),
            };
            self.expect(Tok::RBracket, "']'")?;
            Some(index)
        } else {
            None
        };
        let field = if name == "uuid" { Field::Uuid } else { Field::Prop { name, index } };
        Ok(Expr::Incoming { cls, kind, field })
    }

    /// After `$scope`: `.name` or `.params.key(.key)*`.
    fn scope(&mut self) -> Result<Expr, ParseError> {
        self.expect(Tok::Dot, "'.'")?;
        match self.bump() {
            (Tok::Word("name"), _) => Ok(Expr::ScopeName),
            (Tok::Word("params"), _) => {
                let mut keys = Vec::new();
                loop {
                    self.expect(Tok::Dot, if keys.is_empty() { "'.'" } else { "'.' or end" })?;
                    match self.bump() {
                        (Tok::Word(w), _) => keys.push(w.to_owned()),
                        t => return Err(Self::unexpected(t, "a param name")),
                    }
                    if self.peek().0 != Tok::Dot {
                        return Ok(Expr::ScopeParam(keys));
                    }
                }
            }
            t => Err(Self::unexpected(t, "name or params")),
        }
    }

    /// `(.name([n]|.n)?)+`: steps, then the target.
    fn path(&mut self) -> Result<Path, ParseError> {
        let mut steps = Vec::new();
        loop {
            self.expect(Tok::Dot, "'.'")?;
            let (name, _) = self.name("a property name or uuid")?;
            let index_at = self.peek();
            let index = match (index_at.0, self.peek2()) {
                (Tok::LBracket, _) => {
                    self.bump();
                    let n = self.int()?;
                    self.expect(Tok::RBracket, "']'")?;
                    Some(n)
                }
                // The reference's key paths also write an index as a segment: `messages.0.author`.
                (Tok::Dot, Tok::Word(w)) if is_int(w) => {
                    self.bump();
                    Some(self.int()?)
                }
                _ => None,
            };
            let step = Step { name, index };
            if self.peek().0 == Tok::Dot {
                steps.push(step);
                continue;
            }
            let last = if step.name == "uuid" {
                if step.index.is_some() {
                    return Err(ParseError {
                        message: "unexpected index".to_owned(),
                        pos: index_at.1,
                        expected: Some("end ('uuid' cannot be indexed)"),
                    });
                }
                Target::Uuid
            } else {
                Target::Prop(step)
            };
            return Ok(Path { steps, last });
        }
    }
}

/// `-?[0-9]+`.
fn is_int(w: &str) -> bool {
    let digits = w.strip_prefix('-').unwrap_or(w);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The canonical text, which [`parse`] reads back to the same tree: indices in brackets,
/// no redundant characters.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Incoming { cls, kind, field } => {
                write!(f, "$incoming.{cls}.{}.", kind.as_str())?;
                match field {
                    Field::Uuid => f.write_str("uuid"),
                    Field::Prop { name, index: None } => f.write_str(name),
                    Field::Prop { name, index: Some(Index::At(n)) } => write!(f, "{name}[{n}]"),
                    Field::Prop { name, index: Some(Index::Inserted(n)) } => {
                        write!(f, "{name}[inserted[{n}]]")
                    }
                    Field::Prop { name, index: Some(Index::Removed(n)) } => write!(f, "{name}[removed[{n}]]"),
                }
            }
            Expr::ScopeName => f.write_str("$scope.name"),
            Expr::ScopeParam(keys) => {
                f.write_str("$scope.params")?;
                keys.iter().try_for_each(|k| write!(f, ".{k}"))
            }
            Expr::RootModel(path) => write!(f, "$rootModel{path}"),
            Expr::Model { find, path } => write!(f, "$model.find({find}){path}"),
            Expr::Case { name, of } => write!(f, "$case.{name}({of})"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match self.index {
            Some(n) => write!(f, "[{n}]"),
            None => Ok(()),
        }
    }
}

/// `.step.step.target`, with the leading dot.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            write!(f, ".{s}")?;
        }
        match &self.last {
            Target::Uuid => f.write_str(".uuid"),
            Target::Prop(s) => write!(f, ".{s}"),
        }
    }
}
