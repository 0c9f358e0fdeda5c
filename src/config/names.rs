//! What a name (listener, backend, group, server) may contain: HAProxy's rule, checked by
//! the config and by `add server` alike.

/// The first character HAProxy would refuse in a name (it allows letters, digits, `-`,
/// `_`, `.` and `:`): names appear in CSV rows, in `backend/server` and `group=weight`
/// arguments and in metric labels, where anything else breaks a parser.
pub fn invalid_char(name: &str) -> Option<char> {
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
}
