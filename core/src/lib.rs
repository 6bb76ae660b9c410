//! weft's engine: graph files, typed node schemas, validation, scheduling and caching.
//!
//! The pipeline is [`GraphDoc::parse`] (syntax, with spans) →
//! [`validate`] (types, links, cycles) → [`Executor::run`] (cached, parallel).
//! Node types implement [`Node`] and are collected in a [`Registry`].

pub mod atomic;
pub mod cache;
pub mod comfy_prompt;
pub mod define;
pub mod diagnostic;
pub mod events;
pub mod excerpt;
pub mod execute;
pub mod graph;
pub mod node;
pub mod preview;
pub mod registry;
pub mod source;
pub mod syntax;
pub mod validate;
pub mod value;
pub mod write;

pub use cache::{Cache, Outputs, Signature};
pub use define::{Define, Handle, NodeDef};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use events::{Event, EventSink, PreviewPng};
pub use execute::{Executor, NodeFailure, RunOptions, RunReport};
pub use graph::GraphDoc;
pub use node::{CancelToken, Inputs, Node, NodeContext, NodeError};
pub use preview::{PreviewLimiter, PreviewMethod, Previews};
pub use registry::Registry;
pub use source::{SourceFile, Span, Spanned};
pub use validate::{validate, Binding, PlannedNode, ValidGraph};
pub use value::{Latent, LatentSpace, Object, Value, SUMMARY_MAX_CHARS};
pub use weft_schema as schema;
pub use weft_schema::{
    Cost, InputSpec, IntoOutputs, Literal, NodeSchema, OutputSpec, OutputType, ValueType,
};

/// Parses and validates graph text, applying `--set` overrides first.
pub fn load(
    source: SourceFile,
    registry: &Registry,
    overrides: &[String],
) -> Result<ValidGraph, Diagnostics> {
    let mut doc = GraphDoc::parse(source.clone())?;
    let mut errors = Vec::new();
    for assignment in overrides {
        if let Err(message) = doc.set(assignment) {
            errors.push(Diagnostic {
                message,
                span: None,
                node: None,
                input: None,
                help: None,
            });
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics {
            source,
            items: errors,
        });
    }
    validate(doc, registry)
}

/// Compiles the README's Rust examples, so the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
