use std::path::{Path, PathBuf};
use std::sync::Mutex;

use weft_core::atomic::write_atomic;
use weft_core::{Define, InputSpec, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::png_io::{encode_png, GRAPH_KEY, NODE_KEY, PROMPT_KEY};
use super::{image_dims, image_input, pixels};

/// Picking a free number and writing the file must not interleave between
/// two saves running in parallel, or both would take the same number.
static NUMBERING: Mutex<()> = Mutex::new(());

/// `SaveImage`: saves each image of a batch as a numbered PNG that embeds
/// the graph.
pub fn save_image() -> NodeDef {
    NodeSchema::new(
        "SaveImage",
        "image",
        "Saves each image of the batch as a numbered PNG (`{prefix}_{counter:05}_.png`) that embeds the resolved graph, so `weft run image.png` re-runs it, and the same graph as ComfyUI's `prompt` chunk, so ComfyUI's UI loads it.",
    )
    .input(InputSpec::of("images", ValueType::Image).doc("The images to save."))
    .input(
        InputSpec::string("filename_prefix")
            .default("weft")
            .doc("File name before the counter; may include subfolders."),
    )
    .input(
        InputSpec::bool("individual")
            .default(false)
            .doc("Give the batch one counter and number its items (`{prefix}_{counter:05}_{index:03}_.png`), so they sort together."),
    )
    .input(
        InputSpec::string("labels")
            .optional()
            .doc("Comma-separated, one per item; names files `{prefix}_{counter:05}_{index:03}_label{label}.png`."),
    )
    .output("paths", ValueType::String, "The files written, one per line.")
    .output_node()
    .run(save)
}

fn save(cx: &NodeContext<'_>) -> Result<Value, NodeError> {
    let images = image_input(cx, "images")?;
    let (batch, channels, height, width) = image_dims(images, "images")?;
    if !matches!(channels, 1 | 3 | 4) {
        return Err(NodeError::input(
            "images",
            format!("cannot save {channels}-channel images (1 = gray, 3 = RGB, 4 = RGBA)"),
        ));
    }
    let prefix = crate::utility::output_prefix(cx)?;
    let labels = match cx.inputs.get("labels") {
        // The web UI sends every optional text input, empty when unused.
        Some(Value::String(s)) if !s.trim().is_empty() => Some(parse_labels(s, batch)?),
        _ => None,
    };
    let indexed = labels.is_some() || cx.bool("individual")?;

    // weft's own graph, and the same graph as ComfyUI's API-format prompt
    // so ComfyUI's UI can load the image too.
    let text = [
        (GRAPH_KEY, cx.graph_ron()),
        (NODE_KEY, cx.node_id),
        (PROMPT_KEY, cx.graph_comfy_prompt()),
    ];
    let data = pixels(images)?;
    let plane = channels * height * width;
    let mut encoded = Vec::with_capacity(batch);
    for item in 0..batch {
        cx.check_cancelled()?;
        let bytes = to_u8_interleaved(&data[item * plane..(item + 1) * plane], channels);
        encoded.push(
            encode_png(width as u32, height as u32, channels, &bytes, &text)
                .map_err(NodeError::new)?,
        );
    }

    let _numbering = NUMBERING.lock().unwrap_or_else(|e| e.into_inner());
    let paths = numbered_paths(cx.out_dir, prefix, batch, indexed, labels.as_deref());
    let mut written = Vec::with_capacity(batch);
    for (path, png) in paths.iter().zip(&encoded) {
        write_atomic(path, png)
            .map_err(|e| NodeError::new(format!("cannot write {}: {e}", path.display())))?;
        cx.output(format!("saved {}", path.display()));
        written.push(path.display().to_string());
    }
    Ok(Value::String(written.join("\n").into()))
}

/// One label per batch item (or one for a single image), made safe for a
/// file name: anything but letters, digits, `-`, `_` and `.` becomes `_`.
fn parse_labels(text: &str, batch: usize) -> Result<Vec<String>, NodeError> {
    let labels: Vec<String> = text
        .split(',')
        .map(|l| {
            l.trim()
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    if labels.len() != batch {
        return Err(NodeError::input(
            "labels",
            format!(
                "{} labels for a batch of {batch}; give one per image",
                labels.len()
            ),
        ));
    }
    Ok(labels)
}

/// The file names for a batch: per item its own counter (ComfyUI's
/// `{prefix}_{counter:05}_.png`), or, when `indexed`, one counter for the
/// batch and the item's index (and label) after it.
///
/// A counter counts as taken when *any* PNG of this prefix uses it, plain or
/// indexed, so the two namings never share a number. (`next_numbered_path`
/// looks at the plain name only, which would reuse a labelled batch's number.)
fn numbered_paths(
    dir: &Path,
    prefix: &str,
    batch: usize,
    indexed: bool,
    labels: Option<&[String]>,
) -> Vec<PathBuf> {
    let base = dir.join(prefix);
    let (folder, stem) = match (base.parent(), base.file_name()) {
        (Some(folder), Some(stem)) => (folder.to_path_buf(), stem.to_string_lossy().into_owned()),
        _ => (dir.to_path_buf(), prefix.to_string()),
    };
    let mut taken = used_counters(&folder, &stem);
    let mut next = || {
        let n = (1u64..)
            .find(|n| !taken.contains(n))
            .expect("some counter is free");
        taken.insert(n);
        n
    };
    if !indexed {
        return (0..batch)
            .map(|_| folder.join(format!("{stem}_{:05}_.png", next())))
            .collect();
    }
    let n = next();
    (0..batch)
        .map(|i| {
            let label = labels.map_or(String::new(), |l| format!("label{}", l[i]));
            folder.join(format!("{stem}_{n:05}_{i:03}_{label}.png"))
        })
        .collect()
}

/// Counters of the PNGs named `{stem}_{digits}_….png` in `folder`.
fn used_counters(folder: &Path, stem: &str) -> std::collections::HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Default::default();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let rest = name.strip_prefix(stem)?.strip_prefix('_')?;
            if !rest.ends_with(".png") {
                return None;
            }
            let (digits, _) = rest.split_once('_')?;
            (digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())?
        })
        .collect()
}

/// Planar `[C, H, W]` floats to interleaved 8-bit samples, clamped to
/// `[0, 1]` and rounded to nearest (NaN becomes 0).
pub(crate) fn to_u8_interleaved(planar: &[f32], channels: usize) -> Vec<u8> {
    let area = planar.len() / channels;
    let mut out = vec![0u8; planar.len()];
    for c in 0..channels {
        for p in 0..area {
            let v = planar[c * area + p];
            out[p * channels + c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}
