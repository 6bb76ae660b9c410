//! PNG encoding with embedded text, and reading it back.
//!
//! A saved image carries the resolved graph that made it under [`GRAPH_KEY`],
//! so `weft run image.png` reproduces it. The text goes in a tEXt chunk, the
//! chunk every PNG tool shows; tEXt is Latin-1 only, so a graph with other
//! characters (an emoji in a prompt, say) goes in an uncompressed iTXt
//! (UTF-8) chunk under the same key instead of failing the save.

use std::io::{BufReader, Cursor};
use std::path::Path;

/// The key of the chunk holding the graph as RON.
pub const GRAPH_KEY: &str = "weft.graph";
/// The key of the chunk naming the node that saved the image.
pub const NODE_KEY: &str = "weft.node";
/// ComfyUI's key for the API-format prompt, which weft writes too, so
/// ComfyUI's UI can load a weft image.
pub const PROMPT_KEY: &str = "prompt";
/// ComfyUI's key for the UI-format workflow.
pub const WORKFLOW_KEY: &str = "workflow";

/// Encodes 8-bit pixels (row-major, interleaved; 1 = gray, 2 = gray+alpha,
/// 3 = RGB, 4 = RGBA channels) as a PNG with the given text chunks.
pub fn encode_png(
    width: u32,
    height: u32,
    channels: usize,
    pixels: &[u8],
    text: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        n => {
            return Err(format!(
                "cannot save a {n}-channel image as PNG (1, 3 or 4)"
            ))
        }
    };
    let expected = width as usize * height as usize * channels;
    if pixels.len() != expected {
        return Err(format!(
            "{} pixel bytes for a {width}×{height}×{channels} image (expected {expected})",
            pixels.len()
        ));
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    for (key, value) in text {
        let latin1 = value.chars().all(|c| (c as u32) < 256);
        let added = if latin1 {
            encoder.add_text_chunk(key.to_string(), value.to_string())
        } else {
            encoder.add_itxt_chunk(key.to_string(), value.to_string())
        };
        added.map_err(|e| format!("cannot add the `{key}` text chunk: {e}"))?;
    }
    let mut writer = encoder
        .write_header()
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    writer
        .write_image_data(pixels)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    writer
        .finish()
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(out)
}

/// A decoded PNG: 8-bit interleaved pixels and its text chunks.
#[derive(Clone, Debug)]
pub struct PngFile {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub pixels: Vec<u8>,
    /// Key and text of every tEXt, zTXt and iTXt chunk before the image data.
    pub text: Vec<(String, String)>,
}

impl PngFile {
    pub fn text(&self, key: &str) -> Option<&str> {
        self.text
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a PNG's pixels (normalised to 8 bits) and text; errors name the path.
pub fn read_png(path: &Path) -> Result<PngFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(Cursor::new(&bytes[..]));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let bad = |e: png::DecodingError| format!("{} is not a readable PNG: {e}", path.display());
    let mut reader = decoder.read_info().map_err(bad)?;
    let text = texts(reader.info()).map_err(bad)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format!("{} is too large to decode", path.display()))?;
    let mut pixels = vec![0; size];
    let frame = reader.next_frame(&mut pixels).map_err(bad)?;
    pixels.truncate(frame.buffer_size());
    Ok(PngFile {
        width: frame.width,
        height: frame.height,
        channels: frame.color_type.samples(),
        pixels,
        text,
    })
}

/// The graph a weft PNG embeds, reading only the chunks before the pixels.
/// `Ok(None)` when the file is a PNG without one.
pub fn embedded_graph(path: &Path) -> Result<Option<String>, String> {
    Ok(text_chunks(path)?
        .into_iter()
        .find(|(k, _)| k == GRAPH_KEY)
        .map(|(_, v)| v))
}

/// Key and text of every text chunk before the pixels (which are not decoded).
pub fn text_chunks(path: &Path) -> Result<Vec<(String, String)>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(|e| format!("{} is not a readable PNG: {e}", path.display()))?;
    texts(reader.info())
        .map_err(|e| format!("{}: cannot read its text chunks: {e}", path.display()))
}

fn texts(info: &png::Info<'_>) -> Result<Vec<(String, String)>, png::DecodingError> {
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for chunk in &info.compressed_latin1_text {
        let mut chunk = chunk.clone();
        chunk.decompress_text()?;
        out.push((chunk.keyword.clone(), chunk.get_text()?));
    }
    for chunk in &info.utf8_text {
        let mut chunk = chunk.clone();
        chunk.decompress_text()?;
        out.push((chunk.keyword.clone(), chunk.get_text()?));
    }
    Ok(out)
}
