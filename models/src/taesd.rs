//! TAESD's decoder (madebyollin's Tiny AutoEncoder for Stable Diffusion;
//! diffusers' `AutoencoderTiny`): a small convolutional network that turns
//! a latent in the diffusion network's scale into an image at 8× its size,
//! cheaply enough to preview every sampling step.
//!
//! The network: `tanh(x/3)·3`, a 3×3 convolution to 64 channels and a
//! ReLU; then stages of residual blocks (conv-ReLU-conv-ReLU-conv plus the
//! input, then ReLU), each stage but the last followed by a ×2 nearest
//! upsample and a bias-free 3×3 convolution; a last 3×3 convolution to RGB.
//! The released decoders have stages of 3, 3, 3 and 1 blocks at 64 channels.
//! The layout is read from the file, not assumed.
//!
//! Two key layouts load: the original `taesd_decoder.safetensors` (what
//! ComfyUI's `vae_approx/` holds: an `nn.Sequential` whose layer 0 is the
//! clamp, so `1.weight`, `3.conv.0.weight`, …, `19.bias`) and diffusers'
//! `decoder.layers.N…` (the same layers without the clamp, so N is one
//! less), alone or in a whole `AutoencoderTiny` file (the encoder is
//! ignored).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Module, Result, Tensor};
use weft_kernels::layers::Conv2d;

use crate::weights::WeightFile;

/// A TAESD decoder.
#[derive(Clone, Debug)]
pub struct TinyDecoder {
    layers: Vec<Layer>,
    latent_channels: usize,
    upsamples: usize,
}

#[derive(Clone, Debug)]
enum Layer {
    Conv(Conv2d),
    Relu,
    Upsample,
    Block(Block),
}

/// `relu(conv(relu(conv(relu(conv(x))))) + skip(x))`.
#[derive(Clone, Debug)]
struct Block {
    convs: [Conv2d; 3],
    /// A 1×1 convolution where the block changes the channel count.
    skip: Option<Conv2d>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].forward(x)?.relu()?;
        let h = self.convs[1].forward(&h)?.relu()?;
        let h = self.convs[2].forward(&h)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        (h + skip)?.relu()
    }
}

