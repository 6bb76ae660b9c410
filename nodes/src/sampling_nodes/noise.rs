use weft_core::{InputSpec, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

use super::handles::{value, NoiseHandle};

/// Seeded Gaussian noise, generated on the CPU.
pub struct RandomNoise(NodeSchema);

impl RandomNoise {
    pub fn new() -> Self {
        RandomNoise(
            NodeSchema::new("RandomNoise", "sampling/noise", "Seeded Gaussian noise, generated on the CPU so a seed gives the same result everywhere; batch item i uses stream i of the seed.")
                .input(InputSpec::int("noise_seed").default(0).min(0.0).doc("The seed."))
                .output("NOISE", ValueType::Noise, "The noise source."),
        )
    }
}

impl Node for RandomNoise {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let seed = ctx.inputs.int("noise_seed")? as u64;
        Ok(vec![value(
            ValueType::Noise,
            NoiseHandle { seed: Some(seed) },
        )])
    }
}

/// No initial noise: sampling starts from the latent as it is.
pub struct DisableNoise(NodeSchema);

impl DisableNoise {
    pub fn new() -> Self {
        DisableNoise(
            NodeSchema::new(
                "DisableNoise",
                "sampling/noise",
                "No initial noise, for starting from an already-noised latent.",
            )
            .output("NOISE", ValueType::Noise, "A source that adds nothing."),
        )
    }
}

impl Node for DisableNoise {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, _: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        Ok(vec![value(ValueType::Noise, NoiseHandle { seed: None })])
    }
}
