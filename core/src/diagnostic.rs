//! Errors that point into the graph file: `file:line:col`, node, input, and
//! the source line with a caret.

use std::fmt;

use codespan_reporting::diagnostic::{Diagnostic as Report, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};

use crate::excerpt;
use crate::source::{LineCol, SourceFile, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    pub node: Option<String>,
    pub input: Option<String>,
    /// A suggestion such as "did you mean `KSampler`?".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Diagnostic {
            message: message.into(),
            span: Some(span),
            node: None,
            input: None,
            help: None,
        }
    }

    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }

    pub fn input(mut self, input: &str) -> Self {
        self.input = Some(input.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds `help` unless a suggestion is already there.
    pub fn help_if_none(self, help: &str) -> Self {
        if self.help.is_none() {
            self.help(help)
        } else {
            self
        }
    }

    /// Adds "did you mean" when a close candidate exists.
    pub fn suggest<'a>(self, wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match did_you_mean(wrong, candidates) {
            Some(best) => self.help(format!("did you mean `{best}`?")),
            None => self,
        }
    }
}

/// The closest candidate by Jaro-Winkler similarity, if it is close enough.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wrong_lower = wrong.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&wrong_lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Reports rendered in full; past these, a count. A generated file can
/// have thousands of the same mistake, and the first ones say enough.
pub const MAX_RENDERED: usize = 50;

/// Every problem found in one graph file, all reported together.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub source: SourceFile,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn location(&self, d: &Diagnostic) -> Option<LineCol> {
        d.span.map(|s| self.source.line_col(s.start))
    }

    /// Renders rustc-style reports; `color` adds ANSI colours for terminals.
    /// A line longer than [`excerpt::MAX_LINE_CHARS`] is quoted as a window
    /// around the error, never whole.
    pub fn render(&self, color: bool) -> String {
        let file = SimpleFile::new(self.source.name(), self.source.text());
        let config = term::Config::default();
        let mut out = if color {
            termcolor::Buffer::ansi()
        } else {
            termcolor::Buffer::no_color()
        };
        for d in self.items.iter().take(MAX_RENDERED) {
            let mut title = d.message.clone();
            let mut context = Vec::new();
            if let Some(node) = &d.node {
                context.push(format!("node `{node}`"));
            }
            if let Some(input) = &d.input {
                context.push(format!("input `{input}`"));
            }
            if !context.is_empty() {
                title = format!("{} — {title}", context.join(", "));
            }
            if let Some(span) = d
                .span
                .filter(|s| excerpt::is_long_line(&self.source, s.start))
            {
                let help = d.help.as_deref();
                if excerpt::emit(&mut out, &self.source, &title, span, help).is_err() {
                    return self.to_string();
                }
                continue;
            }
            let mut report = Report::error().with_message(title);
            if let Some(span) = d.span {
                let len = self.source.text().len();
                let range = span.start.min(len)..span.end.min(len).max(span.start.min(len));
                report = report.with_labels(vec![Label::primary((), range)]);
            }
            if let Some(help) = &d.help {
                report = report.with_notes(vec![format!("help: {help}")]);
            }
            if term::emit_to_write_style(&mut out, &config, &file, &report).is_err() {
                return self.to_string();
            }
        }
        let n = self.items.len();
        let mut text = String::from_utf8_lossy(out.as_slice()).into_owned();
        if n > MAX_RENDERED {
            text.push_str(&format!(
                "… and {} more errors, not shown\n",
                n - MAX_RENDERED
            ));
        }
        text.push_str(&format!(
            "{n} error{} in {}\n",
            if n == 1 { "" } else { "s" },
            self.source.name()
        ));
        text
    }
}

/// One line per error: `file:line:col: node `x`, input `y`: message`.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            write!(f, "{}", self.source.name())?;
            if let Some(at) = self.location(d) {
                write!(f, ":{at}")?;
            }
            write!(f, ": ")?;
            if let Some(node) = &d.node {
                write!(f, "node `{node}`: ")?;
            }
            if let Some(input) = &d.input {
                write!(f, "input `{input}`: ")?;
            }
            write!(f, "{}", d.message)?;
            if let Some(help) = &d.help {
                write!(f, " ({help})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_error(text: String, span: Span) -> Diagnostics {
        Diagnostics {
            source: SourceFile::new("big.json", text),
            items: vec![Diagnostic::new("bad value", span).node("7").help("try 1")],
        }
    }

    #[test]
    fn a_long_line_is_quoted_as_a_window_with_the_exact_location() {
        let text = format!(
            "{}\n{}BAD{}",
            "# head",
            "x".repeat(3_000_000),
            "y".repeat(50)
        );
        let start = 7 + 3_000_000;
        let d = one_error(text, Span::new(start, start + 3));
        let shown = d.render(false);
        assert!(shown.len() < 2_000, "{} bytes", shown.len());
        assert!(shown.contains("big.json:2:3000001"), "{shown}");
        assert!(shown.contains("node `7` — bad value"), "{shown}");
        assert!(shown.contains("= help: try 1"), "{shown}");
        let lines: Vec<&str> = shown.lines().collect();
        let quoted = lines.iter().position(|l| l.contains("BAD")).unwrap();
        let caret_line = lines[quoted + 1];
        let col =
            |l: &str, pat: &str| l.chars().count() - l[l.find(pat).unwrap()..].chars().count();
        assert_eq!(col(lines[quoted], "BAD"), col(caret_line, "^^^"), "{shown}");
        assert!(!caret_line.contains("^^^^"), "{shown}");
    }

    #[test]
    fn many_errors_render_the_first_ones_and_a_count() {
        let text = format!("{}\n", "x".repeat(1_000_000));
        let items = (0..10_000)
            .map(|i| Diagnostic::new("bad", Span::new(i * 90, i * 90 + 1)))
            .collect();
        let d = Diagnostics {
            source: SourceFile::new("many.ron", text),
            items,
        };
        let started = std::time::Instant::now();
        let shown = d.render(false);
        assert_eq!(shown.matches("error: bad").count(), MAX_RENDERED);
        assert!(shown.contains("… and 9950 more errors, not shown\n10000 errors in many.ron"));
        assert_eq!(d.to_string().lines().count(), 10_000);
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    }

    #[test]
    fn a_short_line_is_quoted_whole_as_before() {
        let d = one_error("(nodes: { \"a\": Foo() })".into(), Span::new(15, 18));
        let shown = d.render(false);
        assert!(shown.contains("big.json:1:16"), "{shown}");
        assert!(shown.contains("(nodes: { \"a\": Foo() })"), "{shown}");
    }
}