/// What the parameters at one index of the sequence are.
enum Params {
    Conv {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    Block {
        convs: [(Tensor, Tensor); 3],
        skip: Option<Tensor>,
    },
}

impl TinyDecoder {
    /// Loads a decoder from a safetensors file in either key layout.
    pub fn load(path: &Path) -> std::result::Result<TinyDecoder, String> {
        let file = WeightFile::open(path)?;
        let mut tensors = HashMap::new();
        for name in file.shapes().into_keys() {
            let t = file
                .load_f32(&name)
                .map_err(|e| format!("{}: tensor `{name}`: {e}", path.display()))?;
            tensors.insert(name, t);
        }
        TinyDecoder::from_tensors(&tensors).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Builds a decoder from named f32 tensors in either key layout.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
    ) -> std::result::Result<TinyDecoder, String> {
        // (prefix, how much to add to its layer index to get the original's).
        let layouts = [
            ("decoder.layers.", 1),
            ("taesd_decoder.", 0),
            ("decoder.", 0),
            ("", 0),
        ];
        let (prefix, offset) = layouts
            .into_iter()
            .find(|(p, _)| {
                tensors
                    .keys()
                    .any(|k| k.strip_prefix(p).is_some_and(starts_with_index))
            })
            .ok_or("no TAESD decoder weights (expected keys such as `1.weight` or `decoder.layers.0.weight`)")?;
        // Index → the rest of each key, for keys under the prefix.
        let mut by_index: BTreeMap<usize, BTreeMap<String, &Tensor>> = BTreeMap::new();
        for (key, t) in tensors {
            let Some(rest) = key.strip_prefix(prefix) else {
                continue;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            by_index
                .entry(index + offset)
                .or_default()
                .insert(field.to_string(), t);
        }
        let mut params = BTreeMap::new();
        for (&index, fields) in &by_index {
            let name = |f: &str| format!("{prefix}{}.{f}", index - offset);
            params.insert(index, layer_params(fields, &name)?);
        }
        assemble(params, &|index, field: &str| {
            format!("{prefix}{}.{field}", index - offset)
        })
    }

    /// Channels of the latents it decodes.
    pub fn latent_channels(&self) -> usize {
        self.latent_channels
    }

    /// How many times larger than the latent the image is (8 for TAESD).
    pub fn scale(&self) -> usize {
        1 << self.upsamples
    }

    /// Decodes `[batch, channels, h, w]` latents (in the diffusion network's
    /// scale) to `[batch, 3, h·scale, w·scale]` images in about [-1, 1]
    /// (diffusers' convention; the original TAESD's [0, 1] output × 2 − 1).
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = latent.dims4()?;
        if c != self.latent_channels {
            candle_core::bail!(
                "the TAESD decoder takes {}-channel latents, got {c} channels",
                self.latent_channels
            );
        }
        let mut x = (latent.to_dtype(candle_core::DType::F32)? / 3.0)?.tanh()? * 3.0;
        for layer in &self.layers {
            let h = x?;
            x = match layer {
                Layer::Conv(conv) => conv.forward(&h),
                Layer::Relu => h.relu(),
                Layer::Upsample => {
                    let (_, _, hh, ww) = h.dims4()?;
                    h.upsample_nearest2d(hh * 2, ww * 2)
                }
                Layer::Block(block) => block.forward(&h),
            };
        }
        x?.affine(2.0, -1.0)
    }
}

fn starts_with_index(rest: &str) -> bool {
    rest.split_once('.')
        .is_some_and(|(i, _)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// The parameters at one index: a convolution (`weight`, optional `bias`)
/// or a block (`conv.{0,2,4}.{weight,bias}`, optional `skip.weight`).
fn layer_params(
    fields: &BTreeMap<String, &Tensor>,
    name: &dyn Fn(&str) -> String,
) -> std::result::Result<Params, String> {
    let get = |f: &str| {
        fields
            .get(f)
            .map(|t| (*t).clone())
            .ok_or_else(|| format!("missing tensor `{}`", name(f)))
    };
    let known: &[&str] = if fields.contains_key("weight") {
        &["weight", "bias"]
    } else {
        &[
            "conv.0.weight",
            "conv.0.bias",
            "conv.2.weight",
            "conv.2.bias",
            "conv.4.weight",
            "conv.4.bias",
            "skip.weight",
        ]
    };
    if let Some(extra) = fields.keys().find(|f| !known.contains(&f.as_str())) {
        return Err(format!(
            "unexpected tensor `{}` in a TAESD decoder",
            name(extra)
        ));
    }
    if fields.contains_key("weight") {
        return Ok(Params::Conv {
            weight: get("weight")?,
            bias: fields.get("bias").map(|t| (*t).clone()),
        });
    }
    let conv = |i: usize| -> std::result::Result<(Tensor, Tensor), String> {
        Ok((
            get(&format!("conv.{i}.weight"))?,
            get(&format!("conv.{i}.bias"))?,
        ))
    };
    Ok(Params::Block {
        convs: [conv(0)?, conv(2)?, conv(4)?],
        skip: fields.get("skip.weight").map(|t| (*t).clone()),
    })
}

/// Orders the layers by index and fills the parameter-free ones: index 0
/// is the clamp, the gap after the first convolution its ReLU, and a gap
/// between a block and a convolution an upsample. Checks that channel
/// counts chain from the latent to RGB.
fn assemble(
    params: BTreeMap<usize, Params>,
    name: &dyn Fn(usize, &str) -> String,
) -> std::result::Result<TinyDecoder, String> {
    let last = *params.keys().next_back().ok_or("no TAESD decoder layers")?;
    if params.contains_key(&0) {
        return Err(format!(
            "`{}` holds weights, but the decoder's first layer is its clamp",
            name(0, "weight")
        ));
    }
    let conv_error =
        |index: usize, e: candle_core::Error| format!("`{}`: {e}", name(index, "weight"));
    let mut layers = Vec::new();
    let mut channels: Option<usize> = None;
    let mut latent_channels = 0;
    let mut upsamples = 0;
    let mut previous: Option<&Params> = None;
    for index in 1..=last {
        let here = params.get(&index);
        match (here, previous) {
            (None, Some(Params::Conv { .. })) if layers.len() == 1 => layers.push(Layer::Relu),
            (None, Some(Params::Block { .. }))
                if matches!(params.get(&(index + 1)), Some(Params::Conv { .. })) =>
            {
                layers.push(Layer::Upsample);
                upsamples += 1;
            }
            (None, _) => {
                return Err(format!(
                    "layer {index} of the TAESD decoder has no weights where a ReLU (after the first convolution) or an upsample (between a block and a convolution) would be; not a TAESD decoder layout"
                ))
            }
            (Some(Params::Conv { weight, bias }), _) => {
                let (out_c, in_c, k, _) = weight.dims4().map_err(|e| conv_error(index, e))?;
                if k != 3 {
                    return Err(format!(
                        "`{}` is a {k}×{k} kernel; TAESD's convolutions are 3×3",
                        name(index, "weight")
                    ));
                }
                match channels {
                    None => latent_channels = in_c,
                    Some(c) if c != in_c => {
                        return Err(format!(
                            "`{}` takes {in_c} channels, the layer before gives {c}",
                            name(index, "weight")
                        ))
                    }
                    Some(_) => {}
                }
                channels = Some(out_c);
                let conv = Conv2d::new(weight.clone(), bias.clone(), 1, 1)
                    .map_err(|e| conv_error(index, e))?;
                layers.push(Layer::Conv(conv));
            }
            (Some(Params::Block { convs, skip }), _) => {
                let Some(c_in) = channels else {
                    return Err(format!(
                        "`{}`: the decoder starts with a block, not a convolution",
                        name(index, "conv.0.weight")
                    ));
                };
                let mut c = c_in;
                let mut built = Vec::with_capacity(3);
                for (j, (w, b)) in convs.iter().enumerate() {
                    let field = format!("conv.{}.weight", 2 * j);
                    let (out_c, in_c, k, _) = w.dims4().map_err(|e| conv_error(index, e))?;
                    if in_c != c || k != 3 {
                        return Err(format!(
                            "`{}` has shape {:?}; expected a 3×3 kernel over {c} channels",
                            name(index, &field),
                            w.dims()
                        ));
                    }
                    c = out_c;
                    built.push(
                        Conv2d::new(w.clone(), Some(b.clone()), 1, 1)
                            .map_err(|e| conv_error(index, e))?,
                    );
                }
                let skip = match skip {
                    Some(w) => Some(
                        Conv2d::new(w.clone(), None, 1, 0).map_err(|e| conv_error(index, e))?,
                    ),
                    None if c == c_in => None,
                    None => {
                        return Err(format!(
                            "missing tensor `{}` (the block goes from {c_in} to {c} channels)",
                            name(index, "skip.weight")
                        ))
                    }
                };
                let convs: [Conv2d; 3] = built.try_into().expect("three convolutions");
                layers.push(Layer::Block(Block { convs, skip }));
                channels = Some(c);
            }
        }
        previous = here;
    }
    if !matches!(params.get(&last), Some(Params::Conv { .. })) || channels != Some(3) {
        return Err(format!(
            "the TAESD decoder must end in a convolution to 3 channels, its last layer `{}` gives {}",
            name(last, "weight"),
            channels.unwrap_or(0)
        ));
    }
    Ok(TinyDecoder {
        layers,
        latent_channels,
        upsamples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A decoder in the original layout: clamp, conv 4→c, ReLU, `stages`
    /// blocks with upsample + conv between stages, conv c→3.
    fn original(c: usize, stages: &[usize]) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        let mut i = 1;
        m.insert(format!("{i}.weight"), t(&[c, 4, 3, 3], 1));
        m.insert(format!("{i}.bias"), t(&[c], 2));
        i += 2;
        for (s, &blocks) in stages.iter().enumerate() {
            for _ in 0..blocks {
                for j in [0, 2, 4] {
                    m.insert(
                        format!("{i}.conv.{j}.weight"),
                        t(&[c, c, 3, 3], i as u64 + j),
                    );
                    m.insert(format!("{i}.conv.{j}.bias"), t(&[c], i as u64));
                }
                i += 1;
            }
            if s + 1 < stages.len() {
                i += 1; // the upsample
                m.insert(format!("{i}.weight"), t(&[c, c, 3, 3], i as u64));
                i += 1;
            }
        }
        m.insert(format!("{i}.weight"), t(&[3, c, 3, 3], 5));
        m.insert(format!("{i}.bias"), t(&[3], 6));
        m
    }

    #[test]
    fn the_released_layout_decodes_at_eight_times_the_size() {
        let weights = original(8, &[3, 3, 3, 1]);
        assert!(weights.contains_key("19.weight") && weights.contains_key("18.conv.4.bias"));
        let decoder = TinyDecoder::from_tensors(&weights).unwrap();
        assert_eq!((decoder.latent_channels(), decoder.scale()), (4, 8));
        let out = decoder.decode(&t(&[1, 4, 3, 5], 9)).unwrap();
        assert_eq!(out.dims(), [1, 3, 24, 40]);
        // Diffusers' keys (index one less, no clamp) give the same network.
        let diffusers: HashMap<String, Tensor> = weights
            .iter()
            .map(|(k, v)| {
                let (i, rest) = k.split_once('.').unwrap();
                let i: usize = i.parse().unwrap();
                (format!("decoder.layers.{}.{rest}", i - 1), v.clone())
            })
            .collect();
        let again = TinyDecoder::from_tensors(&diffusers)
            .unwrap()
            .decode(&t(&[1, 4, 3, 5], 9))
            .unwrap();
        let diff = (out - again).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn broken_files_are_named_not_panicked_on() {
        let mut weights = original(8, &[1, 1]);
        weights.remove("3.conv.2.bias");
        let e = TinyDecoder::from_tensors(&weights).unwrap_err();
        assert!(e.contains("missing tensor `3.conv.2.bias`"), "{e}");

        let mut weights = original(8, &[1, 1]);
        weights.insert("3.weight".into(), t(&[8, 8, 3, 3], 1));
        let e = TinyDecoder::from_tensors(&weights).unwrap_err();
        assert!(e.contains("unexpected tensor"), "{e}");

        let mut weights = original(8, &[1, 1]);
        weights.insert("5.weight".into(), t(&[8, 6, 3, 3], 1));
        let e = TinyDecoder::from_tensors(&weights).unwrap_err();
        assert!(e.contains("`5.weight` takes 6 channels"), "{e}");

        let e = TinyDecoder::from_tensors(&HashMap::new()).unwrap_err();
        assert!(e.contains("no TAESD decoder weights"), "{e}");

        let decoder = TinyDecoder::from_tensors(&original(8, &[1, 1])).unwrap();
        let e = decoder.decode(&t(&[1, 16, 2, 2], 1)).unwrap_err();
        assert!(e.to_string().contains("4-channel"), "{e}");
    }
}
