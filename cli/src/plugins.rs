//! `weft plugin install`, and where plugins were looked for, which the
//! errors for an unknown node type tell (core knows nothing of plugins).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::Subcommand;
use weft_core::atomic::write_atomic;
use weft_core::{Diagnostics, Registry};
use weft_plugin_host::{is_library, PluginHost};

use crate::EXIT_INVALID;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Check that a built plugin library loads, then copy it into the
    /// plugin directory.
    ///
    /// The directory is the first `--plugins`, else the first of
    /// `WEFT_PLUGINS`, else ~/.local/share/weft/plugins, created if need
    /// be. The copy replaces a library of the same name atomically, so a
    /// running `weft watch` reloads it.
    Install {
        /// The library, wherever cargo put it: `libNAME.so` (Linux),
        /// `libNAME.dylib` (macOS) or `NAME.dll` (Windows).
        library: PathBuf,
    },
}

pub fn run(command: PluginCommand, given_dirs: &[PathBuf]) -> ExitCode {
    match command {
        PluginCommand::Install { library } => match install(&library, given_dirs) {
            Ok(done) => {
                eprintln!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_INVALID)
            }
        },
    }
}

/// Checks `library` as weft's start-up would (it loads, speaks this ABI,
/// its schemas are sound, its node types clash with no built-in), then
/// writes it into the plugin directory, created if need be.
fn install(library: &Path, given_dirs: &[PathBuf]) -> Result<String, String> {
    let name = library
        .file_name()
        .filter(|_| is_library(library))
        .ok_or_else(|| {
            format!(
                "{} is not a plugin library: weft loads files ending in `.{}` on this platform",
                library.display(),
                std::env::consts::DLL_EXTENSION
            )
        })?;
    let dir = weft_plugin_host::plugin_dirs(given_dirs)
        .into_iter()
        .next()
        .or_else(weft_plugin_host::default_dir)
        .ok_or("no plugin directory: pass --plugins DIR or set WEFT_PLUGINS")?;
    let bytes =
        std::fs::read(library).map_err(|e| format!("cannot read {}: {e}", library.display()))?;
    let mut host = PluginHost::new();
    let plugin = host
        .load(library, &mut weft_nodes::builtin_registry())
        .map_err(|e| format!("{e}; nothing was installed"))?;
    let what = format!(
        "plugin `{}` {} ({})",
        plugin.name,
        plugin.version,
        plugin.node_types().collect::<Vec<_>>().join(", ")
    );
    let target = dir.join(name);
    write_atomic(&target, &bytes).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    Ok(format!("installed {what} as {}", target.display()))
}

/// What start-up searched: `None` under `--no-plugins`.
static SEARCHED: OnceLock<Option<Vec<PathBuf>>> = OnceLock::new();

/// Records where plugins were looked for, once, for [`explain_unknown_types`].
pub fn remember_search(dirs: Option<&[PathBuf]>) {
    let _ = SEARCHED.set(dirs.map(<[PathBuf]>::to_vec));
}

/// Where plugins were looked for and which loaded: a node type weft does
/// not know is most often a plugin's that is elsewhere or did not load.
pub fn search_note(registry: &Registry) -> String {
    let searched = match SEARCHED.get() {
        None | Some(None) => "plugins are off (--no-plugins)".to_string(),
        Some(Some(dirs)) if dirs.is_empty() => format!(
            "no plugin directory was searched (no --plugins, no {}{})",
            weft_plugin_host::PLUGINS_ENV,
            weft_plugin_host::default_dir()
                .map(|d| format!(", no {}", d.display()))
                .unwrap_or_default()
        ),
        Some(Some(dirs)) => format!(
            "plugin directories searched: {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let loaded: BTreeSet<&str> = registry
        .schemas()
        .into_iter()
        .filter_map(|s| s.plugin.as_deref())
        .collect();
    let loaded = if loaded.is_empty() {
        "no plugins loaded".to_string()
    } else {
        format!(
            "plugins loaded: {}",
            loaded.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    format!("{searched}; {loaded}")
}

/// Adds [`search_note`] to the help of every "unknown node type" error,
/// after any "did you mean".
pub fn explain_unknown_types(mut diagnostics: Diagnostics, registry: &Registry) -> Diagnostics {
    for d in &mut diagnostics.items {
        if d.message.starts_with("unknown node type") {
            let note = search_note(registry);
            d.help = Some(match d.help.take() {
                Some(help) => format!("{help} {note}"),
                None => note,
            });
        }
    }
    diagnostics
}
