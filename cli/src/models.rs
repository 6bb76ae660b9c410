//! `--models` and `weft models`: where model files are found, and what is
//! there.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_model_paths::{ModelKind, ModelPaths, Sources};

/// The model folders from `--models`, `WEFT_MODELS` and the config file.
pub fn paths(flags: &[PathBuf]) -> Result<ModelPaths, String> {
    ModelPaths::load(&Sources::from_process(flags.to_vec())).map_err(|e| e.to_string())
}

/// Prints each kind's files (or one kind's) with the family of each.
pub fn print(paths: &ModelPaths, kind: Option<&str>) -> ExitCode {
    let kinds: Vec<ModelKind> = match kind {
        None => ModelKind::ALL.to_vec(),
        Some(name) => match name.parse() {
            Ok(kind) => vec![kind],
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    for warning in paths.warnings() {
        eprintln!("warning: {warning}");
    }
    if paths.roots().is_empty() && kind.is_none() {
        eprintln!(
            "no model folders: pass --models DIR (a ComfyUI install or a folder of checkpoints/, vae/, …), set WEFT_MODELS, or list roots in ~/.config/weft/config.ron"
        );
    }
    let one_kind = kinds.len() == 1;
    for kind in kinds {
        let files = paths.list(kind);
        if files.is_empty() && !one_kind {
            continue;
        }
        println!("{kind}:");
        if one_kind {
            for folder in paths.folders(kind) {
                let missing = if folder.is_dir() { "" } else { " (missing)" };
                println!("  searched {}{missing}", folder.display());
            }
        }
        for file in &files {
            println!(
                "  {}  {}  [{}]",
                file.name,
                human_size(file.size),
                weft_models::detect::describe(&file.path)
            );
        }
    }
    ExitCode::SUCCESS
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < units.len() {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", units[unit])
    }
}

/// `weft quantize`: writes `output` and reports what it did.
pub fn quantize(input: &std::path::Path, output: &std::path::Path, ty: &str) -> ExitCode {
    let ty = match ty.parse::<weft_kernels::quant::StoredType>() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --type: {e}");
            return ExitCode::from(2);
        }
    };
    match weft_models::quantize::quantize_file(input, output, ty) {
        Ok(r) => {
            println!(
                "{}: {} matrices as {ty}, {} kept f16, {} vectors f32; {:.1} MB → {:.1} MB",
                output.display(),
                r.quantized,
                r.kept_f16,
                r.kept_f32,
                r.bytes_in as f64 / 1e6,
                r.bytes_out as f64 / 1e6
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
