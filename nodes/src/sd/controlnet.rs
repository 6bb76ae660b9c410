//! ControlNet for Stable Diffusion 1.x/2.x (diffusers' `ControlNetModel`
//! with its parameter names): a trainable copy of the UNet's encoder that
//! reads a control image (edges, depth, pose, …) and gives residuals the
//! UNet adds to its skip connections and middle block.
//!
//! Three file layouts load: a diffusers folder (`config.json` +
//! `diffusion_pytorch_model.safetensors`), a single diffusers-keyed
//! `.safetensors` file, and the original ControlNet 1.0/1.1 layout
//! (`control_model.*` or unprefixed: the LDM UNet encoder plus
//! `input_hint_block`, `zero_convs` and `middle_block_out`). A single file's
//! architecture comes from a `config.json` of a `ControlNetModel` next to it
//! when there is one, else from its tensor shapes plus the family rules of
//! [`super::config`] (SD 1.x: 768-wide context, 8 heads; SD 2.x: 1024,
//! 64 channels per head).
//!
//! A [`ControlHint`] (net, image, strength, percent window) rides in
//! [`Conditioning::hints`]; the UNet's [`crate::sampling::Network::forward`]
//! runs every hinted group of batch items through its ControlNet and adds
//! the residuals. The ComfyUI nodes `ControlNetLoader`, `ControlNetApply` and
//! `ControlNetApplyAdvanced` build them.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::Conv2d;
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use weft_core::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeSchema, Object, Value, ValueType,
};

use super::checkpoint::read;
use super::config::{self, count_indexed, dim, shape, Shapes, UNetSpec};
use super::ldm;
use super::unet::{conv, ControlResiduals, Encoder};
use super::weights::{TensorMap, Transform, WeightFile};
use crate::models::loader::file_stamp;
use crate::sampling::{Conditioning, Hint};
use crate::sampling_nodes::handles::{handle, value};

/// Pixels per latent cell: the control image is used at 8× the latent size.
pub const PIXELS_PER_LATENT: usize = 8;

/// A ControlNet's build parameters.
#[derive(Clone, Debug)]
pub struct ControlNetSpec {
    /// The encoder (a UNet config; `out_channels` is unused).
    pub unet: UNetSpec,
    /// Channels of the control image (3, RGB).
    pub conditioning_channels: usize,
    /// Widths of the control-image embedding's levels (`(16, 32, 96, 256)` in SD).
    pub embedding_channels: Vec<usize>,
    /// Shuffle ControlNets: residuals averaged over the image (diffusers'
    /// `global_pool_conditions`; for single files, ComfyUI's rule of a file
    /// name ending in `_shuffle` / `_shuffle_fp16`).
    pub global_pool: bool,
    /// The network was trained on BGR images (`controlnet_conditioning_channel_order`).
    pub bgr: bool,
}

impl ControlNetSpec {
    /// Channels of every encoder skip, in the order the UNet stores them.
    pub fn skip_channels(&self) -> Vec<usize> {
        let c = &self.unet.config;
        let mut out = vec![c.blocks[0].out_channels];
        for (l, b) in c.blocks.iter().enumerate() {
            out.extend(std::iter::repeat_n(b.out_channels, c.layers_per_block));
            if l + 1 < c.blocks.len() {
                out.push(b.out_channels);
            }
        }
        out
    }
}

/// diffusers' `ControlNetConditioningEmbedding`: control image → the width
/// of `conv_in`'s output, downsampled 8×.
#[derive(Debug)]
struct CondEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl CondEmbedding {
    fn new(spec: &ControlNetSpec, vb: VarBuilder) -> Result<CondEmbedding> {
        let e = &spec.embedding_channels;
        if e.is_empty() {
            candle_core::bail!("the control-image embedding has no levels");
        }
        let mut blocks = Vec::with_capacity(2 * (e.len() - 1));
        for i in 0..e.len() - 1 {
            blocks.push(conv(e[i], e[i], 3, 1, vb.pp(format!("blocks.{}", 2 * i)))?);
            blocks.push(conv(
                e[i],
                e[i + 1],
                3,
                2,
                vb.pp(format!("blocks.{}", 2 * i + 1)),
            )?);
        }
        Ok(CondEmbedding {
            conv_in: conv(spec.conditioning_channels, e[0], 3, 1, vb.pp("conv_in"))?,
            blocks,
            conv_out: conv(
                e[e.len() - 1],
                spec.unet.config.blocks[0].out_channels,
                3,
                1,
                vb.pp("conv_out"),
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?.silu()?;
        for b in &self.blocks {
            h = b.forward(&h)?.silu()?;
        }
        self.conv_out.forward(&h)
    }
}

/// A ControlNet; see the module docs.
pub struct ControlNet {
    encoder: Encoder,
    embedding: CondEmbedding,
    down_outs: Vec<Conv2d>,
    mid_out: Conv2d,
    spec: ControlNetSpec,
    path: PathBuf,
    bytes: usize,
}

impl std::fmt::Debug for ControlNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlNet({})", self.path.display())
    }
}

impl ControlNet {
    /// Opens and builds the ControlNet at `path` (a folder or a file).
    pub fn load(path: &Path) -> std::result::Result<ControlNet, String> {
        let (spec, tensors) = open(path)?;
        ControlNet::build(&spec, &tensors, path)
    }

    /// Builds from mapped tensors; `path` names the model in messages.
    pub fn build(
        spec: &ControlNetSpec,
        tensors: &TensorMap,
        path: &Path,
    ) -> std::result::Result<ControlNet, String> {
        if spec.unet.config.blocks.is_empty() {
            return Err(format!("{}: the ControlNet has no levels", path.display()));
        }
        let (encoder, embedding, down_outs, mid_out) = tensors.build("ControlNet", |vb| {
            let encoder = Encoder::new(&spec.unet, vb.clone())?;
            let embedding = CondEmbedding::new(spec, vb.pp("controlnet_cond_embedding"))?;
            let down_outs = spec
                .skip_channels()
                .into_iter()
                .enumerate()
                .map(|(i, c)| conv(c, c, 1, 1, vb.pp(format!("controlnet_down_blocks.{i}"))))
                .collect::<Result<Vec<_>>>()?;
            let last = spec.unet.config.blocks.last().map_or(0, |b| b.out_channels);
            let mid_out = conv(last, last, 1, 1, vb.pp("controlnet_mid_block"))?;
            Ok((encoder, embedding, down_outs, mid_out))
        })?;
        Ok(ControlNet {
            encoder,
            embedding,
            down_outs,
            mid_out,
            spec: spec.clone(),
            path: path.to_path_buf(),
            bytes: tensors.f32_bytes(),
        })
    }

