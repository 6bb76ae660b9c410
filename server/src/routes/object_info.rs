//! `/object_info`: weft's node schemas in ComfyUI's shape, so the web UI
//! builds its node library and widgets from them and clients can check
//! class names before queueing.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value as Json_};
use weft_core::{InputSpec, NodeSchema, OutputType, ValueType};
use weft_model_paths::{ModelKind, ModelPaths};

use crate::state::AppState;

pub async fn all(State(state): State<AppState>) -> Json<Json_> {
    let mut out = Map::new();
    for schema in state.registry.schemas() {
        out.insert(schema.type_name.clone(), entry(schema, &state.paths));
    }
    Json(Json_::Object(out))
}

/// One class, `{}` when unknown (a client hangs on a non-JSON 404).
pub async fn one(State(state): State<AppState>, Path(class): Path<String>) -> Json<Json_> {
    let mut out = Map::new();
    if let Some(node) = state.registry.get(&class) {
        out.insert(class, entry(node.schema(), &state.paths));
    }
    Json(Json_::Object(out))
}

/// Which inputs are listed as required: those a node cannot run without,
/// except that once one widget (scalar) input is optional, every later
/// widget is listed as optional too. The frontend lays widgets out
/// required first, then optional, and `widgets_values` are positional:
/// keeping weft's schema order among widgets is what lets
/// [`weft_workflow`] read them back. Inputs with defaults are optional,
/// so clients that check prompts (comfy-cli) never demand weft-only ones.
fn listed_required(inputs: &[InputSpec]) -> Vec<bool> {
    let mut widget_optional = false;
    inputs
        .iter()
        .map(|input| {
            if input.ty.is_scalar() {
                widget_optional |= !input.required;
                !widget_optional
            } else {
                input.required
            }
        })
        .collect()
}

/// The ComfyUI entry for one schema.
pub fn entry(schema: &NodeSchema, paths: &ModelPaths) -> Json_ {
    let mut required = Map::new();
    let mut optional = Map::new();
    let (mut required_order, mut optional_order) = (Vec::new(), Vec::new());
    for (input, required_here) in schema.inputs.iter().zip(listed_required(&schema.inputs)) {
        let spec = input_spec(input, paths);
        if required_here {
            required_order.push(input.name.clone());
            required.insert(input.name.clone(), spec);
        } else {
            optional_order.push(input.name.clone());
            optional.insert(input.name.clone(), spec);
        }
    }
    let outputs: Vec<&str> = schema
        .outputs
        .iter()
        .map(|o| match &o.ty {
            OutputType::Fixed(t) => t.name(),
            OutputType::SameAs(_) => "*",
        })
        .collect();
    let category = if schema.plugin.is_some() {
        format!("plugins/{}", schema.category)
    } else {
        schema.category.clone()
    };
    json!({
        "input": { "required": required, "optional": optional },
        "input_order": { "required": required_order, "optional": optional_order },
        "output": outputs,
        "output_is_list": vec![false; outputs.len()],
        "output_name": schema.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        "output_tooltips": schema.outputs.iter().map(|o| o.doc.clone()).collect::<Vec<_>>(),
        "name": schema.type_name,
        "display_name": schema.type_name,
        "description": schema.doc,
        // The web UI badges `nodes` as core and `custom_nodes.NAME` as a pack.
        "python_module": schema.plugin.as_deref().map_or("nodes".to_string(), |p| format!("custom_nodes.{}", p.split_whitespace().next().unwrap_or("plugin"))),
        "category": category,
        "output_node": schema.output_node,
        "deprecated": false,
        "experimental": false,
    })
}

fn input_spec(input: &InputSpec, paths: &ModelPaths) -> Json_ {
    let mut options = Map::new();
    if !input.doc.is_empty() {
        options.insert("tooltip".into(), json!(input.doc));
    }
    if let Some(default) = &input.default {
        options.insert("default".into(), json!(default));
    }
    let folder_files = input
        .model_folder
        .as_deref()
        .and_then(|f| f.parse::<ModelKind>().ok())
        .map(|kind| {
            paths
                .list(kind)
                .into_iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        });
    if let Some(choices) = folder_files.or_else(|| input.choices.clone()) {
        return json!([choices, options]);
    }
    if let Some(min) = input.min {
        options.insert("min".into(), number(input.ty, min));
    }
    if let Some(max) = input.max {
        options.insert("max".into(), number(input.ty, max));
    }
    match input.ty {
        ValueType::Int => {
            options.insert(
                "step".into(),
                number(ValueType::Int, input.step.unwrap_or(1.0)),
            );
            if matches!(input.name.as_str(), "seed" | "noise_seed") {
                options.insert("control_after_generate".into(), json!(true));
            }
        }
        ValueType::Float => {
            options.insert("step".into(), json!(input.step.unwrap_or(0.01)));
            options.insert("round".into(), json!(false));
        }
        ValueType::String => {
            let multiline = matches!(
                input.name.as_str(),
                "text" | "clip_l" | "clip_g" | "t5xxl" | "prompt"
            );
            options.insert("multiline".into(), json!(multiline));
        }
        _ => {}
    }
    json!([input.ty.name(), options])
}

/// Integers stay integers in JSON (the UI shows `20`, not `20.0`).
fn number(ty: ValueType, x: f64) -> Json_ {
    if ty == ValueType::Int && x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}
