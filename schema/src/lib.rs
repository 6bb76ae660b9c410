//! What a node type accepts and produces, as plain data.
//!
//! A [`NodeSchema`] lists [`InputSpec`]s and [`OutputSpec`]s, each typed by
//! a [`ValueType`], with scalar defaults as [`Literal`]s. The engine
//! (`weft-core`) validates graphs against schemas, the CLI prints them and
//! the plugin SDK builds them — all with this one builder, so a plugin
//! author and a built-in node use the same words.
//!
//! Architecture invariant: this crate knows no tensor, engine or plugin
//! ABI; it depends on serde alone.

mod literal;
mod node;
mod outputs;
mod value_type;

pub use literal::Literal;
pub use node::{Cost, InputSpec, NodeSchema, OutputSpec, OutputType};
pub use outputs::IntoOutputs;
pub use value_type::ValueType;