    pub fn spec(&self) -> &ControlNetSpec {
        &self.spec
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether this ControlNet's residuals fit `unet`'s skips.
    pub fn check_fits(&self, unet: &UNetSpec) -> Result<()> {
        let (a, b) = (&self.spec.unet.config, &unet.config);
        let widths = |c: &UNet2DConditionModelConfig| {
            c.blocks.iter().map(|b| b.out_channels).collect::<Vec<_>>()
        };
        if widths(a) != widths(b)
            || a.layers_per_block != b.layers_per_block
            || a.cross_attention_dim != b.cross_attention_dim
        {
            candle_core::bail!(
                "the ControlNet {} (levels {:?}, {} blocks per level, {}-wide context) does not fit this UNet (levels {:?}, {} blocks per level, {}-wide context): a ControlNet for another model family?",
                self.path.display(),
                widths(a),
                a.layers_per_block,
                a.cross_attention_dim,
                widths(b),
                b.layers_per_block,
                b.cross_attention_dim
            );
        }
        Ok(())
    }

    /// Checks that `image` (`[B, C, H, W]`) can be a control image here.
    pub fn check_image(&self, image: &Tensor) -> std::result::Result<(), String> {
        let dims = image.dims();
        let [b, c, h, w] = dims else {
            return Err(format!(
                "a control image is [batch, channels, height, width], got {dims:?}"
            ));
        };
        if *b == 0 || *h == 0 || *w == 0 {
            return Err(format!("the control image is empty ({dims:?})"));
        }
        let want = self.spec.conditioning_channels;
        if !(*c == want || (want == 3 && (*c == 1 || *c == 4)) || (want == 1 && *c == 3)) {
            return Err(format!(
                "the ControlNet takes {want}-channel control images, got {c} channels"
            ));
        }
        Ok(())
    }

    /// The control image for latents of `h × w`: channels adapted (grey to
    /// RGB, alpha dropped), in the network's channel order, centre-cropped
    /// to the latent's aspect ratio and resized (nearest-exact) to 8× the
    /// latent size when it is not that size already, as ComfyUI does.
    pub fn prepare_image(&self, image: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        self.check_image(image).map_err(candle_core::Error::Msg)?;
        let image = image.to_dtype(DType::F32)?;
        let want = self.spec.conditioning_channels;
        let c = image.dim(1)?;
        let mut image = if c == want {
            image
        } else if want == 3 && c == 1 {
            image.repeat((1, 3, 1, 1))?
        } else if want == 3 && c == 4 {
            image.narrow(1, 0, 3)?
        } else {
            image.mean_keepdim(1)?
        };
        if self.spec.bgr && want == 3 {
            let order = Tensor::new(&[2u32, 1, 0], image.device())?;
            image = image.index_select(&order, 1)?;
        }
        resize_center_crop(&image, h * PIXELS_PER_LATENT, w * PIXELS_PER_LATENT)
    }

    /// The residuals for latents `x` (`[B, C, h, w]`, already input-scaled)
    /// at `timestep` with text `context`, from the control image `hint`
    /// (`[K, C, H, W]` in [0, 1]; prepared with [`Self::prepare_image`], item
    /// `i` uses image `i mod K`), multiplied by `strength`. A latent with
    /// more channels than the ControlNet takes (an inpainting UNet's) gives
    /// it its first channels, the noisy latent.
    pub fn residuals(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        hint: &Tensor,
        strength: f64,
    ) -> Result<ControlResiduals> {
        let (b, _, h, w) = x.dims4()?;
        let image = self.prepare_image(hint, h, w)?;
        let k = image.dim(0)?;
        let image = if k == b {
            image
        } else {
            let idx: Vec<u32> = (0..b).map(|i| (i % k) as u32).collect();
            image.index_select(&Tensor::new(idx, image.device())?, 0)?
        };
        self.residuals_prepared(x, timestep, context, &image, strength)
    }

    /// [`Self::residuals`] with the image already prepared and one per item.
    fn residuals_prepared(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        image: &Tensor,
        strength: f64,
    ) -> Result<ControlResiduals> {
        let (b, c, _, _) = x.dims4()?;
        let want = self.spec.unet.in_channels;
        let x = match c.cmp(&want) {
            std::cmp::Ordering::Equal => x.clone(),
            std::cmp::Ordering::Greater => x.narrow(1, 0, want)?,
            std::cmp::Ordering::Less => {
                candle_core::bail!("the ControlNet takes {want}-channel latents, got {c} channels")
            }
        };
        let context = match context.dim(0)? {
            n if n == b => context.clone(),
            1 => {
                let mut dims = context.dims().to_vec();
                dims[0] = b;
                context.broadcast_as(dims)?.contiguous()?
            }
            n => candle_core::bail!("{n} text contexts for a batch of {b} latents"),
        };
        let width = context.dim(2)?;
        if width != self.spec.unet.config.cross_attention_dim {
            candle_core::bail!(
                "the ControlNet cross-attends to {}-wide text states, got {width}",
                self.spec.unet.config.cross_attention_dim
            );
        }
        let temb = self.encoder.time(timestep, b)?;
        let h = self.encoder.conv_in.forward(&x)?;
        let cond = self.embedding.forward(image)?;
        if cond.dims() != h.dims() {
            candle_core::bail!(
                "the control image embeds to {:?}, the latent to {:?}",
                cond.dims(),
                h.dims()
            );
        }
        let (skips, mid) = self.encoder.down_and_mid((h + cond)?, &temb, &context)?;
        let out = |conv: &Conv2d, t: &Tensor| -> Result<Tensor> {
            let mut r = conv.forward(t)?;
            if self.spec.global_pool {
                r = r
                    .mean_keepdim(2)?
                    .mean_keepdim(3)?
                    .broadcast_as(r.shape())?;
            }
            r.affine(strength, 0.0)
        };
        if skips.len() != self.down_outs.len() {
            candle_core::bail!(
                "the ControlNet encoder gives {} skips for {} output convolutions",
                skips.len(),
                self.down_outs.len()
            );
        }
        Ok(ControlResiduals {
            down: skips
                .iter()
                .zip(&self.down_outs)
                .map(|(s, conv)| out(conv, s))
                .collect::<Result<_>>()?,
            mid: out(&self.mid_out, &mid)?,
        })
    }
}

/// Centre-crops `image` to the aspect ratio of `height × width` and resizes
/// it there by nearest-exact sampling (ComfyUI's `common_upscale` with
/// `nearest-exact` and `center`). An image already that size is returned as is.
pub fn resize_center_crop(image: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (_, _, h, w) = image.dims4()?;
    if (h, w) == (height, width) {
        return Ok(image.clone());
    }
    let (old, new) = (w as f64 / h as f64, width as f64 / height as f64);
    let (mut x0, mut y0) = (0usize, 0usize);
    if old > new {
        x0 = ((w as f64 - w as f64 * (new / old)) / 2.0).round_ties_even() as usize;
    } else if old < new {
        y0 = ((h as f64 - h as f64 * (old / new)) / 2.0).round_ties_even() as usize;
    }
    let (ch, cw) = (
        h.saturating_sub(2 * y0).max(1),
        w.saturating_sub(2 * x0).max(1),
    );
    let nearest = |from: usize, to: usize, offset: usize| -> Result<Tensor> {
        let scale = from as f64 / to as f64;
        let idx: Vec<u32> = (0..to)
            .map(|o| {
                let s = ((o as f64 + 0.5) * scale).floor() as usize;
                (offset + s.min(from - 1)) as u32
            })
            .collect();
        Tensor::new(idx, image.device())
    };
    image
        .index_select(&nearest(ch, height, y0)?, 2)?
        .index_select(&nearest(cw, width, x0)?, 3)
}

// ---------------------------------------------------------------------------
// loading

/// Reads a diffusers ControlNet `config.json`.
pub fn spec_from_json(text: &str) -> std::result::Result<ControlNetSpec, String> {
    let mut json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = json.as_object_mut().ok_or("not a JSON object")?;
    if let Some(class) = obj.get("_class_name").and_then(|c| c.as_str()) {
        if class != "ControlNetModel" {
            return Err(format!(
                "the config is for a {class}, not a ControlNetModel"
            ));
        }
    }
    if obj.get("addition_embed_type").is_some_and(|v| !v.is_null()) {
        return Err(
            "this ControlNet has added embeddings (SDXL-style); only SD 1.x/2.x ControlNets are supported yet"
                .into(),
        );
    }
    // The UNet config parser wants out_channels, which a ControlNet lacks.
    if !obj.contains_key("out_channels") {
        let inc = obj.get("in_channels").cloned().unwrap_or(4.into());
        obj.insert("out_channels".into(), inc);
    }
    let usize_of = |v: &serde_json::Value| v.as_u64().map(|n| n as usize);
    let conditioning_channels = match obj.get("conditioning_channels") {
        None | Some(serde_json::Value::Null) => 3,
        Some(v) => usize_of(v).ok_or("conditioning_channels is not a number")?,
    };
    let embedding_channels = match obj.get("conditioning_embedding_out_channels") {
        None | Some(serde_json::Value::Null) => vec![16, 32, 96, 256],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(usize_of).collect::<Option<Vec<_>>>())
            .ok_or("conditioning_embedding_out_channels is not a list of numbers")?,
    };
    let global_pool = obj
        .get("global_pool_conditions")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let bgr = match obj
        .get("controlnet_conditioning_channel_order")
        .and_then(|v| v.as_str())
    {
        None | Some("rgb") => false,
        Some("bgr") => true,
        Some(other) => return Err(format!("unknown channel order {other:?}")),
    };
    let unet = config::unet_from_json(&json.to_string())?;
    Ok(ControlNetSpec {
        unet,
        conditioning_channels,
        embedding_channels,
        global_pool,
        bgr,
    })
}

/// The architecture from tensor shapes under diffusers names. Head counts
/// come from the family the context width identifies.
pub fn spec_from_shapes(shapes: &Shapes) -> std::result::Result<ControlNetSpec, String> {
    let in_channels = dim(shapes, "conv_in.weight", 1)?;
    let levels = count_indexed(shapes, "down_blocks.");
    if levels == 0 {
        return Err("no encoder levels (`down_blocks.0.…`)".into());
    }
    let lpb = count_indexed(shapes, "down_blocks.0.resnets.");
    if lpb == 0 {
        return Err("no ResNet blocks in `down_blocks.0`".into());
    }
    let mut blocks = Vec::with_capacity(levels);
    let (mut context, mut linear) = (None, false);
    for l in 0..levels {
        let out_channels = dim(
            shapes,
            &format!("down_blocks.{l}.resnets.0.conv1.weight"),
            0,
        )?;
        let attn = format!("down_blocks.{l}.attentions.0.");
        let depth = count_indexed(shapes, &format!("{attn}transformer_blocks."));
        if depth > 0 {
            linear = shape(shapes, &format!("{attn}proj_in.weight"))?.len() == 2;
            context = Some(dim(
                shapes,
                &format!("{attn}transformer_blocks.0.attn2.to_k.weight"),
                1,
            )?);
        }
        blocks.push((out_channels, depth));
    }
    if context.is_none() && shapes.contains_key("mid_block.attentions.0.proj_in.weight") {
        linear = shape(shapes, "mid_block.attentions.0.proj_in.weight")?.len() == 2;
        context = Some(dim(
            shapes,
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            1,
        )?);
    }
    let context = context.ok_or("the ControlNet has no cross-attention")?;
    let heads = |channels: usize| -> std::result::Result<usize, String> {
        config::Family::from_context(context).heads(channels).ok_or_else(|| format!(
            "the attention head count of a ControlNet with a {context}-wide context cannot be read from its shapes (not SD 1.x or 2.x); put its diffusers config.json next to the file"
        ))
    };
    let blocks = blocks
        .into_iter()
        .map(|(out_channels, depth)| {
            Ok(BlockConfig {
                out_channels,
                use_cross_attn: (depth > 0).then_some(depth),
                attention_head_dim: heads(out_channels)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let e = "controlnet_cond_embedding.";
    let conditioning_channels = dim(shapes, &format!("{e}conv_in.weight"), 1)?;
    let mut embedding_channels = vec![dim(shapes, &format!("{e}conv_in.weight"), 0)?];
    let n_blocks = count_indexed(shapes, &format!("{e}blocks."));
    if n_blocks & 1 == 1 {
        return Err(format!(
            "the control-image embedding has {n_blocks} convolutions, expected pairs"
        ));
    }
    for i in 0..n_blocks / 2 {
        embedding_channels.push(dim(shapes, &format!("{e}blocks.{}.weight", 2 * i + 1), 0)?);
    }
    Ok(ControlNetSpec {
        unet: UNetSpec {
            in_channels,
            out_channels: in_channels,
            config: UNet2DConditionModelConfig {
                center_input_sample: false,
                flip_sin_to_cos: true,
                freq_shift: 0.0,
                blocks,
                layers_per_block: lpb,
                downsample_padding: 1,
                mid_block_scale_factor: 1.0,
                norm_num_groups: 32,
                norm_eps: 1e-5,
                cross_attention_dim: context,
                sliced_attention_size: None,
                use_linear_projection: linear,
            },
        },
        conditioning_channels,
        embedding_channels,
        global_pool: false,
        bgr: false,
    })
}

/// An original-layout key (prefix removed) → its diffusers name.
/// `hint_last` is the index of the last `input_hint_block` convolution.
pub fn ldm_names(key: &str, layers_per_block: usize, hint_last: usize) -> Vec<(String, Transform)> {
    let same = |name: String| vec![(name, Transform::Same)];
    let indexed = |rest: &str| -> Option<(usize, String)> {
        let (i, p) = rest.split_once('.')?;
        Some((i.parse().ok()?, p.to_string()))
    };
    if let Some(rest) = key.strip_prefix("input_hint_block.") {
        let Some((i, p)) = indexed(rest) else {
            return Vec::new();
        };
        let layer = if i == 0 {
            "conv_in".to_string()
        } else if i == hint_last {
            "conv_out".to_string()
        } else if i % 2 == 0 {
            format!("blocks.{}", i / 2 - 1)
        } else {
            return Vec::new();
        };
        return same(format!("controlnet_cond_embedding.{layer}.{p}"));
    }
    if let Some(rest) = key.strip_prefix("zero_convs.") {
        return match indexed(rest) {
            Some((i, p)) => match p.strip_prefix("0.") {
                Some(p) => same(format!("controlnet_down_blocks.{i}.{p}")),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
    }
    if let Some(p) = key.strip_prefix("middle_block_out.0.") {
        return same(format!("controlnet_mid_block.{p}"));
    }
    ldm::unet_names(key, layers_per_block)
}

/// The file layouts a ControlNet comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Diffusers,
    /// The original layout under this prefix (`control_model.` or none).
    Original(&'static str),
}

/// Finds the ControlNet's config and tensors at `path` (a diffusers folder
/// or a single `.safetensors` file), without building it.
pub fn open(path: &Path) -> std::result::Result<(ControlNetSpec, TensorMap), String> {
    if path.is_dir() {
        return open_folder(path);
    }
    if !path.exists() {
        return Err(format!(
            "{}: no such ControlNet file or folder",
            path.display()
        ));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ["pth", "pt", "bin", "ckpt"].contains(&ext.as_str()) {
        return Err(format!(
            "{}: a pickled checkpoint, which weft does not load (it can run code); convert it to safetensors",
            path.display()
        ));
    }
    open_file(path, config_beside(path)?)
}

/// The `config.json` beside a single file, when it is a ControlNetModel's
/// (any other config there is someone else's and is ignored).
fn config_beside(path: &Path) -> std::result::Result<Option<ControlNetSpec>, String> {
    let config = path.with_file_name("config.json");
    if !config.is_file() {
        return Ok(None);
    }
    let text = read(&config)?;
    let class = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|j| j.get("_class_name")?.as_str().map(str::to_string));
    if class.as_deref() != Some("ControlNetModel") {
        return Ok(None);
    }
    spec_from_json(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", config.display()))
}

fn open_folder(dir: &Path) -> std::result::Result<(ControlNetSpec, TensorMap), String> {
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(format!(
            "{}: not a diffusers ControlNet folder (no config.json)",
            dir.display()
        ));
    }
    let spec = spec_from_json(&read(&config)?).map_err(|e| format!("{}: {e}", config.display()))?;
    let names = [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
    ];
    let Some(weights) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) else {
        return Err(format!(
            "{}: no safetensors weights (looked for {}); pickled .bin weights are not loaded, convert them to safetensors",
            dir.display(),
            names.join(", ")
        ));
    };
    open_file(&weights, Some(spec))
}

fn open_file(
    path: &Path,
    given: Option<ControlNetSpec>,
) -> std::result::Result<(ControlNetSpec, TensorMap), String> {
    let file = WeightFile::open(path)?;
    let shapes = file.shapes();
    let ctx = |e: String| format!("{}: {e}", path.display());
    if shapes.contains_key("lora_controlnet") {
        return Err(ctx("a Control-LoRA, which is not supported yet".into()));
    }
    let layout = if shapes.contains_key("controlnet_cond_embedding.conv_in.weight") {
        Layout::Diffusers
    } else if shapes.contains_key("control_model.zero_convs.0.0.weight") {
        Layout::Original("control_model.")
    } else if shapes.contains_key("zero_convs.0.0.weight") {
        Layout::Original("")
    } else {
        let mut sample: Vec<&String> = shapes.keys().collect();
        sample.sort();
        sample.truncate(3);
        return Err(ctx(format!(
            "not a ControlNet: no `controlnet_cond_embedding.…` (diffusers) or `control_model.zero_convs.…` / `zero_convs.…` (original) tensors (first keys: {sample:?})"
        )));
    };
    // Diffusers names and shapes of every tensor the file supplies.
    let (prefix, rename): (&str, Rename) = match layout {
        Layout::Diffusers => (
            "",
            Box::new(|k: &str| vec![(k.to_string(), Transform::Same)]),
        ),
        Layout::Original(prefix) => {
            if shapes.contains_key("difference") {
                return Err(ctx(
                    "a difference ControlNet (stored relative to its base model), which is not supported"
                        .into(),
                ));
            }
            let keys = || shapes.keys().filter_map(|k| k.strip_prefix(prefix));
            if keys().any(|k| k.starts_with("label_emb.")) {
                return Err(ctx(
                    "this ControlNet has a label embedding (SDXL); only SD 1.x/2.x ControlNets are supported yet"
                        .into(),
                ));
            }
            let input_blocks = format!("{prefix}input_blocks.");
            let n_input = count_indexed(&shapes, &input_blocks);
            let first_down = (1..n_input)
                .find(|i| shapes.contains_key(&format!("{input_blocks}{i}.0.op.weight")));
            let lpb = first_down.map_or(n_input.saturating_sub(1), |i| i - 1);
            if lpb == 0 {
                return Err(ctx(format!(
                    "the encoder's input blocks do not form levels ({n_input} blocks)"
                )));
            }
            let hint_last = keys()
                .filter_map(|k| k.strip_prefix("input_hint_block."))
                .filter_map(|k| k.split_once('.')?.0.parse::<usize>().ok())
                .max()
                .unwrap_or(0);
            (
                prefix,
                Box::new(move |k: &str| ldm_names(k, lpb, hint_last)),
            )
        }
    };
    let mut named = Shapes::new();
    for (key, dims) in &shapes {
        if let Some(rest) = key.strip_prefix(prefix) {
            for (name, _) in rename(rest) {
                named.insert(name, dims.clone());
            }
        }
    }
    if named.is_empty() {
        return Err(ctx("no ControlNet tensors".into()));
    }
    if named.contains_key("add_embedding.linear_1.weight") {
        return Err(ctx(
            "this ControlNet has added embeddings (SDXL-style); only SD 1.x/2.x ControlNets are supported yet"
                .into(),
        ));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut spec = match given {
        Some(spec) => spec,
        None => spec_from_shapes(&named).map_err(ctx)?,
    };
    spec.global_pool |= stem.ends_with("_shuffle") || stem.ends_with("_shuffle_fp16");
    let mut map = TensorMap::default();
    map.add_file(&file, prefix, rename);
    Ok((spec, map))
}

// ---------------------------------------------------------------------------
// hints

/// A ControlNet applied to a conditioning: what [`Conditioning::hints`]
/// carries for the UNet.
#[derive(Debug)]
pub struct ControlHint {
    pub net: Arc<ControlNet>,
    /// `[K, C, H, W]` in [0, 1]; item `i` of the items sharing this hint
    /// uses image `i mod K`.
    pub image: Tensor,
    /// Residual multiplier (0 disables).
    pub strength: f64,
    /// Fraction of the schedule (0 = the noisiest end) where control starts…
    pub start_percent: f64,
    /// …and where it ends.
    pub end_percent: f64,
    /// A ControlNet applied earlier to the same conditioning: residuals add up.
    pub previous: Option<Arc<ControlHint>>,
}

/// Slack for timesteps that went through f32.
const WINDOW_SLACK: f64 = 1e-3;

impl ControlHint {
    /// Whether control applies at model timestep `t` (0..999): ComfyUI's
    /// percent window, (1 − end)·999 ≤ t ≤ (1 − start)·999, with start 0 and
    /// end 1 open-ended.
    pub fn is_active(&self, t: f64) -> bool {
        let high = if self.start_percent <= 0.0 {
            f64::INFINITY
        } else {
            (1.0 - self.start_percent) * 999.0
        };
        let low = if self.end_percent >= 1.0 {
            f64::NEG_INFINITY
        } else {
            (1.0 - self.end_percent) * 999.0
        };
        low - WINDOW_SLACK <= t && t <= high + WINDOW_SLACK
    }

    /// This hint as a conditioning entry.
    pub fn into_hint(self) -> Hint {
        Hint(Arc::new(self))
    }
}

/// Batch items sharing one hint.
struct Group<'a> {
    hint: &'a Arc<ControlHint>,
    key: usize,
    /// The items, as indices into the slice being run…
    locals: Vec<usize>,
    /// …and their positions among all the hint's items (which image each gets).
    positions: Vec<usize>,
}

/// Maps a file's keys (prefix removed) to diffusers names.
type Rename = Box<dyn Fn(&str) -> Vec<(String, Transform)>>;

/// The control of each batch item, for one UNet forward.
pub(crate) struct HintPlan {
    /// Per item: its hint, the hint's identity and the item's position
    /// among the items sharing it (which image it gets).
    items: Vec<Option<(Arc<ControlHint>, usize, usize)>>,
}

impl HintPlan {
    /// Reads `hints` (empty, one for all, or one per item) for `batch` items.
    pub(crate) fn new(hints: &[Option<Hint>], batch: usize) -> Result<HintPlan> {
        let per_item: Vec<Option<&Hint>> = match hints.len() {
            0 => vec![None; batch],
            1 => vec![hints[0].as_ref(); batch],
            n if n == batch => hints.iter().map(Option::as_ref).collect(),
            n => candle_core::bail!("the conditioning has {n} hints for a batch of {batch}"),
        };
        let mut seen: HashMap<usize, usize> = HashMap::new();
        let items = per_item
            .into_iter()
            .map(|h| {
                let Some(h) = h else { return Ok(None) };
                let hint = h.0.clone().downcast::<ControlHint>().map_err(|_| {
                    candle_core::Error::Msg(
                        "the Stable Diffusion UNet got a conditioning hint it does not understand (not a ControlNet)".into(),
                    )
                })?;
                let key = Arc::as_ptr(&hint) as usize;
                let pos = seen.entry(key).or_insert(0);
                let item = (hint, key, *pos);
                *pos += 1;
                Ok(Some(item))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HintPlan { items })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.iter().all(Option::is_none)
    }

    /// The residuals for the batch items `items` (whose latents are `x` and
    /// contexts `context`) at timestep `t`, or `None` when no hint of theirs
    /// is active. Items sharing a hint run through its ControlNet together;
    /// uncontrolled items get zero residuals.
    pub(crate) fn residuals(
        &self,
        unet: &UNetSpec,
        x: &Tensor,
        t: f64,
        context: &Tensor,
        items: Range<usize>,
    ) -> Result<Option<ControlResiduals>> {
        let n = items.len();
        // Groups in first-seen order.
        let mut groups: Vec<Group> = Vec::new();
        for (local, item) in self.items[items].iter().enumerate() {
            if let Some((hint, key, pos)) = item {
                match groups.iter_mut().find(|g| g.key == *key) {
                    Some(g) => {
                        g.locals.push(local);
                        g.positions.push(*pos);
                    }
                    None => groups.push(Group {
                        hint,
                        key: *key,
                        locals: vec![local],
                        positions: vec![*pos],
                    }),
                }
            }
        }
        let (_, _, h, w) = x.dims4()?;
        let mut parts: Vec<(Vec<usize>, ControlResiduals)> = Vec::new();
        for Group {
            hint,
            locals,
            positions,
            ..
        } in groups
        {
            let all = locals.len() == n;
            let select = |t: &Tensor| -> Result<Tensor> {
                if all {
                    return Ok(t.clone());
                }
                let idx: Vec<u32> = locals.iter().map(|&i| i as u32).collect();
                t.index_select(&Tensor::new(idx, t.device())?, 0)
            };
            let mut sum: Option<ControlResiduals> = None;
            let mut link = Some(hint);
            while let Some(l) = link {
                if l.strength != 0.0 && l.is_active(t) {
                    l.net.check_fits(unet)?;
                    let image = l.net.prepare_image(&l.image, h, w)?;
                    let k = image.dim(0)?;
                    let idx: Vec<u32> = positions.iter().map(|p| (p % k) as u32).collect();
                    let image = image.index_select(&Tensor::new(idx, image.device())?, 0)?;
                    let r = l.net.residuals_prepared(
                        &select(x)?,
                        t,
                        &select(context)?,
                        &image,
                        l.strength,
                    )?;
                    sum = Some(match sum {
                        None => r,
                        Some(s) => add(&s, &r)?,
                    });
                }
                link = l.previous.as_ref();
            }
            if let Some(r) = sum {
                parts.push((locals, r));
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        assemble(n, parts).map(Some)
    }
}

fn add(a: &ControlResiduals, b: &ControlResiduals) -> Result<ControlResiduals> {
    if a.down.len() != b.down.len() {
        candle_core::bail!("chained ControlNets give different numbers of residuals");
    }
    Ok(ControlResiduals {
        down: a
            .down
            .iter()
            .zip(&b.down)
            .map(|(x, y)| x + y)
            .collect::<Result<_>>()?,
        mid: (&a.mid + &b.mid)?,
    })
}

/// Full-batch residuals from each group's, zeros for the items of none.
fn assemble(n: usize, parts: Vec<(Vec<usize>, ControlResiduals)>) -> Result<ControlResiduals> {
    if parts.len() == 1 && parts[0].0.len() == n {
        // One group holding every item, in order.
        return Ok(parts.into_iter().next().expect("one part").1);
    }
    let mut owner = vec![None; n];
    for (p, (locals, _)) in parts.iter().enumerate() {
        for (row, &i) in locals.iter().enumerate() {
            owner[i] = Some((p, row));
        }
    }
    let level = |get: &dyn Fn(&ControlResiduals) -> &Tensor| -> Result<Tensor> {
        let first = get(&parts[0].1);
        let mut dims = first.dims().to_vec();
        dims[0] = 1;
        let zero = Tensor::zeros(dims, first.dtype(), first.device())?;
        let pieces = owner
            .iter()
            .map(|o| match o {
                Some((p, row)) => get(&parts[*p].1).narrow(0, *row, 1),
                None => Ok(zero.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&pieces, 0)
    };
    let levels = parts[0].1.down.len();
    if parts.iter().any(|(_, r)| r.down.len() != levels) {
        candle_core::bail!("ControlNets in one batch give different numbers of residuals");
    }
    let down = (0..levels)
        .map(|k| level(&|r: &ControlResiduals| &r.down[k]))
        .collect::<Result<Vec<_>>>()?;
    let mid = level(&|r: &ControlResiduals| &r.mid)?;
    Ok(ControlResiduals { down, mid })
}

/// Attaches a ControlNet to conditionings, ComfyUI style: each item's
/// existing ControlNet becomes the new hint's `previous`, and conditionings
/// whose items had the same previous hint share one new hint (so a CFG
/// batch of positive and negative runs the ControlNet once). Strength 0
/// leaves them unchanged.
pub fn apply_control(
    conditionings: &[&Conditioning],
    net: &Arc<ControlNet>,
    image: &Tensor,
    strength: f64,
    start_percent: f64,
    end_percent: f64,
) -> std::result::Result<Vec<Conditioning>, String> {
    if !strength.is_finite() {
        return Err("strength must be finite".into());
    }
    if !(0.0..=1.0).contains(&start_percent) || !(0.0..=1.0).contains(&end_percent) {
        return Err("start_percent and end_percent must lie in [0, 1]".into());
    }
    if start_percent > end_percent {
        return Err(format!(
            "start_percent {start_percent} is after end_percent {end_percent}"
        ));
    }
    net.check_image(image)?;
    if strength == 0.0 {
        return Ok(conditionings.iter().map(|c| (*c).clone()).collect());
    }
    let mut made: HashMap<usize, Hint> = HashMap::new();
    let mut hint_after = |previous: Option<&Hint>| -> std::result::Result<Hint, String> {
        let previous = previous
            .map(|p| {
                p.0.clone().downcast::<ControlHint>().map_err(|_| {
                    "the conditioning carries a hint that is not a ControlNet".to_string()
                })
            })
            .transpose()?;
        let key = previous.as_ref().map_or(0, |p| Arc::as_ptr(p) as usize);
        Ok(made
            .entry(key)
            .or_insert_with(|| {
                ControlHint {
                    net: net.clone(),
                    image: image.clone(),
                    strength,
                    start_percent,
                    end_percent,
                    previous,
                }
                .into_hint()
            })
            .clone())
    };
    conditionings
        .iter()
        .map(|c| {
            let hints = if c.hints.is_empty() {
                vec![Some(hint_after(None)?)]
            } else {
                c.hints
                    .iter()
                    .map(|h| hint_after(h.as_ref()).map(Some))
                    .collect::<std::result::Result<Vec<_>, String>>()?
            };
            Ok(Conditioning {
                hints,
                ..(*c).clone()
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// nodes

/// CONTROL_NET: a loaded ControlNet.
#[derive(Clone, Debug)]
pub struct ControlNetHandle(pub Arc<ControlNet>);

impl Object for ControlNetHandle {
    fn size_bytes(&self) -> usize {
        self.0.size_bytes()
    }
}

/// Size and modification time of the files a path loads from.
fn fingerprint(path: &str) -> String {
    let p = Path::new(path);
    let files: Vec<PathBuf> = if p.is_dir() {
        [
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ]
        .iter()
        .map(|n| p.join(n))
        .collect()
    } else {
        vec![p.to_path_buf(), p.with_file_name("config.json")]
    };
    files
        .iter()
        .map(|f| file_stamp(f))
        .collect::<Vec<_>>()
        .join(";")
}

/// Loads a ControlNet.
pub struct ControlNetLoader(NodeSchema);

impl ControlNetLoader {
    pub fn new() -> Self {
        ControlNetLoader(
            NodeSchema::new(
                "ControlNetLoader",
                "model/loaders",
                "Loads a Stable Diffusion 1.x/2.x ControlNet: a diffusers folder (config.json + diffusion_pytorch_model.safetensors), a diffusers-keyed .safetensors file, or an original ControlNet 1.0/1.1 .safetensors file (`control_model.*` keys, as ComfyUI and A1111 use). A single file's architecture is read from a ControlNetModel config.json beside it, else from its tensor shapes (SD 1.x or 2.x). Pickled .pth/.bin files are not loaded.",
            )
            .input(
                InputSpec::string("control_net_path")
                    .doc("Path to the ControlNet's .safetensors file or diffusers folder."),
            )
            .output("CONTROL_NET", ValueType::ControlNet, "The ControlNet.")
            .external_state()
            .heavy(),
        )
    }
}

impl Default for ControlNetLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ControlNetLoader {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> std::result::Result<Vec<Value>, NodeError> {
        let path = ctx.inputs.str("control_net_path")?;
        let net = ControlNet::load(Path::new(path))
            .map_err(|e| NodeError::input("control_net_path", e))?;
        Ok(vec![value(
            ValueType::ControlNet,
            ControlNetHandle(Arc::new(net)),
        )])
    }

    fn fingerprint(&self, inputs: &Inputs) -> std::result::Result<String, NodeError> {
        Ok(fingerprint(inputs.str("control_net_path")?))
    }
}

fn image_input(inputs: &Inputs) -> std::result::Result<Tensor, NodeError> {
    match inputs.value("image")? {
        Value::Image(t) => Ok(t.clone()),
        other => Err(NodeError::input(
            "image",
            format!("expected IMAGE, found {}", other.ty()),
        )),
    }
}

fn conditioning<'a>(
    inputs: &'a Inputs,
    name: &str,
) -> std::result::Result<&'a Conditioning, NodeError> {
    handle::<Conditioning>(inputs, name, ValueType::Conditioning)
}

fn strength_input() -> InputSpec {
    InputSpec::float("strength")
        .default(1.0)
        .range(0.0, 10.0)
        .step(0.01)
        .doc("Multiplier of the ControlNet's residuals; 0 leaves the conditioning unchanged.")
}

fn image_input_spec() -> InputSpec {
    InputSpec::of("image", ValueType::Image).doc(
        "The control image (an edge map, depth map, pose…) in [0, 1], already preprocessed. It is centre-cropped and resized (nearest-exact) to 8× the latent size if it is not that size; a batch of images is spread over the latent batch (item i uses image i mod count).",
    )
}

/// Applies a ControlNet to one conditioning.
/// The apply nodes' shared work: the ControlNet and image inputs, checked,
/// attached to each conditioning with `strength` over `[start, end]`.
fn apply_node(
    i: &Inputs,
    conds: &[&Conditioning],
    start: f64,
    end: f64,
) -> std::result::Result<Vec<Value>, NodeError> {
    let net = handle::<ControlNetHandle>(i, "control_net", ValueType::ControlNet)?
        .0
        .clone();
    let image = image_input(i)?;
    net.check_image(&image)
        .map_err(|e| NodeError::input("image", e))?;
    let out = apply_control(conds, &net, &image, i.float("strength")?, start, end)
        .map_err(NodeError::new)?;
    Ok(out
        .into_iter()
        .map(|c| value(ValueType::Conditioning, c))
        .collect())
}

pub struct ControlNetApply(NodeSchema);

impl ControlNetApply {
    pub fn new() -> Self {
        ControlNetApply(
            NodeSchema::new(
                "ControlNetApply",
                "conditioning/controlnet",
                "Applies a ControlNet to a conditioning for the whole schedule: at every step the ControlNet reads the control image and the latent, and the UNet adds its residuals (times strength) to its skip connections. Give the result as the positive conditioning; the negative stays uncontrolled. Applying a second ControlNet to the result stacks them.",
            )
            .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The text conditioning to control."))
            .input(InputSpec::of("control_net", ValueType::ControlNet).doc("The ControlNet (ControlNetLoader)."))
            .input(image_input_spec())
            .input(strength_input())
            .output("CONDITIONING", ValueType::Conditioning, "The conditioning with the ControlNet attached."),
        )
    }
}

impl Default for ControlNetApply {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ControlNetApply {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> std::result::Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        apply_node(i, &[conditioning(i, "conditioning")?], 0.0, 1.0)
    }
}

/// Applies a ControlNet to positive and negative, within a part of the schedule.
pub struct ControlNetApplyAdvanced(NodeSchema);

impl ControlNetApplyAdvanced {
    pub fn new() -> Self {
        ControlNetApplyAdvanced(
            NodeSchema::new(
                "ControlNetApplyAdvanced",
                "conditioning/controlnet",
                "Applies a ControlNet to both the positive and the negative conditioning (as ComfyUI and diffusers do), only between start_percent and end_percent of the schedule: at model timestep t control is on when (1 − end)·999 ≤ t ≤ (1 − start)·999. Positive and negative share one ControlNet pass per step. Applying a second ControlNet to the results stacks them.",
            )
            .input(InputSpec::of("positive", ValueType::Conditioning).doc("The positive conditioning."))
            .input(InputSpec::of("negative", ValueType::Conditioning).doc("The negative conditioning."))
            .input(InputSpec::of("control_net", ValueType::ControlNet).doc("The ControlNet (ControlNetLoader)."))
            .input(image_input_spec())
            .input(strength_input())
            .input(
                InputSpec::float("start_percent")
                    .default(0.0)
                    .range(0.0, 1.0)
                    .step(0.001)
                    .doc("Where control starts, as a fraction of the schedule from the noisiest end (0 = from the first step)."),
            )
            .input(
                InputSpec::float("end_percent")
                    .default(1.0)
                    .range(0.0, 1.0)
                    .step(0.001)
                    .doc("Where control ends (1 = to the last step)."),
            )
            .output("positive", ValueType::Conditioning, "The positive conditioning with the ControlNet attached.")
            .output("negative", ValueType::Conditioning, "The negative conditioning with the ControlNet attached."),
        )
    }
}

impl Default for ControlNetApplyAdvanced {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ControlNetApplyAdvanced {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> std::result::Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let (start, end) = (i.float("start_percent")?, i.float("end_percent")?);
        if start > end {
            return Err(NodeError::input(
                "start_percent",
                format!("start_percent {start} is after end_percent {end}"),
            ));
        }
        let conds = [conditioning(i, "positive")?, conditioning(i, "negative")?];
        apply_node(i, &conds, start, end)
    }
}

/// Registers the ControlNet nodes.
pub fn register(registry: &mut weft_core::Registry) -> std::result::Result<(), String> {
    registry.register(ControlNetLoader::new())?;
    registry.register(ControlNetApply::new())?;
    registry.register(ControlNetApplyAdvanced::new())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn sd15_shapes() -> Shapes {
        let mut s = Shapes::new();
        let mut put = |k: &str, d: &[usize]| {
            s.insert(k.to_string(), d.to_vec());
        };
        put("conv_in.weight", &[320, 4, 3, 3]);
        for (l, c) in [320usize, 640, 1280, 1280].iter().enumerate() {
            for j in 0..2 {
                put(
                    &format!("down_blocks.{l}.resnets.{j}.conv1.weight"),
                    &[*c, *c, 3, 3],
                );
                if l < 3 {
                    let a = format!("down_blocks.{l}.attentions.{j}.");
                    put(&format!("{a}proj_in.weight"), &[*c, *c, 1, 1]);
                    put(
                        &format!("{a}transformer_blocks.0.attn2.to_k.weight"),
                        &[*c, 768],
                    );
                }
            }
        }
        let e = "controlnet_cond_embedding.";
        put(&format!("{e}conv_in.weight"), &[16, 3, 3, 3]);
        for (i, (a, b)) in [(16, 16), (16, 32), (32, 32), (32, 96), (96, 96), (96, 256)]
            .iter()
            .enumerate()
        {
            put(&format!("{e}blocks.{i}.weight"), &[*b, *a, 3, 3]);
        }
        put(&format!("{e}conv_out.weight"), &[320, 256, 3, 3]);
        s
    }

    #[test]
    fn sd15_architecture_from_shapes() {
        let spec = spec_from_shapes(&sd15_shapes()).unwrap();
        let c = &spec.unet.config;
        assert_eq!(spec.unet.in_channels, 4);
        assert_eq!(c.layers_per_block, 2);
        assert_eq!(c.cross_attention_dim, 768);
        assert!(!c.use_linear_projection);
        let widths: Vec<_> = c.blocks.iter().map(|b| b.out_channels).collect();
        assert_eq!(widths, [320, 640, 1280, 1280]);
        assert!(c.blocks.iter().all(|b| b.attention_head_dim == 8));
        assert_eq!(c.blocks[3].use_cross_attn, None);
        assert_eq!(c.blocks[0].use_cross_attn, Some(1));
        assert_eq!(spec.embedding_channels, [16, 32, 96, 256]);
        assert_eq!(spec.conditioning_channels, 3);
        // SD 1.5's 12 skips: conv_in, 2 per level, 3 downsamplers.
        assert_eq!(
            spec.skip_channels(),
            [320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280]
        );
    }

    #[test]
    fn unknown_family_asks_for_a_config() {
        let mut s = sd15_shapes();
        for v in s.values_mut() {
            if v.len() == 2 && v[1] == 768 {
                v[1] = 512;
            }
        }
        let e = spec_from_shapes(&s).unwrap_err();
        assert!(e.contains("config.json"), "{e}");
    }

    #[test]
    fn original_names_map_to_diffusers() {
        let cases = [
            (
                "input_hint_block.0.weight",
                "controlnet_cond_embedding.conv_in.weight",
            ),
            (
                "input_hint_block.2.bias",
                "controlnet_cond_embedding.blocks.0.bias",
            ),
            (
                "input_hint_block.12.weight",
                "controlnet_cond_embedding.blocks.5.weight",
            ),
            (
                "input_hint_block.14.weight",
                "controlnet_cond_embedding.conv_out.weight",
            ),
            ("zero_convs.11.0.weight", "controlnet_down_blocks.11.weight"),
            ("middle_block_out.0.bias", "controlnet_mid_block.bias"),
            (
                "input_blocks.4.1.proj_in.weight",
                "down_blocks.1.attentions.0.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
            ),
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                ldm_names(ldm, 2, 14),
                vec![(diffusers.to_string(), Transform::Same)],
                "{ldm}"
            );
        }
        assert!(ldm_names("input_hint_block.1.weight", 2, 14).is_empty());
        assert!(ldm_names("zero_convs.0.1.weight", 2, 14).is_empty());
    }

    #[test]
    fn nearest_exact_center_crop() {
        // 1×1×2×6 → 4×4: crop the centre 2×2 (columns 2, 3), then each
        // source pixel twice.
        let img = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 6))
            .unwrap();
        let out = resize_center_crop(&img, 4, 4).unwrap();
        let v: Vec<Vec<f32>> = out
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            v,
            vec![
                vec![2.0, 2.0, 3.0, 3.0],
                vec![2.0, 2.0, 3.0, 3.0],
                vec![8.0, 8.0, 9.0, 9.0],
                vec![8.0, 8.0, 9.0, 9.0],
            ]
        );
        // Downscaling 1×5 → 1×2 keeps the pixels nearest each output centre:
        // floor((o + 0.5)·2.5) = 1, 3 (nearest-exact; plain nearest gives 0, 2).
        let row = Tensor::arange(0f32, 5.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 5))
            .unwrap();
        let out = resize_center_crop(&row.repeat((1, 1, 2, 1)).unwrap(), 1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // 2×5 → 1×2: aspect 2.5 > 2, crop x = round((5 − 5·0.8)/2) = round(0.5) = 0.
        assert_eq!(out, vec![1.0, 3.0]);
    }
}
