//! Information routes: `/system_stats`, `/embeddings`, `/extensions`,
//! `/models`, `/models/{folder}` and `/features`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use weft_model_paths::ModelKind;

use crate::security::not_found;
use crate::state::AppState;

/// The ComfyUI version weft answers to: the server API of the 1.2x
/// frontends (ComfyUI 0.3.6x).
pub const COMFYUI_VERSION: &str = "0.3.60";

pub async fn stats(State(state): State<AppState>) -> Json<Json_> {
    let total = total_memory();
    let free = available_memory();
    Json(json!({
        "system": {
            "os": std::env::consts::OS,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": COMFYUI_VERSION,
            "weft_version": env!("CARGO_PKG_VERSION"),
            "python_version": "none (weft is written in Rust)",
            "pytorch_version": "none",
            "embedded_python": false,
            "argv": std::env::args().collect::<Vec<_>>(),
            "required_frontend_version": "1.20.0",
        },
        "devices": [{
            "name": "cpu",
            "type": "cpu",
            "index": 0,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
            "max_ram_bytes": state.config.max_ram_bytes,
        }],
    }))
}

/// Physical memory from `/proc/meminfo`, 0 where it cannot be read.
fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let rest = line.strip_prefix(key)?.trim_start_matches(':').trim();
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

fn total_memory() -> u64 {
    meminfo("MemTotal")
}

fn available_memory() -> u64 {
    meminfo("MemAvailable")
}

/// Textual-inversion names, as prompts write them (`embedding:name`).
pub async fn embeddings(State(state): State<AppState>) -> Json<Vec<String>> {
    let names = state
        .paths
        .list(ModelKind::Embeddings)
        .into_iter()
        .map(|f| match f.name.rsplit_once('.') {
            Some((stem, _)) => stem.to_string(),
            None => f.name,
        })
        .collect();
    Json(names)
}

/// Frontend extensions: weft ships none.
pub async fn extensions() -> Json<Vec<String>> {
    Json(Vec::new())
}

pub async fn model_folders() -> Json<Vec<&'static str>> {
    Json(ModelKind::ALL.iter().map(|k| k.name()).collect())
}

pub async fn models_in(State(state): State<AppState>, Path(folder): Path<String>) -> Response {
    let kind = ModelKind::ALL
        .iter()
        .copied()
        .find(|k| k.name() == folder || k.folder_names().contains(&folder.as_str()));
    match kind {
        Some(kind) => {
            let names: Vec<String> = state.paths.list(kind).into_iter().map(|f| f.name).collect();
            Json(names).into_response()
        }
        None => not_found(&format!("no model folder `{folder}`")),
    }
}

pub async fn features(State(state): State<AppState>) -> Json<Json_> {
    Json(json!({
        "supports_preview_metadata": false,
        "max_upload_size": state.config.limits.upload_bytes,
    }))
}

/// Routes the web UI asks for and is content to find empty: translations
/// beyond its own (`/i18n`) and custom-node templates.
pub async fn empty_object() -> Json<Json_> {
    Json(json!({}))
}
