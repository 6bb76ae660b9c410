//! The file layouts a ControlNet comes in, and the architecture each one
//! implies.

use std::path::Path;

use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};

use super::ControlNetSpec;
use crate::sd::checkpoint::read;
use crate::sd::config::{self, count_indexed, dim, shape, Shapes, UNetSpec};
use crate::sd::ldm;
use crate::weights::{TensorMap, Transform, WeightFile};

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
    let added = dim(shapes, "add_embedding.linear_1.weight", 1)
        .ok()
        .map(|input| config::TextTime::new(config::SDXL_TIME_DIM, input, context));
    let heads = |channels: usize| -> std::result::Result<usize, String> {
        config::Family::from_context(context, added.as_ref()).heads(channels).ok_or_else(|| format!(
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
            mid_depth: count_indexed(shapes, "mid_block.attentions.0.transformer_blocks.").max(1),
            added,
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

/// Maps a file's keys (prefix removed) to diffusers names.
type Rename = Box<dyn Fn(&str) -> Vec<(String, Transform)>>;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
