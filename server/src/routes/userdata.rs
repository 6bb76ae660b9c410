//! The frontend's start-up routes: one user (`default`), its settings and
//! its files (saved workflows and the like), kept under `user/default/`.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value as Json_};
use weft_core::atomic::write_atomic;

use crate::security::{empty, error, join_inside, not_found, resolved_inside, Refused};
use crate::state::AppState;

const SETTINGS_FILE: &str = "comfy.settings.json";

fn user_root(state: &AppState) -> PathBuf {
    state.config.dirs.user.join("default")
}

/// A file under the user's folder, refusing escapes.
fn user_path(state: &AppState, relative: &str) -> Result<PathBuf, Refused> {
    let root = user_root(state);
    std::fs::create_dir_all(&root).map_err(|e| Refused(e.to_string()))?;
    let path = join_inside(&root, relative)?;
    if path == root {
        return Err(Refused("a file name is needed".into()));
    }
    resolved_inside(&root, &path)?;
    Ok(path)
}

/// Single-user mode, as ComfyUI without `--multi-user`.
pub async fn users() -> Json<Json_> {
    Json(json!({ "storage": "server", "migrated": true }))
}

pub async fn create_user() -> Json<Json_> {
    Json(json!("default"))
}

fn read_settings(state: &AppState) -> Map<String, Json_> {
    std::fs::read(user_root(state).join(SETTINGS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Json_>(&bytes).ok())
        .and_then(|v| match v {
            Json_::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default()
}

fn write_settings(state: &AppState, settings: &Map<String, Json_>) -> Response {
    let root = user_root(state);
    let text = serde_json::to_vec_pretty(settings).unwrap_or_default();
    match std::fs::create_dir_all(&root)
        .and_then(|_| write_atomic(&root.join(SETTINGS_FILE), &text))
    {
        Ok(()) => empty(StatusCode::OK),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot save settings: {e}"),
        ),
    }
}

pub async fn settings(State(state): State<AppState>) -> Json<Json_> {
    Json(Json_::Object(read_settings(&state)))
}

/// Merges the posted settings into the stored ones.
pub async fn save_settings(State(state): State<AppState>, Json(body): Json<Json_>) -> Response {
    let Json_::Object(update) = body else {
        return error(StatusCode::BAD_REQUEST, "settings must be a JSON object");
    };
    let mut current = read_settings(&state);
    current.extend(update);
    write_settings(&state, &current)
}

pub async fn setting(State(state): State<AppState>, Path(id): Path<String>) -> Json<Json_> {
    Json(read_settings(&state).remove(&id).unwrap_or(Json_::Null))
}

pub async fn save_setting(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(value): Json<Json_>,
) -> Response {
    let mut current = read_settings(&state);
    current.insert(id, value);
    write_settings(&state, &current)
}

#[derive(Deserialize)]
pub struct ListParams {
    dir: String,
    #[serde(default)]
    recurse: Option<String>,
    #[serde(default)]
    full_info: Option<String>,
    #[serde(default)]
    split: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| s == "true" || s == "1")
}

/// `GET /userdata?dir=…`: the files in a user folder, relative to it; 404
/// when the folder does not exist (the frontend reads that as empty).
pub async fn list(State(state): State<AppState>, Query(p): Query<ListParams>) -> Response {
    let dir = match user_path(&state, &p.dir) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    if !dir.is_dir() {
        return not_found(&format!("no user folder {:?}", p.dir));
    }
    let mut files = Vec::new();
    walk(&dir, &dir, flag(&p.recurse), &mut files);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let entries: Vec<Json_> = files
        .into_iter()
        .map(|(rel, meta)| {
            if flag(&p.full_info) {
                json!({ "path": rel, "size": meta.len(), "modified": modified(&meta) })
            } else if flag(&p.split) {
                let mut parts: Vec<Json_> = vec![json!(rel)];
                parts.extend(rel.split('/').map(|s| json!(s)));
                Json_::Array(parts)
            } else {
                json!(rel)
            }
        })
        .collect();
    Json(entries).into_response()
}

#[derive(Deserialize)]
pub struct ListV2Params {
    #[serde(default)]
    path: String,
}

/// `GET /v2/userdata?path=…`: one folder's entries with their kinds.
pub async fn list_v2(State(state): State<AppState>, Query(p): Query<ListV2Params>) -> Response {
    let root = user_root(&state);
    let _ = std::fs::create_dir_all(&root);
    let dir = if p.path.is_empty() {
        root.clone()
    } else {
        match user_path(&state, &p.path) {
            Ok(d) => d,
            Err(r) => return r.into_response(),
        }
    };
    let Ok(read) = std::fs::read_dir(&dir) else {
        return not_found(&format!("no user folder {:?}", p.path));
    };
    let mut entries: Vec<Json_> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            let rel = e.path().strip_prefix(&root).ok()?.to_str()?.to_string();
            Some(json!({
                "name": name,
                "path": rel,
                "type": if meta.is_dir() { "directory" } else { "file" },
                "size": if meta.is_dir() { Json_::Null } else { json!(meta.len()) },
                "modified": modified(&meta),
            }))
        })
        .collect();
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Json(entries).into_response()
}

