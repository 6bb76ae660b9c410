//! The exported C functions: the entry point and node trampolines. Every one
//! catches panics, so a plugin bug becomes a node error, never a crash.
//!
//! The top of the module order: the only module that sees all the others.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use weft_plugin_abi::{self as abi, Call, HostApi, Status, Str};
use weft_schema::{Cost, Literal, NodeSchema, OutputType, ValueType};

use crate::context::{guard, host, set_host, Context};
use crate::error::Error;
use crate::node::{Node, NodeContext};
use crate::value::{forget_returned_strings, Inputs};

/// The ABI description of every node, with the strings and arrays it points
/// into. Built once per loaded library and never freed.
struct Plugin {
    nodes: Vec<Box<dyn Node>>,
    _strings: Vec<String>,
    _choices: Vec<Vec<Str>>,
    _inputs: Vec<Vec<abi::InputSpec>>,
    _outputs: Vec<Vec<abi::OutputSpec>>,
    _types: Vec<abi::NodeType>,
    info: abi::PluginInfo,
}

// SAFETY: the raw pointers only point into the struct's own, immutable data.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

static PLUGIN: OnceLock<Plugin> = OnceLock::new();

/// Called by `export_plugin!`'s `weft_plugin_entry`.
///
/// # Safety
/// `host_api` must be null or point to the host's table, which outlives the library.
pub unsafe fn entry(
    host_api: *const HostApi,
    name: &'static str,
    version: &'static str,
    nodes: impl FnOnce() -> Vec<Box<dyn Node>>,
) -> *const abi::PluginInfo {
    let Some(api) = host_api.as_ref() else {
        return std::ptr::null();
    };
    // Fields beyond our table size would be read from past the host's table.
    if api.abi_major != abi::ABI_MAJOR || (api.size as usize) < std::mem::size_of::<HostApi>() {
        let message = format!(
            "plugin {name} needs weft's plugin ABI {}.{}, the host offers {}.{}",
            abi::ABI_MAJOR,
            abi::ABI_MINOR,
            api.abi_major,
            api.abi_minor
        );
        if api.abi_major == abi::ABI_MAJOR {
            unsafe { (api.log)(std::ptr::null(), abi::LOG_WARN, Str::new(&message)) };
        }
        return std::ptr::null();
    }
    set_host(host_api);
    let built = catch_unwind(AssertUnwindSafe(|| {
        PLUGIN.get_or_init(|| describe(name, version, nodes())) as *const Plugin
    }));
    match built {
        Ok(plugin) => unsafe { &(*plugin).info },
        Err(_) => std::ptr::null(),
    }
}

/// Boxes a family of node types (`export_plugin!`'s `nodes: family()`).
pub fn boxed<N: Node>(nodes: impl IntoIterator<Item = N>) -> Vec<Box<dyn Node>> {
    nodes
        .into_iter()
        .map(|n| Box::new(n) as Box<dyn Node>)
        .collect()
}

