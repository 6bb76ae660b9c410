//! What a network is conditioned on: text states, pooled outputs, class
//! labels, per-item hints and SDXL's size conditioning, batched like the
//! latent; and ComfyUI's entry options (area, mask, strength, timestep
//! range) with the list a `ConditioningCombine` makes.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_core::Object;

/// What a network is conditioned on, batched like the latent.
#[derive(Clone, Debug, Default)]
pub struct Conditioning {
    /// Class labels; `None` is the null class ∅ used for unconditional passes.
    pub labels: Option<Vec<Option<u32>>>,
    /// Token embeddings `[batch, tokens, dim]` (text encoders).
    pub context: Option<Tensor>,
    /// Pooled embeddings `[batch, dim]`.
    pub pooled: Option<Tensor>,
    /// Per-item extras only the network reads (ControlNet hints); empty
    /// when no item has one, else one entry per item (or one for all).
    pub hints: Vec<Option<Hint>>,
    /// SDXL's micro-conditioning, per item like `hints`.
    pub sizes: Vec<Option<SizeCond>>,
    /// Flux dev's distilled guidance strength (`FluxGuidance`), per item
    /// like `hints`; the model's default where `None`.
    pub guidance: Vec<Option<f64>>,
    /// Where this entry applies (`ConditioningSetArea`); `None`: everywhere.
    pub area: Option<Area>,
    /// The weight of this entry's prediction where it applies; `None`: 1.
    pub strength: Option<f64>,
    /// A soft mask `[1, H, W]` of where it applies (`ConditioningSetMask`),
    /// its strength multiplied in; resized to the latent.
    pub mask: Option<Tensor>,
    /// The part of sampling it is active in, as fractions (start, end) of
    /// the schedule (`ConditioningSetTimestepRange`).
    pub timestep_range: Option<(f64, f64)>,
    /// An inpainting model's extra input (`InpaintModelConditioning`): the
    /// VAE latent of the image with the masked part grey, and the mask
    /// `[B, H, W]` (any size; resized and rounded to the latent).
    pub concat_latent: Option<Tensor>,
    pub concat_mask: Option<Tensor>,
    /// Entries combined with this one (`ConditioningCombine`): each is
    /// predicted on its own and the predictions blended, as ComfyUI does.
    pub also: Vec<Conditioning>,
}

/// A rectangle of the latent an entry applies to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Area {
    /// In latent cells: (height, width, top, left).
    Cells(usize, usize, usize, usize),
    /// In fractions of the latent: (height, width, top, left).
    Fraction(f64, f64, f64, f64),
}

impl Area {
    /// (height, width, top, left) in cells of a `h`×`w` latent, clipped to it.
    pub fn cells(&self, h: usize, w: usize) -> (usize, usize, usize, usize) {
        let (ah, aw, top, left) = match *self {
            Area::Cells(ah, aw, top, left) => (ah, aw, top, left),
            Area::Fraction(fh, fw, ft, fl) => {
                let at = |f: f64, n: usize| ((f * n as f64).round().max(0.0) as usize).min(n);
                (at(fh, h), at(fw, w), at(ft, h), at(fl, w))
            }
        };
        let (top, left) = (top.min(h), left.min(w));
        (ah.min(h - top), aw.min(w - left), top, left)
    }
}

/// SDXL's micro-conditioning of one item: the inputs of ComfyUI's
/// `CLIPTextEncodeSDXL` and `…Refiner`. Sizes left out are the latent's
/// size in pixels, as ComfyUI does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SizeCond {
    /// (height, width) the training image had.
    pub original: Option<(f64, f64)>,
    /// (top, left) of the crop.
    pub crop: (f64, f64),
    /// (height, width) asked for.
    pub target: Option<(f64, f64)>,
    /// The refiner's aesthetic score; absent: 6, or 2.5 on the negative side.
    pub aesthetic: Option<f64>,
    /// Set on the negative side of guidance (the refiner's default score).
    pub negative: bool,
}

impl SizeCond {
    /// The numbers the model embeds for a latent of `pixels` (height,
    /// width): 6 for SDXL (original, crop, target) or 5 for the refiner
    /// (original, crop, aesthetic score).
    pub fn numbers(&self, pixels: (f64, f64), count: usize) -> Vec<f64> {
        let (oh, ow) = self.original.unwrap_or(pixels);
        let (top, left) = self.crop;
        if count == 5 {
            let score = self
                .aesthetic
                .unwrap_or(if self.negative { 2.5 } else { 6.0 });
            return vec![oh, ow, top, left, score];
        }
        let (th, tw) = self.target.unwrap_or(pixels);
        vec![oh, ow, top, left, th, tw]
    }
}

