//! The condition language of `[[rule]]` `when` / `clear_when` (SPEC §2): parsed once at load into
//! an AST whose nodes keep byte offsets into the expression text, type-checked against the
//! configured points, then evaluated on every change.
//!
//! Grammar (keywords lower case, whitespace free):
//! ```text
//! expr       := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" expr ")" | comparison
//! comparison := operand OP literal            OP: < <= > >= == !=
//! operand    := POINT | "mode" | "quality" "(" POINT ")"
//! literal    := NUMBER | "true" | "false" | "string" | 'string'
//! ```
//! `POINT` is a full point name (`DEVICE/POINT`, `bus-a/12/lamp_failure`); `mode` is
//! `"connected"` or `"autonomous"`; `quality(POINT)` is the quality of the point's latest reading,
//! `"good"`, `"bad"` or `"uncertain"` (a point never read is `"bad"`), compared with `==`/`!=`
//! only. Numbers compare as IEEE doubles (`==` is exact); booleans and strings allow only `==`
//! and `!=`.
//!
//! Truth is three-valued: a comparison on a point whose latest reading is not `good` (or never
//! came, or has the wrong type) is *unknown*. `and`/`or`/`not` follow Kleene's logic (false and
//! unknown = false, true or unknown = true, not unknown = unknown), and an unknown result does not
//! hold. Where SPEC says "a point whose quality is not good makes its comparison false", this is
//! the same except under `not`: `not (t > 5)` with `t` bad stays unknown instead of becoming
//! true, so missing data never makes a rule enter, whatever the negations. `quality(P)` and `mode`
//! are never unknown: they are how a rule talks about missing data on purpose.
//!
//! Bounds (an expression is configuration, but a desired config arrives over MQTT): at most
//! [`MAX_LEN`] bytes, [`MAX_DEPTH`] nested `not`/parentheses, [`MAX_TERMS`] comparisons.

use std::ops::Range;

use super::mode::Mode;
use crate::record::Quality;

/// Longest expression, in bytes.
pub const MAX_LEN: usize = 1024;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 16;
/// Most comparisons in one expression.
pub const MAX_TERMS: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }

    fn num(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    fn eq<T: PartialEq>(self, a: T, b: T) -> bool {
        match self {
            Op::Ne => a != b,
            _ => a == b,
        }
    }
}

/// A literal right-hand side.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A finite number.
    Num(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A quoted string (for `mode` and `quality(…)`).
    Str(String),
}

/// The left-hand side of a comparison; `P` is how a point is named (its text at load, an index
/// in the engine).
#[derive(Debug, Clone, PartialEq)]
pub enum Operand<P> {
    /// A point's value.
    Point(P),
    /// The cabinet's mode.
    Mode,
    /// A point's quality.
    Quality(P),
}

/// One `operand OP literal`, with where each part is in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison<P> {
    /// Left side.
    pub operand: Operand<P>,
    /// Operator.
    pub op: Op,
    /// Right side.
    pub literal: Literal,
    /// Byte range of the operand (the point name inside `quality(…)`).
    pub operand_span: Range<usize>,
    /// Byte range of the operator.
    pub op_span: Range<usize>,
    /// Byte range of the literal.
    pub literal_span: Range<usize>,
}

/// An expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<P> {
    /// A comparison.
    Cmp(Comparison<P>),
    /// `not`.
    Not(Box<Node<P>>),
    /// `and` of two or more.
    And(Vec<Node<P>>),
    /// `or` of two or more.
    Or(Vec<Node<P>>),
}

/// A parsed expression and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    text: String,
    root: Node<String>,
}

/// A parse or type error at a byte range of the expression text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Where, in bytes of the expression text.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
}

/// The type of a point's value, for checking comparisons at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `true` / `false`.
    Bool,
    /// A number.
    Number,
}

/// A point's latest reading as the evaluator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The value, if there was one of a comparable type.
    pub value: Option<Scalar>,
    /// Its quality ([`Quality::Bad`] before the first reading).
    pub quality: Quality,
}

impl Sample {
    /// Before the first reading.
    pub const NONE: Sample = Sample {
        value: None,
        quality: Quality::Bad,
    };

