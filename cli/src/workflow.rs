//! ComfyUI workflows on the command line: `weft run|check workflow.json`
//! (API or UI format), PNGs that ComfyUI saved, and `weft convert`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use weft_core::{Diagnostic, Diagnostics, Registry, SourceFile, ValidGraph};
use weft_nodes::image::{GRAPH_KEY, PROMPT_KEY, WORKFLOW_KEY};
use weft_workflow::Workflow;

use crate::{LoadError, EXIT_INVALID};

/// Validates a workflow's JSON text after applying `--set` overrides
/// (whose node ids are ComfyUI's: `--set 3.seed=5`).
pub fn load_json(
    source: SourceFile,
    overrides: &[String],
    registry: &Registry,
) -> Result<ValidGraph, LoadError> {
    let mut workflow =
        weft_workflow::import(source.clone(), registry).map_err(LoadError::Invalid)?;
    let errors: Vec<Diagnostic> = overrides
        .iter()
        .filter_map(|assignment| workflow.doc.set(assignment).err())
        .map(|message| Diagnostic {
            message,
            span: None,
            node: None,
            input: None,
            help: None,
        })
        .collect();
    if !errors.is_empty() {
        return Err(LoadError::Invalid(Diagnostics {
            source,
            items: errors,
        }));
    }
    workflow.validate(registry).map_err(LoadError::Invalid)
}

/// Runs the graph a PNG embeds: weft's own graph when weft saved it, else
/// ComfyUI's API-format `prompt`, else its UI `workflow`.
pub fn load_png(
    path: &Path,
    overrides: &[String],
    registry: &Registry,
) -> Result<ValidGraph, LoadError> {
    let (key, text) = png_graph(path)?;
    let source = SourceFile::new(format!("{}#{key}", path.display()), text);
    if key == GRAPH_KEY {
        weft_core::load(source, registry, overrides).map_err(LoadError::Invalid)
    } else {
        load_json(source, overrides, registry)
    }
}

/// The most faithful graph chunk of a PNG and its key.
fn png_graph(path: &Path) -> Result<(&'static str, String), LoadError> {
    let mut chunks = weft_nodes::image::text_chunks(path).map_err(LoadError::Io)?;
    for key in [GRAPH_KEY, PROMPT_KEY, WORKFLOW_KEY] {
        if let Some(i) = chunks.iter().position(|(k, _)| k == key) {
            return Ok((key, chunks.swap_remove(i).1));
        }
    }
    Err(LoadError::Io(format!(
        "{} has no graph: no `{GRAPH_KEY}` (weft), `{PROMPT_KEY}` or `{WORKFLOW_KEY}` (ComfyUI) text chunk",
        path.display()
    )))
}

/// `weft convert`: a workflow (JSON, or a PNG carrying one) as readable RON,
/// written to `output` or printed.
pub fn convert(input: &Path, output: Option<&PathBuf>, registry: &Registry) -> ExitCode {
    let workflow = match read_workflow(input, registry) {
        Ok(w) => w,
        Err(LoadError::Io(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_INVALID);
        }
        Err(LoadError::Invalid(d)) => {
            eprint!(
                "{}",
                d.render(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            );
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let ron = workflow.to_ron();
    match output {
        None => {
            print!("{ron}");
            ExitCode::SUCCESS
        }
        Some(path) => match weft_core::atomic::write_atomic(path, ron.as_bytes()) {
            Ok(()) => {
                eprintln!(
                    "{}: {} nodes → {}",
                    input.display(),
                    workflow.doc.nodes.len(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                ExitCode::from(EXIT_INVALID)
            }
        },
    }
}

/// Imports a workflow file (or PNG) for conversion. A PNG that weft saved
/// converts from its `prompt` chunk: its RON is already in `weft.graph`.
fn read_workflow(path: &Path, registry: &Registry) -> Result<Workflow, LoadError> {
    let source = if is_png(path) {
        let mut chunks = weft_nodes::image::text_chunks(path).map_err(LoadError::Io)?;
        let (key, text) = [PROMPT_KEY, WORKFLOW_KEY]
            .into_iter()
            .find_map(|key| {
                let i = chunks.iter().position(|(k, _)| k == key)?;
                Some((key, chunks.swap_remove(i).1))
            })
            .ok_or_else(|| {
                LoadError::Io(format!(
                    "{} has no `{PROMPT_KEY}` or `{WORKFLOW_KEY}` text chunk",
                    path.display()
                ))
            })?;
        SourceFile::new(format!("{}#{key}", path.display()), text)
    } else {
        SourceFile::new(path.display().to_string(), crate::read_text(path)?)
    };
    weft_workflow::import(source, registry).map_err(LoadError::Invalid)
}

pub fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}
