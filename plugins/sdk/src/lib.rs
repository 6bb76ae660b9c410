//! Write weft plugins in safe Rust.
//!
//! A plugin is a `cdylib` crate with node types that implement [`Node`], the
//! same shape as weft's built-ins (a schema, and a `run` from inputs to
//! outputs), exported with [`export_plugin!`]. The SDK turns them into the
//! C ABI of `weft-plugin-abi`, catches every panic at the boundary, and
//! depends on nothing of weft but that ABI.
//!
//! ```no_run
//! use weft_plugin_sdk::{export_plugin, Context, InputSpec, Inputs, Node, NodeSchema, Result, Value, ValueType};
//!
//! struct Brighten(NodeSchema);
//!
//! impl Node for Brighten {
//!     fn schema(&self) -> &NodeSchema {
//!         &self.0
//!     }
//!     fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>> {
//!         let image = inputs.tensor("image")?;
//!         let amount = inputs.float("amount")?;
//!         Ok(vec![Value::Tensor((image + amount)?.clamp(0f32, 1f32)?)])
//!     }
//! }
//!
//! export_plugin! {
//!     name: "brighten",
//!     version: "0.1.0",
//!     nodes: [Brighten(
//!         NodeSchema::new("Brighten", "image", "Adds a constant to every pixel.")
//!             .input(InputSpec::of("image", ValueType::Image))
//!             .input(InputSpec::float("amount").default(0.1).range(-1.0, 1.0))
//!             .output("IMAGE", ValueType::Image, "the brighter image"),
//!     )],
//! }
//! ```

mod context;
mod entry;
mod objects;
mod schema;
mod value;

pub use candle_core::{self as candle, DType, Device, Tensor};
pub use context::{Context, Handle};
pub use objects::{Guider, Path, Sampler};
pub use schema::{InputSpec, NodeSchema, ValueType};
pub use value::{Inputs, Value};
pub use weft_plugin_abi as abi;

#[doc(hidden)]
pub use entry::entry as __entry;

/// A node error: its message reaches the user with the node's id.
#[derive(Clone, Debug, PartialEq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Self {
        Error(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A node type, as in weft itself: one instance serves every node of its
/// type, possibly from several threads at once, so it keeps no run state.
pub trait Node: Send + Sync + 'static {
    fn schema(&self) -> &NodeSchema;
    /// Computes the outputs, in the schema's output order.
    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>>;
}

/// Exports node types as a weft plugin: `name`, `version` and the node values.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, nodes: [$($node:expr),* $(,)?] $(,)?) => {
        /// The plugin's entry point, called by weft once per load.
        ///
        /// # Safety
        /// `host` must be weft's host table (or null).
        #[no_mangle]
        pub unsafe extern "C" fn weft_plugin_entry(
            host: *const $crate::abi::HostApi,
        ) -> *const $crate::abi::PluginInfo {
            $crate::__entry(host, $name, $version, || {
                vec![$(::std::boxed::Box::new($node) as ::std::boxed::Box<dyn $crate::Node>),*]
            })
        }
    };
}