    /// From a telemetry value (JSON bool or number; anything else has no comparable value).
    pub fn from_json(value: &serde_json::Value, quality: Quality) -> Sample {
        let value = match value {
            serde_json::Value::Bool(b) => Some(Scalar::Bool(*b)),
            serde_json::Value::Number(n) => n.as_f64().map(Scalar::Num),
            _ => None,
        };
        Sample { value, quality }
    }
}

/// A comparable value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

fn quality_name(q: Quality) -> &'static str {
    match q {
        Quality::Good => "good",
        Quality::Bad => "bad",
        Quality::Uncertain => "uncertain",
    }
}

const QUALITIES: [&str; 3] = ["good", "bad", "uncertain"];

impl Expr {
    /// Parses `text`; the error's span is a byte range of `text`.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        if text.len() > MAX_LEN {
            return Err(ExprError {
                span: MAX_LEN..text.len(),
                message: format!(
                    "the expression is {} bytes long; at most {MAX_LEN} are allowed",
                    text.len()
                ),
            });
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            terms: 0,
            end: text.len(),
        };
        let root = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(ExprError {
                span: t.span.clone(),
                message: format!(
                    "expected `and`, `or` or the end of the expression, found {}",
                    t.tok.describe()
                ),
            });
        }
        Ok(Expr {
            text: text.to_string(),
            root,
        })
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The tree, points named by their text.
    pub fn root(&self) -> &Node<String> {
        &self.root
    }

    /// Every point the expression reads (values or qualities), once each, in order of appearance.
    pub fn points(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        visit(&self.root, &mut |c| match &c.operand {
            Operand::Point(p) | Operand::Quality(p) => {
                if !out.contains(&p.as_str()) {
                    out.push(p);
                }
            }
            Operand::Mode => {}
        });
        out
    }

    /// Whether the expression reads `mode`.
    pub fn reads_mode(&self) -> bool {
        let mut yes = false;
        visit(&self.root, &mut |c| yes |= c.operand == Operand::Mode);
        yes
    }

    /// Checks every comparison against the points' types: `lookup` gives a point's type (`None`
    /// for an unknown point), `suggest` a close known name for the message. Every problem is
    /// returned, in text order.
    pub fn check(
        &self,
        lookup: impl Fn(&str) -> Option<ValueType>,
        suggest: impl Fn(&str) -> Option<String>,
    ) -> Vec<ExprError> {
        let mut errs = Vec::new();
        visit(&self.root, &mut |c| {
            check_cmp(c, &lookup, &suggest, &mut errs)
        });
        errs
    }

    /// The same tree with points renamed by `f` (e.g. to indices for fast evaluation).
    pub fn compile<Q>(&self, f: &mut impl FnMut(&str) -> Q) -> Node<Q> {
        map(&self.root, &mut |p: &String| f(p.as_str()))
    }
}

fn visit<'a, P>(n: &'a Node<P>, f: &mut impl FnMut(&'a Comparison<P>)) {
    match n {
        Node::Cmp(c) => f(c),
        Node::Not(x) => visit(x, f),
        Node::And(xs) | Node::Or(xs) => xs.iter().for_each(|x| visit(x, f)),
    }
}

fn map<P, Q>(n: &Node<P>, f: &mut impl FnMut(&P) -> Q) -> Node<Q> {
    match n {
        Node::Cmp(c) => Node::Cmp(Comparison {
            operand: match &c.operand {
                Operand::Point(p) => Operand::Point(f(p)),
                Operand::Quality(p) => Operand::Quality(f(p)),
                Operand::Mode => Operand::Mode,
            },
            op: c.op,
            literal: c.literal.clone(),
            operand_span: c.operand_span.clone(),
            op_span: c.op_span.clone(),
            literal_span: c.literal_span.clone(),
        }),
        Node::Not(x) => Node::Not(Box::new(map(x, f))),
        Node::And(xs) => Node::And(xs.iter().map(|x| map(x, f)).collect()),
        Node::Or(xs) => Node::Or(xs.iter().map(|x| map(x, f)).collect()),
    }
}