fn describe(name: &'static str, version: &'static str, nodes: Vec<Box<dyn Node>>) -> Plugin {
    // Every string the tables point to lives in `strings`; a `String`'s heap
    // buffer does not move when the vector holding it grows.
    let mut strings: Vec<String> = Vec::new();
    let mut text = |s: &str| {
        strings.push(s.to_string());
        Str::new(strings.last().expect("just pushed"))
    };
    let mut choices = Vec::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut types = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let schema: &NodeSchema = node.schema();
        let mut specs = Vec::new();
        for input in &schema.inputs {
            let options: Vec<Str> = input.choices.iter().flatten().map(|c| text(c)).collect();
            let mut default_value = abi::Value::NONE;
            match &input.default {
                None => {}
                Some(Literal::Int(i)) => {
                    default_value.tag = abi::VALUE_INT;
                    default_value.int = *i;
                }
                Some(Literal::Float(x)) => {
                    default_value.tag = abi::VALUE_FLOAT;
                    default_value.float = *x;
                }
                Some(Literal::Bool(b)) => {
                    default_value.tag = abi::VALUE_BOOL;
                    default_value.int = *b as i64;
                }
                Some(Literal::String(s)) => {
                    default_value.tag = abi::VALUE_STRING;
                    default_value.string = text(s);
                }
            }
            let flag = |on: bool, bit: u32| if on { bit } else { 0 };
            specs.push(abi::InputSpec {
                name: text(&input.name),
                type_name: Str::new(input.ty.name()),
                flags: flag(input.required, abi::INPUT_REQUIRED)
                    | flag(input.min.is_some(), abi::INPUT_HAS_MIN)
                    | flag(input.max.is_some(), abi::INPUT_HAS_MAX)
                    | flag(input.step.is_some(), abi::INPUT_HAS_STEP),
                default_value,
                min: input.min.unwrap_or(0.0),
                max: input.max.unwrap_or(0.0),
                step: input.step.unwrap_or(0.0),
                choices: options.as_ptr(),
                n_choices: options.len(),
                doc: text(&input.doc),
            });
            choices.push(options);
        }
        let outs: Vec<abi::OutputSpec> = schema
            .outputs
            .iter()
            .map(|o| abi::OutputSpec {
                name: text(&o.name),
                type_name: Str::new(output_type(&o.ty).name()),
                doc: text(&o.doc),
            })
            .collect();
        let flags = if schema.output_node {
            abi::NODE_OUTPUT
        } else {
            0
        } | if schema.deterministic {
            0
        } else {
            abi::NODE_NONDETERMINISTIC
        } | if schema.cost == Cost::Heavy {
            abi::NODE_HEAVY
        } else {
            0
        };
        types.push(abi::NodeType {
            type_name: text(&schema.type_name),
            category: text(&schema.category),
            doc: text(&schema.doc),
            inputs: specs.as_ptr(),
            n_inputs: specs.len(),
            outputs: outs.as_ptr(),
            n_outputs: outs.len(),
            flags,
            node_data: index as *mut c_void,
            run: Some(run),
        });
        inputs.push(specs);
        outputs.push(outs);
    }
    let info = abi::PluginInfo {
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        size: std::mem::size_of::<abi::PluginInfo>() as u32,
        name: Str::new(name),
        version: Str::new(version),
        nodes: types.as_ptr(),
        n_nodes: types.len(),
    };
    Plugin {
        nodes,
        _strings: strings,
        _choices: choices,
        _inputs: inputs,
        _outputs: outputs,
        _types: types,
        info,
    }
}

unsafe extern "C" fn run(
    node_data: *mut c_void,
    call: *const Call,
    inputs: *const abi::Value,
    n_inputs: usize,
    outputs: *mut abi::Value,
    n_outputs: usize,
) -> Status {
    forget_returned_strings();
    guard(call, || {
        let plugin = PLUGIN.get().ok_or("the plugin was not initialised")?;
        let node = plugin
            .nodes
            .get(node_data as usize)
            .ok_or("unknown node index")?;
        let schema = node.schema();
        if n_inputs != schema.inputs.len() || n_outputs != schema.outputs.len() {
            return Err(Error(format!(
                "called with {n_inputs} inputs and {n_outputs} outputs, the schema has {} and {}",
                schema.inputs.len(),
                schema.outputs.len()
            )));
        }
        let values = if n_inputs == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(inputs, n_inputs)
        };
        let cx = NodeContext::new(Context::new(call), Inputs::new(schema, values));
        let results = node.run(&cx)?;
        if results.len() != n_outputs {
            return Err(Error(format!(
                "returned {} outputs, the schema declares {n_outputs}",
                results.len()
            )));
        }
        // Convert everything first, so a bad output leaks nothing.
        let mut converted = Vec::with_capacity(n_outputs);
        for (value, spec) in results.into_iter().zip(&schema.outputs) {
            match value.into_abi(&spec.name, output_type(&spec.ty)) {
                Ok(v) => converted.push(v),
                Err(e) => {
                    converted.into_iter().for_each(|v| release_value(&v));
                    return Err(e);
                }
            }
        }
        for (i, v) in converted.into_iter().enumerate() {
            *outputs.add(i) = v;
        }
        Ok(())
    })
}

/// Frees what an unreturned output owns.
fn release_value(v: &abi::Value) {
    unsafe {
        match v.tag {
            abi::VALUE_TENSOR => abi::tensor::delete(v.tensor),
            abi::VALUE_HANDLE => (host().handle_release)(v.handle),
            abi::VALUE_OBJECT => {
                if let Some(release) = v.object.vtable.as_ref().and_then(|t| t.release) {
                    release(v.object.data)
                }
            }
            _ => {}
        }
    }
}

/// The type an output crosses the ABI with: one typed like an input is
/// declared as `*` (ANY), which the host checks against the link.
fn output_type(ty: &OutputType) -> ValueType {
    match ty {
        OutputType::Fixed(t) => *t,
        OutputType::SameAs(_) => ValueType::Any,
    }
}
