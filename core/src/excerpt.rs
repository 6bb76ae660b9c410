//! A bounded window of a long source line, for diagnostics.
//!
//! Graph files written by tools are often one line (ComfyUI's workflow JSON
//! always is when saved through its API). Quoting the whole line, plus a
//! caret line as long, turned one error in a 7 MB file into 14 MB of
//! output. Lines longer than [`MAX_LINE_CHARS`] are shown as a window around
//! the error instead, in the same layout codespan-reporting uses for short
//! lines, with `file:line:col` still counted in the whole file.

use codespan_reporting::term::termcolor::{Color, ColorSpec, WriteColor};

use crate::source::{SourceFile, Span};

/// The longest line quoted whole; longer ones are windowed to this width.
pub const MAX_LINE_CHARS: usize = 160;

/// Characters shown before the error's column in a window, so the caret
/// sits near the start and the text it points at is visible after it.
const LEAD_CHARS: usize = MAX_LINE_CHARS / 3;

/// Whether the line holding `offset` is too long to quote whole.
pub fn is_long_line(source: &SourceFile, offset: usize) -> bool {
    let (start, end) = source.line_bounds(offset);
    // Bytes bound characters from above, and counting stops past the limit:
    // a file with many errors on one huge line is not scanned once per error.
    end - start > MAX_LINE_CHARS
        && source.text()[start..end]
            .chars()
            .nth(MAX_LINE_CHARS)
            .is_some()
}

/// The window of the line holding `span.start`: its text (with `…` where
/// it was cut) and the caret's character offset and length within it.
/// Nothing here scans the whole line: a file with many errors on one
/// huge line is not read once per error.
pub fn window(source: &SourceFile, span: Span) -> (String, usize, usize) {
    let text = source.text();
    let offset = floor_char_boundary(text, span.start.min(text.len()));
    let (line_start, line_end) = source.line_bounds(offset);
    // A span on a line break points just past the line's last character.
    let offset = offset.min(line_end);
    let col = source.line_col(offset).col - 1;
    // Characters after the column, counted only as far as a window reaches.
    let tail = text[offset..line_end]
        .chars()
        .take(MAX_LINE_CHARS + 1)
        .count();
    let line_chars = col + tail;
    let end_offset = floor_char_boundary(text, span.end.min(line_end)).max(offset);
    let span_chars = text[offset..end_offset]
        .chars()
        .take(MAX_LINE_CHARS + 1)
        .count()
        .max(1);

    let mut first = col.saturating_sub(LEAD_CHARS);
    let last = (first + MAX_LINE_CHARS).min(line_chars);
    first = first.min(last.saturating_sub(MAX_LINE_CHARS));
    // The byte where the window starts: `col - first` characters back.
    let back = col - first;
    let first_byte = match back {
        0 => offset,
        _ => text[line_start..offset]
            .char_indices()
            .rev()
            .nth(back - 1)
            .map_or(line_start, |(i, _)| line_start + i),
    };
    let mut shown = String::with_capacity(MAX_LINE_CHARS * 4 + 8);
    if first > 0 {
        shown.push('…');
    }
    let lead = usize::from(first > 0);
    shown.extend(
        text[first_byte..line_end]
            .chars()
            .take(last - first)
            .map(printable),
    );
    if last < line_chars {
        shown.push('…');
    }
    let caret = lead + col - first;
    let caret_len = span_chars.min(last.saturating_sub(col).max(1));
    (shown, caret, caret_len)
}

/// Writes one error in codespan-reporting's layout, quoting a window of
/// the line. `location` is the exact `line:col` of the span's start.
pub fn emit(
    out: &mut dyn WriteColor,
    source: &SourceFile,
    title: &str,
    span: Span,
    help: Option<&str>,
) -> std::io::Result<()> {
    let at = source.line_col(span.start);
    let (shown, caret, caret_len) = window(source, span);
    let number = at.line.to_string();
    let pad = " ".repeat(number.len());
    let gutter = |out: &mut dyn WriteColor, text: &str| -> std::io::Result<()> {
        out.set_color(ColorSpec::new().set_fg(Some(Color::Blue)))?;
        write!(out, "{text}")?;
        out.reset()
    };

    out.set_color(ColorSpec::new().set_fg(Some(Color::Red)).set_bold(true))?;
    write!(out, "error")?;
    out.set_color(ColorSpec::new().set_bold(true))?;
    writeln!(out, ": {title}")?;
    out.reset()?;
    gutter(out, &format!("{pad} ┌─ "))?;
    writeln!(out, "{}:{at}", source.name())?;
    gutter(out, &format!("{pad} │\n{number} │ "))?;
    writeln!(out, "{shown}")?;
    gutter(out, &format!("{pad} │ "))?;
    out.set_color(ColorSpec::new().set_fg(Some(Color::Red)))?;
    writeln!(out, "{}{}", " ".repeat(caret), "^".repeat(caret_len))?;
    out.reset()?;
    if let Some(help) = help {
        gutter(out, &format!("{pad} │\n{pad} = "))?;
        writeln!(out, "help: {help}")?;
    }
    writeln!(out)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Tabs and control characters would shift the caret; show them as spaces.
fn printable(c: char) -> char {
    if c.is_control() {
        ' '
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_line_is_not_long() {
        let source = SourceFile::new("a", "x".repeat(MAX_LINE_CHARS));
        assert!(!is_long_line(&source, 3));
        let source = SourceFile::new("a", "é".repeat(MAX_LINE_CHARS));
        assert!(
            !is_long_line(&source, 4),
            "characters are counted, not bytes"
        );
        let source = SourceFile::new("a", "x".repeat(MAX_LINE_CHARS + 1));
        assert!(is_long_line(&source, 3));
    }

    #[test]
    fn the_window_is_bounded_and_the_caret_points_at_the_span() {
        let mut text = "a".repeat(10_000);
        text.push_str("ERROR");
        text.push_str(&"b".repeat(10_000));
        let (shown, caret, len) = window(
            &SourceFile::new("t", text.clone()),
            Span::new(10_000, 10_005),
        );
        assert!(
            shown.chars().count() <= MAX_LINE_CHARS + 2,
            "{}",
            shown.len()
        );
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        let pointed: String = shown.chars().skip(caret).take(len).collect();
        assert_eq!(pointed, "ERROR");
    }

    #[test]
    fn the_window_holds_at_either_end_of_the_line() {
        let text = format!("{}\n{}", "x".repeat(5), "y".repeat(1000));
        let (shown, caret, _) = window(&SourceFile::new("t", text.clone()), Span::new(6, 7));
        assert_eq!(caret, 0);
        assert!(shown.starts_with('y') && shown.ends_with('…'));
        let (shown, caret, len) = window(
            &SourceFile::new("t", text.clone()),
            Span::new(text.len() - 1, text.len()),
        );
        assert!(shown.starts_with('…') && !shown.ends_with('…'));
        assert_eq!(shown.chars().count(), MAX_LINE_CHARS + 1);
        assert_eq!((caret, len), (MAX_LINE_CHARS, 1));
        // A span on a CRLF line break points past the line's end.
        let crlf = format!("{}\r\nz", "y".repeat(1000));
        let (_, caret, len) = window(&SourceFile::new("t", crlf.clone()), Span::new(1001, 1002));
        assert_eq!((caret, len), (MAX_LINE_CHARS + 1, 1));
        // A span past the end of the text clamps to it.
        let (_, caret, len) = window(
            &SourceFile::new("t", text.clone()),
            Span::new(text.len() + 5, text.len() + 9),
        );
        assert_eq!((caret, len), (MAX_LINE_CHARS + 1, 1));
    }
}
