//! [`ModelPaths`]: the ordered folders of each kind, built from roots and
//! ComfyUI yaml files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::comfy_yaml::{self, YamlFolder};
use crate::error::{LoadError, Origin, Warning};
use crate::kind::ModelKind;
use crate::pathutil::{absolute, process_env};
use crate::sources::{parse_env_list, ConfigFile, Sources};

/// The ComfyUI file that adds model folders, looked for in an install's root.
pub const COMFY_YAML: &str = "extra_model_paths.yaml";

/// A folder given by flag, environment or config, holding kind subfolders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// The folder as named (made absolute).
    pub dir: PathBuf,
    /// Where kind subfolders are: `dir`, or `dir/models` for a ComfyUI install.
    pub models_dir: PathBuf,
    /// The install's `extra_model_paths.yaml`, when it has one.
    pub extra_model_paths: Option<PathBuf>,
    /// Who named it.
    pub origin: Origin,
}

/// The folders searched for each kind of model, in priority order.
#[derive(Clone, Debug, Default)]
pub struct ModelPaths {
    roots: Vec<Root>,
    yaml_files: Vec<PathBuf>,
    folders: BTreeMap<ModelKind, Vec<PathBuf>>,
    warnings: Vec<Warning>,
}

impl ModelPaths {
    /// No folders at all; add some with [`ModelPaths::add_root`].
    pub fn new() -> ModelPaths {
        ModelPaths::default()
    }

    /// Builds the search order from `sources`: `--models` roots, then
    /// `WEFT_MODELS` roots, then the config's roots and yaml files.
    ///
    /// A flag naming a missing folder is an error (likely a typo the user
    /// wants to hear about); a missing root or yaml from the environment or
    /// config is only a [`Warning`] (see [`ModelPaths::warnings`]), since those
    /// outlive any one run. Malformed config or yaml files are errors.
    pub fn load(sources: &Sources) -> Result<ModelPaths, LoadError> {
        let mut paths = ModelPaths::new();
        for dir in &sources.models {
            paths.add_root(dir, Origin::Flag)?;
        }
        if let Some(value) = &sources.env {
            for dir in parse_env_list(value) {
                paths.add_root_or_warn(&dir, Origin::Env)?;
            }
        }
        if let Some(file) = &sources.config {
            if let Some(config) = ConfigFile::read(file)? {
                let origin = Origin::Config(file.clone());
                for dir in &config.models {
                    paths.add_root_or_warn(dir, origin.clone())?;
                }
                for yaml in &config.extra_model_paths {
                    if yaml.is_file() {
                        paths.add_comfy_yaml(yaml)?;
                    } else {
                        let (file, origin) = (yaml.clone(), origin.clone());
                        paths.warnings.push(Warning::MissingYaml { file, origin });
                    }
                }
            }
        }
        Ok(paths)
    }

    /// Appends a root after those already added. A ComfyUI install (a
    /// `models/` folder or `main.py` inside) contributes `dir/models/<kind>`
    /// and its `extra_model_paths.yaml`; any other folder contributes
    /// `dir/<kind>`. Kind folders that don't exist yet are kept, so messages
    /// can say where a file was expected.
    pub fn add_root(&mut self, dir: &Path, origin: Origin) -> Result<&Root, LoadError> {
        let dir = absolute(dir, None);
        if !dir.exists() {
            return Err(LoadError::MissingRoot { dir, origin });
        }
        if !dir.is_dir() {
            return Err(LoadError::NotAFolder { dir, origin });
        }
        let is_install = dir.join("models").is_dir() || dir.join("main.py").is_file();
        let models_dir = if is_install {
            dir.join("models")
        } else {
            dir.clone()
        };
        let yaml = Some(dir.join(COMFY_YAML)).filter(|y| y.is_file());
        let extra = match &yaml {
            Some(file) => comfy_yaml::read(file, &process_env)?,
            None => Vec::new(),
        };

        // ComfyUI puts `is_default` folders ahead of the install's own.
        let (defaults, others): (Vec<_>, Vec<_>) = extra.into_iter().partition(|f| f.is_default);
        self.push_yaml_folders(defaults);
        for kind in ModelKind::ALL {
            for name in kind.folder_names() {
                self.add_folder(kind, &models_dir.join(name));
            }
        }
        self.push_yaml_folders(others);
        self.yaml_files.extend(yaml.clone());
        self.roots.push(Root {
            dir,
            models_dir,
            extra_model_paths: yaml,
            origin,
        });
        Ok(self.roots.last().expect("just pushed"))
    }

    /// Appends the folders of a ComfyUI `extra_model_paths.yaml` (its
    /// `is_default` sections first). Errors if it can't be read or parsed.
    pub fn add_comfy_yaml(&mut self, file: &Path) -> Result<(), LoadError> {
        let file = absolute(file, None);
        let folders = comfy_yaml::read(&file, &process_env)?;
        let (defaults, others): (Vec<_>, Vec<_>) = folders.into_iter().partition(|f| f.is_default);
        self.push_yaml_folders(defaults);
        self.push_yaml_folders(others);
        self.yaml_files.push(file);
        Ok(())
    }

    /// Appends one folder for `kind` (ignored if already listed).
    pub fn add_folder(&mut self, kind: ModelKind, folder: &Path) {
        let folder = absolute(folder, None);
        let list = self.folders.entry(kind).or_default();
        if !list.contains(&folder) {
            list.push(folder);
        }
    }

    /// The roots, in priority order, for printing where models are looked for.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Every ComfyUI yaml file that was read (from installs and the config).
    pub fn extra_model_paths(&self) -> &[PathBuf] {
        &self.yaml_files
    }

    /// The folders searched for `kind`, in order; some may not exist.
    pub fn folders(&self, kind: ModelKind) -> &[PathBuf] {
        self.folders.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// Roots or yaml files from the environment or config that were skipped.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    fn add_root_or_warn(&mut self, dir: &Path, origin: Origin) -> Result<(), LoadError> {
        match self.add_root(dir, origin) {
            Ok(_) => Ok(()),
            Err(LoadError::MissingRoot { dir, origin } | LoadError::NotAFolder { dir, origin }) => {
                self.warnings.push(Warning::MissingRoot { dir, origin });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn push_yaml_folders(&mut self, folders: Vec<YamlFolder>) {
        for f in folders {
            self.add_folder(f.kind, &f.folder);
        }
    }
}
