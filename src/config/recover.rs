//! Reporting every error of a file, not the first: serde stops at the first value of the
//! wrong type, so each such value is reported in plain words, replaced in a working copy by
//! a placeholder of the type asked for, and the copy parsed again, until it parses (or an
//! error leaves nothing to patch: a syntax error, an unknown key). Validation then runs on
//! the patched copy; its findings at a patched value (the placeholder's) are dropped.
//! Offsets in the copy are mapped back to the file's.

use std::ops::Range;

/// A replacement made in the working copy: `at..at + new` there was `old` bytes in the
/// text before it.
struct Edit {
    at: usize,
    old: usize,
    new: usize,
}

/// The working copy and what was replaced in it.
pub struct Patched {
    pub text: String,
    edits: Vec<Edit>,
    /// Patched spans, in the original file.
    pub patched: Vec<Range<usize>>,
}

/// At most this many values are patched (a file of nothing but errors stops somewhere).
const MAX: usize = 100;

impl Patched {
    pub fn new(source: &str) -> Patched {
        Patched {
            text: source.to_string(),
            edits: Vec::new(),
            patched: Vec::new(),
        }
    }

    /// `span` in the working copy, as an offset range in the original file.
    pub fn original(&self, span: Range<usize>) -> Range<usize> {
        let map = |mut pos: usize| {
            for e in self.edits.iter().rev() {
                if pos >= e.at + e.new {
                    pos = pos - e.new + e.old;
                } else if pos > e.at {
                    pos = e.at;
                }
            }
            pos
        };
        map(span.start)..map(span.end)
    }

    /// Replaces the value at `span` (working copy) with a placeholder for the error
    /// `message`; false when the message names no type to make one of.
    pub fn patch(&mut self, span: Range<usize>, message: &str) -> bool {
        let Some(placeholder) = placeholder(message) else {
            return false;
        };
        if self.edits.len() >= MAX || span.end > self.text.len() || span.is_empty() {
            return false;
        }
        if !self.text.is_char_boundary(span.start) || !self.text.is_char_boundary(span.end) {
            return false;
        }
        self.patched.push(self.original(span.clone()));
        self.text.replace_range(span.clone(), &placeholder);
        self.edits.push(Edit {
            at: span.start,
            old: span.len(),
            new: placeholder.len(),
        });
        true
    }

    /// Whether `span` (original file) touches a patched value.
    pub fn at_patch(&self, span: &Range<usize>) -> bool {
        self.patched
            .iter()
            .any(|p| span.start < p.end.max(p.start + 1) && p.start < span.end.max(span.start + 1))
    }
}

/// A value of the type an "invalid type" / "invalid value" message asks for.
fn placeholder(message: &str) -> Option<String> {
    let expected = message.split("expected ").nth(1)?.trim();
    if let Some(variant) = expected.split('`').nth(1) {
        // `unknown variant `htp`, expected `http` or `tcp``: the first one offered.
        return Some(format!("{variant:?}"));
    }
    let p = match kind_of(expected)? {
        Kind::Integer => "0",
        Kind::Float => "0.0",
        Kind::String => "\"\"",
        Kind::Bool => "false",
        Kind::List => "[]",
        Kind::Table => "{}",
    };
    Some(p.to_string())
}

enum Kind {
    Integer,
    Float,
    String,
    Bool,
    List,
    Table,
}

/// The kind of value an "expected …" phrase names (`u32`, `a string`, `a sequence`, …).
fn kind_of(expected: &str) -> Option<Kind> {
    let word = expected.split([' ', ',']).find(|w| !matches!(*w, "a" | "an"))?;
    Some(match word {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" | "integer" => Kind::Integer,
        "f32" | "f64" | "float" | "number" => Kind::Float,
        "string" | "str" | "char" => Kind::String,
        "boolean" | "bool" => Kind::Bool,
        "sequence" | "array" | "list" => Kind::List,
        "map" | "struct" | "table" => Kind::Table,
        _ => return None,
    })
}

/// serde's message in an operator's words: `invalid type: string "two", expected u32` →
/// `expected an integer, found the string "two"`; `key` (the key the value belongs to)
/// tells a duration, which the config writes as a string like "2s".
pub fn plain(message: &str, key: Option<&str>) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.split_once(", expected ") else {
        return message.to_string();
    };
    let found = match found.split_once(' ') {
        Some(("integer" | "floating", v)) => format!("the number {}", v.trim_matches('`').trim_start_matches("point ")),
        Some(("string", v)) => format!("the string {v}"),
        Some(("boolean", v)) => v.trim_matches('`').to_string(),
        _ => found.replace("sequence", "a list").replace("map", "a table"),
    };
    let duration = key.is_some_and(|k| {
        [
            "timeout", "interval", "pause", "grace", "deadline", "period", "ttl", "delay", "window", "drain",
        ]
        .iter()
        .any(|s| k.ends_with(s))
    });
    let want = match kind_of(expected) {
        Some(Kind::String) if duration => "a duration like \"2s\" or \"500ms\" (a string)".to_string(),
        Some(Kind::Integer) => "an integer".to_string(),
        Some(Kind::Float) => "a number".to_string(),
        Some(Kind::String) => "a string".to_string(),
        Some(Kind::Bool) => "true or false".to_string(),
        Some(Kind::List) => "a list [ … ]".to_string(),
        Some(Kind::Table) => "a table { … }".to_string(),
        None => expected.to_string(),
    };
    format!("expected {want}, found {found}")
}

/// The key whose value starts at `at` in `text`: the word before the `=`.
pub fn key_before(text: &str, at: usize) -> Option<&str> {
    let before = text.get(..at)?.trim_end();
    let before = before.strip_suffix('=')?.trim_end();
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |i| i + 1);
    Some(&before[start..]).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words() {
        assert_eq!(
            plain("invalid type: string \"two\", expected u32", Some("retries")),
            "expected an integer, found the string \"two\""
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected a string", Some("connect_timeout")),
            "expected a duration like \"2s\" or \"500ms\" (a string), found the number 5"
        );
        assert_eq!(
            plain("invalid type: integer `7`, expected a string", Some("addr")),
            "expected a string, found the number 7"
        );
        assert_eq!(plain("unknown field `x`", None), "unknown field `x`");
    }

    #[test]
    fn edits_map_back() {
        let mut p = Patched::new("a = \"two\"\nb = 5\n");
        assert!(p.patch(4..9, "invalid type: string \"two\", expected u32"));
        assert_eq!(p.text, "a = 0\nb = 5\n");
        // `b`'s value, at 10 in the copy, is at 14 in the file.
        assert_eq!(p.original(10..11), 14..15);
        assert!(p.at_patch(&(4..9)) && !p.at_patch(&(14..15)));
        assert_eq!(key_before(&p.text, 4), Some("a"));
        assert!(!p.patch(0..1, "expected a unicorn"));
    }
}