/// A per-item list (`hints`, `sizes`, `guidance`) for a batch of `n`: empty stays
/// empty, one entry is shared by all.
fn items_for_batch<T: Clone>(v: &[Option<T>], n: usize, what: &str) -> Result<Vec<Option<T>>> {
    match v.len() {
        0 => Ok(Vec::new()),
        1 if n != 1 => Ok(vec![v[0].clone(); n]),
        len if len == n => Ok(v.to_vec()),
        len => Err(candle_core::Error::Msg(format!(
            "the conditioning has {len} {what} for a batch of {n}"
        ))),
    }
}

/// Two per-item lists of batches `na` and `nb` stacked.
fn items_concat<T: Clone>(
    a: &[Option<T>],
    na: usize,
    b: &[Option<T>],
    nb: usize,
) -> Vec<Option<T>> {
    if a.is_empty() && b.is_empty() {
        return Vec::new();
    }
    let items = |v: &[Option<T>], n: usize| match v.len() {
        0 => vec![None; n],
        1 => vec![v[0].clone(); n],
        _ => v.to_vec(),
    };
    let mut out = items(a, na);
    out.extend(items(b, nb));
    out
}

/// An extra input a network understands and samplers pass through as is.
#[derive(Clone)]
pub struct Hint(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hint")
    }
}

impl Conditioning {
    /// Items in the batch, when the conditioning says.
    pub fn batch(&self) -> Result<Option<usize>> {
        if let Some(l) = &self.labels {
            return Ok(Some(l.len()));
        }
        match (&self.context, &self.pooled) {
            (Some(t), _) | (None, Some(t)) => Ok(Some(t.dim(0)?)),
            (None, None) => Ok((!self.hints.is_empty()).then_some(self.hints.len())),
        }
    }

