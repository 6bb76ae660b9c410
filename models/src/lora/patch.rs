//! One module's adapter and how it patches a weight.
//!
//! An adapter keeps only tensor names and shapes; its tensors are read from
//! the memory-mapped file when a weight is patched, so a LoRA costs memory
//! only for the weights it changes, while it is changing them.

use std::sync::Arc;

use candle_core::{Result as CResult, Tensor};

use super::adapters::Form;
use crate::weights::WeightFile;

type Shape = Vec<usize>;

/// DoRA: the patched weight `V = W + ΔW` rescaled so its norms are the
/// stored magnitudes `m` (plus ε, as ComfyUI). As ComfyUI, magnitudes with
/// one entry per output row (`dora_scale.shape[0] == out`: PEFT's
/// `lora_magnitude_vector`, LyCORIS `wd_on_out`) normalise rows, others
/// (kohya's and LyCORIS' default `[1, in]`) input columns; `strength` blends
/// `W` towards the result. Rows are normalised by `‖V‖` as DoRA, PEFT and
/// LyCORIS define it, where ComfyUI today divides by `‖W‖` (its PR #15458).
pub(super) fn decompose(
    w: &Tensor,
    v: &Tensor,
    m: &Tensor,
    strength: f64,
) -> Result<Tensor, String> {
    let dims = w.dims();
    if dims.len() < 2 {
        return Err(format!("dora_scale on a weight of shape {dims:?}"));
    }
    let output_axis = m.dims().first() == Some(&dims[0]);
    let axis = if output_axis { 0 } else { 1 };
    let mut shape = vec![1; dims.len()];
    shape[axis] = dims[axis];
    if m.elem_count() != dims[axis] {
        return Err(format!(
            "dora_scale has shape {:?}, expected {} magnitudes for a weight of shape {dims:?}",
            m.dims(),
            dims[axis]
        ));
    }
    let run = || -> CResult<Tensor> {
        let others: Vec<usize> = (0..dims.len()).filter(|&d| d != axis).collect();
        let norm = v
            .sqr()?
            .sum_keepdim(others)?
            .sqrt()?
            .affine(1.0, f32::EPSILON as f64)?;
        let v = v.broadcast_mul(&m.reshape(shape.as_slice())?.broadcast_div(&norm)?)?;
        w + ((v - w)? * strength)?
    };
    run().map_err(|e| e.to_string())
}

/// A tensor of an adapter in the file: read when a weight is patched.
#[derive(Clone, Debug)]
pub(super) struct Stored {
    pub(super) key: String,
    pub(super) shape: Shape,
}

/// How the change is scaled before `strength`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scale {
    /// kohya/LyCORIS `alpha`: divided by the adapter's rank.
    Alpha(f64),
    /// A factor known outright (1 without alpha; PEFT's `lora_alpha / r`).
    Fixed(f64),
}

/// One module's adapter for one weight.
#[derive(Debug)]
pub(super) struct Adapter {
    file: Arc<WeightFile>,
    module: String,
    form: Form<Stored>,
    dora: Option<Stored>,
    /// The change's shape before it is fitted to the weight.
    pub(super) shape: Shape,
    factor: f64,
}

impl Adapter {
    /// Checks the shapes of `form`.
    pub(super) fn new(
        file: Arc<WeightFile>,
        module: &str,
        form: Form<Stored>,
        scale: Scale,
        dora: Option<Stored>,
    ) -> Result<Adapter, String> {
        let shapes = form.try_map(|s| match s.shape.contains(&0) {
            true => Err(format!("`{}` is empty (shape {:?})", s.key, s.shape)),
            false => Ok(s.shape.clone()),
        })?;
        let (shape, rank) = shapes.check()?;
        let factor = match scale {
            Scale::Alpha(alpha) => rank.map_or(1.0, |r| alpha / r as f64),
            Scale::Fixed(f) => f,
        };
        Ok(Adapter {
            file,
            module: module.to_string(),
            form,
            dora,
            shape,
            factor,
        })
    }

    /// `w` (f32) with this adapter's change added at `strength`.
    pub(super) fn apply(&self, w: &Tensor, strength: f64) -> Result<Tensor, String> {
        let here = || format!("{}: module `{}`", self.file.path.display(), self.module);
        let load = |s: &Stored| self.file.load_f32(&s.key);
        let form = self
            .form
            .try_map(load)
            .map_err(|e| format!("{}: {e}", here()))?;
        let delta = form.delta().map_err(|e| format!("{}: {e}", here()))?;
        let (want, have) = (w.dims(), delta.dims());
        if want.first() != have.first() || w.elem_count() != delta.elem_count() {
            return Err(format!(
                "{}: a change of shape {have:?} does not fit the weight of shape {want:?}",
                here()
            ));
        }
        let scaled = |by: f64| (delta.reshape(want)? * by)? + w;
        match &self.dora {
            None => scaled(self.factor * strength).map_err(|e| e.to_string()),
            Some(m) => {
                let m = load(m).map_err(|e| format!("{}: {e}", here()))?;
                let v = scaled(self.factor).map_err(|e| e.to_string())?;
                decompose(w, &v, &m, strength).map_err(|e| format!("{}: {e}", here()))
            }
        }
    }
}
