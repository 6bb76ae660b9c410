//! Tensors for one model component, gathered from memory-mapped safetensors
//! files under the diffusers names the networks are built with.
//!
//! Why a map and a checking backend rather than candle's own VarBuilder
//! loaders: a single-file checkpoint names its tensors differently (LDM
//! layout) and stores a few in other shapes (fused q/k/v, 1×1 convs,
//! transposed projections), and a user with a damaged or foreign file
//! deserves one error listing every missing or misshapen tensor, not a
//! failure at the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use weft_kernels::quant::{GgufFile, PackedWeight, StoredType};

/// One opened weights file, memory-mapped: safetensors, or GGUF (city96's
/// ComfyUI-GGUF conversions keep the original key names, so the same key
/// maps apply).
pub struct WeightFile {
    pub path: PathBuf,
    format: Format,
}

enum Format {
    Safetensors {
        map: Arc<memmap2::Mmap>,
        tensors: HashMap<String, Stored>,
    },
    Gguf(GgufFile),
}

/// A tensor's type, shape and byte range in the map.
#[derive(Clone, Debug)]
struct Stored {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightFile({})", self.path.display())
    }
}

impl WeightFile {
    /// Drops the file's pages from this process's resident memory (see
    /// [`GgufFile::release_pages`]); nothing is lost, later reads fault
    /// them back from the page cache.
    pub fn release_pages(&self) {
        match &self.format {
            // SAFETY: read-only file mapping, as above.
            Format::Safetensors { map, .. } => {
                let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
            }
            Format::Gguf(g) => g.release_pages(),
        }
    }

    /// Memory-maps `path` and checks its header and that every tensor lies
    /// inside the file (truncation shows up here).
    pub fn open(path: &Path) -> Result<Arc<WeightFile>, String> {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("{}: cannot read the model file: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a file", path.display()));
        }
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            let gguf = GgufFile::open(path).map_err(|e| e.to_string())?;
            // Every tensor's bytes must lie inside the file.
            for name in gguf.tensor_names() {
                gguf.tensor(name).map_err(|e| e.to_string())?;
            }
            return Ok(Arc::new(WeightFile {
                path: path.to_path_buf(),
                format: Format::Gguf(gguf),
            }));
        }
        let file = std::fs::File::open(path)
            .map_err(|e| format!("{}: cannot read the model file: {e}", path.display()))?;
        // Safety: the mapping is read-only; a file rewritten while mapped is
        // the one hazard, and weft never writes model files.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| format!("{}: cannot map the model file: {e}", path.display()))?;
        let bad = |e: String| {
            format!(
                "{}: not a valid safetensors file (truncated or corrupt?): {e}",
                path.display()
            )
        };
        // Validates offsets against the file's length, as well as the header.
        safetensors::SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
        let (header, metadata) =
            safetensors::SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
        let base = 8 + header;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let stored = Stored {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: base + start,
                    end: base + end,
                };
                (name, stored)
            })
            .collect();
        Ok(Arc::new(WeightFile {
            path: path.to_path_buf(),
            format: Format::Safetensors {
                map: Arc::new(map),
                tensors,
            },
        }))
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> HashMap<String, Vec<usize>> {
        match &self.format {
            Format::Safetensors { tensors, .. } => tensors
                .iter()
                .map(|(name, t)| (name.clone(), t.shape.clone()))
                .collect(),
            Format::Gguf(g) => g
                .tensor_names()
                .into_iter()
                .filter_map(|n| Some((n.to_string(), g.shape(n).ok()?.to_vec())))
                .collect(),
        }
    }

    /// One tensor's shape.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        match &self.format {
            Format::Safetensors { tensors, .. } => tensors.get(key).map(|t| t.shape.clone()),
            Format::Gguf(g) => g.shape(key).ok().map(<[usize]>::to_vec),
        }
    }

    fn missing(&self, key: &str) -> candle_core::Error {
        candle_core::Error::Msg(format!("no tensor `{key}` in {}", self.path.display()))
    }

    /// ComfyUI's "scaled fp8": the `….scale_weight` scalar stored beside a
    /// weight, which multiplies it.
    pub fn scale_of(&self, key: &str) -> Option<f32> {
        let stem = key.strip_suffix(".weight")?;
        let scale = format!("{stem}.scale_weight");
        self.shape(&scale)?;
        self.load_raw(&scale)
            .ok()?
            .flatten_all()
            .ok()?
            .get(0)
            .ok()?
            .to_scalar::<f32>()
            .ok()
    }

    /// One tensor, upcast to f32 (weights are computed in f32 on the CPU),
    /// with its `scale_weight` applied.
    pub fn load_f32(&self, key: &str) -> candle_core::Result<Tensor> {
        let t = self.load_raw(key)?;
        match self.scale_of(key) {
            Some(s) => t.affine(f64::from(s), 0.0),
            None => Ok(t),
        }
    }

    fn load_raw(&self, key: &str) -> candle_core::Result<Tensor> {
        match &self.format {
            Format::Safetensors { map, tensors } => {
                let t = tensors.get(key).ok_or_else(|| self.missing(key))?;
                let view = safetensors::tensor::TensorView::new(
                    t.dtype,
                    t.shape.clone(),
                    &map[t.start..t.end],
                )
                .map_err(|e| candle_core::Error::Msg(format!("`{key}`: {e}")))?;
                candle_core::safetensors::Load::load(&view, &Device::Cpu)?.to_dtype(DType::F32)
            }
            Format::Gguf(g) => g.tensor(key)?.to_f32_tensor(),
        }
    }

    /// Whether a tensor is stored in f32 (then kept dense).
    pub fn is_f32(&self, key: &str) -> bool {
        match &self.format {
            Format::Safetensors { tensors, .. } => tensors
                .get(key)
                .is_some_and(|t| t.dtype == safetensors::Dtype::F32),
            Format::Gguf(g) => g.stored_type(key).is_ok_and(|t| t == StoredType::F32),
        }
    }

    /// A 2-D tensor kept as stored (f16, bf16, fp8, GGUF blocks), borrowing
    /// the map: rows `rows` of it (all when `None`), times `scale` if given.
    pub fn packed(
        &self,
        key: &str,
        rows: Option<std::ops::Range<usize>>,
        scale: Option<f32>,
    ) -> candle_core::Result<PackedWeight> {
        let (map, tensors) = match &self.format {
            Format::Safetensors { map, tensors } => (map, tensors),
            Format::Gguf(g) => {
                let w = g.tensor(key)?;
                let n = w.shape().first().copied().unwrap_or(0);
                return match rows {
                    Some(r) if r != (0..n) => w.narrow_rows(r.start, r.len()),
                    _ => Ok(w),
                };
            }
        };
        let t = tensors.get(key).ok_or_else(|| self.missing(key))?;
        let (n, cols) = match t.shape.as_slice() {
            [n, cols] => (*n, *cols),
            other => candle_core::bail!("`{key}` has shape {other:?}, expected a matrix"),
        };
        let rows = rows.unwrap_or(0..n);
        if rows.end > n || rows.start > rows.end {
            candle_core::bail!("`{key}` has {n} rows, not {rows:?}");
        }
        let row_bytes = (t.end - t.start) / n.max(1);
        PackedWeight::from_safetensors_bytes(
            t.dtype,
            &[rows.len(), cols],
            map.clone(),
            t.start + rows.start * row_bytes,
            rows.len() * row_bytes,
            scale,
        )
    }
}

