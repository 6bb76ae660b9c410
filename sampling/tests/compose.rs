//! Conditioning entries composed as ComfyUI's samplers compose them: areas
//! with 8-cell edge ramps inside the image, masks, strengths and timestep
//! ranges, on a network whose prediction is each entry's own constant.

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use weft_core::LatentSpace;
use weft_sampling::{Area, Conditioning, Model, ModelSampling, Network};

/// Predicts, for every cell, the first text state's first feature.
#[derive(Debug)]
struct Constant;

impl Network for Constant {
    fn forward(&self, x: &Tensor, _: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let v = cond
            .context
            .as_ref()
            .unwrap()
            .narrow(1, 0, 1)?
            .narrow(2, 0, 1)?;
        x.ones_like()?.broadcast_mul(&v.unsqueeze(3)?)
    }
}

fn model() -> Model {
    Model {
        network: Arc::new(Constant),
        sampling: ModelSampling::flow(1.0),
        latent_space: LatentSpace::pixels(),
        latent_format: Default::default(),
        differential_diffusion: false,
        skip_layer_guidance: None,
        wrappers: Default::default(),
        latent_channels: None,
    }
}

fn prompt(v: f32) -> Conditioning {
    Conditioning {
        context: Some(Tensor::full(v, (1, 1, 1), &Device::Cpu).unwrap()),
        ..Default::default()
    }
}

/// Row 0 of the single-channel prediction on a 32×32 latent at σ.
fn row(cond: &Conditioning, sigma: f64) -> Vec<f32> {
    let x = Tensor::zeros((1, 1, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let out = model().predict(&x, sigma, cond).unwrap();
    out.get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn an_area_blends_in_with_a_ramp_at_inner_edges() {
    let right = Conditioning {
        area: Some(Area::Cells(32, 16, 0, 16)),
        ..prompt(3.0)
    };
    let r = row(&prompt(1.0).combine(&right), 0.5);
    // Left half: the background prompt alone.
    assert!(r[..16].iter().all(|&v| close(v, 1.0)), "{r:?}");
    // The area's left edge is inside the image: its weight ramps 1/8 … 1.
    for t in 0..8 {
        let w = (t + 1) as f32 / 8.0;
        assert!(
            close(r[16 + t], (1.0 + 3.0 * w) / (1.0 + w)),
            "col {}: {}",
            16 + t,
            r[16 + t]
        );
    }
    // Past the ramp (and at the image border, no ramp): the plain average.
    assert!(r[24..].iter().all(|&v| close(v, 2.0)), "{r:?}");
}

#[test]
fn strength_masks_and_fractions_weight_entries() {
    // Strength 3 on the whole image: (1 + 3·3) / (1 + 3).
    let strong = Conditioning {
        strength: Some(3.0),
        ..prompt(3.0)
    };
    assert!(row(&prompt(1.0).combine(&strong), 0.5)
        .iter()
        .all(|&v| close(v, 2.5)));
    // A mask (any size, resized to the latent) replaces the ramps.
    let mut cells = vec![0f32; 4 * 4];
    for y in 0..4 {
        cells[y * 4 + 3] = 1.0;
    }
    let masked = Conditioning {
        mask: Some(Tensor::from_vec(cells, (1, 4, 4), &Device::Cpu).unwrap()),
        ..prompt(3.0)
    };
    let r = row(&prompt(1.0).combine(&masked), 0.5);
    assert!(close(r[0], 1.0) && close(r[31], 2.0), "{r:?}");
    // A fraction of the latent is the same area as its cells.
    let frac = Conditioning {
        area: Some(Area::Fraction(1.0, 0.5, 0.0, 0.5)),
        ..prompt(3.0)
    };
    let cells = Conditioning {
        area: Some(Area::Cells(32, 16, 0, 16)),
        ..prompt(3.0)
    };
    assert_eq!(
        row(&prompt(1.0).combine(&frac), 0.5),
        row(&prompt(1.0).combine(&cells), 0.5)
    );
}

#[test]
fn timestep_ranges_switch_entries_on_and_off() {
    // Active for the second half of sampling: σ ≤ 0.5 on a flow model.
    let late = Conditioning {
        timestep_range: Some((0.5, 1.0)),
        ..prompt(3.0)
    };
    let both = prompt(1.0).combine(&late);
    assert!(row(&both, 0.9).iter().all(|&v| close(v, 1.0)));
    assert!(row(&both, 0.3).iter().all(|&v| close(v, 2.0)));
    // No entry active: cells no entry covers predict 0, as ComfyUI's.
    let alone = Conditioning {
        timestep_range: Some((0.5, 1.0)),
        ..prompt(3.0)
    };
    assert!(row(&alone, 0.9).iter().all(|&v| v == 0.0));
}

#[test]
fn a_plain_conditioning_is_one_forward() {
    assert!(prompt(1.0).is_plain());
    assert!(!prompt(1.0).combine(&prompt(2.0)).is_plain());
    assert_eq!(prompt(1.0).combine(&prompt(2.0)).entries().len(), 2);
    assert!(row(&prompt(1.5), 0.5).iter().all(|&v| v == 1.5));
}

fn states(rows: &[f32], width: usize) -> Conditioning {
    let n = rows.len() / width;
    Conditioning {
        context: Some(Tensor::from_vec(rows.to_vec(), (1, n, width), &Device::Cpu).unwrap()),
        pooled: Some(Tensor::from_vec(vec![rows[0]; width], (1, width), &Device::Cpu).unwrap()),
        ..Default::default()
    }
}

fn flat(t: &Option<Tensor>) -> Vec<f32> {
    t.as_ref()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// ComfyUI's ConditioningConcat, ConditioningAverage and ConditioningZeroOut.
#[test]
fn token_edits_follow_comfyui() {
    let to = states(&[1.0, 2.0, 3.0, 4.0], 2); // 2 tokens
    let from = states(&[10.0, 20.0], 2); // 1 token
                                         // Concat appends the tokens, keeps `to`'s pooled output.
    let c = to.clone().concat_tokens(&from).unwrap();
    assert_eq!(flat(&c.context), [1.0, 2.0, 3.0, 4.0, 10.0, 20.0]);
    assert_eq!(flat(&c.pooled), [1.0, 1.0]);
    // Average: from zero-padded to 2 tokens; 0.25·to + 0.75·from.
    let a = to.clone().average(&from, 0.25).unwrap();
    assert_eq!(flat(&a.context), [7.75, 15.5, 0.75, 1.0]);
    assert_eq!(flat(&a.pooled), [7.75, 7.75]);
    // A longer `from` is cut to `to`'s length.
    let long = states(&[1.0, 1.0, 5.0, 5.0, 9.0, 9.0], 2);
    assert_eq!(
        flat(&to.clone().average(&long, 0.5).unwrap().context),
        [1.0, 1.5, 4.0, 4.5]
    );
    // Different widths cannot be joined.
    assert!(to
        .clone()
        .concat_tokens(&states(&[1.0, 2.0, 3.0], 3))
        .is_err());
    let z = to.zero_out().unwrap();
    assert!(flat(&z.context)
        .iter()
        .chain(&flat(&z.pooled))
        .all(|&v| v == 0.0));
}
