//! Scalar utilities: constants, arithmetic, comparison, string formatting,
//! a lazy switch, and simple output nodes.

mod constant;
mod math;
mod output;
mod string_format;
mod switch;

pub use constant::Constant;
pub use math::{Compare, FloatMath, IntMath};
pub use output::{Print, SaveText};
pub use string_format::StringFormat;
pub use switch::Switch;

use weft_core::{Registry, ValueType};

pub fn register(registry: &mut Registry) -> Result<(), String> {
    for ty in [
        ValueType::Int,
        ValueType::Float,
        ValueType::Bool,
        ValueType::String,
    ] {
        registry.register(Constant::new(ty))?;
    }
    registry.register(IntMath::new())?;
    registry.register(FloatMath::new())?;
    registry.register(Compare::new())?;
    registry.register(StringFormat::new())?;
    registry.register(Switch::new())?;
    registry.register(Print::new())?;
    registry.register(SaveText::new())?;
    Ok(())
}
