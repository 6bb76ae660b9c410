//! ESRGAN's RRDBNet (Wang et al. 2018), as ESRGAN, BSRGAN/RealSR and
//! Real-ESRGAN trained it: a 3×3 stem, blocks of three residual dense
//! blocks (five 3×3 convolutions each, every one seeing all earlier
//! outputs, LeakyReLU 0.2, the block's output added back at 0.2), a trunk
//! convolution added to the stem, ×2 nearest-upsample + conv stages, and
//! two output convolutions. Real-ESRGAN's ×2 and ×1 models first fold the
//! image's 2×2 or 4×4 pixel blocks into channels (pixel unshuffle) and run
//! the ×4 network on that.
//!
//! The three key layouts users have are read as the BasicSR names used
//! here (`conv_first`, `body.N.rdbM.convK`, `conv_body`, `conv_upK`,
//! `conv_hr`, `conv_last`).

use std::collections::{BTreeSet, HashMap};

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use weft_kernels::layers::{self, Conv2d};

use super::ops::{self, Blend, Leaky, Residual, Store};

/// LeakyReLU's negative slope throughout RRDBNet.
const SLOPE: f32 = 0.2;
/// How much of a dense block's (and a block's) output is added back.
const RESIDUAL: f32 = 0.2;

/// The key layout of an ESRGAN-family file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsrganLayout {
    /// The original ESRGAN repository's `nn.Sequential` names:
    /// `model.0`, `model.1.sub.N.RDB1.conv1.0`, `model.3`, …, `model.10`
    /// (most community models: 4x-UltraSharp, 4x_foolhardy_Remacri, …).
    Esrgan,
    /// BasicSR / Real-ESRGAN: `conv_first`, `body.N.rdb1.conv1`,
    /// `conv_body`, `conv_up1`, `conv_up2`, `conv_hr`, `conv_last`.
    RealEsrgan,
    /// BSRGAN / RealSR: `RRDB_trunk.N.RDB1.conv1`, `trunk_conv`, `upconv1`,
    /// `HRconv`.
    Bsrgan,
}

impl EsrganLayout {
    pub fn name(self) -> &'static str {
        match self {
            EsrganLayout::Esrgan => "original ESRGAN layout",
            EsrganLayout::RealEsrgan => "Real-ESRGAN/BasicSR layout",
            EsrganLayout::Bsrgan => "BSRGAN/RealSR layout",
        }
    }
}

/// An RRDBNet's sizes, read from its weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EsrganConfig {
    pub layout: EsrganLayout,
    /// Channels into the first convolution (the image's, times
    /// `unshuffle²`).
    pub in_channels: usize,
    pub out_channels: usize,
    /// Feature channels (`nf`, `num_feat`).
    pub features: usize,
    /// Channels each dense convolution adds (`gc`, `num_grow_ch`).
    pub growth: usize,
    /// RRDB blocks (23 in ESRGAN and Real-ESRGAN).
    pub blocks: usize,
    /// ×2 nearest-upsample + conv stages.
    pub upsamples: usize,
    /// Pixel-unshuffle factor of the input (1, or 2 / 4 for Real-ESRGAN's
    /// ×2 / ×1 models).
    pub unshuffle: usize,
}

impl EsrganConfig {
    /// Output pixels per input pixel along each side.
    pub fn scale(&self) -> usize {
        (1 << self.upsamples) / self.unshuffle
    }

    /// Channels of the images it takes.
    pub fn image_channels(&self) -> usize {
        self.in_channels / (self.unshuffle * self.unshuffle)
    }
}

/// Whether `keys` are an ESRGAN-family file, and in which layout.
pub(crate) fn layout(keys: &BTreeSet<&str>) -> Option<EsrganLayout> {
    let has = |k: &str| keys.contains(k);
    if has("model.0.weight") && keys.iter().any(|k| k.starts_with("model.1.sub.0.RDB1.")) {
        Some(EsrganLayout::Esrgan)
    } else if has("conv_first.weight") && has("body.0.rdb1.conv1.weight") {
        Some(EsrganLayout::RealEsrgan)
    } else if has("conv_first.weight") && has("RRDB_trunk.0.RDB1.conv1.weight") {
        Some(EsrganLayout::Bsrgan)
    } else {
        None
    }
}

/// `rdb` + `conv` parts (`RDB2`, `conv3`) as the BasicSR `rdb2.conv3`.
fn dense(rdb: &str, conv: &str) -> Option<String> {
    let m = rdb.strip_prefix("RDB")?.parse::<usize>().ok()?;
    let k = conv.strip_prefix("conv")?.parse::<usize>().ok()?;
    Some(format!("rdb{m}.conv{k}"))
}

