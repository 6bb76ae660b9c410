//! Live previews while sampling: after a step, if the run wants previews
//! and one is due (see [`NodeContext::preview_due`]), the current denoised
//! estimate of the first batch item is drawn cheaply and sent as a PNG.
//!
//! - `latent2rgb`: the model's [`LatentRgb`] projection at latent
//!   resolution (ComfyUI's `Latent2RGBPreviewer`); pixel-space models show
//!   their latent directly, as it is the image in [-1, 1].
//! - `taesd`: the family's TAESD decoder from the decoder folders
//!   (`vae_approx/`), at image resolution; `latent2rgb` with a one-line
//!   notice when the folder has none.
//!
//! Either way the picture is ComfyUI's `preview_to_image`: clamp to
//! [-1, 1], then round((v + 1) · 127.5). A preview only reads the estimate,
//! so it never changes what is sampled.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use candle_core::Tensor;
use weft_core::{NodeContext, PreviewMethod};
use weft_models::taesd::TinyDecoder;
use weft_sampling::{LatentFormat, LatentPreview, LatentRgb};

/// How one sampling run draws its previews.
pub struct Previewer {
    draw: Draw,
    /// Set after a preview fails, so a broken preview costs one notice.
    broken: Cell<bool>,
}

#[derive(Clone)]
enum Draw {
    Pixels,
    Rgb(LatentRgb),
    Taesd(Arc<TinyDecoder>),
}

/// A drawn preview: 8-bit RGB or grey pixels, row-major and interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Previewer {
    /// The previewer for a run of a model with latent `format` over latents
    /// of `channels` channels; `None` when previews are off or the latents
    /// have no cheap picture.
    pub fn new(ctx: &NodeContext<'_>, format: &LatentFormat, channels: usize) -> Option<Self> {
        let method = ctx.previews().method;
        if method == PreviewMethod::None {
            return None;
        }
        let draw = match format.preview {
            LatentPreview::None => return None,
            LatentPreview::Pixels if matches!(channels, 1 | 3) => Draw::Pixels,
            LatentPreview::Pixels => return None,
            LatentPreview::Latent { rgb, taesd } => {
                let decoder = match (method, taesd) {
                    (PreviewMethod::Taesd, Some(stem)) => {
                        match taesd_decoder(&ctx.previews().decoder_folders, stem) {
                            Ok(d) if d.latent_channels() == channels => Some(d),
                            Ok(d) => {
                                notice(ctx, format!(
                                    "preview: the TAESD decoder `{stem}` takes {}-channel latents, this model's have {channels}; using latent2rgb",
                                    d.latent_channels()
                                ));
                                None
                            }
                            Err(e) => {
                                notice(ctx, format!("preview: {e}; using latent2rgb"));
                                None
                            }
                        }
                    }
                    _ => None,
                };
                match decoder {
                    Some(d) => Draw::Taesd(d),
                    None if rgb.factors.len() == channels => Draw::Rgb(rgb),
                    None => return None,
                }
            }
        };
        Some(Previewer {
            draw,
            broken: Cell::new(false),
        })
    }

    /// A previewer that projects latents with `rgb` (`latent2rgb`).
    pub fn latent2rgb(rgb: LatentRgb) -> Self {
        Previewer {
            draw: Draw::Rgb(rgb),
            broken: Cell::new(false),
        }
    }

    /// A previewer that decodes latents with a TAESD decoder.
    pub fn taesd(decoder: Arc<TinyDecoder>) -> Self {
        Previewer {
            draw: Draw::Taesd(decoder),
            broken: Cell::new(false),
        }
    }

    /// A previewer for pixel-space latents (1 or 3 channels in [-1, 1]).
    pub fn pixels() -> Self {
        Previewer {
            draw: Draw::Pixels,
            broken: Cell::new(false),
        }
    }

    /// After step `step` of `max`: sends a preview of `denoised` (in the
    /// network's scale) if one is due. A failure is reported once and ends
    /// this run's previews; it never fails the sampling.
    pub fn step(&self, ctx: &NodeContext<'_>, denoised: Option<Tensor>, step: u64, max: u64) {
        if self.broken.get() || !ctx.preview_due(step, max) {
            return;
        }
        let Some(denoised) = denoised else {
            return;
        };
        match self
            .draw(&denoised)
            .and_then(|p| p.png().map(|png| (p, png)))
        {
            Ok((p, png)) => ctx.preview(step, max, p.width as u32, p.height as u32, png),
            Err(e) => {
                self.broken.set(true);
                notice(ctx, format!("preview failed, no more for this node: {e}"));
            }
        }
    }

    /// The picture of the first batch item of a `[batch, channels, h, w]`
    /// estimate in the network's scale.
    pub fn draw(&self, denoised: &Tensor) -> Result<Picture, String> {
        let first = || -> candle_core::Result<Tensor> {
            denoised.narrow(0, 0, 1)?.to_dtype(candle_core::DType::F32)
        };
        let err = |e: candle_core::Error| e.to_string();
        let (_, c, h, w) = denoised.dims4().map_err(err)?;
        match &self.draw {
            Draw::Pixels => {
                let values: Vec<f32> = first()
                    .and_then(|t| t.flatten_all()?.to_vec1())
                    .map_err(err)?;
                Ok(Picture::from_planes(&values, c, h, w))
            }
            Draw::Rgb(rgb) => {
                let values: Vec<f32> = first()
                    .and_then(|t| t.flatten_all()?.to_vec1())
                    .map_err(err)?;
                Ok(Picture::from_planes(&rgb.project(&values, c)?, 3, h, w))
            }
            Draw::Taesd(decoder) => {
                let image = first().and_then(|t| decoder.decode(&t)).map_err(err)?;
                let (_, _, ih, iw) = image.dims4().map_err(err)?;
                let values: Vec<f32> =
                    image.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?;
                Ok(Picture::from_planes(&values, 3, ih, iw))
            }
        }
    }
}

