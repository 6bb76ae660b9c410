//! Write weft plugins in safe Rust.
//!
//! A plugin is a `cdylib` crate whose node types have the same shape as
//! weft's built-ins: a [`NodeSchema`] turned into a [`NodeDef`] by
//! [`Define::run`], whose closure reads typed inputs from one context `cx`
//! ([`NodeContext`], which also offers the host's services) and returns a
//! [`Value`] or a tuple of them. They are exported with [`export_plugin!`].
//! The SDK turns them into the C ABI of `weft-plugin-abi`, catches every
//! panic at the boundary, and depends on nothing of weft but that ABI and
//! the shared schema types (`weft-schema`).
//!
//! ```no_run
//! use weft_plugin_sdk::{export_plugin, Define, InputSpec, NodeDef, NodeSchema, Value, ValueType};
//!
//! fn brighten() -> NodeDef {
//!     NodeSchema::new("Brighten", "image", "Adds a constant to every pixel.")
//!         .input(InputSpec::of("image", ValueType::Image))
//!         .input(InputSpec::float("amount").default(0.1).range(-1.0, 1.0))
//!         .output("IMAGE", ValueType::Image, "the brighter image")
//!         .run(|cx| {
//!             let image = cx.tensor("image")?;
//!             let amount = cx.float("amount")?;
//!             Ok(Value::Tensor((image + amount)?.clamp(0f32, 1f32)?))
//!         })
//! }
//!
//! export_plugin! {
//!     name: "brighten",
//!     version: "0.1.0",
//!     nodes: [brighten()],
//! }
//! ```
//!
//! `nodes` lists [`NodeDef`]s and [`Node`] implementors alike (a node type
//! that carries state of its own implements [`Node`], whose `run` takes the
//! same `cx`), or is one expression giving a family, `nodes: family()`, any
//! `IntoIterator` of one node type (a `Vec<NodeDef>`, say):
//!
//! ```no_run
//! use weft_plugin_sdk::{export_plugin, Define, InputSpec, NodeDef, NodeSchema, Value, ValueType};
//!
//! fn nodes() -> Vec<NodeDef> {
//!     vec![NodeSchema::new("Double", "utils", "Twice the input.")
//!         .input(InputSpec::int("x"))
//!         .output("value", ValueType::Int, "2·x")
//!         .run(|cx| Ok(Value::Int(2 * cx.int("x")?)))]
//! }
//!
//! export_plugin! {
//!     name: "double",
//!     version: "0.1.0",
//!     nodes: nodes(),
//! }
//! ```
//!
//! Modules, each importing only those before it: `error`, `context` (the
//! host table, `guard`, [`Context`]), `handle` ([`Handle`], [`Path`]),
//! `views` ([`Conditioning`], [`Model`]: ABI 1.1's views of host values),
//! `objects` ([`Guider`], [`Sampler`], [`DenoiserWrapper`],
//! [`AttentionHook`]), `value` ([`Value`], [`Inputs`]),
//! `node` ([`NodeContext`], [`Node`]), `define` ([`Define`], [`NodeDef`]),
//! `entry` (the exported functions).

mod context;
mod define;
mod entry;
mod error;
mod handle;
mod node;
mod objects;
mod value;
mod views;

pub use candle_core::{self as candle, DType, Device, Tensor};
pub use context::Context;
pub use define::{Define, NodeDef};
pub use error::{Error, Result};
pub use handle::{Handle, Path};
pub use node::{Node, NodeContext};
pub use objects::{AttentionHook, DenoiserWrapper, Guider, Sampler};
pub use value::{Inputs, Value};
pub use views::{Conditioning, Field, Model};
pub use weft_plugin_abi as abi;
pub use weft_schema::{Cost, InputSpec, IntoOutputs, Literal, NodeSchema, ValueType};

#[doc(hidden)]
pub use entry::{boxed as __boxed, entry as __entry};

/// Exports node types as a weft plugin: `name`, `version` and the nodes,
/// either a list of [`NodeDef`]s and [`Node`] implementors
/// (`nodes: [brighten(), Stateful::new()]`) or one expression giving a
/// family of one node type (`nodes: family()`). Building the nodes and
/// every call into them run behind a panic guard.
#[macro_export]
macro_rules! export_plugin {
    (@entry $name:expr, $version:expr, $nodes:expr) => {
        /// The plugin's entry point, called by weft once per load.
        ///
        /// # Safety
        /// `host` must be weft's host table (or null).
        #[no_mangle]
        pub unsafe extern "C" fn weft_plugin_entry(
            host: *const $crate::abi::HostApi,
        ) -> *const $crate::abi::PluginInfo {
            $crate::__entry(host, $name, $version, || $nodes)
        }
    };
    (name: $name:expr, version: $version:expr, nodes: [$($node:expr),* $(,)?] $(,)?) => {
        $crate::export_plugin!(@entry $name, $version, ::std::vec![
            $(::std::boxed::Box::new($node) as ::std::boxed::Box<dyn $crate::Node>),*
        ]);
    };
    (name: $name:expr, version: $version:expr, nodes: $family:expr $(,)?) => {
        $crate::export_plugin!(@entry $name, $version, $crate::__boxed($family));
    };
}
