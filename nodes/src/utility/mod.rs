//! Scalar utilities: constants, arithmetic, comparison, string formatting,
//! a lazy switch, and simple output nodes.

mod constant;
mod math;
mod output;
pub(crate) use output::output_prefix;
mod string_format;
mod switch;

pub use constant::constant;
pub use math::{compare, float_math, int_math};
pub use output::{print, save_text};
pub use string_format::string_format;
pub use switch::switch;

use weft_core::{NodeDef, Registry, ValueType};

/// The utility node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        constant("IntConstant", ValueType::Int),
        constant("FloatConstant", ValueType::Float),
        constant("BoolConstant", ValueType::Bool),
        constant("StringConstant", ValueType::String),
        int_math(),
        float_math(),
        compare(),
        string_format(),
        switch(),
        print(),
        save_text(),
    ]
}

pub fn register(registry: &mut Registry) -> Result<(), String> {
    registry.register_all(nodes())
}
