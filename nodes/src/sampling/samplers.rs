use std::sync::Arc;

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use weft_sampling::handles::SamplerHandle;
use weft_sampling::{sampler_by_name, sampler_names, SamplerOptions};

/// `KSamplerSelect`: picks a sampling algorithm by name.
pub fn ksampler_select() -> NodeDef {
    NodeSchema::new(
        "KSamplerSelect",
        "sampling",
        "A sampler by name, with the noise knobs of the stochastic ones.",
    )
    .input(InputSpec::choice("sampler_name", &sampler_names()).doc("The algorithm."))
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
    .output("SAMPLER", ValueType::Sampler, "The sampler.")
    .run(|cx| {
        let name = cx.str("sampler_name")?;
        let opts = SamplerOptions {
            eta: cx.float("eta")?,
            s_noise: cx.float("s_noise")?,
        };
        let sampler = sampler_by_name(name, opts)
            .ok_or_else(|| NodeError::input("sampler_name", format!("unknown sampler {name:?}")))?;
        Ok(Value::handle(SamplerHandle {
            name: name.into(),
            sampler: Arc::from(sampler),
        }))
    })
}
