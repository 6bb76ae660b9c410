//! Loading one plugin library: a private copy, the entry point, the ABI
//! check, and the node types it describes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libloading::Library;
use weft_core::{InputSpec, NodeSchema, ValueType};
use weft_plugin_abi::{self as abi, Str};

use crate::call::HOST_API;
use crate::node::PluginNode;

/// Why a plugin did not load. The host reports it and goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for PluginError {}

/// A loaded plugin and its node types.
pub struct Plugin {
    pub name: String,
    pub version: String,
    /// The file it was loaded from (not the private copy).
    pub path: PathBuf,
    pub(crate) nodes: Vec<Arc<PluginNode>>,
}

impl Plugin {
    pub fn node_types(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.schema.type_name.as_str())
    }

    /// Loads `path` from a private copy: the dynamic loader caches libraries
    /// by path, and overwriting a mapped library (a rebuild) can crash.
    pub fn load(path: &Path) -> Result<Plugin, PluginError> {
        let fail = |message: String| PluginError {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let copy = private_copy(path, &bytes).map_err(|e| fail(format!("cannot copy it: {e}")))?;
        let library = unsafe { Library::new(&copy) };
        // Mapped libraries survive unlinking; the copy is never needed again,
        // nor its directory once no other load is using it.
        let _ = std::fs::remove_file(&copy);
        if let Some(dir) = copy.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        let library = Arc::new(library.map_err(|e| {
            // The loader names the private copy, a temporary file the user
            // never made; the error is about theirs, already named.
            let copy = copy.display().to_string();
            let why = e
                .to_string()
                .replace(&format!("{copy}: "), "")
                .replace(&copy, &path.display().to_string());
            fail(format!(
                "not a loadable library ({why}); plugins are shared libraries built for this platform"
            ))
        })?);
        let entry = unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) }.map_err(|_| {
            fail(format!(
                "it does not export `{}`; build it with weft-plugin-sdk's export_plugin! or see weft_plugin.h",
                String::from_utf8_lossy(abi::ENTRY_SYMBOL)
            ))
        })?;
        let info = unsafe { entry(&HOST_API) };
        let info = unsafe { info.as_ref() }.ok_or_else(|| {
            fail(format!(
                "its entry point refused the host (weft offers plugin ABI {}.{})",
                abi::ABI_MAJOR,
                abi::ABI_MINOR
            ))
        })?;
        if info.abi_major != abi::ABI_MAJOR {
            return Err(fail(format!(
                "it was built for plugin ABI {}.{}, this weft speaks {}.x; rebuild it against weft-plugin-sdk {}",
                info.abi_major,
                info.abi_minor,
                abi::ABI_MAJOR,
                abi::ABI_MAJOR
            )));
        }
        if (info.size as usize) < std::mem::size_of::<abi::PluginInfo>() {
            return Err(fail(format!(
                "its plugin table is {} bytes, ABI {}.x needs {}",
                info.size,
                abi::ABI_MAJOR,
                std::mem::size_of::<abi::PluginInfo>()
            )));
        }
        let text = |s: Str, what: &str| {
            unsafe { s.as_str() }
                .map(str::to_string)
                .ok_or_else(|| fail(format!("{what} is not UTF-8")))
        };
        let name = text(info.name, "the plugin name")?;
        let version = text(info.version, "the plugin version")?;
        let types = unsafe { slice(info.nodes, info.n_nodes) }
            .ok_or_else(|| fail("the node table is null".into()))?;
        let mut nodes = Vec::with_capacity(types.len());
        for (i, t) in types.iter().enumerate() {
            let mut schema =
                unsafe { schema(t) }.map_err(|e| fail(format!("node type {i}: {e}")))?;
            schema.build = digest.clone();
            schema.plugin = Some(format!("{name} {version}"));
            let run = t.run.ok_or_else(|| {
                fail(format!(
                    "node type `{}` has no run function",
                    schema.type_name
                ))
            })?;
            nodes.push(Arc::new(PluginNode::new(
                schema,
                run,
                t.node_data,
                library.clone(),
            )));
        }
        Ok(Plugin {
            name,
            version,
            path: path.to_path_buf(),
            nodes,
        })
    }
}

