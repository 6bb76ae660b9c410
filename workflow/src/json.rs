//! A JSON reader that keeps the byte span of every value.
//!
//! Errors in an imported workflow must point at `file:line:col` in the JSON
//! the user has, and serde_json's `Value` forgets where things were. The
//! well-kept span-aware crates either track only line and column of the
//! parser (not of each value) or pull in a second parser stack, and JSON is
//! small enough to read here: this is RFC 8259, strict, with one addition,
//! a nesting limit, so a hostile body of a million `[` fails cleanly
//! instead of overflowing the stack.
//!
//! Objects keep their keys in file order, duplicates included; [`Json::get`]
//! returns the last, as Python's `json` (and so ComfyUI) does.

use weft_core::{Span, Spanned};

/// Deepest nesting accepted. Real workflows nest under 10 levels.
pub const MAX_DEPTH: usize = 128;

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number written without fraction or exponent that fits an `i64`.
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Spanned<Json>>),
    Object(Vec<(Spanned<String>, Spanned<Json>)>),
}

impl Json {
    /// What a value is, for messages: "a string", "an object", …
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The value under `key` of an object (the last, if repeated).
    pub fn get(&self, key: &str) -> Option<&Spanned<Json>> {
        match self {
            Json::Object(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.value == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Spanned<Json>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Int(i) => Some(*i),
            Json::Float(x) if x.fract() == 0.0 && x.abs() < 9e15 => Some(*x as i64),
            _ => None,
        }
    }

    /// Entries of an object, unique keys, last one winning, in file order.
    pub fn entries(&self) -> Vec<(&Spanned<String>, &Spanned<Json>)> {
        let Json::Object(entries) = self else {
            return Vec::new();
        };
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut kept: Vec<_> = entries
            .iter()
            .rev()
            .filter(|(k, _)| seen.insert(k.value.as_str()))
            .map(|(k, v)| (k, v))
            .collect();
        kept.reverse();
        kept
    }
}

/// A syntax error and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonError {
    pub message: String,
    pub span: Span,
}

