//! Loads weft plugins: dynamic libraries that speak the C ABI of
//! `weft-plugin-abi`, whose node types join the registry beside the
//! built-ins, checked and cached like them.
//!
//! Every failure (not a library, no entry symbol, another ABI major, a bad
//! schema, a node type name that is taken) is a [`PluginError`] naming the
//! file; the host skips that plugin and goes on.

mod call;
mod handle;
mod library;
mod node;
mod objects;
mod patches;
mod views;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_core::{Node, Registry};

pub use library::{Plugin, PluginError};

/// The environment variable listing plugin directories (like `PATH`).
pub const PLUGINS_ENV: &str = "WEFT_PLUGINS";

/// Where plugins are looked for when neither `--plugins` nor `WEFT_PLUGINS`
/// names a directory: `$XDG_DATA_HOME/weft/plugins`, else
/// `~/.local/share/weft/plugins`.
pub fn default_dir() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("weft").join("plugins"))
}

/// The directories to load from: the ones given, else `WEFT_PLUGINS`, else
/// the default one if it exists.
pub fn plugin_dirs(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    if let Some(list) = std::env::var_os(PLUGINS_ENV).filter(|l| !l.is_empty()) {
        return std::env::split_paths(&list).collect();
    }
    default_dir().filter(|d| d.is_dir()).into_iter().collect()
}

/// Whether a file name looks like this platform's shared library.
pub fn is_library(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
}

/// The loaded plugins, which own their node types in a registry.
#[derive(Default)]
pub struct PluginHost {
    plugins: Vec<Plugin>,
}

impl PluginHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// Loads every library in `dirs` (sorted by name) into `registry`,
    /// returning what failed. A directory named twice (`--plugins d
    /// --plugins ./d`, a repeat in `WEFT_PLUGINS`) is read once, so each
    /// library loads, or is reported, once.
    pub fn load_dirs(&mut self, dirs: &[PathBuf], registry: &mut Registry) -> Vec<PluginError> {
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for dir in dirs {
            if !seen.insert(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone())) {
                continue;
            }
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) => {
                    errors.push(PluginError {
                        path: dir.clone(),
                        message: format!("cannot read the plugin directory: {e}"),
                    });
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_library(p) && p.is_file())
                .collect();
            files.sort();
            for file in files {
                if let Err(e) = self.load(&file, registry) {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Loads one library and registers its node types, all or none.
    pub fn load(&mut self, path: &Path, registry: &mut Registry) -> Result<&Plugin, PluginError> {
        let plugin = Plugin::load(path)?;
        self.register(&plugin, registry)?;
        self.plugins.push(plugin);
        Ok(self.plugins.last().expect("just pushed"))
    }

    fn register(&self, plugin: &Plugin, registry: &mut Registry) -> Result<(), PluginError> {
        let fail = |message: String| PluginError {
            path: plugin.path.clone(),
            message,
        };
        for name in plugin.node_types() {
            if registry.get(name).is_some() {
                let owner = self
                    .plugins
                    .iter()
                    .find(|p| p.node_types().any(|n| n == name))
                    .map_or("weft's built-ins".to_string(), |p| {
                        format!("plugin `{}` ({})", p.name, p.path.display())
                    });
                return Err(fail(format!(
                    "node type `{name}` is already provided by {owner}; plugin `{}` was not loaded",
                    plugin.name
                )));
            }
        }
        let mut added = Vec::new();
        for node in &plugin.nodes {
            if let Err(e) = registry.register_arc(node.clone() as Arc<dyn Node>) {
                added
                    .iter()
                    .for_each(|n: &String| drop(registry.unregister(n)));
                return Err(fail(e));
            }
            added.push(node.schema.type_name.clone());
        }
        Ok(())
    }

    /// Reloads the plugin that came from `path` (after a rebuild): its node
    /// types are replaced, and because their cache keys include the library's
    /// digest, only results that depend on them are recomputed. On failure
    /// the old version stays. The old library is unloaded once nothing uses
    /// it any more (running graphs, cached GUIDER or SAMPLER values).
    pub fn reload(&mut self, path: &Path, registry: &mut Registry) -> Result<&Plugin, PluginError> {
        let Some(index) = self.plugins.iter().position(|p| p.path == path) else {
            return self.load(path, registry);
        };
        let new = Plugin::load(path)?;
        let old = self.plugins.remove(index);
        old.node_types().for_each(|n| drop(registry.unregister(n)));
        match self.register(&new, registry) {
            Ok(()) => {
                self.plugins.insert(index, new);
                Ok(&self.plugins[index])
            }
            Err(e) => {
                self.register(&old, registry)
                    .expect("the old version's names were free a moment ago");
                self.plugins.insert(index, old);
                Err(e)
            }
        }
    }
}
