use std::sync::Arc;

use weft_core::{InputSpec, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

use super::handles::{value, SamplerHandle};
use weft_sampling::{sampler_by_name, sampler_names, SamplerOptions};

/// Picks a sampling algorithm by name.
pub struct KSamplerSelect(NodeSchema);

impl KSamplerSelect {
    pub fn new() -> Self {
        let names = sampler_names();
        KSamplerSelect(
            NodeSchema::new(
                "KSamplerSelect",
                "sampling",
                "A sampler by name, with the noise knobs of the stochastic ones.",
            )
            .input(InputSpec::choice("sampler_name", &names).doc("The algorithm."))
            .input(
                InputSpec::float("eta")
                    .default(1.0)
                    .range(0.0, 10.0)
                    .doc("Stochasticity of ancestral/SDE samplers (0 = deterministic)."),
            )
            .input(
                InputSpec::float("s_noise")
                    .default(1.0)
                    .range(0.0, 10.0)
                    .doc("Scale of the noise stochastic samplers add."),
            )
            .output("SAMPLER", ValueType::Sampler, "The sampler."),
        )
    }
}

impl Node for KSamplerSelect {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let name = ctx.inputs.str("sampler_name")?;
        let opts = SamplerOptions {
            eta: ctx.inputs.float("eta")?,
            s_noise: ctx.inputs.float("s_noise")?,
        };
        let sampler = sampler_by_name(name, opts)
            .ok_or_else(|| NodeError::input("sampler_name", format!("unknown sampler {name:?}")))?;
        Ok(vec![value(
            ValueType::Sampler,
            SamplerHandle {
                name: name.into(),
                sampler: Arc::from(sampler),
            },
        )])
    }
}
