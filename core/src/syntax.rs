//! A RON reader that keeps a span on every value.
//!
//! The `ron` crate parses well but forgets where values came from, and weft's
//! diagnostics must point at the exact node and input. This reader accepts the
//! RON data model (structs, named structs, tuples, maps, lists, strings, raw
//! strings, numbers, bools, chars, comments) and never recurses deeper than
//! [`MAX_DEPTH`], so hostile input cannot overflow the stack.

use crate::source::{Span, Spanned};

/// Nesting deeper than this is rejected rather than risking the stack.
pub const MAX_DEPTH: usize = 64;

/// Key-value pairs of a RON map, in file order.
pub type MapEntries = Vec<(Spanned<Ron>, Spanned<Ron>)>;

#[derive(Clone, Debug, PartialEq)]
pub enum Ron {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Char(char),
    /// A bare identifier: `None`, a unit struct or an enum variant.
    Ident(String),
    List(Vec<Spanned<Ron>>),
    Map(MapEntries),
    /// `(a: 1)` or `Name(a: 1)`.
    Struct {
        name: Option<Spanned<String>>,
        fields: Vec<(Spanned<String>, Spanned<Ron>)>,
    },
    /// `(1, 2)` or `Name(1, 2)`; `Some(x)` is a one-element tuple named `Some`.
    Tuple {
        name: Option<Spanned<String>>,
        items: Vec<Spanned<Ron>>,
    },
}

