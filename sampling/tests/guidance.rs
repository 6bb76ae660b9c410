//! Classifier-free guidance on a labelled Gaussian mixture, where the exact
//! conditional and unconditional denoisers are known in closed form.

use std::sync::Arc;

use candle_core::Tensor;
use weft_core::LatentSpace;
use weft_sampling::exact::{ExactNetwork, GaussianMixture};
use weft_sampling::guidance::Cfg;
use weft_sampling::{seeded_noise, Conditioning, Model, ModelSampling, SampleContext, SeededSteps};

/// Overlapping classes: N(−0.5, 1) for label 0 and N(+0.5, 1) for label 1.
fn data() -> GaussianMixture {
    GaussianMixture {
        weights: vec![1.0, 1.0],
        means: vec![-0.5, 0.5],
        stds: vec![1.0, 1.0],
    }
}

fn model(sampling: ModelSampling) -> Arc<Model> {
    Arc::new(Model {
        network: Arc::new(ExactNetwork {
            data: data(),
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

/// The fraction of samples on label 1's side (x > 0) after guided sampling.
fn fraction_on_label_side(model: Arc<Model>, scale: f64, sigmas: &[f64]) -> f64 {
    let cfg = Cfg {
        model: model.clone(),
        positive: Conditioning::labels(vec![Some(1)]),
        negative: Conditioning::labels(vec![None]),
        scale,
        rescale: 0.0,
        norm_rescale: false,
        interval: None,
    };
    let noise = seeded_noise(3, &[1, 1, 40, 50]).unwrap();
    let x = model
        .sampling
        .path()
        .noise(sigmas[0], &noise, &noise.zeros_like().unwrap())
        .unwrap();
    let mut steps = SeededSteps::new(3);
    let mut progress = |_: usize, _: usize| Ok(());
    let mut ctx = SampleContext {
        noise: &mut steps,
        progress: &mut progress,
    };
    let out: Tensor = weft_sampling::sampler_by_name("euler", Default::default())
        .unwrap()
        .sample(&cfg, x, sigmas, &mut ctx)
        .unwrap();
    let xs: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    xs.iter().filter(|v| **v > 0.0).count() as f64 / xs.len() as f64
}

fn standard_normal_cdf(z: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 on erf, accurate to 1.5e-7.
    let t = 1.0 / (1.0 + 0.3275911 * z.abs() / 2f64.sqrt());
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-(z * z) / 2.0).exp();
    0.5 * (1.0 + if z >= 0.0 { erf } else { -erf })
}

fn check_concentration(model: Arc<Model>, sigmas: &[f64]) {
    // 2,000 samples: the Monte Carlo standard error of a fraction is ≤ 0.011.
    let tol = 0.035;
    let unguided = fraction_on_label_side(model.clone(), 0.0, sigmas);
    assert!(
        (unguided - 0.5).abs() < tol,
        "s = 0 is the unconditional model: {unguided}"
    );
    let conditional = fraction_on_label_side(model.clone(), 1.0, sigmas);
    let exact = standard_normal_cdf(0.5);
    assert!(
        (conditional - exact).abs() < tol,
        "s = 1 is the exact conditional: {conditional} vs Φ(0.5) = {exact}"
    );
    let mut last = conditional;
    for scale in [2.0, 4.0, 8.0] {
        let f = fraction_on_label_side(model.clone(), scale, sigmas);
        assert!(
            f > last + 0.02 || (f >= last && f > 0.99),
            "guidance {scale} should concentrate more: {f} after {last}"
        );
        last = f;
    }
    assert!(
        last > 0.95,
        "strong guidance puts nearly everything on the labelled side: {last}"
    );
}

#[test]
fn cfg_concentrates_on_the_labelled_component_diffusion() {
    let betas = weft_sampling::schedule::betas("linear", 1000, 1e-4, 0.02).unwrap();
    let ac = weft_sampling::schedule::alphas_cumprod(&betas);
    let sampling = ModelSampling::discrete(&ac, weft_sampling::Prediction::Epsilon);
    let (lo, hi) = (sampling.sigma_min(), sampling.sigma_max());
    let n = 60;
    let mut sigmas: Vec<f64> = (0..n)
        .map(|i| (hi.ln() + (lo.ln() - hi.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect();
    sigmas.push(0.0);
    check_concentration(model(sampling), &sigmas);
}

#[test]
fn cfg_concentrates_on_the_labelled_component_flow() {
    let n = 60;
    let sigmas: Vec<f64> = (0..=n).map(|i| 1.0 - i as f64 / n as f64).collect();
    check_concentration(model(ModelSampling::flow(1000.0)), &sigmas);
}
