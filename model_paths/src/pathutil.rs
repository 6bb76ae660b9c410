//! Small path helpers: `~`/environment expansion and lexical clean-up.
//!
//! Environment access goes through a lookup function so tests can supply
//! their own variables instead of mutating the process environment.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Reads a variable: the process environment, or a test's stand-in.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment as a [`Lookup`].
pub(crate) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The user's home folder (`HOME`, or `USERPROFILE` on Windows).
pub(crate) fn home_dir(env: Lookup) -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    env(var).filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// Expands a leading `~` and `$NAME` / `${NAME}` (and `%NAME%` on Windows)
/// the way ComfyUI's yaml loader does; unknown variables are left as written.
pub(crate) fn expand(s: &str, env: Lookup) -> PathBuf {
    let vars = expand_vars(s, env);
    let tilde = vars == "~" || vars.starts_with("~/") || vars.starts_with("~\\");
    match home_dir(env) {
        Some(home) if tilde => {
            let rest = vars[1..].trim_start_matches(['/', '\\']);
            if rest.is_empty() {
                home
            } else {
                home.join(rest)
            }
        }
        _ => PathBuf::from(vars),
    }
}

fn expand_vars(s: &str, env: Lookup) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['$', '%']) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if rest.as_bytes()[i] == b'%' {
            if !cfg!(windows) {
                (None, 0)
            } else {
                match after.find('%') {
                    Some(end) if is_var_name(&after[..end]) => (Some(&after[..end]), end + 1),
                    _ => (None, 0),
                }
            }
        } else if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if is_var_name(&braced[..end]) => (Some(&braced[..end]), end + 2),
                _ => (None, 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (Some(&after[..end]).filter(|n| is_var_name(n)), end)
        };
        match name.and_then(env) {
            Some(value) => out.push_str(&value.to_string_lossy()),
            None => out.push_str(&rest[i..i + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

fn is_var_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Makes `path` absolute against `base` (or the working directory) and
/// removes `.`/`..` lexically, as ComfyUI's `os.path.abspath` does, so the
/// same folder reached two ways is recognised as one.
pub(crate) fn absolute(path: &Path, base: Option<&Path>) -> PathBuf {
    let joined = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let abs = std::path::absolute(&joined).unwrap_or(joined);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Splits a workflow's model name into plain components, accepting `/` and
/// `\`. Returns `None` when the name would leave its folder (`..` past the
/// top, a root, a drive) — such names are refused inside kind folders.
pub(crate) fn contained(name: &str) -> Option<PathBuf> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => {
                let mut comps = Path::new(part).components();
                match (comps.next(), comps.next()) {
                    (Some(Component::Normal(_)), None) => parts.push(part),
                    _ => return None,
                }
            }
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.iter().collect())
}

/// A name as a relative path with the platform's separators (`\` accepted).
pub(crate) fn relative(name: &str) -> PathBuf {
    name.split(['/', '\\']).filter(|p| !p.is_empty()).collect()
}
