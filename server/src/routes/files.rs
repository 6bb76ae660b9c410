//! `/view` and the uploads: files in the output, input and temp folders,
//! never outside them.

use std::path::PathBuf;

use axum::extract::{Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use weft_core::atomic::write_atomic;

use crate::security::{error, join_inside, not_found, resolved_inside, Refused};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ViewParams {
    filename: String,
    #[serde(default)]
    subfolder: String,
    #[serde(rename = "type", default = "output")]
    kind: String,
}

fn output() -> String {
    "output".into()
}

/// The folder a `type` names.
fn folder(state: &AppState, kind: &str) -> Result<PathBuf, Refused> {
    let dirs = &state.config.dirs;
    match kind {
        "output" => Ok(dirs.output.clone()),
        "input" => Ok(dirs.input.clone()),
        "temp" => Ok(dirs.temp.clone()),
        other => Err(Refused(format!(
            "type {other:?} is not one of output, input, temp"
        ))),
    }
}

/// `subfolder/filename` inside the `type`'s folder, after symlinks.
fn locate(
    state: &AppState,
    kind: &str,
    subfolder: &str,
    filename: &str,
) -> Result<PathBuf, Refused> {
    if filename.is_empty() || filename.contains('/') {
        return Err(Refused(format!("invalid file name {filename:?}")));
    }
    let base = folder(state, kind)?;
    let dir = join_inside(&base, subfolder)?;
    let path = join_inside(&dir, filename)?;
    std::fs::create_dir_all(&base).map_err(|e| Refused(e.to_string()))?;
    resolved_inside(&base, &path)?;
    Ok(path)
}

pub async fn view(State(state): State<AppState>, Query(p): Query<ViewParams>) -> Response {
    let path = match locate(&state, &p.kind, &p.subfolder, &p.filename) {
        Ok(path) => path,
        Err(refused) => return refused.into_response(),
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&p.filename)),
                (header::CONTENT_DISPOSITION, "inline"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => not_found(&format!("no file {:?} in {}", p.filename, p.kind)),
    }
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// An upload's fields: the file and where it goes.
struct Upload {
    /// The `image` field's file name and bytes.
    file: (String, Vec<u8>),
    kind: Option<String>,
    subfolder: String,
    overwrite: bool,
    original_ref: Option<String>,
}

async fn read_upload(mut multipart: Multipart) -> Result<Upload, Response> {
    // Too large is 413, anything else malformed 400.
    let bad = |e: axum::extract::multipart::MultipartError| error(e.status(), &e.body_text());
    let mut file = None;
    let mut upload = Upload {
        file: (String::new(), Vec::new()),
        kind: None,
        subfolder: String::new(),
        overwrite: false,
        original_ref: None,
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(bad)?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "image" => file = Some((filename.unwrap_or_default(), bytes.to_vec())),
            "type" => upload.kind = Some(text()),
            "subfolder" => upload.subfolder = text(),
            "overwrite" => upload.overwrite = matches!(text().as_str(), "true" | "1"),
            "original_ref" => upload.original_ref = Some(text()),
            _ => {}
        }
    }
    upload.file = file.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "the form needs an `image` file field",
        )
    })?;
    Ok(upload)
}

/// Writes `bytes` as `name` (made unique unless `overwrite`) and replies
/// `{name, subfolder, type}`.
fn store(state: &AppState, upload: &Upload, name: &str, bytes: &[u8]) -> Response {
    let kind = upload.kind.clone().unwrap_or_else(|| "input".into());
    let base_name = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let mut final_name = base_name.clone();
    let mut path = match locate(state, &kind, &upload.subfolder, &final_name) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    if !upload.overwrite {
        let (stem, ext) = match base_name.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), format!(".{e}")),
            None => (base_name.clone(), String::new()),
        };
        let mut i = 1;
        while path.exists() {
            final_name = format!("{stem} ({i}){ext}");
            path = path.with_file_name(&final_name);
            i += 1;
        }
    }
    if let Some(parent) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    if let Err(e) = write_atomic(&path, bytes) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot save: {e}"),
        );
    }
    Json(json!({ "name": final_name, "subfolder": upload.subfolder, "type": kind })).into_response()
}

/// `POST /upload/image` (multipart `image`, `type`, `subfolder`, `overwrite`).
pub async fn upload_image(State(state): State<AppState>, multipart: Multipart) -> Response {
    let upload = match read_upload(multipart).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (name, bytes) = &upload.file;
    if image::guess_format(bytes).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "the upload is not an image weft can read",
        );
    }
    store(&state, &upload, name, bytes)
}

/// `POST /upload/mask`: the mask's alpha becomes the alpha of the image
/// named by `original_ref` (`{filename, subfolder, type}`), saved as PNG.
pub async fn upload_mask(State(state): State<AppState>, multipart: Multipart) -> Response {
    let upload = match read_upload(multipart).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (name, bytes) = &upload.file;
    let Some(original) = upload
        .original_ref
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "the form needs `original_ref`: JSON {filename, subfolder, type}",
        );
    };
    let field = |k: &str| original.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let kind = if field("type").is_empty() {
        "input"
    } else {
        field("type")
    };
    let source = match locate(&state, kind, field("subfolder"), field("filename")) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let combined = tokio::task::spawn_blocking({
        let bytes = bytes.clone();
        move || -> Result<Vec<u8>, String> {
            let mut base = image::open(&source)
                .map_err(|e| format!("cannot read the original image: {e}"))?
                .to_rgba8();
            let mask = image::load_from_memory(&bytes)
                .map_err(|e| format!("cannot read the mask: {e}"))?
                .to_rgba8();
            if mask.dimensions() != base.dimensions() {
                return Err(format!(
                    "the mask is {:?}, the image {:?}",
                    mask.dimensions(),
                    base.dimensions()
                ));
            }
            for (px, m) in base.pixels_mut().zip(mask.pixels()) {
                px.0[3] = m.0[3];
            }
            let mut out = std::io::Cursor::new(Vec::new());
            base.write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| e.to_string())?;
            Ok(out.into_inner())
        }
    })
    .await;
    match combined {
        Ok(Ok(png)) => store(&state, &upload, name, &png),
        Ok(Err(message)) => error(StatusCode::BAD_REQUEST, &message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