fn check_cmp(
    c: &Comparison<String>,
    lookup: &impl Fn(&str) -> Option<ValueType>,
    suggest: &impl Fn(&str) -> Option<String>,
    errs: &mut Vec<ExprError>,
) {
    let mut err = |span: &Range<usize>, message: String| {
        errs.push(ExprError {
            span: span.clone(),
            message,
        })
    };
    let only_eq = |what: &str| {
        format!(
            "{what} can only be compared with == or !=, not {}",
            c.op.as_str()
        )
    };
    match &c.operand {
        Operand::Mode => {
            if c.op.ordering() {
                err(&c.op_span, only_eq("mode"));
            }
            match &c.literal {
                Literal::Str(s) if Mode::parse(s).is_some() => {}
                other => err(
                    &c.literal_span,
                    format!(
                        "mode is \"connected\" or \"autonomous\", found {}",
                        literal_text(other)
                    ),
                ),
            }
        }
        Operand::Quality(p) => {
            if lookup(p).is_none() {
                err(&c.operand_span, unknown_point(p, suggest));
            }
            if c.op.ordering() {
                err(&c.op_span, only_eq("a quality"));
            }
            match &c.literal {
                Literal::Str(s) if QUALITIES.contains(&s.as_str()) => {}
                other => err(
                    &c.literal_span,
                    format!(
                        "a quality is \"good\", \"bad\" or \"uncertain\", found {}",
                        literal_text(other)
                    ),
                ),
            }
        }
        Operand::Point(p) => match lookup(p) {
            None => err(&c.operand_span, unknown_point(p, suggest)),
            Some(ValueType::Bool) => {
                if c.op.ordering() {
                    err(&c.op_span, only_eq(&format!("{p} (a boolean)")));
                }
                if !matches!(c.literal, Literal::Bool(_)) {
                    err(
                        &c.literal_span,
                        format!(
                            "{p} is a boolean: compare it with true or false, not {}",
                            literal_text(&c.literal)
                        ),
                    );
                }
            }
            Some(ValueType::Number) => {
                if !matches!(c.literal, Literal::Num(_)) {
                    err(
                        &c.literal_span,
                        format!(
                            "{p} is a number: compare it with a number, not {}",
                            literal_text(&c.literal)
                        ),
                    );
                }
            }
        },
    }
}

fn unknown_point(p: &str, suggest: &impl Fn(&str) -> Option<String>) -> String {
    let mut m = format!("unknown point {p:?}");
    if let Some(s) = suggest(p) {
        m.push_str(&format!(", did you mean \"{s}\"?"));
    }
    m
}

fn literal_text(l: &Literal) -> String {
    match l {
        Literal::Num(x) => format!("the number {x}"),
        Literal::Bool(b) => format!("{b}"),
        Literal::Str(s) => format!("\"{s}\""),
    }
}