/// How a stored tensor becomes the one the network wants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    Same,
    /// Slices `index .. index + count` of `parts` equal slices along dim 0
    /// (fused q/k/v; Flux's q/k/v/MLP in sevenths).
    Chunk {
        index: usize,
        count: usize,
        parts: usize,
    },
    /// The two halves along dim 0 swapped: the original DiTs' (shift,
    /// scale) modulation as diffusers' (scale, shift).
    SwapHalves,
    /// A 2-D matrix stored transposed (OpenCLIP's `text_projection`).
    Transpose,
    /// A 1×1 convolution kernel `[O, I, 1, 1]` used as a linear `[O, I]`.
    Squeeze,
}

/// Names for a diffusers-written file (UNet, VAE): its keys as they are.
pub fn diffusers_names(key: &str) -> Vec<(String, Transform)> {
    vec![(key.to_string(), Transform::Same)]
}

/// Top-level modules of transformers' CLIP text tower.
const CLIP_TOWER: [&str; 3] = ["embeddings.", "encoder.", "final_layer_norm."];

/// Names for a file written by transformers' `save_pretrained` for a CLIP
/// text model (`CLIPTextModel`, `CLIPTextModelWithProjection`), in either
/// key layout, as the `text_model.…` / `text_projection.weight` names the
/// text encoder is built with. transformers 4 wrote `CLIPTextModel` under
/// `text_model.` (`text_model.encoder.layers.0.…`); transformers 5 dropped
/// that wrapper module and writes the tower's keys bare (`embeddings.…`,
/// `encoder.layers.0.…`, `final_layer_norm.…`). `CLIPTextModelWithProjection`
/// keeps `text_model.…` plus a top-level `text_projection.weight` in both.
/// Older files' `position_ids` buffers are dropped.
pub fn transformers_text_names(key: &str) -> Vec<(String, Transform)> {
    if key.ends_with("position_ids") {
        return Vec::new();
    }
    let name = if CLIP_TOWER.iter().any(|m| key.starts_with(m)) {
        format!("text_model.{key}")
    } else {
        key.to_string()
    };
    vec![(name, Transform::Same)]
}

