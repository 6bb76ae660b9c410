//! A ControlNet applied to conditioning, and the plan that runs it inside
//! a UNet forward.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::ControlNet;
use crate::sd::blocks::ControlResiduals;
use crate::sd::config::UNetSpec;
use weft_sampling::{Conditioning, Hint};

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
        added: Option<&Tensor>,
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
                        added.map(&select).transpose()?.as_ref(),
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
    // Every entry of each conditioning gets the hint (ComfyUI's
    // ControlNetApply sets it on each entry of the list).
    conditionings
        .iter()
        .map(|c| {
            c.map_entries(&mut |entry| {
                let hints = if entry.hints.is_empty() {
                    vec![Some(hint_after(None).map_err(candle_core::Error::Msg)?)]
                } else {
                    entry
                        .hints
                        .iter()
                        .map(|h| hint_after(h.as_ref()).map(Some))
                        .collect::<std::result::Result<Vec<_>, String>>()
                        .map_err(candle_core::Error::Msg)?
                };
                Ok(Conditioning { hints, ..entry })
            })
            .map_err(|e| e.to_string())
        })
        .collect()
}
