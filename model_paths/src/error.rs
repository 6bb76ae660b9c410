//! Why loading the model folder configuration failed, or what it skipped.

use std::fmt;
use std::path::PathBuf;

/// Where a root or a ComfyUI yaml file was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A `--models DIR` flag.
    Flag,
    /// The `WEFT_MODELS` environment variable.
    Env,
    /// weft's own config file.
    Config(PathBuf),
    /// Added by code through [`crate::ModelPaths::add_root`] and friends.
    Added,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("--models"),
            Origin::Env => f.write_str(crate::ENV_VAR),
            Origin::Config(file) => write!(f, "config {}", file.display()),
            Origin::Added => f.write_str("added by the caller"),
        }
    }
}

/// A configuration problem that stops loading: the user asked for something
/// explicit (a flag, a file) that cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A root named by `--models` (or added by code) does not exist. Roots
    /// from the environment or config only warn: those are shared between
    /// machines and sessions, where a missing drive is ordinary.
    #[error("model folder {} (from {origin}) does not exist", dir.display())]
    MissingRoot { dir: PathBuf, origin: Origin },
    /// A root exists but is a file.
    #[error("model folder {} (from {origin}) is not a folder", dir.display())]
    NotAFolder { dir: PathBuf, origin: Origin },
    /// A config or yaml file exists but could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// weft's config file is not valid RON of the expected shape.
    #[error("invalid config {}: {message}", file.display())]
    Config { file: PathBuf, message: String },
    /// A ComfyUI `extra_model_paths.yaml` is malformed.
    #[error("invalid {}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Yaml {
        file: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

/// Something named by the environment or config that was skipped; the
/// caller decides whether to print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A root from `WEFT_MODELS` or the config file does not exist (or is a file).
    MissingRoot { dir: PathBuf, origin: Origin },
    /// An `extra_model_paths` file listed in the config does not exist.
    MissingYaml { file: PathBuf, origin: Origin },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::MissingRoot { dir, origin } => write!(
                f,
                "model folder {} (from {origin}) does not exist; skipped",
                dir.display()
            ),
            Warning::MissingYaml { file, origin } => write!(
                f,
                "extra model paths file {} (from {origin}) does not exist; skipped",
                file.display()
            ),
        }
    }
}