/// A built network's weights by name, f32: what LoRA patches target.
/// Cloning shares every tensor.
pub type Weights = HashMap<String, Tensor>;

/// Builds a network from `weights` (names as [`TensorMap`] gives them).
pub fn build_from<T>(
    weights: &Weights,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    build(VarBuilder::from_tensors(
        weights.clone(),
        DType::F32,
        &Device::Cpu,
    ))
}

/// Where one network tensor comes from.
#[derive(Clone, Debug)]
pub struct Source {
    pub file: Arc<WeightFile>,
    pub key: String,
    pub transform: Transform,
}

/// The tensors of one component (UNet, VAE, text encoder) by diffusers name.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    entries: HashMap<String, Source>,
    /// Tensors given in memory in place of their sources (LoRA-patched
    /// layers of a model whose other weights stay in the files).
    overrides: Arc<Weights>,
}

impl TensorMap {
    pub fn insert(&mut self, name: String, source: Source) {
        self.entries.insert(name, source);
    }

    /// Maps every key of `file` that starts with `prefix` to the name
    /// `rename` gives it (keys it returns no names for are skipped).
    pub fn add_file(
        &mut self,
        file: &Arc<WeightFile>,
        prefix: &str,
        rename: impl Fn(&str) -> Vec<(String, Transform)>,
    ) {
        for key in file.shapes().into_keys() {
            let Some(rest) = key.strip_prefix(prefix) else {
                continue;
            };
            for (name, transform) in rename(rest) {
                self.insert(
                    name,
                    Source {
                        file: file.clone(),
                        key: key.clone(),
                        transform,
                    },
                );
            }
        }
    }

    /// Bytes the mapped tensors take once loaded as f32.
    pub fn f32_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .values()
            .filter(|s| seen.insert((s.file.path.clone(), s.key.clone())))
            .map(|s| {
                s.file
                    .shape(&s.key)
                    .map(|shape| shape.iter().product::<usize>() * 4)
                    .unwrap_or(0)
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// A [`crate::loader::Loader`] over `vb` (built from this map) whose
    /// linears are held as `mode` says.
    pub fn loader<'a>(
        &self,
        vb: VarBuilder<'a>,
        mode: crate::packed::WeightMode,
    ) -> crate::loader::Loader<'a> {
        let linears = crate::packed::MappedLinears {
            map: self.clone(),
            mode,
        };
        crate::loader::Loader::with_packed(vb, Arc::new(linears))
    }

    /// This map with `changed` tensors served in place of their sources.
    pub fn with_overrides(&self, changed: &Weights) -> TensorMap {
        let mut overrides = (*self.overrides).clone();
        overrides.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
        TensorMap {
            entries: self.entries.clone(),
            overrides: Arc::new(overrides),
        }
    }

    /// The in-memory tensor given for `name`, if any.
    pub fn overridden(&self, name: &str) -> Option<&Tensor> {
        self.overrides.get(name)
    }

    /// The tensor `name` as the network wants it, in f32.
    pub fn load(&self, name: &str) -> Result<Tensor, String> {
        if let Some(t) = self.overrides.get(name) {
            return Ok(t.clone());
        }
        self.entries
            .get(name)
            .ok_or_else(|| format!("missing `{name}`"))?
            .load()
    }

    /// Every tensor's name and source.
    pub fn sources(&self) -> impl Iterator<Item = (&String, &Source)> {
        self.entries.iter()
    }

    /// The distinct files the tensors come from.
    pub fn files(&self) -> Vec<Arc<WeightFile>> {
        let mut files: Vec<Arc<WeightFile>> = Vec::new();
        for source in self.entries.values() {
            if !files.iter().any(|f| Arc::ptr_eq(f, &source.file)) {
                files.push(source.file.clone());
            }
        }
        files
    }

    /// Drops the mapped pages of every file the tensors come from
    /// ([`WeightFile::release_pages`]).
    pub fn release_pages(&self) {
        self.files().iter().for_each(|f| f.release_pages());
    }