fn modified(meta: &std::fs::Metadata) -> f64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Files below `dir` (not following symlinked folders), `/`-separated.
fn walk(root: &FsPath, dir: &FsPath, recurse: bool, out: &mut Vec<(String, std::fs::Metadata)>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            if recurse {
                walk(root, &path, true, out);
            }
        } else if kind.is_file() {
            let (Ok(rel), Ok(meta)) = (path.strip_prefix(root), entry.metadata()) else {
                continue;
            };
            if let Some(rel) = rel.to_str() {
                out.push((rel.replace('\\', "/"), meta));
            }
        }
    }
}

pub async fn read(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let path = match user_path(&state, &file) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => not_found(&format!("no user file {file:?}")),
    }
}

#[derive(Deserialize)]
pub struct WriteParams {
    overwrite: Option<String>,
    full_info: Option<String>,
}

/// Saves a user file atomically; `overwrite=false` refuses to replace one.
pub async fn write(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(p): Query<WriteParams>,
    body: Bytes,
) -> Response {
    let path = match user_path(&state, &file) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let overwrite = p
        .overwrite
        .as_deref()
        .is_none_or(|v| v != "false" && v != "0");
    if !overwrite && path.exists() {
        return error(StatusCode::CONFLICT, &format!("{file:?} exists"));
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = write_atomic(&path, &body) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot save {file:?}: {e}"),
        );
    }
    info_reply(&file, &path, flag(&p.full_info))
}

fn info_reply(rel: &str, path: &FsPath, full: bool) -> Response {
    if full {
        let meta = std::fs::metadata(path).ok();
        Json(json!({
            "path": rel,
            "size": meta.as_ref().map_or(0, |m| m.len()),
            "modified": meta.as_ref().map_or(0.0, modified),
        }))
        .into_response()
    } else {
        Json(json!(rel)).into_response()
    }
}

pub async fn delete(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let path = match user_path(&state, &file) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match std::fs::remove_file(&path) {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(_) => not_found(&format!("no user file {file:?}")),
    }
}

pub async fn rename(
    State(state): State<AppState>,
    Path((file, dest)): Path<(String, String)>,
    Query(p): Query<WriteParams>,
) -> Response {
    let (from, to) = match (user_path(&state, &file), user_path(&state, &dest)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let overwrite = p
        .overwrite
        .as_deref()
        .is_none_or(|v| v != "false" && v != "0");
    if !overwrite && to.exists() {
        return error(StatusCode::CONFLICT, &format!("{dest:?} exists"));
    }
    if let Some(parent) = to.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::rename(&from, &to) {
        Ok(()) => info_reply(&dest, &to, flag(&p.full_info)),
        Err(_) => not_found(&format!("no user file {file:?}")),
    }
}
