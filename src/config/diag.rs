//! Config diagnostics: an error message anchored to a byte span of a file, rendered
//! rustc-style (by `annotate-snippets`) under a first line `file:line:col: message`, the
//! form tests, editors and log readers parse.
//!
//! Every config error veer reports goes through [`Diagnostic`], so `veer check`, a failed
//! reload in the log and (later) the admin `reload` answer all name the same location.

use std::fmt;
use std::ops::Range;
use std::path::Path;

/// One config error with its location (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The byte range it points at in the source, when it points at one.
    pub span: Option<Range<usize>>,
    /// The source line the error points at, and the caret range within it.
    snippet: Option<(String, Range<usize>)>,
}

/// `offset` moved back to a character boundary within `source`.
fn floor_char(source: &str, offset: usize) -> usize {
    let mut i = offset.min(source.len());
    while !source.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let start = floor_char(source, offset);
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    (
        source[..start].matches('\n').count() + 1,
        source[line_start..start].chars().count() + 1,
    )
}

impl Diagnostic {
    /// Locates `span` (byte offsets) inside `source`.
    pub fn at(file: &Path, source: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = floor_char(source, span.start);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..].find('\n').map_or(source.len(), |i| start + i);
        let (line, col) = line_col(source, start);
        let text = source[line_start..line_end].trim_end_matches('\r').to_string();
        let caret_start = col - 1;
        let caret_len = source[start..span.end.clamp(start, line_end)].chars().count().max(1);
        Diagnostic {
            file: file.display().to_string(),
            line,
            col,
            message: message.into(),
            span: Some(span),
            snippet: Some((text, caret_start..caret_start + caret_len)),
        }
    }

    /// An error about the file as a whole (unreadable, say): reported at 1:1.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.display().to_string(),
            line: 1,
            col: 1,
            message: message.into(),
            span: None,
            snippet: None,
        }
    }

    /// `file:line:col: message`, then the source line with a caret under the span
    /// (annotate-snippets' rendering, without its own title line: ours leads).
    pub fn render(&self) -> String {
        use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};
        let mut out = self.to_string();
        if let Some((text, carets)) = &self.snippet {
            // The caret range is in characters; the renderer wants bytes of `text`.
            let byte = |chars: usize| text.char_indices().nth(chars).map_or(text.len(), |(i, _)| i);
            let span = byte(carets.start)..byte(carets.end).max(byte(carets.start));
            let report = [Level::ERROR.primary_title(&self.message).element(
                Snippet::source(text.as_str())
                    .line_start(self.line)
                    .path(self.file.as_str())
                    .annotation(AnnotationKind::Primary.span(span)),
            )];
            let rendered = Renderer::plain().render(&report);
            // Line 1 is annotate-snippets' "error: …" title, line 2 its "--> file:line:col".
            for line in rendered.lines().skip(2) {
                out.push('\n');
                out.push_str(line);
            }
        }
        out
    }
}

/// `file:line:col: message` — the one-line form used in logs and admin answers.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// All errors found in one config file; never empty.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl ConfigErrors {
    /// Every diagnostic, rendered with its snippet, separated by blank lines.
    pub fn render(&self) -> String {
        self.0.iter().map(Diagnostic::render).collect::<Vec<_>>().join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let src = "a = 1\nbb = \"x\"\n";
        let d = Diagnostic::at(Path::new("f.toml"), src, 11..14, "bad");
        assert_eq!((d.line, d.col), (2, 6));
        assert_eq!(d.to_string(), "f.toml:2:6: bad");
        assert!(d.render().ends_with("2 | bb = \"x\"\n  |      ^^^"), "{}", d.render());
    }

    #[test]
    fn the_caret_counts_characters_not_bytes() {
        let src = "k = \"\u{e9}\u{e9}\" zz\n";
        let at = src.len() - "zz\n".len();
        let d = Diagnostic::at(Path::new("f.toml"), src, at..at + 2, "bad");
        assert_eq!((d.line, d.col), (1, 10));
        let shown = d.render();
        assert!(shown.starts_with("f.toml:1:10: bad\n"), "{shown}");
        assert!(
            shown.ends_with(&format!("1 | k = \"\u{e9}\u{e9}\" zz\n  | {}^^", " ".repeat(9))),
            "{shown}"
        );
    }
}
