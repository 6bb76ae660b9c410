//! `PreviewImage`: SaveImage's PNGs, written to a temporary folder instead
//! of the output folder.

use std::path::PathBuf;
use std::sync::Mutex;

use weft_core::atomic::{next_numbered_path, write_atomic};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::png_io::{encode_png, GRAPH_KEY, NODE_KEY};
use super::save::to_u8_interleaved;
use super::{image_dims, image_input, pixels};

/// Picking a free number and writing the file must not interleave between
/// two previews running in parallel.
static NUMBERING: Mutex<()> = Mutex::new(());

/// Where previews go: `weft/previews` in the system's temporary folder.
pub fn preview_dir() -> PathBuf {
    std::env::temp_dir().join("weft").join("previews")
}

/// `PreviewImage`: PNGs in the temporary folder, reported as outputs.
pub fn preview_image() -> NodeDef {
    NodeSchema::new(
        "PreviewImage",
        "image",
        "Shows images without saving them: each is written as a PNG (with the graph embedded, like SaveImage) to `weft/previews` in the system's temporary folder, named after the node, and its path is reported as an output.",
    )
    .input(InputSpec::of("images", ValueType::Image).doc("The images to show."))
    .output("paths", ValueType::String, "The files written, one per line.")
    .output_node()
    .run(|cx| {
        let images = image_input(cx, "images")?;
        let (batch, channels, height, width) = image_dims(images, "images")?;
        if !matches!(channels, 1 | 3 | 4) {
            return Err(NodeError::input(
                "images",
                format!("cannot show {channels}-channel images (1 = gray, 3 = RGB, 4 = RGBA)"),
            ));
        }
        let text = [(GRAPH_KEY, cx.graph_ron()), (NODE_KEY, cx.node_id)];
        let data = pixels(images)?;
        let plane = channels * height * width;
        if plane == 0 {
            return Err(NodeError::input("images", "the images are empty"));
        }
        let dir = preview_dir();
        // Node ids are letters, digits, `_` and `-`: safe in a file name.
        let prefix = format!("{}_preview", cx.node_id);
        let mut written = Vec::with_capacity(batch);
        for item in data.chunks_exact(plane).take(batch) {
            cx.check_cancelled()?;
            let bytes = to_u8_interleaved(item, channels);
            let png = encode_png(width as u32, height as u32, channels, &bytes, &text)
                .map_err(NodeError::new)?;
            let _numbering = NUMBERING.lock().unwrap_or_else(|e| e.into_inner());
            let path = next_numbered_path(&dir, &prefix, "png");
            write_atomic(&path, &png)
                .map_err(|e| NodeError::new(format!("cannot write {}: {e}", path.display())))?;
            cx.output(format!("preview {}", path.display()));
            written.push(path.display().to_string());
        }
        Ok(Value::String(written.join("\n").into()))
    })
}
