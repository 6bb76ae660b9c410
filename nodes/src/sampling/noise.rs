use weft_core::{Define, InputSpec, NodeDef, NodeSchema, Value, ValueType};

use weft_sampling::handles::NoiseHandle;

/// `RandomNoise`: seeded Gaussian noise, generated on the CPU.
pub fn random_noise() -> NodeDef {
    NodeSchema::new("RandomNoise", "sampling/noise", "Seeded Gaussian noise, generated on the CPU so a seed gives the same result everywhere; batch item i uses stream i of the seed.")
        .input(InputSpec::int("noise_seed").default(0).min(0.0).doc("The seed."))
        .output("NOISE", ValueType::Noise, "The noise source.")
        .run(|cx| {
            Ok(Value::handle(NoiseHandle {
                seed: Some(cx.int("noise_seed")? as u64),
            }))
        })
}

/// `DisableNoise`: no initial noise, sampling starts from the latent as it is.
pub fn disable_noise() -> NodeDef {
    NodeSchema::new(
        "DisableNoise",
        "sampling/noise",
        "No initial noise, for starting from an already-noised latent.",
    )
    .output("NOISE", ValueType::Noise, "A source that adds nothing.")
    .run(|_| Ok(Value::handle(NoiseHandle { seed: None })))
}
