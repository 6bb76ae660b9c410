//! Image upscale models, as ComfyUI's `UpscaleModelLoader` loads them
//! (through spandrel): ESRGAN-family RRDBNets ([`esrgan`]: ESRGAN,
//! BSRGAN/RealSR, Real-ESRGAN ×4/×2/×1) and Real-ESRGAN's compact
//! SRVGGNet ([`compact`]), told apart and sized from their tensors alone.
//! Large images run in blended overlapping tiles ([`Tiling`]).
//!
//! Files are memory-mapped safetensors; pickled `.pth` files (how most
//! upscale models are shared) are refused with the command that converts
//! them. A file of any other architecture is an error naming what it looks
//! like.

pub mod compact;
pub mod esrgan;
mod ops;
mod tiled;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use weft_core::Object;

use crate::weights::{Source, TensorMap, Transform, WeightFile};
pub use compact::CompactConfig;
pub use esrgan::{EsrganConfig, EsrganLayout};
pub use tiled::Tiling;

/// What an upscale model file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// An RRDBNet (ESRGAN, BSRGAN/RealSR, Real-ESRGAN).
    Esrgan(EsrganConfig),
    /// Real-ESRGAN's SRVGGNetCompact.
    Compact(CompactConfig),
}

impl Architecture {
    /// Output pixels per input pixel along each side.
    pub fn scale(&self) -> usize {
        match self {
            Architecture::Esrgan(c) => c.scale(),
            Architecture::Compact(c) => c.scale,
        }
    }

    /// Channels of the images it takes.
    pub fn image_channels(&self) -> usize {
        match self {
            Architecture::Esrgan(c) => c.image_channels(),
            Architecture::Compact(c) => c.in_channels,
        }
    }

    /// Channels of the images it makes.
    pub fn out_channels(&self) -> usize {
        match self {
            Architecture::Esrgan(c) => c.out_channels,
            Architecture::Compact(c) => c.out_channels,
        }
    }

    /// One line for messages and listings: "ESRGAN ×4 (RRDBNet: 23 blocks, …)".
    pub fn describe(&self) -> String {
        let scale = self.scale();
        match self {
            Architecture::Esrgan(c) => {
                let unshuffle = match c.unshuffle {
                    1 => String::new(),
                    r => format!(", {r}×{r} pixel unshuffle"),
                };
                format!(
                    "ESRGAN ×{scale} (RRDBNet: {} blocks, {} features, growth {}{unshuffle}; {})",
                    c.blocks,
                    c.features,
                    c.growth,
                    c.layout.name()
                )
            }
            Architecture::Compact(c) => format!(
                "Real-ESRGAN Compact ×{scale} (SRVGGNetCompact: {} convolutions, {} features)",
                c.convs, c.features
            ),
        }
    }
}

const SUPPORTED: &str = "weft runs ESRGAN-family RRDBNets (ESRGAN, BSRGAN/RealSR, Real-ESRGAN) and Real-ESRGAN Compact (SRVGGNetCompact) models";

/// The prefix wrapping a file's tensors: BasicSR's `params_ema.` (the
/// averaged weights, preferred) or `params.`, DataParallel's `module.`.
fn wrapper(keys: &BTreeSet<&str>) -> &'static str {
    if keys.iter().any(|k| k.starts_with("params_ema.")) {
        "params_ema."
    } else if keys.iter().any(|k| k.starts_with("params.")) {
        "params."
    } else if !keys.is_empty() && keys.iter().all(|k| k.starts_with("module.")) {
        "module."
    } else {
        ""
    }
}