fn is_param(p: &str) -> bool {
    p == "weight" || p == "bias"
}

/// The BasicSR name of each key of a file in `layout`, or the keys no
/// RRDBNet has (ESRGAN+'s `conv1x1`, normalisation layers, …).
pub(crate) fn names(
    layout: EsrganLayout,
    keys: &BTreeSet<&str>,
) -> std::result::Result<Vec<(String, String)>, Vec<String>> {
    // The original layout numbers its top-level sequence: the stem, the
    // trunk, three entries per upsampling stage, then two convolutions
    // with an activation between (`model.{3n+2}`, `model.{3n+4}`).
    let top_len = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix("model.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    let ups = top_len.saturating_sub(5) / 3;
    let numbered = top_len >= 5 && (top_len - 5).is_multiple_of(3);
    // The trunk's own convolution follows its blocks: `model.1.sub.{blocks}`.
    let trunk_len = keys
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix("model.1.sub.")?;
            let (i, rest) = rest.split_once('.')?;
            rest.starts_with("RDB").then(|| i.parse::<usize>().ok())?
        })
        .max()
        .map_or(0, |i| i + 1);
    let original = |parts: &[&str]| -> Option<String> {
        match parts {
            ["model", "0", p] if is_param(p) => Some(format!("conv_first.{p}")),
            ["model", "1", "sub", i, rdb, conv, "0", p] if is_param(p) => {
                let i: usize = i.parse().ok()?;
                Some(format!("body.{i}.{}.{p}", dense(rdb, conv)?))
            }
            ["model", "1", "sub", i, p] if is_param(p) => {
                (i.parse::<usize>().ok()? == trunk_len).then(|| format!("conv_body.{p}"))
            }
            ["model", m, p] if is_param(p) => {
                let m: usize = m.parse().ok()?;
                if !numbered {
                    None
                } else if m.is_multiple_of(3) && (1..=ups).contains(&(m / 3)) {
                    Some(format!("conv_up{}.{p}", m / 3))
                } else if m == 3 * ups + 2 {
                    Some(format!("conv_hr.{p}"))
                } else if m == 3 * ups + 4 {
                    Some(format!("conv_last.{p}"))
                } else {
                    None
                }
            }
            _ => None,
        }
    };
    let bsrgan = |parts: &[&str]| -> Option<String> {
        match parts {
            ["RRDB_trunk", i, rdb, conv, p] if is_param(p) => {
                let i: usize = i.parse().ok()?;
                Some(format!("body.{i}.{}.{p}", dense(rdb, conv)?))
            }
            ["trunk_conv", p] if is_param(p) => Some(format!("conv_body.{p}")),
            ["HRconv", p] if is_param(p) => Some(format!("conv_hr.{p}")),
            [up, p] if is_param(p) && up.starts_with("upconv") => {
                let k: usize = up["upconv".len()..].parse().ok()?;
                Some(format!("conv_up{k}.{p}"))
            }
            [conv @ ("conv_first" | "conv_last"), p] if is_param(p) => Some(format!("{conv}.{p}")),
            _ => None,
        }
    };
    let basicsr = |parts: &[&str]| -> Option<String> {
        match parts {
            ["body", i, rdb, conv, p] if is_param(p) => {
                let i: usize = i.parse().ok()?;
                let m: usize = rdb.strip_prefix("rdb")?.parse().ok()?;
                let k: usize = conv.strip_prefix("conv")?.parse().ok()?;
                Some(format!("body.{i}.rdb{m}.conv{k}.{p}"))
            }
            [up, p] if is_param(p) && up.starts_with("conv_up") => {
                let k: usize = up["conv_up".len()..].parse().ok()?;
                Some(format!("conv_up{k}.{p}"))
            }
            [conv @ ("conv_first" | "conv_body" | "conv_hr" | "conv_last"), p] if is_param(p) => {
                Some(format!("{conv}.{p}"))
            }
            _ => None,
        }
    };
    let mut named = Vec::new();
    let mut unknown = Vec::new();
    for key in keys {
        let parts: Vec<&str> = key.split('.').collect();
        let name = match layout {
            EsrganLayout::Esrgan => original(&parts),
            EsrganLayout::RealEsrgan => basicsr(&parts),
            EsrganLayout::Bsrgan => bsrgan(&parts),
        };
        match name {
            Some(name) => named.push((name, key.to_string())),
            None => unknown.push(key.to_string()),
        }
    }
    if unknown.is_empty() {
        Ok(named)
    } else {
        Err(unknown)
    }
}

