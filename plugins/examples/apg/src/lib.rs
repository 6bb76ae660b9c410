//! Adaptive Projected Guidance (Sadat et al. 2024, "Eliminating
//! Oversaturation and Artifacts of High Guidance Scales in Diffusion
//! Models") as a weft GUIDER, written against the plugin SDK.
//!
//! The paper's observation: CFG's oversaturation at high scales comes from
//! the part of the guidance update parallel to the conditional prediction,
//! while the orthogonal part carries the quality gains. APG splits the
//! update per image, down-weights the parallel part (`eta`) and can clamp
//! the update's norm. This version leaves out the paper's momentum term,
//! which would need state carried between steps.

use std::sync::Arc;

use weft_plugin_sdk::{
    export_plugin, Context, DType, Define, Error, Guider, Handle, InputSpec, NodeDef, NodeSchema,
    Path, Result, Tensor, Value, ValueType,
};

/// The node: checks its widgets and wraps the two guiders into an APG one.
fn apg_guider() -> NodeDef {
    NodeSchema::new(
        "APGGuider",
        "sampling/custom_sampling/guiders",
        "Adaptive Projected Guidance (Sadat et al. 2024): CFG with the update's \
         component parallel to the conditional prediction down-weighted, which \
         avoids oversaturation at high cfg. eta = 1 with no threshold is plain CFG.",
    )
    .input(
        InputSpec::of("positive", ValueType::Guider)
            .doc("the conditional denoiser, typically a BasicGuider with the prompt"),
    )
    .input(InputSpec::of("negative", ValueType::Guider).doc(
        "the unconditional denoiser, typically a BasicGuider of the same model \
             with the negative prompt",
    ))
    .input(
        InputSpec::float("cfg")
            .default(7.5)
            .range(0.0, 100.0)
            .step(0.1)
            .doc("guidance scale, as in CFG"),
    )
    .input(
        InputSpec::float("eta")
            .default(0.0)
            .range(0.0, 1.0)
            .step(0.01)
            .doc("weight of the update's component parallel to the conditional prediction"),
    )
    .input(
        InputSpec::float("norm_threshold")
            .default(0.0)
            .range(0.0, 1000.0)
            .step(0.5)
            .doc("clamp each image's update to this L2 norm (0 = no clamp)"),
    )
    .output(
        "GUIDER",
        ValueType::Guider,
        "the APG guider, for SamplerCustomAdvanced",
    )
    .run(|cx| {
        let positive = cx.handle("positive")?;
        let negative = cx.handle("negative")?;
        let cfg = cx.float("cfg")?;
        let eta = cx.float("eta")?;
        let norm_threshold = cx.float("norm_threshold")?;
        // The host checks ranges too; repeating them keeps the arithmetic
        // finite whatever host loaded the plugin.
        for (name, v, max) in [
            ("cfg", cfg, 100.0),
            ("eta", eta, 1.0),
            ("norm_threshold", norm_threshold, 1000.0),
        ] {
            if !(0.0..=max).contains(&v) {
                return Err(Error(format!("{name} must be in 0..{max}, got {v}")));
            }
        }
        Ok(Value::Guider(Arc::new(Apg {
            positive,
            negative,
            cfg,
            eta,
            norm_threshold,
        })))
    })
}

/// The guider; the handles are retained, so it may outlive the node's run.
struct Apg {
    positive: Handle,
    negative: Handle,
    cfg: f64,
    eta: f64,
    norm_threshold: f64,
}

impl Apg {
    /// The guidance update for `[batch, rest]` predictions: the difference,
    /// norm-clamped per item, with its parallel part weighted by `eta`.
    fn update(&self, d_c: &Tensor, d_u: &Tensor) -> Result<Tensor> {
        let mut diff = (d_c - d_u)?;
        if self.norm_threshold > 0.0 {
            // threshold / max(‖diff‖, threshold) = min(1, threshold/‖diff‖),
            // without dividing by a zero norm.
            let threshold = self.norm_threshold as f32;
            let norm = diff.sqr()?.sum_keepdim(1)?.sqrt()?;
            let scale = (norm.maximum(threshold)?.recip()? * self.norm_threshold)?;
            diff = diff.broadcast_mul(&scale)?;
        }
        if self.eta == 1.0 {
            // orthogonal + parallel = diff: skip the projection (and its rounding).
            return Ok(diff);
        }
        let dot = (&diff * d_c)?.sum_keepdim(1)?;
        let norm2 = d_c.sqr()?.sum_keepdim(1)?;
        // A zero prediction has no direction: nothing is parallel to it.
        let zero = norm2.eq(0f32)?;
        let coef = zero.where_cond(&norm2.zeros_like()?, &(dot / &norm2)?)?;
        let parallel = d_c.broadcast_mul(&coef)?;
        // orthogonal + eta·parallel, written so eta = 1 gives diff exactly.
        Ok((diff - (parallel * (1.0 - self.eta))?)?)
    }
}

impl Guider for Apg {
    fn denoise(&self, ctx: &Context, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let d_c = self.positive.denoise(ctx, x, sigma)?.to_dtype(DType::F32)?;
        // cfg = 1 cancels the update: the unconditional pass is not needed.
        if self.cfg == 1.0 {
            return Ok(d_c.to_dtype(x.dtype())?);
        }
        let d_u = self.negative.denoise(ctx, x, sigma)?.to_dtype(DType::F32)?;
        if d_c.dims() != d_u.dims() {
            return Err(Error(format!(
                "the positive guider returned shape {:?}, the negative one {:?}",
                d_c.dims(),
                d_u.dims()
            )));
        }
        let shape = d_c.dims().to_vec();
        let batch = *shape
            .first()
            .ok_or("APG needs batched predictions, got a scalar")?;
        let count = d_c.elem_count();
        if count == 0 {
            return Ok(d_c.to_dtype(x.dtype())?);
        }
        // Per-item reductions run over every non-batch dimension.
        let items = (batch, count / batch);
        let d_c = d_c.reshape(items)?;
        let update = self.update(&d_c, &d_u.reshape(items)?)?;
        let guided = (d_c + (update * (self.cfg - 1.0))?)?;
        Ok(guided.reshape(shape)?.to_dtype(x.dtype())?)
    }

    fn path(&self) -> Path {
        self.positive.path()
    }
}

export_plugin! {
    name: "apg",
    version: env!("CARGO_PKG_VERSION"),
    nodes: [apg_guider()],
}
