//! ComfyUI's API format: `{id: {class_type, inputs, _meta: {title}}}`, as
//! saved by "Export (API)" and sent to `POST /prompt`, where it is wrapped
//! as `{prompt, client_id, extra_data, front, number}`.

use weft_core::{Diagnostic, Span, Spanned, Value};

use crate::json::Json;
use crate::prompt::{PromptInput, PromptNode, PromptValue};

/// The part of a `/prompt` body that is not the prompt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestFields {
    pub client_id: Option<String>,
    /// Queue at the front instead of the back.
    pub front: bool,
    /// An explicit queue position.
    pub number: Option<f64>,
    /// Passed through untouched (ComfyUI puts the UI workflow here, under
    /// `extra_pnginfo.workflow`).
    pub extra_data: Option<serde_json::Value>,
}

/// Whether `root` is a `/prompt` body rather than a bare prompt: it has a
/// `prompt` object that is not itself a node (a node has `class_type`).
pub fn is_request(root: &Json) -> bool {
    root.get("prompt")
        .is_some_and(|p| matches!(p.value, Json::Object(_)) && p.value.get("class_type").is_none())
}

/// Splits a `/prompt` body into its prompt and the other fields.
pub fn split_request<'a>(
    root: &'a Spanned<Json>,
    errors: &mut Vec<Diagnostic>,
) -> (&'a Spanned<Json>, RequestFields) {
    let mut fields = RequestFields::default();
    let Some(prompt) = root.value.get("prompt") else {
        return (root, fields);
    };
    match root.value.get("client_id").map(|c| &c.value) {
        None | Some(Json::Null) => {}
        Some(Json::Str(s)) => fields.client_id = Some(s.clone()),
        Some(other) => errors.push(Diagnostic::new(
            format!("`client_id` must be a string, found {}", other.kind()),
            root.value.get("client_id").map_or(root.span, |c| c.span),
        )),
    }
    if let Some(front) = root.value.get("front") {
        match front.value {
            Json::Bool(b) => fields.front = b,
            Json::Null => {}
            ref other => errors.push(Diagnostic::new(
                format!("`front` must be a boolean, found {}", other.kind()),
                front.span,
            )),
        }
    }
    if let Some(number) = root.value.get("number") {
        match number.value {
            Json::Int(i) => fields.number = Some(i as f64),
            Json::Float(x) => fields.number = Some(x),
            Json::Null => {}
            ref other => errors.push(Diagnostic::new(
                format!("`number` must be a number, found {}", other.kind()),
                number.span,
            )),
        }
    }
    fields.extra_data = root.value.get("extra_data").map(|e| to_serde(&e.value));
    (prompt, fields)
}

/// Reads the nodes of a bare API-format prompt.
pub fn read_prompt(root: &Spanned<Json>, errors: &mut Vec<Diagnostic>) -> Vec<PromptNode> {
    let Json::Object(_) = root.value else {
        errors.push(Diagnostic::new(
            format!(
                "a ComfyUI prompt is an object of nodes `{{\"3\": {{\"class_type\": …, \"inputs\": {{…}}}}}}`, found {}",
                root.value.kind()
            ),
            root.span,
        ));
        return Vec::new();
    };
    let entries = root.value.entries();
    let mut nodes = Vec::with_capacity(entries.len());
    for (id, body) in entries {
        if let Some(node) = read_node(id, body, errors) {
            nodes.push(node);
        }
    }
    nodes
}