/// What a file of another architecture most likely is, from its keys.
fn other_architecture(keys: &BTreeSet<&str>) -> String {
    let has = |part: &str| keys.iter().any(|k| k.contains(part));
    let starts = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    let guess = if has(".RDB1.conv1x1.") {
        Some("ESRGAN+ (its dense blocks have extra 1×1 convolutions), which weft does not run")
    } else if has("residual_group.blocks.") {
        Some("a Swin-transformer upscaler (SwinIR, HAT, DRCT, …), which weft does not run")
    } else if has("block_1.c1_r.") {
        Some("SPAN, which weft does not run")
    } else if starts("unet1.") && starts("unet2.") {
        Some("Real-CUGAN, which weft does not run")
    } else if starts("model.diffusion_model.") || starts("input_blocks.") {
        Some("a Stable Diffusion UNet or checkpoint, not an upscale model")
    } else if has("lora_") {
        Some("a LoRA, not an upscale model")
    } else if starts("encoder.down") || starts("decoder.up") {
        Some("a VAE, not an upscale model")
    } else if starts("body.0.weight") && starts("body.2.weight") && !starts("body.1.weight") {
        Some("a compact (SRVGGNet) network with ReLU or LeakyReLU activations; weft runs the PReLU ones Real-ESRGAN trains")
    } else {
        None
    };
    match guess {
        Some(g) => format!("it looks like {g}"),
        None => {
            let mut tops: Vec<&str> = keys
                .iter()
                .map(|k| k.split('.').next().unwrap_or(k))
                .collect();
            tops.dedup();
            let shown: Vec<String> = tops.iter().take(5).map(|t| format!("`{t}.…`")).collect();
            let more = match tops.len().saturating_sub(5) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            if keys.is_empty() {
                "it holds no tensors".into()
            } else {
                format!(
                    "its {} tensors ({}{more}) match no architecture weft knows",
                    keys.len(),
                    shown.join(", ")
                )
            }
        }
    }
}

/// Keys a network does not have, as one message.
fn unexpected(what: &str, unknown: &[String]) -> String {
    let shown: Vec<String> = unknown.iter().take(5).map(|k| format!("`{k}`")).collect();
    let more = match unknown.len().saturating_sub(5) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "it looks like {what} but has tensors {what} does not: {}{more}",
        shown.join(", ")
    )
}

/// A file's architecture and, for each tensor the network is built with,
/// the file's key for it.
struct Found {
    architecture: Architecture,
    names: Vec<(String, String)>,
}

fn read(shapes: &HashMap<String, Vec<usize>>) -> std::result::Result<Found, String> {
    let all: BTreeSet<&str> = shapes.keys().map(String::as_str).collect();
    let prefix = wrapper(&all);
    let keys: BTreeSet<&str> = all.iter().filter_map(|k| k.strip_prefix(prefix)).collect();
    let unwrapped = |k: &str| format!("{prefix}{k}");
    if let Some(layout) = esrgan::layout(&keys) {
        if keys.iter().any(|k| k.contains(".conv1x1.")) {
            return Err(other_architecture(&keys));
        }
        let names = esrgan::names(layout, &keys).map_err(|u| unexpected("an ESRGAN", &u))?;
        let named: HashMap<String, Vec<usize>> = names
            .iter()
            .map(|(name, key)| (name.clone(), shapes[&unwrapped(key)].clone()))
            .collect();
        let config = esrgan::config(layout, &named).map_err(|e| format!("an ESRGAN, but {e}"))?;
        let names = names
            .into_iter()
            .map(|(name, key)| (name, unwrapped(&key)))
            .collect();
        return Ok(Found {
            architecture: Architecture::Esrgan(config),
            names,
        });
    }
    if compact::is_compact(&keys) {
        let unknown = compact::unknown_keys(&keys);
        if !unknown.is_empty() {
            return Err(unexpected("a Compact (SRVGGNet) model", &unknown));
        }
        let named: HashMap<String, Vec<usize>> = keys
            .iter()
            .map(|k| (k.to_string(), shapes[&unwrapped(k)].clone()))
            .collect();
        let config = compact::config(&named).map_err(|e| format!("a Compact model, but {e}"))?;
        let names = keys.iter().map(|k| (k.to_string(), unwrapped(k))).collect();
        return Ok(Found {
            architecture: Architecture::Compact(config),
            names,
        });
    }
    Err(other_architecture(&keys))
}

/// The architecture of the upscale model whose tensors have `shapes`
/// (names as stored, `params_ema.`/`params.`/`module.` wrappers included),
/// or why it is none weft runs.
pub fn detect(shapes: &HashMap<String, Vec<usize>>) -> std::result::Result<Architecture, String> {
    read(shapes)
        .map(|r| r.architecture)
        .map_err(|e| format!("not an upscale model weft can run: {e}; {SUPPORTED}"))
}

/// The built network.
#[derive(Debug)]
enum Net {
    Esrgan(esrgan::RrdbNet),
    Compact(compact::Compact),
}