/// Evaluates `n`: `sample` gives a point's latest reading, `mode` the cabinet's mode. `None` is
/// unknown (see the module docs).
pub fn eval<P>(n: &Node<P>, sample: &impl Fn(&P) -> Sample, mode: Mode) -> Option<bool> {
    match n {
        Node::Cmp(c) => compare(c, sample, mode),
        Node::Not(x) => eval(x, sample, mode).map(|b| !b),
        Node::And(xs) => {
            let mut unknown = false;
            for x in xs {
                match eval(x, sample, mode) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            (!unknown).then_some(true)
        }
        Node::Or(xs) => {
            let mut unknown = false;
            for x in xs {
                match eval(x, sample, mode) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            (!unknown).then_some(false)
        }
    }
}

fn compare<P>(c: &Comparison<P>, sample: &impl Fn(&P) -> Sample, mode: Mode) -> Option<bool> {
    match (&c.operand, &c.literal) {
        (Operand::Mode, Literal::Str(s)) => Some(c.op.eq(mode.as_str(), s.as_str())),
        (Operand::Quality(p), Literal::Str(s)) => {
            Some(c.op.eq(quality_name(sample(p).quality), s.as_str()))
        }
        (Operand::Point(p), lit) => {
            let s = sample(p);
            if s.quality != Quality::Good {
                return None;
            }
            match (s.value?, lit) {
                (Scalar::Num(v), Literal::Num(x)) => Some(c.op.num(v, *x)),
                (Scalar::Bool(v), Literal::Bool(x)) if !c.op.ordering() => Some(c.op.eq(v, *x)),
                _ => None,
            }
        }
        // Rejected by `check` at load; unknown if it ever gets here.
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(Op),
    LParen,
    RParen,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("the string \"{s}\""),
            Tok::Op(o) => format!("`{}`", o.as_str()),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    span: Range<usize>,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.' | '+')
}

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    let mut out = Vec::new();
    let mut it = text.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let err = |span: Range<usize>, message: String| ExprError { span, message };
        if is_word(c) {
            let mut end = i;
            while let Some(&(j, d)) = it.peek() {
                if !is_word(d) {
                    break;
                }
                end = j + d.len_utf8();
                it.next();
            }
            out.push(Token {
                tok: Tok::Word(text[i..end].to_string()),
                span: i..end,
            });
            continue;
        }
        it.next();
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '"' | '\'' => {
                let rest = &text[i + 1..];
                let Some(len) = rest.find(c) else {
                    return Err(err(
                        i..text.len(),
                        format!("unterminated string: no closing {c}"),
                    ));
                };
                let s = &rest[..len];
                for _ in s.chars() {
                    it.next();
                }
                it.next();
                out.push(Token {
                    tok: Tok::Str(s.to_string()),
                    span: i..i + len + 2,
                });
                continue;
            }
            '<' | '>' | '=' | '!' => {
                let eq = it.peek().is_some_and(|&(_, d)| d == '=');
                if eq {
                    it.next();
                }
                let op = match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    ('=', true) => Op::Eq,
                    ('!', true) => Op::Ne,
                    ('=', false) => {
                        return Err(err(i..i + 1, "use == to compare, not =".into()));
                    }
                    _ => return Err(err(i..i + 1, "use `not` to negate, not !".into())),
                };
                out.push(Token {
                    tok: Tok::Op(op),
                    span: i..i + if eq { 2 } else { 1 },
                });
                continue;
            }
            '&' | '|' => {
                let word = if c == '&' { "and" } else { "or" };
                return Err(err(i..i + 1, format!("write `{word}`, not {c}")));
            }
            _ => {
                return Err(err(
                    i..i + c.len_utf8(),
                    format!("unexpected character {c:?}"),
                ));
            }
        };
        out.push(Token {
            tok,
            span: i..i + c.len_utf8(),
        });
    }
    Ok(out)
}

/// A number as written in expressions: optional sign, digits with an optional fraction (or a
/// fraction alone), optional exponent. Excludes `inf`, `nan` and the like that Rust would parse.
fn number(w: &str) -> Option<f64> {
    let b = w.trim_start_matches(['+', '-']).as_bytes();
    let starts = b
        .first()
        .is_some_and(|c| c.is_ascii_digit() || (*c == b'.' && b.len() > 1));
    let shape = b
        .iter()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    if w.len() - b.len() > 1 || !starts || !shape {
        return None;
    }
    w.parse::<f64>().ok().filter(|x| x.is_finite())
}

