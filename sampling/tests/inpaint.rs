//! Sampling under a noise mask (ComfyUI's KSamplerX0Inpaint): outside the
//! mask the sample equals the original latent at the end, inside it is
//! sampled; differential diffusion lets a cell change only late in
//! sampling when its mask value is small.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use weft_core::LatentSpace;
use weft_sampling::exact::{ExactNetwork, GaussianMixture};
use weft_sampling::guidance::Unguided;
use weft_sampling::inpaint::Masked;
use weft_sampling::{
    schedule, seeded_noise, Conditioning, Denoiser, Model, ModelSampling, SampleContext,
    SeededSteps,
};

fn model() -> Arc<Model> {
    let betas = schedule::betas("scaled_linear", 1000, 0.00085, 0.012).unwrap();
    let sampling = ModelSampling::discrete(
        &schedule::alphas_cumprod(&betas),
        weft_sampling::Prediction::Epsilon,
    );
    let data = GaussianMixture {
        weights: vec![1.0],
        means: vec![0.0],
        stds: vec![1.0],
    };
    Arc::new(Model {
        network: Arc::new(ExactNetwork {
            data,
            sampling: sampling.clone(),
        }),
        sampling,
        latent_space: LatentSpace::pixels(),
        latent_format: Default::default(),
        differential_diffusion: false,
        skip_layer_guidance: None,
        wrappers: Default::default(),
        latent_channels: None,
    })
}

/// Euler over `sigmas` from the original `latent` noised with `noise`,
/// under `mask`.
fn sample(latent: &Tensor, mask: &Tensor, differential: bool, sigmas: &[f64]) -> Tensor {
    let model = model();
    let guider = Unguided {
        model: model.clone(),
        conditioning: Conditioning::default(),
    };
    let noise = seeded_noise(7, latent.dims()).unwrap();
    let x = guider.path().noise(sigmas[0], &noise, latent).unwrap();
    let diff = differential.then_some((&model.sampling, sigmas));
    let masked = Masked::new(&guider, mask, latent.clone(), noise, diff).unwrap();
    let mut steps = SeededSteps::new(1);
    let mut progress = |_: usize, _: usize| Ok(());
    let mut ctx = SampleContext {
        noise: &mut steps,
        progress: &mut progress,
    };
    weft_sampling::sampler_by_name("euler", Default::default())
        .unwrap()
        .sample(&masked, x, sigmas, &mut ctx)
        .unwrap()
}

fn sigmas() -> Vec<f64> {
    let mut s: Vec<f64> = (0..10).map(|i| 14.6 * (0.4f64).powi(i)).collect();
    s.push(0.0);
    s
}

#[test]
fn outside_the_mask_the_original_survives_to_the_last_step() {
    let latent = Tensor::arange(0f32, 32., &Device::Cpu)
        .unwrap()
        .affine(0.1, -1.6)
        .unwrap()
        .reshape((1, 2, 4, 4))
        .unwrap();
    // Repaint the left half.
    let mut m = vec![0f32; 16];
    for y in 0..4 {
        m[y * 4] = 1.0;
        m[y * 4 + 1] = 1.0;
    }
    let mask = Tensor::from_vec(m, (1, 4, 4), &Device::Cpu).unwrap();
    let out = sample(&latent, &mask, false, &sigmas());
    let (o, l) = (
        out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        latent.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    for i in 0..32 {
        let x = i % 4;
        if x >= 2 {
            assert_eq!(o[i], l[i], "cell {i} outside the mask");
        } else {
            assert!(
                (o[i] - l[i]).abs() > 1e-3,
                "cell {i} inside the mask was not sampled"
            );
        }
    }
}

#[test]
fn differential_diffusion_changes_low_mask_cells_less() {
    let latent = Tensor::full(2.0f32, (1, 1, 4, 4), &Device::Cpu).unwrap();
    // Mask values 1, 0.5, 0.05 and 0 across the columns.
    let cols = [1.0f32, 0.5, 0.05, 0.0];
    let m: Vec<f32> = (0..16).map(|i| cols[i % 4]).collect();
    let mask = Tensor::from_vec(m, (1, 4, 4), &Device::Cpu).unwrap();
    let out = sample(&latent, &mask, true, &sigmas());
    let row: Vec<f32> = out
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let change: Vec<f32> = row.iter().map(|v| (v - 2.0).abs()).collect();
    // The data's mean is 0: a cell free for longer moves further from 2.
    assert!(change[0] > change[1] && change[1] > change[2], "{change:?}");
    // A zero mask value is free only at the last call (ComfyUI's threshold
    // reaches 0 there), so it barely moves.
    assert!(change[3] <= change[2] && change[3] < 0.05, "{change:?}");
}