/// A loaded upscale model: the UPSCALE_MODEL value.
pub struct UpscaleModel {
    net: Net,
    architecture: Architecture,
    path: PathBuf,
    bytes: usize,
}

impl std::fmt::Debug for UpscaleModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UpscaleModel({}: {})",
            self.path.display(),
            self.architecture.describe()
        )
    }
}

impl Object for UpscaleModel {
    fn size_bytes(&self) -> usize {
        self.bytes
    }
}

impl weft_core::Handle for UpscaleModel {
    const TYPE: weft_core::ValueType = weft_core::ValueType::UpscaleModel;
}

/// Extensions of pickled PyTorch files.
const PICKLES: [&str; 6] = ["pth", "pt", "ckpt", "bin", "pkl", "pt2"];

fn pickled(path: &Path) -> String {
    format!(
        "{}: a pickled PyTorch file, which weft does not load (unpickling can run code); convert it to .safetensors, e.g. with \
         python -c \"import sys, torch, safetensors.torch as st; sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); sd = sd.get('params_ema', sd.get('params', sd)); st.save_file({{k: v.contiguous() for k, v in sd.items()}}, sys.argv[2])\" IN.pth OUT.safetensors",
        path.display()
    )
}

/// Whether a file starts like a zip (`torch.save`) or a bare pickle.
fn looks_pickled(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == b"PK\x03\x04" || (head[0] == 0x80 && (2..=5).contains(&head[1])))
}

impl UpscaleModel {
    /// Loads an upscale model from a `.safetensors` file, sizing the
    /// network from its tensors.
    pub fn open(path: &Path) -> std::result::Result<UpscaleModel, String> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if PICKLES.contains(&ext.as_str()) {
            return Err(pickled(path));
        }
        let file = WeightFile::open(path).map_err(|e| {
            if path.is_file() && looks_pickled(path) {
                pickled(path)
            } else {
                e
            }
        })?;
        let shapes = file.shapes();
        let found = read(&shapes).map_err(|e| {
            format!(
                "{}: not an upscale model weft can run: {e}; {SUPPORTED}",
                path.display()
            )
        })?;
        let mut map = TensorMap::default();
        for (name, key) in found.names {
            map.insert(
                name,
                Source {
                    file: file.clone(),
                    key,
                    transform: Transform::Same,
                },
            );
        }
        let what = found.architecture.describe();
        let net = match &found.architecture {
            Architecture::Esrgan(c) => {
                Net::Esrgan(map.build(&what, |vb| esrgan::RrdbNet::new(c, vb))?)
            }
            Architecture::Compact(c) => {
                Net::Compact(map.build(&what, |vb| compact::Compact::new(c, vb))?)
            }
        };
        Ok(UpscaleModel {
            net,
            architecture: found.architecture,
            path: path.to_path_buf(),
            bytes: map.f32_bytes(),
        })
    }

    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// Output pixels per input pixel along each side.
    pub fn scale(&self) -> usize {
        self.architecture.scale()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole batch `[B, C, H, W]` (values in [0, 1]) upscaled in one
    /// pass: `[B, C_out, H·scale, W·scale]`, not clamped. Memory grows
    /// with the image; see [`UpscaleModel::upscale`].
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = images.dims4()?;
        let want = self.architecture.image_channels();
        if c != want {
            candle_core::bail!("the upscale model takes {want}-channel images, got {c} channels");
        }
        if h == 0 || w == 0 {
            candle_core::bail!("cannot upscale an empty {w}×{h} image");
        }
        match &self.net {
            Net::Esrgan(n) => n.forward(images),
            Net::Compact(n) => n.forward(images),
        }
    }

    /// [`UpscaleModel::forward`] in overlapping tiles, one image at a
    /// time, blended where they overlap: the memory of one tile whatever
    /// the image's size. `progress(done, total)` hears of each tile and
    /// stops the work (an "interrupted" error) by returning `false`.
    pub fn upscale(
        &self,
        images: &Tensor,
        tiling: Tiling,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Tensor> {
        let (_, c, _, _) = images.dims4()?;
        let want = self.architecture.image_channels();
        if c != want {
            candle_core::bail!("the upscale model takes {want}-channel images, got {c} channels");
        }
        tiled::tiled(images, tiling, self.scale(), |t| self.forward(t), progress)
    }
}