fn private_copy(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("weft-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stem = path
        .file_name()
        .map_or("plugin".into(), |n| n.to_string_lossy());
    let copy = dir.join(format!(
        "{}-{stem}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // Another load may remove the (then empty) folder between our create
    // and write; make it again and retry rather than fail the load.
    for _ in 0..8 {
        match std::fs::write(&copy, bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(&dir)?,
            other => return other.map(|()| copy),
        }
    }
    std::fs::write(&copy, bytes).map(|()| copy)
}

/// # Safety
/// `ptr` must be null or point to `len` readable values.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        Some(&[])
    } else if ptr.is_null() {
        None
    } else {
        Some(std::slice::from_raw_parts(ptr, len))
    }
}

fn value_type(name: &str) -> Result<ValueType, String> {
    ValueType::ALL
        .into_iter()
        .find(|t| t.name() == name && *t != ValueType::Any)
        .ok_or_else(|| {
            let known: Vec<&str> = ValueType::ALL[..ValueType::ALL.len() - 1]
                .iter()
                .map(|t| t.name())
                .collect();
            format!(
                "unknown type {name:?}; weft's types are {}",
                known.join(", ")
            )
        })
}

/// A weft schema from the plugin's description. The registry then checks it
/// like a built-in's.
unsafe fn schema(t: &abi::NodeType) -> Result<NodeSchema, String> {
    let text = |s: Str, what: &str| {
        s.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{what} is not UTF-8 (or its pointer is null)"))
    };
    let type_name = text(t.type_name, "the type name")?;
    let within = |e: String| format!("`{type_name}`: {e}");
    let mut schema = NodeSchema::new(
        &type_name,
        &text(t.category, "the category").map_err(within)?,
        &text(t.doc, "the doc").map_err(within)?,
    );
    let inputs =
        slice(t.inputs, t.n_inputs).ok_or_else(|| within("the input table is null".into()))?;
    for input in inputs {
        let name = text(input.name, "an input name").map_err(within)?;
        let at = |e: String| format!("`{type_name}` input `{name}`: {e}");
        let ty = value_type(&text(input.type_name, "the type").map_err(at)?).map_err(at)?;
        let mut spec = InputSpec::of(&name, ty).doc(&text(input.doc, "the doc").map_err(at)?);
        let choices = slice(input.choices, input.n_choices)
            .ok_or_else(|| at("the choice table is null".into()))?;
        if !choices.is_empty() {
            let choices = choices
                .iter()
                .map(|c| text(*c, "a choice"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let refs: Vec<&str> = choices.iter().map(String::as_str).collect();
            spec = InputSpec::choice(&name, &refs).doc(&spec.doc);
        }
        let default = &input.default_value;
        spec = match default.tag {
            abi::VALUE_NONE => spec,
            abi::VALUE_INT => spec.default(default.int),
            abi::VALUE_FLOAT => spec.default(default.float),
            abi::VALUE_BOOL => spec.default(default.int != 0),
            abi::VALUE_STRING => spec.default(text(default.string, "the default").map_err(at)?),
            other => return Err(at(format!("a default must be a scalar, found tag {other}"))),
        };
        spec.required = input.flags & abi::INPUT_REQUIRED != 0 && spec.default.is_none();
        if input.flags & abi::INPUT_HAS_MIN != 0 {
            spec = spec.min(input.min);
        }
        if input.flags & abi::INPUT_HAS_MAX != 0 {
            spec = spec.max(input.max);
        }
        if input.flags & abi::INPUT_HAS_STEP != 0 {
            spec = spec.step(input.step);
        }
        schema = schema.input(spec);
    }
    let outputs =
        slice(t.outputs, t.n_outputs).ok_or_else(|| within("the output table is null".into()))?;
    for output in outputs {
        let name = text(output.name, "an output name").map_err(within)?;
        let at = |e: String| format!("`{type_name}` output `{name}`: {e}");
        let ty = value_type(&text(output.type_name, "the type").map_err(at)?).map_err(at)?;
        schema = schema.output(&name, ty, &text(output.doc, "the doc").map_err(at)?);
    }
    if t.flags & abi::NODE_OUTPUT != 0 {
        schema = schema.output_node();
    }
    if t.flags & abi::NODE_NONDETERMINISTIC != 0 {
        schema = schema.non_deterministic();
    }
    if t.flags & abi::NODE_HEAVY != 0 {
        schema = schema.heavy();
    }
    Ok(schema)
}