    pub fn labels(labels: Vec<Option<u32>>) -> Self {
        Conditioning {
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// This conditioning for a batch of `n` (a batch of 1 is broadcast);
    /// any other size mismatch is an error, never a silent misalignment.
    pub fn for_batch(&self, n: usize) -> Result<Conditioning> {
        let mismatch = |what: &str, got: usize| {
            candle_core::Error::Msg(format!(
                "the conditioning has {got} {what} for a batch of {n}"
            ))
        };
        if let Some(l) = &self.labels {
            if l.len() != 1 && l.len() != n {
                return Err(mismatch("labels", l.len()));
            }
        }
        let repeat_tensor = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            match t {
                Some(t) if t.dim(0)? != 1 && t.dim(0)? != n => Err(mismatch("items", t.dim(0)?)),
                Some(t) if t.dim(0)? == 1 && n != 1 => {
                    let mut dims = vec![n];
                    dims.extend(&t.dims()[1..]);
                    Ok(Some(t.broadcast_as(dims)?.contiguous()?))
                }
                other => Ok(other.clone()),
            }
        };
        let labels = self.labels.as_ref().map(|l| {
            if l.len() == 1 && n != 1 {
                vec![l[0]; n]
            } else {
                l.clone()
            }
        });
        Ok(Conditioning {
            labels,
            context: repeat_tensor(&self.context)?,
            pooled: repeat_tensor(&self.pooled)?,
            concat_latent: repeat_tensor(&self.concat_latent)?,
            concat_mask: repeat_tensor(&self.concat_mask)?,
            hints: items_for_batch(&self.hints, n, "hints")?,
            sizes: items_for_batch(&self.sizes, n, "size conditionings")?,
            guidance: items_for_batch(&self.guidance, n, "guidance strengths")?,
            ..self.clone()
        })
    }

    /// Stacks two conditionings of the same kind along the batch, so a
    /// conditional and an unconditional pass run as one forward.
    pub fn concat(&self, other: &Conditioning) -> Result<Conditioning> {
        let cat = |a: &Option<Tensor>, b: &Option<Tensor>| -> Result<Option<Tensor>> {
            match (a, b) {
                (Some(a), Some(b)) => Ok(Some(Tensor::cat(&[a, b], 0)?)),
                (None, None) => Ok(None),
                _ => Err(candle_core::Error::Msg(
                    "cannot batch conditionings of different kinds".into(),
                )),
            }
        };
        let labels = match (&self.labels, &other.labels) {
            (Some(a), Some(b)) => Some(a.iter().chain(b).copied().collect()),
            (None, None) => None,
            _ => {
                return Err(candle_core::Error::Msg(
                    "cannot batch labelled with unlabelled conditioning".into(),
                ))
            }
        };
        let (a, b) = match (&self.context, &other.context) {
            (Some(a), Some(b)) => {
                let (a, b) = common_length(a, b)?;
                (Some(a), Some(b))
            }
            _ => (self.context.clone(), other.context.clone()),
        };
        let (na, nb) = (self.batch()?.unwrap_or(1), other.batch()?.unwrap_or(1));
        Ok(Conditioning {
            labels,
            context: cat(&a, &b)?,
            pooled: cat(&self.pooled, &other.pooled)?,
            concat_latent: cat(&self.concat_latent, &other.concat_latent)?,
            concat_mask: cat(&self.concat_mask, &other.concat_mask)?,
            hints: items_concat(&self.hints, na, &other.hints, nb),
            sizes: items_concat(&self.sizes, na, &other.sizes, nb),
            guidance: items_concat(&self.guidance, na, &other.guidance, nb),
            ..Default::default()
        })
    }

    /// No entry options: one entry that applies everywhere, always, at
    /// full strength, so it can be batched with another.
    pub fn is_plain(&self) -> bool {
        self.area.is_none()
            && self.strength.is_none_or(|s| s == 1.0)
            && self.mask.is_none()
            && self.timestep_range.is_none()
            && self.also.is_empty()
    }

    /// Every entry: this one (without `also`) and the combined ones.
    pub fn entries(&self) -> Vec<Conditioning> {
        let head = Conditioning {
            also: Vec::new(),
            ..self.clone()
        };
        std::iter::once(head)
            .chain(self.also.iter().flat_map(Conditioning::entries))
            .collect()
    }

    /// Applies `f` to every entry (the nodes that edit a conditioning edit
    /// each of its entries, as ComfyUI's do).
    pub fn map_entries(
        &self,
        f: &mut impl FnMut(Conditioning) -> Result<Conditioning>,
    ) -> Result<Conditioning> {
        let mut entries = self.entries().into_iter().map(&mut *f);
        let mut head = entries.next().expect("at least this entry")?;
        head.also = entries.collect::<Result<_>>()?;
        Ok(head)
    }

    /// This entry with `from`'s text states appended after its own tokens
    /// (`ConditioningConcat`; a batch of 1 in `from` is broadcast).
    pub fn concat_tokens(mut self, from: &Conditioning) -> Result<Conditioning> {
        let (to, from) = text_pair(&self, from)?;
        let from = from.broadcast_as(with_batch(from.dims(), to.dim(0)?))?;
        self.context = Some(Tensor::cat(&[to, &from], 1)?);
        Ok(self)
    }

    /// This entry blended with `from`: self·s + from·(1 − s), `from`'s
    /// tokens cut or zero-padded to this entry's length, and the pooled
    /// outputs likewise (`ConditioningAverage`, ComfyUI's rule).
    pub fn average(mut self, from: &Conditioning, s: f64) -> Result<Conditioning> {
        let (to, states) = text_pair(&self, from)?;
        let n = to.dim(1)?;
        let mut f = states.narrow(1, 0, states.dim(1)?.min(n))?;
        if f.dim(1)? < n {
            f = f.pad_with_zeros(1, 0, n - f.dim(1)?)?;
        }
        let f = f.broadcast_as(with_batch(f.dims(), to.dim(0)?))?;
        self.context = Some((to.affine(s, 0.0)? + f.affine(1.0 - s, 0.0)?)?);
        self.pooled = match (&self.pooled, &from.pooled) {
            (Some(t), Some(f)) => Some((t.affine(s, 0.0)? + f.affine(1.0 - s, 0.0)?)?),
            (None, Some(f)) => Some(f.clone()),
            (p, None) => p.clone(),
        };
        Ok(self)
    }

    /// This entry with zero text states and pooled output
    /// (`ConditioningZeroOut`).
    pub fn zero_out(mut self) -> Result<Conditioning> {
        self.context = self.context.map(|t| t.zeros_like()).transpose()?;
        self.pooled = self.pooled.map(|t| t.zeros_like()).transpose()?;
        Ok(self)
    }

    /// `self` and `other` as one list of entries (`ConditioningCombine`).
    pub fn combine(&self, other: &Conditioning) -> Conditioning {
        let mut out = self.clone();
        out.also.extend(other.entries());
        out
    }

    /// This conditioning as the negative side of guidance: SDXL refiner
    /// items without an aesthetic score get the negative default (2.5).
    pub fn as_negative(self) -> Result<Conditioning> {
        self.map_entries(&mut Conditioning::negative_entry)
    }

    fn negative_entry(mut self) -> Result<Conditioning> {
        let n = self.batch()?.unwrap_or(1);
        let mut sizes = items_for_batch(&self.sizes, n, "size conditionings")?;
        if sizes.is_empty() {
            sizes = vec![None; n];
        }
        self.sizes = sizes
            .into_iter()
            .map(|s| {
                Some(SizeCond {
                    negative: true,
                    ..s.unwrap_or_default()
                })
            })
            .collect();
        Ok(self)
    }
}

/// Both entries' text states, or an error naming what is missing.
fn text_pair<'a>(to: &'a Conditioning, from: &'a Conditioning) -> Result<(&'a Tensor, &'a Tensor)> {
    match (&to.context, &from.context) {
        (Some(a), Some(b)) if a.dim(2)? == b.dim(2)? => Ok((a, b)),
        (Some(a), Some(b)) => candle_core::bail!(
            "text states of {} and {} features cannot be joined (encoders of different models?)",
            a.dim(2)?,
            b.dim(2)?
        ),
        _ => candle_core::bail!("expected text conditioning (from a text encoder)"),
    }
}