/// Parses one JSON document (surrounding whitespace and a leading
/// byte-order mark allowed); spans are byte offsets into `text`.
pub fn parse(text: &str) -> Result<Spanned<Json>, JsonError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        // A byte-order mark (Windows editors write one) is not content.
        pos: if text.starts_with('\u{feff}') { 3 } else { 0 },
    };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos < p.bytes.len() {
        return Err(p.error_here("unexpected text after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>, start: usize, end: usize) -> JsonError {
        JsonError {
            message: message.into(),
            span: Span::new(start, end.max(start)),
        }
    }

    /// An error at the current character (or the end of the text).
    fn error_here(&self, message: &str) -> JsonError {
        let len = self.text[self.pos..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
        match self.text[self.pos..].chars().next() {
            Some(c) => self.error(
                format!("{message} (found `{}`)", c.escape_debug()),
                self.pos,
                self.pos + len,
            ),
            None => self.error(
                format!("{message} (found the end of the text)"),
                self.pos,
                self.pos,
            ),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Spanned<Json>, JsonError> {
        let start = self.pos;
        let value = match self.bytes.get(self.pos) {
            Some(b'{') | Some(b'[') if depth >= MAX_DEPTH => {
                return Err(self.error(
                    format!("nested deeper than {MAX_DEPTH} levels"),
                    start,
                    start + 1,
                ))
            }
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Json::Str(self.string()?),
            Some(b't') => self.word("true", Json::Bool(true))?,
            Some(b'f') => self.word("false", Json::Bool(false))?,
            Some(b'n') => self.word("null", Json::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return Err(self.error_here("expected a JSON value")),
        };
        Ok(Spanned::new(value, Span::new(start, self.pos)))
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error_here("expected a JSON value"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        let mut entries = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Json::Object(entries));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error_here("expected a string key"));
            }
            let key_start = self.pos;
            let key = self.string()?;
            let key = Spanned::new(key, Span::new(key_start, self.pos));
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error_here("expected `:` after the key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(entries));
                }
                _ => return Err(self.error_here("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error_here("expected `,` or `]`")),
            }
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Copy the run of plain characters at once.
            let run = self.bytes[self.pos..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map_or(self.bytes.len(), |i| self.pos + i);
            out.push_str(&self.text[self.pos..run]);
            self.pos = run;
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => out.push(self.escape()?),
                Some(_) => {
                    return Err(self.error_here("control characters must be escaped in a string"))
                }
                None => {
                    return Err(self.error("this string is never closed", start, start + 1));
                }
            }
        }
    }

    fn escape(&mut self) -> Result<char, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let c = match self.bytes.get(self.pos) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let high = self.hex4(start)?;
                if !(0xD800..0xDC00).contains(&high) {
                    return char::from_u32(high)
                        .ok_or_else(|| self.error("a lone low surrogate", start, self.pos));
                }
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("a lone high surrogate", start, self.pos));
                }
                self.pos += 2;
                let low = self.hex4(start)?;
                if !(0xDC00..0xE000).contains(&low) {
                    return Err(self.error(
                        "a high surrogate without its low half",
                        start,
                        self.pos,
                    ));
                }
                let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return char::from_u32(code)
                    .ok_or_else(|| self.error("an invalid escape", start, self.pos));
            }
            _ => return Err(self.error_here("unknown escape")),
        };
        self.pos += 1;
        Ok(c)
    }

    fn hex4(&mut self, start: usize) -> Result<u32, JsonError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("`\\u` needs four hex digits", start, self.pos))?;
        self.pos += 4;
        Ok(u32::from_str_radix(digits, 16).expect("checked hex digits"))
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.bytes.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        if digits(self) == 0 {
            return Err(self.error_here("expected digits"));
        }
        if self.bytes[int_start] == b'0' && self.pos - int_start > 1 {
            return Err(self.error("numbers cannot start with 0", start, self.pos));
        }
        let mut integer = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error_here("expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error_here("expected digits in the exponent"));
            }
        }
        let text = &self.text[start..self.pos];
        if integer {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Json::Int(i));
            }
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Json::Float(x)),
            _ => Err(self.error("this number is out of range", start, self.pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_spans() {
        let text = r#" {"a": [1, -2.5e1, "x\n\u00e9\ud83d\ude00"], "b": null, "a": true} "#;
        let root = parse(text).unwrap();
        assert_eq!(&text[root.span.start..root.span.end], text.trim());
        let a = root.value.get("a").unwrap();
        assert_eq!(a.value, Json::Bool(true), "the last duplicate wins");
        let Json::Object(entries) = &root.value else {
            panic!()
        };
        let items = entries[0].1.value.as_array().unwrap();
        assert_eq!(items[0].value, Json::Int(1));
        assert_eq!(items[1].value, Json::Float(-25.0));
        assert_eq!(items[2].value, Json::Str("x\né😀".into()));
        assert_eq!(&text[items[1].span.start..items[1].span.end], "-2.5e1");
        assert_eq!(root.value.entries().len(), 2);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            (r#"{"a" 1}"#, 5, "expected `:`"),
            ("[1, 2", 5, "expected `,` or `]`"),
            (r#"{"a": 01}"#, 6, "start with 0"),
            (r#""abc"#, 0, "never closed"),
            ("[1] x", 4, "after the JSON value"),
            (r#"["\ud800"]"#, 2, "lone high surrogate"),
            ("[1e999]", 1, "out of range"),
            ("", 0, "expected a JSON value"),
        ];
        for (text, at, message) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.span.start, at, "{text}: {e:?}");
            assert!(e.message.contains(message), "{text}: {e:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(1_000_000);
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e:?}");
        assert_eq!(e.span.start, MAX_DEPTH);
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn big_integers_become_floats() {
        let v = parse("18446744073709551615").unwrap();
        assert_eq!(v.value, Json::Float(18446744073709551615.0));
        assert_eq!(
            parse("-9223372036854775808").unwrap().value,
            Json::Int(i64::MIN)
        );
    }
}
