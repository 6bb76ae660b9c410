//! Where roots come from: `--models` flags, `WEFT_MODELS`, weft's config file.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::LoadError;
use crate::pathutil::{absolute, expand, home_dir, process_env, Lookup};

/// The environment variable holding extra roots, separated like `PATH`.
pub const ENV_VAR: &str = "WEFT_MODELS";

/// Everything [`crate::ModelPaths::load`] reads, highest priority first.
/// Values are passed in (not read here) so tests and embedders control them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// Roots from `--models DIR` flags, in the order given.
    pub models: Vec<PathBuf>,
    /// The value of [`ENV_VAR`], if set.
    pub env: Option<OsString>,
    /// weft's config file; a missing file is not an error.
    pub config: Option<PathBuf>,
}

impl Sources {
    /// The CLI's flags plus this process's `WEFT_MODELS` and default config file.
    pub fn from_process(models: Vec<PathBuf>) -> Sources {
        Sources {
            models,
            env: std::env::var_os(ENV_VAR),
            config: default_config_path(),
        }
    }
}

/// `$XDG_CONFIG_HOME/weft/config.ron`, else `~/.config/weft/config.ron`
/// (also on macOS, like most command-line tools), else on Windows
/// `%APPDATA%\weft\config.ron`.
pub fn default_config_path() -> Option<PathBuf> {
    config_path_from(&process_env)
}

pub(crate) fn config_path_from(env: Lookup) -> Option<PathBuf> {
    let dir = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute()) // the XDG spec says to ignore relative values
        .or_else(|| {
            if cfg!(windows) {
                env("APPDATA").filter(|a| !a.is_empty()).map(PathBuf::from)
            } else {
                home_dir(env).map(|h| h.join(".config"))
            }
        })?;
    Some(dir.join("weft").join("config.ron"))
}

/// Roots listed in `WEFT_MODELS`, in order; empty entries are skipped.
pub fn parse_env_list(value: &OsStr) -> Vec<PathBuf> {
    std::env::split_paths(value)
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| absolute(&p, None))
        .collect()
}

/// weft's config file, e.g.
/// `(models: ["/data/models"], extra_model_paths: ["/opt/ComfyUI/extra_model_paths.yaml"])`.
/// Relative paths are relative to the config file's folder; `~` and
/// `$VARS` are expanded. Other fields are ignored: the file is shared with
/// the rest of weft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// Roots, searched after `--models` and `WEFT_MODELS`.
    pub models: Vec<PathBuf>,
    /// ComfyUI `extra_model_paths.yaml` files, searched after those roots.
    pub extra_model_paths: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    models: Vec<String>,
    extra_model_paths: Vec<String>,
}

impl ConfigFile {
    /// Reads `file`; `Ok(None)` when it does not exist.
    pub fn read(file: &Path) -> Result<Option<ConfigFile>, LoadError> {
        match std::fs::read_to_string(file) {
            Ok(text) => ConfigFile::parse(&text, file, &process_env).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoadError::Read {
                file: file.to_path_buf(),
                source,
            }),
        }
    }

    pub(crate) fn parse(text: &str, file: &Path, env: Lookup) -> Result<ConfigFile, LoadError> {
        let raw: RawConfig = ron::from_str(text).map_err(|e| LoadError::Config {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let dir = absolute(file, None)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let paths = |list: Vec<String>| -> Vec<PathBuf> {
            list.iter()
                .map(|p| absolute(&expand(p, env), Some(&dir)))
                .collect()
        };
        Ok(ConfigFile {
            models: paths(raw.models),
            extra_model_paths: paths(raw.extra_model_paths),
        })
    }
}