/// `dims` with its batch set to `batch` (for broadcasting a batch of 1).
fn with_batch(dims: &[usize], batch: usize) -> Vec<usize> {
    let mut d = dims.to_vec();
    d[0] = batch;
    d
}

/// Text contexts of different lengths (long prompts are encoded in
/// 77-token chunks), each repeated along the tokens to a common length:
/// attention over repeated keys is unchanged, as in ComfyUI.
fn common_length(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    if a.rank() != 3 || b.rank() != 3 {
        return Ok((a.clone(), b.clone()));
    }
    let (na, nb) = (a.dim(1)?, b.dim(1)?);
    if na == nb {
        return Ok((a.clone(), b.clone()));
    }
    if na == 0 || nb == 0 {
        candle_core::bail!("cannot batch text contexts of {na} and {nb} tokens");
    }
    let lcm = na / gcd(na, nb) * nb;
    Ok((a.repeat((1, lcm / na, 1))?, b.repeat((1, lcm / nb, 1))?))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Object for Conditioning {
    fn size_bytes(&self) -> usize {
        let t = |t: &Option<Tensor>| {
            t.as_ref()
                .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
        };
        t(&self.context) + t(&self.pooled) + self.labels.as_ref().map_or(0, |l| l.len() * 8)
    }

    /// Counts and shapes ("100 labels, context [2, 77, 768]"): a failure
    /// report lists it among the node's inputs, where the `Debug` dump of
    /// every label and tensor would bury the error.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(labels) = &self.labels {
            let s = if labels.len() == 1 { "" } else { "s" };
            parts.push(format!("{} label{s}", labels.len()));
        }
        for (name, t) in [
            ("context", &self.context),
            ("pooled", &self.pooled),
            ("mask", &self.mask),
            ("concat latent", &self.concat_latent),
        ] {
            if let Some(t) = t {
                parts.push(format!("{name} {:?}", t.dims()));
            }
        }
        for (name, set) in [
            ("hints", !self.hints.is_empty()),
            ("sizes", !self.sizes.is_empty()),
            ("guidance", !self.guidance.is_empty()),
            ("area", self.area.is_some()),
            ("strength", self.strength.is_some()),
            ("timestep range", self.timestep_range.is_some()),
        ] {
            if set {
                parts.push(name.to_string());
            }
        }
        if !self.also.is_empty() {
            parts.push(format!("+{} combined", self.also.len()));
        }
        if parts.is_empty() {
            "empty".into()
        } else {
            parts.join(", ")
        }
    }
}

impl weft_core::Handle for Conditioning {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Conditioning;
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use weft_core::{Value, ValueType};

    #[test]
    fn a_summary_counts_labels_instead_of_listing_them() {
        let cond = Conditioning {
            labels: Some(vec![Some(3); 100]),
            context: Some(Tensor::zeros((100, 77, 8), DType::F32, &Device::Cpu).unwrap()),
            also: vec![Conditioning::default()],
            ..Conditioning::default()
        };
        let value = Value::Object(ValueType::Conditioning, Arc::new(cond));
        assert_eq!(
            value.summary(),
            "CONDITIONING 100 labels, context [100, 77, 8], +1 combined"
        );
    }
}