fn is_point_word(w: &str) -> bool {
    w.contains('/') && !w.starts_with('/') && !w.ends_with('/') && !w.contains("//")
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    terms: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(x), .. }) if x == w)
    }

    fn eof(&self, what: &str) -> ExprError {
        ExprError {
            span: self.end..self.end,
            message: format!("the expression ends where {what} was expected"),
        }
    }

    fn deeper(&mut self, span: &Range<usize>) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError {
                span: span.clone(),
                message: format!("nested more than {MAX_DEPTH} levels deep"),
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node<String>, ExprError> {
        let mut xs = vec![self.and()?];
        while self.is_word("or") {
            self.pos += 1;
            xs.push(self.and()?);
        }
        Ok(if xs.len() == 1 {
            xs.remove(0)
        } else {
            Node::Or(xs)
        })
    }

    fn and(&mut self) -> Result<Node<String>, ExprError> {
        let mut xs = vec![self.unary()?];
        while self.is_word("and") {
            self.pos += 1;
            xs.push(self.unary()?);
        }
        Ok(if xs.len() == 1 {
            xs.remove(0)
        } else {
            Node::And(xs)
        })
    }

    fn unary(&mut self) -> Result<Node<String>, ExprError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.eof("a comparison"));
        };
        if self.is_word("not") {
            self.pos += 1;
            self.deeper(&t.span)?;
            let x = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(x)));
        }
        if t.tok == Tok::LParen {
            self.pos += 1;
            self.deeper(&t.span)?;
            let x = self.or()?;
            self.depth -= 1;
            match self.peek() {
                Some(Token {
                    tok: Tok::RParen, ..
                }) => self.pos += 1,
                Some(other) => {
                    return Err(ExprError {
                        span: other.span.clone(),
                        message: format!(
                            "expected `)` to close the `(` at byte {}, found {}",
                            t.span.start,
                            other.tok.describe()
                        ),
                    })
                }
                None => {
                    return Err(ExprError {
                        span: t.span.clone(),
                        message: "this `(` is never closed".into(),
                    })
                }
            }
            return Ok(x);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node<String>, ExprError> {
        let t = self
            .peek()
            .cloned()
            .ok_or_else(|| self.eof("a comparison"))?;
        self.pos += 1;
        let bad_operand = |found: &str| ExprError {
            span: t.span.clone(),
            message: format!(
                "expected a point name DEVICE/POINT, `mode` or `quality(POINT)`, found {found}"
            ),
        };
        let (operand, operand_span) = match &t.tok {
            Tok::Word(w) if w == "mode" => (Operand::Mode, t.span.clone()),
            Tok::Word(w) if w == "quality" => {
                let open = self.peek().cloned();
                if !matches!(open, Some(Token { tok: Tok::LParen, .. })) {
                    return Err(ExprError {
                        span: t.span.clone(),
                        message: "write quality(DEVICE/POINT)".into(),
                    });
                }
                self.pos += 1;
                let p = self.peek().cloned().ok_or_else(|| self.eof("a point name"))?;
                let Tok::Word(name) = &p.tok else {
                    return Err(ExprError {
                        span: p.span.clone(),
                        message: format!(
                            "expected a point name DEVICE/POINT, found {}",
                            p.tok.describe()
                        ),
                    });
                };
                if !is_point_word(name) {
                    return Err(ExprError {
                        span: p.span.clone(),
                        message: format!("{name:?} is not a point name DEVICE/POINT"),
                    });
                }
                self.pos += 1;
                match self.peek() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => self.pos += 1,
                    _ => {
                        return Err(ExprError {
                            span: p.span.clone(),
                            message: "expected `)` after the point name".into(),
                        })
                    }
                }
                (Operand::Quality(name.clone()), p.span.clone())
            }
            Tok::Word(w) if is_point_word(w) => (Operand::Point(w.clone()), t.span.clone()),
            Tok::Word(w) if w == "true" || w == "false" || number(w).is_some() => {
                return Err(ExprError {
                    span: t.span.clone(),
                    message: format!(
                        "a comparison starts with the point: write POINT OP {w}, not {w} OP POINT"
                    ),
                })
            }
            Tok::Word(w) if ["and", "or", "not"].contains(&w.as_str()) => {
                return Err(bad_operand(&format!("`{w}`")))
            }
            Tok::Word(w) => {
                return Err(ExprError {
                    span: t.span.clone(),
                    message: format!(
                        "{w:?} is not a point name: points are named DEVICE/POINT (e.g. meter-main/active_power)"
                    ),
                })
            }
            other => return Err(bad_operand(&other.describe())),
        };
        let o = self
            .peek()
            .cloned()
            .ok_or_else(|| self.eof("a comparison operator"))?;
        let Tok::Op(op) = o.tok else {
            return Err(ExprError {
                span: o.span.clone(),
                message: format!(
                    "expected a comparison operator (< <= > >= == !=), found {}",
                    o.tok.describe()
                ),
            });
        };
        self.pos += 1;
        let l = self.peek().cloned().ok_or_else(|| self.eof("a literal"))?;
        let literal = match &l.tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Word(w) if w == "true" => Literal::Bool(true),
            Tok::Word(w) if w == "false" => Literal::Bool(false),
            Tok::Word(w) => match number(w) {
                Some(x) => Literal::Num(x),
                None => {
                    let hint = if is_point_word(w) {
                        " (the right side is a literal, not another point)"
                    } else {
                        ""
                    };
                    return Err(ExprError {
                        span: l.span.clone(),
                        message: format!(
                            "expected a literal (a number, true, false or \"string\"), found `{w}`{hint}"
                        ),
                    });
                }
            },
            other => {
                return Err(ExprError {
                    span: l.span.clone(),
                    message: format!(
                        "expected a literal (a number, true, false or \"string\"), found {}",
                        other.describe()
                    ),
                })
            }
        };
        self.pos += 1;
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(ExprError {
                span: t.span.start..l.span.end,
                message: format!("more than {MAX_TERMS} comparisons in one expression"),
            });
        }
        Ok(Node::Cmp(Comparison {
            operand,
            op,
            literal,
            operand_span,
            op_span: o.span,
            literal_span: l.span,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn types(p: &str) -> Option<ValueType> {
        match p {
            "w/t" | "w/h" | "bus-a/12/level" => Some(ValueType::Number),
            "b/alarm" | "bus-a/12/lamp_failure" => Some(ValueType::Bool),
            _ => None,
        }
    }

    fn check(text: &str) -> Vec<(Range<usize>, String)> {
        match Expr::parse(text) {
            Err(e) => vec![(e.span, e.message)],
            Ok(x) => x
                .check(types, |p| (p == "w/tt").then(|| "w/t".to_string()))
                .into_iter()
                .map(|e| (e.span, e.message))
                .collect(),
        }
    }

    fn truth(text: &str, env: &HashMap<&str, Sample>, mode: Mode) -> Option<bool> {
        let x = Expr::parse(text).unwrap();
        assert!(x.check(types, |_| None).is_empty(), "{text}");
        eval(
            x.root(),
            &|p: &String| env.get(p.as_str()).copied().unwrap_or(Sample::NONE),
            mode,
        )
    }

    fn good(x: f64) -> Sample {
        Sample {
            value: Some(Scalar::Num(x)),
            quality: Quality::Good,
        }
    }

    #[test]
    fn spec_examples_parse_with_precedence() {
        let x = Expr::parse("weather/road_temp < 1.0 and weather/humidity > 80").unwrap();
        assert!(matches!(x.root(), Node::And(v) if v.len() == 2));
        assert_eq!(x.points(), vec!["weather/road_temp", "weather/humidity"]);
        // and binds tighter than or.
        let x = Expr::parse("a/b == 1 or a/c == 2 and a/d == 3").unwrap();
        let Node::Or(v) = x.root() else { panic!() };
        assert!(matches!(&v[1], Node::And(_)));
        let x = Expr::parse("not (mode == \"autonomous\") and quality(a/b) != 'good'").unwrap();
        assert!(x.reads_mode());
        assert_eq!(x.points(), vec!["a/b"]);
        let x = Expr::parse("bus-a/12/lamp_failure==true").unwrap();
        assert!(matches!(x.root(), Node::Cmp(c) if c.literal == Literal::Bool(true)));
        let x = Expr::parse("w/t >= -1.5e1").unwrap();
        assert!(matches!(x.root(), Node::Cmp(c) if c.literal == Literal::Num(-15.0)));
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let cases: &[(&str, Range<usize>, &str)] = &[
            ("w/t < ", 6..6, "ends where a literal"),
            ("w/t = 1", 4..5, "use =="),
            ("w/t < 1 && w/h > 2", 8..9, "write `and`"),
            ("1 < w/t", 0..1, "starts with the point"),
            ("temp < 1", 0..4, "not a point name"),
            ("(w/t < 1", 0..1, "never closed"),
            ("w/t < 1)", 7..8, "expected `and`, `or`"),
            ("w/t < w/h", 6..9, "not another point"),
            ("w/t < \"x", 6..8, "unterminated"),
            ("w/t < inf", 6..9, "expected a literal"),
            ("w/t < 1 and", 11..11, "ends where a comparison"),
            ("quality w/t == \"good\"", 0..7, "quality(DEVICE/POINT)"),
            ("w/t < 1 ; x", 8..9, "unexpected character"),
            ("w/t ! 1", 4..5, "use `not`"),
        ];
        for (text, span, needle) in cases {
            let e = Expr::parse(text).unwrap_err();
            assert_eq!(&e.span, span, "{text}: {}", e.message);
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }

    #[test]
    fn type_errors_are_all_reported_with_their_spans() {
        let e = check(r#"b/alarm > true and w/t == "x" or mode == "offline" or nope/x < 1"#);
        let spans: Vec<Range<usize>> = e.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(spans, vec![8..9, 26..29, 41..50, 54..60], "{e:?}");
        assert!(e[0].1.contains("only be compared with == or !="));
        assert!(e[1].1.contains("w/t is a number"));
        assert!(e[2].1.contains("\"connected\" or \"autonomous\""));
        assert!(e[3].1.contains("unknown point \"nope/x\""));
        let e = check("w/tt < 1");
        assert!(e[0].1.contains("did you mean \"w/t\""), "{e:?}");
        let e = check("b/alarm == 1");
        assert!(e[0].1.contains("compare it with true or false"), "{e:?}");
        let e = check("quality(w/t) < \"good\" or quality(w/t) == \"fine\"");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(check("quality(w/t) == \"uncertain\" and b/alarm != false").is_empty());
    }

    #[test]
    fn bounds() {
        let long = format!("w/t < {}", "1".repeat(MAX_LEN));
        assert!(Expr::parse(&long)
            .unwrap_err()
            .message
            .contains("bytes long"));
        let deep = format!(
            "{}w/t < 1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(Expr::parse(&deep).unwrap_err().message.contains("nested"));
        let ok = format!("{}w/t < 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Expr::parse(&ok).is_ok());
        let nots = format!("{}w/t < 1", "not ".repeat(MAX_DEPTH + 1));
        assert!(Expr::parse(&nots).is_err());
        let many = vec!["w/t < 1"; MAX_TERMS + 1].join(" or ");
        assert!(Expr::parse(&many)
            .unwrap_err()
            .message
            .contains("comparisons"));
        let enough = vec!["w/t < 1"; MAX_TERMS].join(" or ");
        assert!(Expr::parse(&enough).is_ok());
    }

    #[test]
    fn three_valued_truth() {
        let mut env = HashMap::new();
        env.insert("w/t", good(0.5));
        let m = Mode::Connected;
        assert_eq!(truth("w/t < 1", &env, m), Some(true));
        assert_eq!(truth("w/t == 0.5", &env, m), Some(true));
        // Never read: unknown, and `not` keeps it unknown.
        assert_eq!(truth("w/h > 80", &env, m), None);
        assert_eq!(truth("not (w/h > 80)", &env, m), None);
        assert_eq!(truth("w/h != 80", &env, m), None);
        assert_eq!(truth("w/t < 1 and w/h > 80", &env, m), None);
        assert_eq!(truth("w/t > 1 and w/h > 80", &env, m), Some(false));
        assert_eq!(truth("w/t < 1 or w/h > 80", &env, m), Some(true));
        assert_eq!(truth("quality(w/h) == \"bad\"", &env, m), Some(true));
        env.insert(
            "w/h",
            Sample {
                value: Some(Scalar::Num(90.0)),
                quality: Quality::Uncertain,
            },
        );
        assert_eq!(truth("w/h > 80", &env, m), None);
        assert_eq!(truth("quality(w/h) != \"good\"", &env, m), Some(true));
        assert_eq!(truth("quality(w/h) == \"uncertain\"", &env, m), Some(true));
        assert_eq!(truth("mode == \"connected\"", &env, m), Some(true));
        assert_eq!(
            truth("mode != \"connected\"", &env, Mode::Autonomous),
            Some(true)
        );
        env.insert(
            "b/alarm",
            Sample::from_json(&serde_json::json!(true), Quality::Good),
        );
        assert_eq!(truth("b/alarm == true", &env, m), Some(true));
        assert_eq!(truth("not b/alarm == true", &env, m), Some(false));
        // A value of the wrong type at run time is unknown, not an error.
        env.insert(
            "w/t",
            Sample::from_json(&serde_json::json!(true), Quality::Good),
        );
        assert_eq!(truth("w/t < 1", &env, m), None);
    }

    #[test]
    fn compile_renames_points() {
        let x = Expr::parse("a/b < 1 or quality(c/d) == \"bad\"").unwrap();
        let mut names = Vec::new();
        let n = x.compile(&mut |p: &str| {
            names.push(p.to_string());
            names.len() - 1
        });
        let v = eval(
            &n,
            &|i: &usize| if *i == 0 { good(0.0) } else { Sample::NONE },
            Mode::Connected,
        );
        assert_eq!(v, Some(true));
        assert_eq!(names, ["a/b", "c/d"]);
    }
}