impl Ron {
    /// A short noun for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Ron::Int(_) => "an integer",
            Ron::Float(_) => "a float",
            Ron::Bool(_) => "a bool",
            Ron::Str(_) => "a string",
            Ron::Char(_) => "a char",
            Ron::Ident(_) => "an identifier",
            Ron::List(_) => "a list",
            Ron::Map(_) => "a map",
            Ron::Struct { .. } => "a struct",
            Ron::Tuple { .. } => "a tuple",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

/// Parses one RON document (leading `#![enable(..)]` attributes are allowed).
pub fn parse(text: &str) -> Result<Spanned<Ron>, SyntaxError> {
    let mut p = Parser { src: text, pos: 0 };
    p.skip_trivia()?;
    while p.peek_str("#!") {
        p.skip_attribute()?;
        p.skip_trivia()?;
    }
    let value = p.value(0)?;
    p.skip_trivia()?;
    if p.pos < text.len() {
        return Err(p.error_here("expected end of file after the top-level value"));
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_str(&self, s: &str) -> bool {
        self.rest().starts_with(s)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error_here(&self, message: impl Into<String>) -> SyntaxError {
        let end = self.pos + self.peek().map_or(0, char::len_utf8);
        SyntaxError {
            span: Span::new(self.pos, end),
            message: message.into(),
        }
    }

    fn error_at(&self, start: usize, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            span: Span::new(
                start,
                self.pos.max(start + 1).min(self.src.len().max(start)),
            ),
            message: message.into(),
        }
    }

    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.peek_str("//") => {
                    let len = self.rest().find('\n').unwrap_or(self.rest().len());
                    self.pos += len;
                }
                Some('/') if self.peek_str("/*") => self.skip_block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn skip_block_comment(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            if self.peek_str("/*") {
                depth += 1;
                self.pos += 2;
            } else if self.peek_str("*/") {
                depth -= 1;
                self.pos += 2;
            } else if self.bump().is_none() {
                return Err(SyntaxError {
                    span: Span::new(start, start + 2),
                    message: "unterminated block comment".into(),
                });
            }
        }
        Ok(())
    }

    fn skip_attribute(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(c) = self.bump() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(self.error_at(start, "unterminated `#![...]` attribute"))
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), SyntaxError> {
        self.skip_trivia()?;
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.error_here(format!("expected `{c}` {what}{}", self.found())))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => ", found end of file".into(),
            Some(c) => format!(", found `{c}`"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Spanned<Ron>, SyntaxError> {
        self.skip_trivia()?;
        if depth > MAX_DEPTH {
            return Err(self.error_here(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let start = self.pos;
        let value = match self.peek() {
            None => return Err(self.error_here("expected a value, found end of file")),
            Some('"') => Ron::Str(self.string()?),
            Some('\'') => Ron::Char(self.char_lit()?),
            Some('[') => Ron::List(self.list(depth)?),
            Some('{') => Ron::Map(self.map(depth)?),
            Some('(') => self.parenthesised(None, depth)?,
            Some('r') if self.peek_str("r\"") || self.peek_str("r#") => {
                Ron::Str(self.raw_string()?)
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number()?,
            Some(c) if is_ident_start(c) => {
                let name = self.ident().to_string();
                let name_span = Span::new(start, self.pos);
                match name.as_str() {
                    "true" => Ron::Bool(true),
                    "false" => Ron::Bool(false),
                    "inf" => Ron::Float(f64::INFINITY),
                    "NaN" => Ron::Float(f64::NAN),
                    _ => {
                        let save = self.pos;
                        self.skip_trivia()?;
                        if self.peek() == Some('(') {
                            self.parenthesised(Some(Spanned::new(name, name_span)), depth)?
                        } else {
                            self.pos = save;
                            Ron::Ident(name)
                        }
                    }
                }
            }
            Some(c) => return Err(self.error_here(format!("expected a value, found `{c}`"))),
        };
        Ok(Spanned::new(value, Span::new(start, self.pos)))
    }

    /// An identifier (optionally `r#`-prefixed), without the prefix.
    fn ident(&mut self) -> &'a str {
        if self.peek_str("r#") {
            self.pos += 2;
        }
        let body = self.pos;
        let len = self
            .rest()
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(self.rest().len());
        self.pos += len;
        &self.src[body..self.pos]
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error_at(start, "unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape()?),
                Some(c) => out.push(c),
            }
        }
    }

    fn char_lit(&mut self) -> Result<char, SyntaxError> {
        let start = self.pos;
        self.bump();
        let c = match self.bump() {
            Some('\\') => self.escape()?,
            Some(c) if c != '\'' => c,
            _ => return Err(self.error_at(start, "empty or unterminated char literal")),
        };
        if self.bump() != Some('\'') {
            return Err(self.error_at(start, "unterminated char literal"));
        }
        Ok(c)
    }

    fn escape(&mut self) -> Result<char, SyntaxError> {
        let start = self.pos - 1;
        Ok(match self.bump() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('0') => '\0',
            Some('\\') => '\\',
            Some('"') => '"',
            Some('\'') => '\'',
            Some('u') => {
                if self.bump() != Some('{') {
                    return Err(self.error_at(start, "expected `{` after `\\u`"));
                }
                let digits_start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    self.bump();
                }
                let digits = &self.src[digits_start..self.pos];
                if self.bump() != Some('}') {
                    return Err(self.error_at(start, "expected `}` to close `\\u{...}`"));
                }
                u32::from_str_radix(digits, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.error_at(start, "invalid unicode escape"))?
            }
            _ => return Err(self.error_at(start, "unknown escape sequence")),
        })
    }

    fn raw_string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.bump(); // r
        let mut hashes = 0usize;
        while self.peek() == Some('#') {
            self.bump();
            hashes += 1;
        }
        if self.bump() != Some('"') {
            return Err(self.error_at(start, "expected `\"` to start a raw string"));
        }
        let closing: String = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        match self.rest().find(&closing) {
            Some(len) => {
                let body = self.rest()[..len].to_string();
                self.pos += len + closing.len();
                Ok(body)
            }
            None => Err(self.error_at(start, "unterminated raw string")),
        }
    }

    fn number(&mut self) -> Result<Ron, SyntaxError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.bump();
        }
        if self.peek_str("inf") {
            self.pos += 3;
            let neg = self.src[start..].starts_with('-');
            return Ok(Ron::Float(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }));
        }
        let radix = if self.peek_str("0x") {
            16
        } else if self.peek_str("0b") {
            2
        } else if self.peek_str("0o") {
            8
        } else {
            10
        };
        if radix != 10 {
            self.pos += 2;
            let digits_start = self.pos;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.bump();
            }
            let digits: String = self.src[digits_start..self.pos].replace('_', "");
            let magnitude = i64::from_str_radix(&digits, radix)
                .map_err(|e| self.error_at(start, format!("invalid integer: {e}")))?;
            let neg = self.src[start..].starts_with('-');
            return Ok(Ron::Int(if neg { -magnitude } else { magnitude }));
        }
        let mut is_float = false;
        while let Some(c) = self.peek() {
            match c {
                '0'..='9' | '_' => {}
                '.' | 'e' | 'E' => is_float = true,
                '-' | '+' if matches!(self.src[..self.pos].chars().last(), Some('e' | 'E')) => {}
                _ => break,
            }
            self.bump();
        }
        let text: String = self.src[start..self.pos].replace('_', "");
        if is_float {
            text.parse::<f64>()
                .map(Ron::Float)
                .map_err(|_| self.error_at(start, format!("invalid number `{text}`")))
        } else {
            text.parse::<i64>()
                .map(Ron::Int)
                .map_err(|e| self.error_at(start, format!("invalid integer `{text}`: {e}")))
        }
    }

    /// Parses `item, item, ...` up to `close`, allowing a trailing comma.
    fn comma_separated(
        &mut self,
        close: char,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), SyntaxError>,
    ) -> Result<(), SyntaxError> {
        loop {
            self.skip_trivia()?;
            if self.peek() == Some(close) {
                self.bump();
                return Ok(());
            }
            item(self)?;
            self.skip_trivia()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {
                    self.bump();
                    return Ok(());
                }
                _ => {
                    return Err(self.error_here(format!(
                        "expected `,` or `{close}` in {what}{}",
                        self.found()
                    )))
                }
            }
        }
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Spanned<Ron>>, SyntaxError> {
        self.bump();
        let mut items = Vec::new();
        self.comma_separated(']', "a list", |p| {
            items.push(p.value(depth + 1)?);
            Ok(())
        })?;
        Ok(items)
    }

    fn map(&mut self, depth: usize) -> Result<MapEntries, SyntaxError> {
        self.bump();
        let mut entries = Vec::new();
        self.comma_separated('}', "a map", |p| {
            let key = p.value(depth + 1)?;
            p.expect(':', "after a map key")?;
            let value = p.value(depth + 1)?;
            entries.push((key, value));
            Ok(())
        })?;
        Ok(entries)
    }

    /// After an optional name: `(field: v, ...)` is a struct, `(v, ...)` a tuple.
    fn parenthesised(
        &mut self,
        name: Option<Spanned<String>>,
        depth: usize,
    ) -> Result<Ron, SyntaxError> {
        self.bump(); // (
        self.skip_trivia()?;
        if self.looks_like_field() {
            let mut fields = Vec::new();
            self.comma_separated(')', "a struct", |p| {
                p.skip_trivia()?;
                let start = p.pos;
                if !p.peek().is_some_and(is_ident_start) {
                    return Err(p.error_here(format!("expected a field name{}", p.found())));
                }
                let field = p.ident().to_string();
                let field = Spanned::new(field, Span::new(start, p.pos));
                p.expect(':', "after a field name")?;
                let value = p.value(depth + 1)?;
                fields.push((field, value));
                Ok(())
            })?;
            Ok(Ron::Struct { name, fields })
        } else {
            let mut items = Vec::new();
            self.comma_separated(')', "a tuple", |p| {
                items.push(p.value(depth + 1)?);
                Ok(())
            })?;
            Ok(Ron::Tuple { name, items })
        }
    }

    fn looks_like_field(&self) -> bool {
        let mut probe = Parser {
            src: self.src,
            pos: self.pos,
        };
        if !probe.peek().is_some_and(is_ident_start) {
            return false;
        }
        probe.ident();
        if probe.skip_trivia().is_err() {
            return false;
        }
        probe.peek() == Some(':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str) -> Ron {
        parse(text).unwrap().value
    }

    #[test]
    fn scalars() {
        assert_eq!(val("42"), Ron::Int(42));
        assert_eq!(val("-7"), Ron::Int(-7));
        assert_eq!(val("1_000"), Ron::Int(1000));
        assert_eq!(val("0x1F"), Ron::Int(31));
        assert_eq!(val("2.5e-3"), Ron::Float(2.5e-3));
        assert_eq!(val("-inf"), Ron::Float(f64::NEG_INFINITY));
        assert_eq!(val("true"), Ron::Bool(true));
        assert_eq!(val(r#""a\n\u{263A}""#), Ron::Str("a\n☺".into()));
        assert_eq!(val(r##"r#"say "hi""#"##), Ron::Str("say \"hi\"".into()));
        assert_eq!(val("'x'"), Ron::Char('x'));
        assert_eq!(val("None"), Ron::Ident("None".into()));
    }

    #[test]
    fn structs_tuples_and_spans() {
        let text = "// c\nNode(a: 1, /* b */ b: Link(\"x\", \"y\"),)";
        let parsed = parse(text).unwrap();
        let Ron::Struct { name, fields } = parsed.value else {
            panic!("not a struct")
        };
        assert_eq!(name.unwrap().value, "Node");
        assert_eq!(fields.len(), 2);
        assert_eq!(&text[fields[1].0.span.start..fields[1].0.span.end], "b");
        let Ron::Tuple { name, items } = &fields[1].1.value else {
            panic!("not a tuple")
        };
        assert_eq!(name.as_ref().unwrap().value, "Link");
        assert_eq!(items[0].value, Ron::Str("x".into()));
        assert_eq!(
            &text[fields[1].1.span.start..fields[1].1.span.end],
            "Link(\"x\", \"y\")"
        );
    }

    #[test]
    fn errors_point_at_the_offending_byte() {
        let err = parse("(a: 1 b: 2)").unwrap_err();
        assert_eq!(err.span.start, 6);
        assert!(
            err.message.contains("expected `,` or `)`"),
            "{}",
            err.message
        );
        assert!(parse("\"abc")
            .unwrap_err()
            .message
            .contains("unterminated string"));
        assert!(parse("(a: 1) x").is_err());
        assert!(parse("/* open").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = "[".repeat(100_000);
        assert!(parse(&text).unwrap_err().message.contains("nesting"));
    }
}
