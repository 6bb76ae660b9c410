//! Real-ESRGAN's compact network, SRVGGNetCompact (`realesr-general-x4v3`,
//! `realesr-animevideov3`, and community "Compact" / "SuperUltraCompact"
//! models): 3×3 convolutions at the input's resolution, each followed by a
//! PReLU (one slope per channel), a last convolution to `out·scale²`
//! channels folded into pixels (pixel shuffle), plus the input upsampled by
//! repeating pixels, so the network learns the residual.
//!
//! Keys: `body.0` (the first convolution), `body.1` (its PReLU), …,
//! `body.{2n+2}` (the last convolution) for `n` body convolutions.

use std::collections::{BTreeSet, HashMap};

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use weft_kernels::layers::{self, Conv2d};

use super::ops::{self, Leaky};

/// An SRVGGNetCompact's sizes, read from its weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Feature channels (`num_feat`).
    pub features: usize,
    /// Convolutions between the first and the last (`num_conv`).
    pub convs: usize,
    pub scale: usize,
}

/// Whether `keys` look like an SRVGGNetCompact (PReLU after the first
/// convolution, as spandrel tells it).
pub(crate) fn is_compact(keys: &BTreeSet<&str>) -> bool {
    keys.contains("body.0.weight") && keys.contains("body.1.weight")
}

/// `(scale, out)` with `scale²·out = n`, trying `out` = the input's
/// channels, then 3, 4 and 1 (the pixel shuffle does not say which).
fn scale_and_channels(n: usize, in_channels: usize) -> Option<(usize, usize)> {
    [in_channels, 3, 4, 1].into_iter().find_map(|c| {
        if c == 0 || !n.is_multiple_of(c) {
            return None;
        }
        let s = ((n / c) as f64).sqrt().round() as usize;
        (s >= 1 && s * s * c == n).then_some((s, c))
    })
}

/// The keys of a compact network: `body.{i}.weight|bias` only.
pub(crate) fn unknown_keys(keys: &BTreeSet<&str>) -> Vec<String> {
    keys.iter()
        .filter(|k| {
            !matches!(
                k.split('.').collect::<Vec<_>>().as_slice(),
                ["body", i, "weight" | "bias"] if i.parse::<usize>().is_ok()
            )
        })
        .map(|k| k.to_string())
        .collect()
}

/// The sizes of the network whose tensors have `shapes`.
pub(crate) fn config(
    shapes: &HashMap<String, Vec<usize>>,
) -> std::result::Result<CompactConfig, String> {
    let last = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("body.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    if last < 2 || !last.is_multiple_of(2) {
        return Err(format!(
            "its last layer is body.{last}; a compact network ends in a convolution at an even index"
        ));
    }
    let (features, in_channels) = match shapes.get("body.0.weight").map(Vec::as_slice) {
        Some(&[o, i, 3, 3]) => (o, i),
        other => {
            return Err(format!(
                "its body.0 weight has shape {other:?}, not [out, in, 3, 3]"
            ))
        }
    };
    let shuffled = match shapes.get(&format!("body.{last}.bias")).map(Vec::as_slice) {
        Some(&[n]) => n,
        other => return Err(format!("its body.{last} bias has shape {other:?}")),
    };
    let (scale, out_channels) = scale_and_channels(shuffled, in_channels).ok_or_else(|| {
        format!("its last convolution's {shuffled} channels are not scale²·(1, 3 or 4)")
    })?;
    if out_channels != in_channels {
        return Err(format!(
            "it maps {in_channels} channels to {out_channels}; the compact network adds its input to its output, so they must match"
        ));
    }
    Ok(CompactConfig {
        in_channels,
        out_channels,
        features,
        convs: (last - 2) / 2,
        scale,
    })
}

/// A built SRVGGNetCompact.
#[derive(Debug)]
pub(crate) struct Compact {
    pub(crate) config: CompactConfig,
    /// Every convolution but the last, with its PReLU.
    layers: Vec<(Conv2d, Leaky)>,
    last: Conv2d,
}

impl Compact {
    pub(crate) fn new(config: &CompactConfig, vb: VarBuilder) -> Result<Compact> {
        let nf = config.features;
        let layers = (0..=config.convs)
            .map(|i| {
                let in_c = if i == 0 { config.in_channels } else { nf };
                let conv = layers::conv2d(in_c, nf, 3, 1, 1, vb.pp(format!("body.{}", 2 * i)))?;
                let slopes = vb
                    .pp(format!("body.{}", 2 * i + 1))
                    .get(nf, "weight")?
                    .to_vec1::<f32>()?;
                Ok((conv, Leaky(slopes)))
            })
            .collect::<Result<_>>()?;
        let s = config.scale;
        let last = layers::conv2d(
            nf,
            config.out_channels * s * s,
            3,
            1,
            1,
            vb.pp(format!("body.{}", 2 * config.convs + 2)),
        )?;
        Ok(Compact {
            config: config.clone(),
            layers,
            last,
        })
    }

    /// `[B, C, H, W]` → `[B, C, H·scale, W·scale]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (conv, act) in &self.layers {
            h = ops::leaky(&conv.forward(&h)?, act)?;
        }
        let s = self.config.scale;
        let out = ops::pixel_shuffle(&self.last.forward(&h)?, s)?;
        out + ops::upsample_nearest(x, s)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_shuffle_channels_say_scale_and_output() {
        assert_eq!(scale_and_channels(48, 3), Some((4, 3)));
        assert_eq!(scale_and_channels(12, 3), Some((2, 3)));
        assert_eq!(scale_and_channels(3, 3), Some((1, 3)));
        assert_eq!(scale_and_channels(64, 4), Some((4, 4)));
        assert_eq!(scale_and_channels(16, 1), Some((4, 1)));
        assert_eq!(scale_and_channels(7, 3), None);
    }
}
