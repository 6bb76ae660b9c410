//! `POST /prompt` validates an API-format prompt with weft's full checks
//! and queues it; `GET /prompt` is the queue size (a readiness probe).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as Json_};
use weft_core::Diagnostics;

use crate::queue::Job;
use crate::state::AppState;

pub async fn summary(State(state): State<AppState>) -> Json<Json_> {
    Json(json!({ "exec_info": { "queue_remaining": state.queue.remaining() } }))
}

pub async fn queue_prompt(State(state): State<AppState>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t.to_string(),
        Err(e) => return invalid("invalid_prompt", &format!("the body is not UTF-8: {e}")),
    };
    let request: Json_ = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return invalid("invalid_prompt", &format!("the body is not JSON: {e}")),
    };
    let Some(prompt) = request.get("prompt").filter(|p| p.is_object()) else {
        return invalid(
            "no_prompt",
            "the body needs `prompt`: an object of nodes {id: {class_type, inputs}}",
        );
    };
    let graph = match weft_workflow::prompt_to_graph(&text, &state.registry) {
        Ok(doc) => doc,
        Err(diagnostics) => return rejected(&diagnostics, prompt),
    };
    let valid = match weft_core::validate(graph, &state.registry) {
        Ok(valid) => valid,
        Err(diagnostics) => return rejected(&diagnostics, prompt),
    };
    let targets: Vec<String> = match request.get("partial_execution_targets") {
        Some(Json_::Array(ids)) => ids
            .iter()
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect(),
        _ => valid
            .output_nodes()
            .into_iter()
            .map(|i| valid.nodes[i].id.clone())
            .collect(),
    };
    if targets.is_empty() {
        return invalid(
            "prompt_no_outputs",
            "Prompt has no outputs: add an output node such as SaveImage or PreviewImage",
        );
    }
    if let Some(missing) = targets.iter().find(|t| valid.index_of(t).is_none()) {
        return invalid(
            "prompt_outputs_failed_validation",
            &format!("partial_execution_targets names `{missing}`, which is not in the prompt"),
        );
    }
    let id = request
        .get("prompt_id")
        .and_then(Json_::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let front = request
        .get("front")
        .and_then(Json_::as_bool)
        .unwrap_or(false);
    let number = state
        .queue
        .number(request.get("number").and_then(Json_::as_i64), front);
    let client_id = request
        .get("client_id")
        .and_then(Json_::as_str)
        .map(str::to_string);
    state.queue.push(Job {
        number,
        id: id.clone(),
        graph: Arc::new(valid),
        prompt: prompt.clone(),
        extra_data: request.get("extra_data").cloned().unwrap_or(json!({})),
        client_id,
        targets,
    });
    state.clients.status(state.queue.remaining());
    Json(json!({ "prompt_id": id, "number": number, "node_errors": {} })).into_response()
}

/// A 400 with ComfyUI's `{error, node_errors}` and no node errors.
fn invalid(kind: &str, message: &str) -> Response {
    let body = json!({
        "error": { "type": kind, "message": message, "details": "", "extra_info": {} },
        "node_errors": {},
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// A 400 carrying weft's diagnostics: each under its ComfyUI node id, with
/// `details` giving the position in the request body.
fn rejected(diagnostics: &Diagnostics, prompt: &Json_) -> Response {
    let mut node_errors: Map<String, Json_> = Map::new();
    let mut general = Vec::new();
    for d in &diagnostics.items {
        let at = diagnostics
            .location(d)
            .map(|lc| format!("{}:{lc}", diagnostics.source.name()))
            .unwrap_or_default();
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message = format!("{message} ({help})");
        }
        let error = json!({
            "type": "weft_validation",
            "message": message,
            "details": at,
            "extra_info": { "input_name": d.input },
        });
        match &d.node {
            Some(node) => {
                let entry = node_errors.entry(node.clone()).or_insert_with(|| {
                    json!({
                        "errors": [],
                        "dependent_outputs": [],
                        "class_type": prompt.get(node).and_then(|n| n.get("class_type")).cloned().unwrap_or(Json_::Null),
                    })
                });
                if let Some(list) = entry["errors"].as_array_mut() {
                    list.push(error);
                }
            }
            None => general.push(error),
        }
    }
    let summary = diagnostics.to_string();
    let body = json!({
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": summary.trim_end(),
            "extra_info": { "errors": general },
        },
        "node_errors": node_errors,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}
