//! The rules every route obeys: who may call (a bearer token when exposed),
//! where calls may come from (no cross-site requests from a browser), and
//! where files may be read or written (inside their folder, always).
//!
//! ComfyUI has no authentication and its file routes have had traversal
//! bugs; these checks run before any handler sees a request.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The cookie a browser gets after opening `/?token=…` once, so the web UI's
/// own requests and its websocket (which cannot set headers) are authorised.
pub const TOKEN_COOKIE: &str = "weft_token";

/// Rejects requests without the token (when one is set) and cross-origin
/// browser requests.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(problem) = cross_origin(request.headers()) {
        return error(StatusCode::FORBIDDEN, &problem);
    }
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let from_query = query_token(request.uri().query());
    let presented = bearer(request.headers())
        .or_else(|| cookie(request.headers()))
        .or(from_query.clone());
    if !presented.is_some_and(|t| same(t.as_bytes(), expected.as_bytes())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this server needs its token: `Authorization: Bearer TOKEN`, or open /?token=TOKEN once in a browser",
        );
    }
    let mut response = next.run(request).await;
    if from_query.is_some() {
        let cookie = format!("{TOKEN_COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A JSON error body, which every client here can parse.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": { "type": "weft", "message": message } })),
    )
        .into_response()
}

/// A browser request from a page of another host: `Origin` names a host
/// other than the one the request was sent to. Scripts send no `Origin`.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let origin_host = origin_host.trim_end_matches('/');
    match host {
        Some(host) if host.eq_ignore_ascii_case(origin_host) => None,
        _ => Some(format!(
            "cross-origin request refused: Origin {origin} does not match Host {}",
            host.unwrap_or("(none)")
        )),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then(|| value.to_string())
        })
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_string)
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a requested file name was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// `base/relative`, where `relative` (a subfolder and name from a client)
/// may only name things below `base`: no `..`, no absolute path, no drive
/// or root, no empty or NUL-carrying part.
pub fn join_inside(base: &Path, relative: &str) -> Result<PathBuf, Refused> {
    if relative.contains('\0') || relative.contains('\\') {
        return Err(Refused(format!("invalid path {relative:?}")));
    }
    let mut path = base.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => {
                return Err(Refused(format!(
                    "path {relative:?} must stay inside its folder (no `..`, no absolute path)"
                )))
            }
        }
    }
    Ok(path)
}

/// Checks that `path`, once symlinks are resolved, is still inside `base`
/// (which must exist). A missing `path` is judged by its nearest existing
/// ancestor, so a write cannot be steered out through a linked folder.
pub fn resolved_inside(base: &Path, path: &Path) -> Result<(), Refused> {
    let base = base
        .canonicalize()
        .map_err(|e| Refused(format!("folder {} is unavailable: {e}", base.display())))?;
    let mut probe = path;
    let resolved = loop {
        match probe.canonicalize() {
            Ok(p) => break p,
            Err(_) => match probe.parent() {
                Some(parent) => probe = parent,
                None => return Err(Refused("path outside its folder".into())),
            },
        }
    };
    if resolved.starts_with(&base) {
        Ok(())
    } else {
        Err(Refused("path leads outside its folder".into()))
    }
}

/// A plain JSON 404, since one client hangs on a non-JSON reply.
pub fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, what)
}

/// An empty body with `status`.
pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_refuse_escapes() {
        let base = Path::new("/srv/out");
        assert_eq!(
            join_inside(base, "a/b.png").unwrap(),
            Path::new("/srv/out/a/b.png")
        );
        assert_eq!(join_inside(base, "./x.png").unwrap(), base.join("x.png"));
        for bad in ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a\0b", ".."] {
            assert!(join_inside(base, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn symlinks_out_of_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("out");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("key.txt"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, base.join("link")).unwrap();
        std::fs::write(base.join("ok.txt"), "y").unwrap();
        assert!(resolved_inside(&base, &base.join("ok.txt")).is_ok());
        assert!(resolved_inside(&base, &base.join("new/file.txt")).is_ok());
        assert!(resolved_inside(&base, &base.join("link/key.txt")).is_err());
        assert!(resolved_inside(&base, &base.join("link/new.txt")).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert_eq!(query_token(Some("a=1&token=xyz")), Some("xyz".into()));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8188".parse().unwrap());
        headers.insert(header::ORIGIN, "http://127.0.0.1:8188".parse().unwrap());
        assert_eq!(cross_origin(&headers), None);
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(cross_origin(&headers).is_some());
    }
}