/// The sizes of the network whose tensors have `shapes` (BasicSR names).
pub(crate) fn config(
    layout: EsrganLayout,
    shapes: &HashMap<String, Vec<usize>>,
) -> std::result::Result<EsrganConfig, String> {
    let conv = |name: &str| -> std::result::Result<(usize, usize), String> {
        match shapes.get(&format!("{name}.weight")).map(Vec::as_slice) {
            Some(&[o, i, 3, 3]) => Ok((o, i)),
            Some(other) => Err(format!(
                "its {name} weight has shape {other:?}, not [out, in, 3, 3]"
            )),
            None => Err(format!("it has no {name} weight")),
        }
    };
    let (features, in_channels) = conv("conv_first")?;
    let (out_channels, _) = conv("conv_last")?;
    let indices = |prefix: &str, suffix: &str| -> Vec<usize> {
        shapes
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
            .collect()
    };
    let blocks = indices("body.", ".rdb1.conv1.weight")
        .into_iter()
        .max()
        .map_or(0, |i| i + 1);
    let (growth, _) = conv("body.0.rdb1.conv1")?;
    let upsamples = indices("conv_up", ".weight").into_iter().max().unwrap_or(0);
    if upsamples > 3 {
        return Err(format!(
            "it has {upsamples} upsampling stages (at most 3 are expected)"
        ));
    }
    let unshuffle = if in_channels == out_channels * 4 {
        2
    } else if in_channels == out_channels * 16 {
        4
    } else {
        1
    };
    if !(1usize << upsamples).is_multiple_of(unshuffle) {
        return Err(format!(
            "its {in_channels} input channels mean a ×{unshuffle} pixel unshuffle, but it upsamples only ×{}",
            1 << upsamples
        ));
    }
    Ok(EsrganConfig {
        layout,
        in_channels,
        out_channels,
        features,
        growth,
        blocks,
        upsamples,
        unshuffle,
    })
}

/// A 3×3 convolution without its bias, and the bias, which the in-place
/// writes add.
fn split_conv(i: usize, o: usize, vb: VarBuilder) -> Result<(Conv2d, Vec<f32>)> {
    let weight = vb.get((o, i, 3, 3), "weight")?;
    let bias = vb.get(o, "bias")?.to_vec1::<f32>()?;
    Ok((Conv2d::new(weight, None, 1, 1)?, bias))
}

/// A residual dense block: five convolutions, each fed every earlier
/// output, the last added back at 0.2.
///
/// It works in a buffer of `nf + 4·gc` channels whose first `nf` hold its
/// input: convolution k reads the first `nf + k·gc` channels and its
/// activated output is written after them, so nothing is concatenated.
#[derive(Debug)]
struct DenseBlock {
    convs: Vec<Conv2d>,
    /// Writes convolution k's output (bias, LeakyReLU) into the buffer.
    stores: Vec<Store>,
    /// The last convolution's bias, added with the residual.
    last: Residual,
    nf: usize,
    gc: usize,
}

impl DenseBlock {
    fn new(nf: usize, gc: usize, vb: VarBuilder) -> Result<DenseBlock> {
        let mut convs = Vec::with_capacity(5);
        let mut stores = Vec::with_capacity(4);
        let mut last = None;
        for k in 0..5 {
            let out = if k == 4 { nf } else { gc };
            let (conv, bias) = split_conv(nf + k * gc, out, vb.pp(format!("conv{}", k + 1)))?;
            convs.push(conv);
            if k < 4 {
                stores.push(Store {
                    channel: nf + k * gc,
                    bias: Some(bias),
                    slope: Some(SLOPE),
                });
            } else {
                last = Some(Residual {
                    bias,
                    scale: RESIDUAL,
                });
            }
        }
        Ok(DenseBlock {
            convs,
            stores,
            last: last.expect("five convolutions"),
            nf,
            gc,
        })
    }

    /// Runs on the input in `buf`'s first channels (filling the rest) and
    /// writes its output into `out`'s first `nf` channels.
    fn forward(&self, buf: &Tensor, out: &Tensor) -> Result<()> {
        let (nf, gc) = (self.nf, self.gc);
        for (k, (conv, store)) in self.convs.iter().zip(&self.stores).enumerate() {
            let y = conv.forward(&buf.narrow(1, 0, nf + k * gc)?)?;
            buf.inplace_op2(&y, store)?;
        }
        let y = self.convs[4].forward(buf)?;
        out.inplace_op3(&buf.narrow(1, 0, nf)?, &y, &self.last)
    }
}