impl Picture {
    /// Pixels from `[channels, h, w]` planes in [-1, 1] (clamped):
    /// round((v + 1) · 127.5), as ComfyUI's `preview_to_image`.
    pub fn from_planes(values: &[f32], channels: usize, height: usize, width: usize) -> Picture {
        let plane = height * width;
        let mut pixels = Vec::with_capacity(channels * plane);
        for i in 0..plane {
            for c in 0..channels {
                pixels.push(to_u8(values[c * plane + i]));
            }
        }
        Picture {
            width,
            height,
            channels,
            pixels,
        }
    }

    /// The picture as a PNG, compressed for speed.
    pub fn png(&self) -> Result<Vec<u8>, String> {
        let color = match self.channels {
            1 => png::ColorType::Grayscale,
            3 => png::ColorType::Rgb,
            n => return Err(format!("cannot preview a {n}-channel picture")),
        };
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder
            .write_header()
            .map_err(|e| format!("cannot encode the preview: {e}"))?;
        writer
            .write_image_data(&self.pixels)
            .map_err(|e| format!("cannot encode the preview: {e}"))?;
        writer
            .finish()
            .map_err(|e| format!("cannot encode the preview: {e}"))?;
        Ok(out)
    }
}

/// A value in [-1, 1] as a byte: round((clamp(v) + 1) · 127.5); NaN is 0.
pub fn to_u8(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Shows `text` once per process, so a missing decoder is one line even
/// when `weft watch` re-runs the sampler on every save.
fn notice(ctx: &NodeContext<'_>, text: String) {
    static SHOWN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let fresh = SHOWN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(text.clone());
    if fresh {
        ctx.output(text);
    }
}

/// The first file in `folders` whose name starts with `stem` and that
/// weft can read (safetensors), as ComfyUI picks `vae_approx/{stem}*`.
pub fn find_decoder(folders: &[PathBuf], stem: &str) -> Result<PathBuf, String> {
    let mut unreadable = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(stem))
            })
            .collect();
        names.sort();
        for path in names {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if matches!(ext.as_deref(), Some("safetensors" | "sft")) {
                return Ok(path);
            }
            unreadable.push(path.display().to_string());
        }
    }
    let searched = if folders.is_empty() {
        "no vae_approx folder is configured".to_string()
    } else {
        format!(
            "searched {}",
            folders
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let found = if unreadable.is_empty() {
        String::new()
    } else {
        format!(
            "; found {} but weft reads only .safetensors decoders",
            unreadable.join(", ")
        )
    };
    Err(format!(
        "no TAESD decoder `{stem}.safetensors` in vae_approx/ ({searched}{found})"
    ))
}

/// The decoder `stem` from `folders`, loaded once per file version.
fn taesd_decoder(folders: &[PathBuf], stem: &str) -> Result<Arc<TinyDecoder>, String> {
    type Loaded = HashMap<PathBuf, (Option<SystemTime>, u64, Arc<TinyDecoder>)>;
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    let path = find_decoder(folders, stem)?;
    let stamp = |p: &Path| {
        let meta = std::fs::metadata(p).ok();
        (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.map_or(0, |m| m.len()),
        )
    };
    let (modified, len) = stamp(&path);
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((m, l, decoder)) = loaded.get(&path) {
        if (*m, *l) == (modified, len) {
            return Ok(decoder.clone());
        }
    }
    let decoder = Arc::new(TinyDecoder::load(&path)?);
    loaded.insert(path, (modified, len, decoder.clone()));
    Ok(decoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use weft_models::sd::preview::{SD15_RGB, SDXL_RGB};

    /// latent2rgb against its closed form: for every pixel,
    /// round((clamp(Σ_c f[c][k]·z[c] + b[k], −1, 1) + 1) · 127.5).
    #[test]
    fn latent2rgb_is_the_closed_form_projection() {
        let (c, h, w) = (4, 5, 7);
        let n = c * h * w;
        // Values spanning the clamp: up to ±4 in the network's scale.
        let values: Vec<f32> = (0..2 * n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 4.0)
            .collect();
        let latent = Tensor::from_vec(values.clone(), (2, c, h, w), &Device::Cpu).unwrap();
        for rgb in [SD15_RGB, SDXL_RGB] {
            let previewer = Previewer::latent2rgb(rgb);
            let picture = previewer.draw(&latent).unwrap();
            assert_eq!((picture.width, picture.height, picture.channels), (w, h, 3));
            let mut clamped = 0;
            for y in 0..h {
                for x in 0..w {
                    for k in 0..3 {
                        let mut v = rgb.bias[k] as f64;
                        for (ch, row) in rgb.factors.iter().enumerate() {
                            v += row[k] as f64 * values[ch * h * w + y * w + x] as f64;
                        }
                        clamped += (v.abs() > 1.0) as usize;
                        let want = ((v.clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).round();
                        let got = picture.pixels[(y * w + x) * 3 + k] as f64;
                        assert!((got - want).abs() <= 0.0, "({x},{y},{k}): {got} vs {want}");
                    }
                }
            }
            assert!(clamped > 0, "the test should reach the clamp");
        }
        // Only the first batch item is drawn: changing the second changes nothing.
        let mut other = values.clone();
        other[n..].iter_mut().for_each(|v| *v = 0.0);
        let other = Tensor::from_vec(other, (2, c, h, w), &Device::Cpu).unwrap();
        let previewer = Previewer::latent2rgb(SD15_RGB);
        assert_eq!(previewer.draw(&latent), previewer.draw(&other));
    }

    #[test]
    fn pixel_space_latents_show_as_they_are_and_encode_as_png() {
        let values = [-2.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, f32::NAN];
        let latent = Tensor::from_vec(values.to_vec(), (1, 1, 2, 4), &Device::Cpu).unwrap();
        let previewer = Previewer::pixels();
        let picture = previewer.draw(&latent).unwrap();
        assert_eq!(picture.pixels, [0, 0, 64, 128, 191, 255, 255, 0]);
        let png = picture.png().unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(&png[..]))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 2));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(&buf[..info.buffer_size()], &picture.pixels[..]);
    }

    #[test]
    fn a_missing_decoder_names_the_folders_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("taesd_decoder.pth"), b"x").unwrap();
        std::fs::write(dir.path().join("taesdxl_decoder.safetensors"), b"x").unwrap();
        let e = find_decoder(&[dir.path().to_path_buf()], "taesd_decoder").unwrap_err();
        assert!(
            e.contains("taesd_decoder.pth") && e.contains("only .safetensors"),
            "{e}"
        );
        let found = find_decoder(&[dir.path().to_path_buf()], "taesdxl_decoder").unwrap();
        assert!(found.ends_with("taesdxl_decoder.safetensors"));
        let e = find_decoder(&[], "taesd_decoder").unwrap_err();
        assert!(e.contains("no vae_approx folder"), "{e}");
    }
}
