//! `weft nodes`: schemas as text, JSON, or the README's Markdown reference.

use std::fmt::Write;
use std::process::ExitCode;

use weft_core::{InputSpec, NodeSchema, Registry};
use weft_model_paths::{ModelKind, ModelPaths};

/// Prints the schemas; in JSON, an input naming a model file offers the
/// files found in its folders as its choices, as ComfyUI's `/object_info`.
pub fn print(
    registry: &Registry,
    paths: &ModelPaths,
    only: Option<&str>,
    json: bool,
    markdown: bool,
) -> ExitCode {
    let schemas: Vec<&NodeSchema> = match only {
        None => registry.schemas(),
        Some(name) => match registry.get(name) {
            Some(node) => vec![node.schema()],
            None => {
                let hint = weft_core::diagnostic::did_you_mean(name, registry.names())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let plugins = crate::plugins::search_note(registry);
                eprintln!("error: unknown node type `{name}`{hint}; {plugins}");
                return ExitCode::from(2);
            }
        },
    };
    if json {
        let schemas: Vec<NodeSchema> = schemas.into_iter().map(|s| with_files(s, paths)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&schemas).expect("schemas serialize")
        );
    } else if markdown {
        print!("{}", markdown_reference(&schemas));
    } else {
        for s in schemas {
            print!("{}", text(s));
        }
    }
    ExitCode::SUCCESS
}

/// `schema` with the found files as choices of its model-file inputs.
fn with_files(schema: &NodeSchema, paths: &ModelPaths) -> NodeSchema {
    let mut schema = schema.clone();
    for input in &mut schema.inputs {
        let Some(kind) = input
            .model_folder
            .as_deref()
            .and_then(|f| f.parse::<ModelKind>().ok())
        else {
            continue;
        };
        input.choices = Some(paths.list(kind).into_iter().map(|f| f.name).collect());
    }
    schema
}

fn constraints(i: &InputSpec) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &i.default {
        parts.push(format!("default {d}"));
    } else if !i.required {
        parts.push("optional".into());
    }
    match (i.min, i.max) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo}..={hi}")),
        (Some(lo), None) => parts.push(format!("≥ {lo}")),
        (None, Some(hi)) => parts.push(format!("≤ {hi}")),
        _ => {}
    }
    if let Some(step) = i.step {
        parts.push(format!("step {step}"));
    }
    if let Some(choices) = &i.choices {
        parts.push(format!("one of {}", choices.join(" | ")));
    }
    if i.lazy {
        parts.push("lazy".into());
    }
    parts.join(", ")
}

fn flags(s: &NodeSchema) -> Vec<&'static str> {
    let mut f = Vec::new();
    if s.output_node {
        f.push("output node");
    }
    if !s.deterministic {
        f.push("non-deterministic");
    }
    if s.external_state {
        f.push("reads external state");
    }
    if s.cost == weft_core::Cost::Heavy {
        f.push("heavy");
    }
    f
}

fn text(s: &NodeSchema) -> String {
    let mut out = String::new();
    let flags = flags(s);
    let mut flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    if let Some(plugin) = &s.plugin {
        flags.push_str(&format!(" (plugin {plugin})"));
    }
    let _ = writeln!(out, "{} ({}){flags}\n  {}", s.type_name, s.category, s.doc);
    for i in &s.inputs {
        let c = constraints(i);
        let c = if c.is_empty() { c } else { format!(" ({c})") };
        let _ = writeln!(out, "  in  {}: {}{c}{}", i.name, i.ty, dash(&i.doc));
    }
    for o in &s.outputs {
        let ty = serde_json::to_value(&o.ty)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(out, "  out {}: {ty}{}", o.name, dash(&o.doc));
    }
    out.push('\n');
    out
}

/// " — doc", or nothing for an undocumented input or output (plugins'
/// often are), rather than a dash leading nowhere.
fn dash(doc: &str) -> String {
    if doc.trim().is_empty() {
        String::new()
    } else {
        format!(" — {doc}")
    }
}

fn markdown_reference(schemas: &[&NodeSchema]) -> String {
    let mut out = String::new();
    let mut category = "";
    for s in schemas {
        if s.category != category {
            category = &s.category;
            let _ = writeln!(out, "### {category}\n");
        }
        let flags = flags(s);
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" *({})*", flags.join(", "))
        };
        let _ = writeln!(out, "#### `{}`{flags}\n\n{}\n", s.type_name, s.doc);
        if !s.inputs.is_empty() {
            let _ = writeln!(
                out,
                "| input | type | constraints | doc |\n|---|---|---|---|"
            );
            for i in &s.inputs {
                let _ = writeln!(
                    out,
                    "| `{}` | `{}` | {} | {} |",
                    i.name,
                    i.ty,
                    constraints(i).replace('|', "\\|"),
                    i.doc
                );
            }
            out.push('\n');
        }
        if !s.outputs.is_empty() {
            let _ = writeln!(out, "| output | type | doc |\n|---|---|---|");
            for o in &s.outputs {
                let ty = serde_json::to_value(&o.ty)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = writeln!(out, "| `{}` | `{ty}` | {} |", o.name, o.doc);
            }
            out.push('\n');
        }
    }
    out
}