/// Residual in residual dense block: three dense blocks, added back at 0.2.
#[derive(Debug)]
struct Rrdb([DenseBlock; 3]);

impl Rrdb {
    /// The block on the input in `a`'s first channels; its output ends in
    /// `b`'s. Both buffers are one image of `nf + 4·gc` channels.
    fn forward(&self, a: &Tensor, b: &Tensor, nf: usize) -> Result<()> {
        let input = a.narrow(1, 0, nf)?.copy()?;
        self.0[0].forward(a, b)?;
        self.0[1].forward(b, a)?;
        self.0[2].forward(a, b)?;
        b.inplace_op2(&input, &Blend(RESIDUAL))
    }
}

/// A built RRDBNet.
#[derive(Debug)]
pub(crate) struct RrdbNet {
    pub(crate) config: EsrganConfig,
    conv_first: Conv2d,
    body: Vec<Rrdb>,
    conv_body: Conv2d,
    ups: Vec<Conv2d>,
    conv_hr: Conv2d,
    conv_last: Conv2d,
    act: Leaky,
}

impl RrdbNet {
    pub(crate) fn new(config: &EsrganConfig, vb: VarBuilder) -> Result<RrdbNet> {
        let (nf, gc) = (config.features, config.growth);
        let conv = |i, o, name: &str| layers::conv2d(i, o, 3, 1, 1, vb.pp(name));
        let body = (0..config.blocks)
            .map(|i| {
                let vb = vb.pp(format!("body.{i}"));
                Ok(Rrdb([
                    DenseBlock::new(nf, gc, vb.pp("rdb1"))?,
                    DenseBlock::new(nf, gc, vb.pp("rdb2"))?,
                    DenseBlock::new(nf, gc, vb.pp("rdb3"))?,
                ]))
            })
            .collect::<Result<_>>()?;
        Ok(RrdbNet {
            config: config.clone(),
            conv_first: conv(config.in_channels, nf, "conv_first")?,
            body,
            conv_body: conv(nf, nf, "conv_body")?,
            ups: (1..=config.upsamples)
                .map(|k| conv(nf, nf, &format!("conv_up{k}")))
                .collect::<Result<_>>()?,
            conv_hr: conv(nf, nf, "conv_hr")?,
            conv_last: conv(nf, config.out_channels, "conv_last")?,
            act: Leaky(vec![SLOPE]),
        })
    }

    /// The RRDB blocks on the stem's features `[1, nf, H, W]`, in two
    /// buffers used in turn.
    fn trunk(&self, fea: &Tensor) -> Result<Tensor> {
        let (_, nf, h, w) = fea.dims4()?;
        if self.body.is_empty() {
            return Ok(fea.clone());
        }
        let channels = nf + 4 * self.config.growth;
        let zeros = || Tensor::zeros((1, channels, h, w), fea.dtype(), fea.device());
        let (mut a, mut b) = (zeros()?, zeros()?);
        let copy = Store {
            channel: 0,
            bias: None,
            slope: None,
        };
        a.inplace_op2(&fea.contiguous()?, &copy)?;
        for block in &self.body {
            block.forward(&a, &b, nf)?;
            std::mem::swap(&mut a, &mut b);
        }
        a.narrow(1, 0, nf)
    }

    /// `[B, C, H, W]` → `[B, C_out, H·scale, W·scale]`, one image at a time.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        if b != 1 {
            let images = (0..b)
                .map(|i| self.forward(&x.narrow(0, i, 1)?))
                .collect::<Result<Vec<_>>>()?;
            return Tensor::cat(&images, 0);
        }
        let r = self.config.unshuffle;
        let x = if r > 1 {
            // Real-ESRGAN's ×2 / ×1 models: sides padded (by reflection)
            // to a multiple of r, the extra output cropped off below.
            ops::pixel_unshuffle(&ops::pad_reflect_to(x, r)?, r)?
        } else {
            x.clone()
        };
        let fea = self.conv_first.forward(&x)?;
        drop(x);
        let trunk = self.trunk(&fea)?;
        let mut fea = (fea + self.conv_body.forward(&trunk)?)?;
        drop(trunk);
        for up in &self.ups {
            fea = ops::leaky(&up.forward(&ops::upsample_nearest(&fea, 2)?)?, &self.act)?;
        }
        let hr = ops::leaky(&self.conv_hr.forward(&fea)?, &self.act)?;
        drop(fea);
        let out = self.conv_last.forward(&hr)?;
        let s = self.config.scale();
        if r > 1 {
            out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)
        } else {
            Ok(out)
        }
    }
}
