//! `/queue`, `/history`, `/interrupt` and `/free`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::Value as Json_;

use crate::security::empty;
use crate::state::AppState;

pub async fn get_queue(State(state): State<AppState>) -> Json<Json_> {
    Json(state.queue.snapshot())
}

/// `{clear: true}` and/or `{delete: [ids]}`, as ComfyUI's body.
#[derive(Deserialize, Default)]
pub struct Edit {
    #[serde(default)]
    clear: bool,
    #[serde(default)]
    delete: Vec<String>,
}

pub async fn edit_queue(State(state): State<AppState>, body: Option<Json<Edit>>) -> Response {
    let Json(edit) = body.unwrap_or_default();
    if edit.clear {
        state.queue.clear_pending();
    }
    if !edit.delete.is_empty() {
        state.queue.delete_pending(&edit.delete);
    }
    state.clients.status(state.queue.remaining());
    empty(StatusCode::OK)
}

#[derive(Deserialize, Default)]
pub struct InterruptBody {
    prompt_id: Option<String>,
}

pub async fn interrupt(
    State(state): State<AppState>,
    body: Option<Json<InterruptBody>>,
) -> Response {
    let id = body.and_then(|Json(b)| b.prompt_id);
    state.queue.interrupt(id.as_deref());
    empty(StatusCode::OK)
}

/// `{unload_models, free_memory}`: either drops loaded models and cached
/// results before the next prompt.
#[derive(Deserialize, Default)]
pub struct FreeBody {
    #[serde(default)]
    unload_models: bool,
    #[serde(default)]
    free_memory: bool,
}

pub async fn free(State(state): State<AppState>, body: Option<Json<FreeBody>>) -> Response {
    let Json(body) = body.unwrap_or_default();
    if body.unload_models || body.free_memory {
        state.queue.request_free();
    }
    empty(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct HistoryParams {
    max_items: Option<usize>,
    #[serde(default)]
    offset: usize,
}

pub async fn get_history(
    State(state): State<AppState>,
    Query(params): Query<HistoryParams>,
) -> Json<Json_> {
    Json(state.queue.history(params.max_items, params.offset))
}

pub async fn get_history_of(State(state): State<AppState>, Path(id): Path<String>) -> Json<Json_> {
    Json(state.queue.history_of(&id))
}

pub async fn edit_history(State(state): State<AppState>, body: Option<Json<Edit>>) -> Response {
    let Json(edit) = body.unwrap_or_default();
    if edit.clear {
        state.queue.clear_history();
    }
    if !edit.delete.is_empty() {
        state.queue.delete_history(&edit.delete);
    }
    empty(StatusCode::OK)
}