fn read_node(
    id: &Spanned<String>,
    body: &Spanned<Json>,
    errors: &mut Vec<Diagnostic>,
) -> Option<PromptNode> {
    let mut fail = |message: String, span: Span| {
        errors.push(Diagnostic::new(message, span).node(&id.value));
        None
    };
    let Json::Object(_) = body.value else {
        return fail(
            format!(
                "node {}: expected an object, found {}",
                id.value,
                body.value.kind()
            ),
            body.span,
        );
    };
    let title = body
        .value
        .get("_meta")
        .and_then(|m| m.value.get("title"))
        .and_then(|t| t.value.as_str())
        .map(str::to_string);
    let named = match &title {
        Some(t) => format!("node {} “{t}”", id.value),
        None => format!("node {}", id.value),
    };
    let class_type = match body.value.get("class_type") {
        Some(Spanned {
            value: Json::Str(s),
            span,
        }) => Spanned::new(s.clone(), *span),
        Some(other) => {
            return fail(
                format!(
                    "{named}: `class_type` must be a string, found {}",
                    other.value.kind()
                ),
                other.span,
            )
        }
        None => return fail(format!("{named} has no `class_type`"), body.span),
    };
    let mut inputs = Vec::new();
    match body.value.get("inputs") {
        None => {}
        Some(Spanned {
            value: Json::Object(_),
            span: _,
        }) => {
            let object = &body.value.get("inputs").expect("just matched").value;
            for (name, value) in object.entries() {
                let value = match input_value(value) {
                    Ok(Some(v)) => v,
                    Ok(None) => continue,
                    Err(message) => {
                        errors.push(
                            Diagnostic::new(format!("{named}: {message}"), value.span)
                                .node(&id.value)
                                .input(&name.value),
                        );
                        continue;
                    }
                };
                inputs.push(PromptInput {
                    name: name.clone(),
                    value,
                });
            }
        }
        Some(other) => {
            return fail(
                format!(
                    "{named}: `inputs` must be an object, found {}",
                    other.value.kind()
                ),
                other.span,
            )
        }
    }
    Some(PromptNode {
        id: id.clone(),
        class_type,
        title,
        inputs,
        span: body.span,
    })
}

/// A literal, a link `[source_id, output_index]`, or nothing (`null`).
fn input_value(value: &Spanned<Json>) -> Result<Option<Spanned<PromptValue>>, String> {
    let literal = |v: Value| Ok(Some(Spanned::new(PromptValue::Literal(v), value.span)));
    match &value.value {
        Json::Null => Ok(None),
        Json::Bool(b) => literal(Value::Bool(*b)),
        Json::Int(i) => literal(Value::Int(*i)),
        Json::Float(x) => literal(Value::Float(*x)),
        Json::Str(s) => literal(Value::String(s.as_str().into())),
        Json::Array(items) => match items.as_slice() {
            [node, output] => {
                let node = match &node.value {
                    Json::Str(s) => s.clone(),
                    Json::Int(i) => i.to_string(),
                    other => {
                        return Err(format!(
                            "a link's node id must be a string, found {}",
                            other.kind()
                        ))
                    }
                };
                let output = output
                    .value
                    .as_i64()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or("a link's output index must be a whole number ≥ 0")?;
                Ok(Some(Spanned::new(
                    PromptValue::Link { node, output },
                    value.span,
                )))
            }
            _ => Err(
                "a list is a link `[\"node_id\", output_index]`; weft has no list literals".into(),
            ),
        },
        Json::Object(_) => match value.value.get("__value__") {
            // ComfyUI's wrapper for a list widget value.
            Some(_) => Err("list values (`__value__`) are not supported by weft".into()),
            None => Err("expected a number, string, boolean or link, found an object".into()),
        },
    }
}

/// The same value as serde_json's, for fields passed through untouched.
pub fn to_serde(json: &Json) -> serde_json::Value {
    match json {
        Json::Null => serde_json::Value::Null,
        Json::Bool(b) => (*b).into(),
        Json::Int(i) => (*i).into(),
        Json::Float(x) => {
            serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into)
        }
        Json::Str(s) => s.as_str().into(),
        Json::Array(items) => items.iter().map(|i| to_serde(&i.value)).collect(),
        Json::Object(_) => json
            .entries()
            .into_iter()
            .map(|(k, v)| (k.value.clone(), to_serde(&v.value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}