    /// Where tensor `name` comes from.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.entries.get(name)
    }

    /// Builds a network with `build`, reporting every tensor it asked for
    /// that is missing or has the wrong shape in one error naming `what`
    /// and the files.
    pub fn build<T>(
        &self,
        what: &str,
        build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
    ) -> Result<T, String> {
        self.build_keeping(what, build).map(|(built, _)| built)
    }

    /// [`Self::build`], also returning the tensors the network was built
    /// from, so patched copies ([`build_from`]) can share them.
    pub fn build_keeping<T>(
        &self,
        what: &str,
        build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
    ) -> Result<(T, Weights), String> {
        let backend = Checked {
            map: self.clone(),
            problems: Mutex::new(Vec::new()),
            served: Mutex::new(Weights::new()),
        };
        let backend = Arc::new(backend);
        let vb = VarBuilder::from_backend(
            Box::new(SharedChecked(backend.clone())),
            DType::F32,
            Device::Cpu,
        );
        let built = build(vb);
        let problems = std::mem::take(&mut *backend.problems.lock().expect("not poisoned"));
        if !problems.is_empty() {
            return Err(self.report(what, &problems));
        }
        let served = std::mem::take(&mut *backend.served.lock().expect("not poisoned"));
        built
            .map(|b| (b, served))
            .map_err(|e| format!("{what} from {}: {e}", self.file_names()))
    }

    /// The files, for messages.
    fn file_names(&self) -> String {
        let mut files: Vec<String> = self
            .files()
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            "(no tensors found)".into()
        } else {
            files.join(", ")
        }
    }

    fn report(&self, what: &str, problems: &[String]) -> String {
        const SHOWN: usize = 5;
        let mut msg = format!(
            "{}: {what} cannot be built: {} tensor problem(s): {}",
            self.file_names(),
            problems.len(),
            problems[..problems.len().min(SHOWN)].join("; ")
        );
        if problems.len() > SHOWN {
            msg.push_str(&format!("; and {} more", problems.len() - SHOWN));
        }
        msg
    }
}

/// The backend behind [`TensorMap::build`]: serves mapped tensors as f32 and
/// records problems, returning zeros so construction goes on to find them all.
struct Checked {
    map: TensorMap,
    problems: Mutex<Vec<String>>,
    /// Every tensor handed out, by name.
    served: Mutex<Weights>,
}

struct SharedChecked(Arc<Checked>);

impl Checked {
    fn fetch(&self, name: &str) -> Result<Tensor, String> {
        self.map.load(name)
    }
}

impl Source {
    /// The tensor as the network wants it, in f32.
    pub fn load(&self) -> Result<Tensor, String> {
        let source = self;
        let key = &source.key;
        let stored = source
            .file
            .load_f32(key)
            .map_err(|e| format!("`{key}` cannot be read: {e}"))?;
        let bad = |want: &str| {
            format!(
                "`{key}` has shape {:?}, expected {want}",
                stored.dims().to_vec()
            )
        };
        match source.transform {
            Transform::Same => Ok(stored),
            Transform::Chunk {
                index,
                count,
                parts,
            } => {
                let rows = stored.dim(0).map_err(|_| bad("a tensor"))?;
                if rows % parts != 0 {
                    return Err(bad(&format!("a first dimension divisible by {parts}")));
                }
                stored
                    .narrow(0, index * rows / parts, count * rows / parts)
                    .map_err(|e| e.to_string())
            }
            Transform::SwapHalves => {
                let rows = stored.dim(0).map_err(|_| bad("a tensor"))?;
                if rows % 2 != 0 {
                    return Err(bad("an even first dimension"));
                }
                let half = |i| stored.narrow(0, i * rows / 2, rows / 2);
                half(1)
                    .and_then(|b| Tensor::cat(&[b, half(0)?], 0))
                    .map_err(|e| e.to_string())
            }
            Transform::Transpose => stored
                .t()
                .and_then(|t| t.contiguous())
                .map_err(|_| bad("a matrix")),
            Transform::Squeeze => match stored.dims() {
                [o, i, 1, 1] => stored.reshape((*o, *i)).map_err(|e| e.to_string()),
                [_, _] => Ok(stored),
                _ => Err(bad("[out, in, 1, 1]")),
            },
        }
    }
}

impl SimpleBackend for SharedChecked {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let checked = &self.0;
        let result = checked.fetch(name).and_then(|t| {
            if t.shape() == &shape {
                Ok(t)
            } else {
                let key = &checked.map.entries[name].key;
                Err(format!(
                    "`{key}` has shape {:?}, expected {:?} for `{name}`",
                    t.dims(),
                    shape.dims()
                ))
            }
        });
        match result {
            Ok(t) => {
                let t = t.to_dtype(dtype)?.to_device(dev)?;
                let mut served = checked.served.lock().expect("not poisoned");
                served.insert(name.to_string(), t.clone());
                Ok(t)
            }
            Err(problem) => {
                checked.problems.lock().expect("not poisoned").push(problem);
                Tensor::zeros(shape, dtype, dev)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0
            .fetch(name)
            .map_err(candle_core::Error::Msg)?
            .to_dtype(dtype)?
            .to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.map.contains(name)
    }
}
