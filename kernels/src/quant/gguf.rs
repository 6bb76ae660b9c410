//! GGUF files: read by memory map (tensors borrow the map, nothing is
//! copied) and written atomically.
//!
//! The header is parsed by candle's `gguf_file::Content::read`, which
//! bounds every count by the file size; this file adds the checks that
//! each tensor's bytes lie inside the file, and names the file and tensor
//! in every error. The writer is our own so that tensors stream from their
//! maps to disk without a copy per tensor.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Result;

use super::{PackedWeight, SharedBytes, StoredType};

/// Tensor data alignment that the writer uses (GGUF's default).
const ALIGNMENT: usize = 32;

/// An open, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: SharedBytes,
    /// The same bytes as the mapping itself, for [`GgufFile::release_pages`].
    mapping: Arc<memmap2::Mmap>,
    content: Content,
}

fn err(path: &Path, msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{}: {msg}", path.display()))
}

impl GgufFile {
    /// Maps `path` and parses its header.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| err(&path, e))?;
        // SAFETY: the map is read-only; as with every memory-mapped model
        // loader, a file truncated by another process while mapped is
        // outside what we can guard against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(&path, e))?;
        let content = Content::read(&mut std::io::Cursor::new(&map[..]))
            .map_err(|e| err(&path, format!("not a readable GGUF file: {e}")))?;
        let mapping = Arc::new(map);
        Ok(GgufFile {
            path,
            map: mapping.clone(),
            mapping,
            content,
        })
    }

    /// Drops the file's pages from this process's resident memory. They
    /// stay in the page cache and come back on the next read, so a model
    /// used once (a text encoder) stops counting against the peak while
    /// the next one runs.
    pub fn release_pages(&self) {
        // SAFETY: a read-only file mapping: MADV_DONTNEED only discards
        // this process's page references; the bytes are the file's.
        let _ = unsafe {
            self.mapping
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// A tensor's shape in PyTorch order (GGUF stores ggml's reversed
    /// order, row length first; candle reverses it on reading).
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(self.info(name)?.shape.dims())
    }

    /// A tensor's stored type.
    pub fn stored_type(&self, name: &str) -> Result<StoredType> {
        StoredType::from_ggml(self.info(name)?.ggml_dtype)
            .map_err(|e| err(&self.path, format!("tensor `{name}`: {e}")))
    }

    /// A tensor, borrowing the memory map.
    pub fn tensor(&self, name: &str) -> Result<PackedWeight> {
        let info = self.info(name)?;
        let ty = self.stored_type(name)?;
        let fail = |msg: String| err(&self.path, format!("tensor `{name}`: {msg}"));
        let dims = info.shape.dims();
        let count = info.shape.elem_count();
        if !dims
            .last()
            .is_some_and(|c| c.is_multiple_of(ty.block_size()))
        {
            return Err(fail(format!(
                "rows of shape {dims:?} are not whole {ty} blocks of {}",
                ty.block_size()
            )));
        }
        let len = ty.bytes_for(count);
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| fail(format!("offset {} is out of range", info.offset)))?;
        let size = (*self.map).as_ref().len();
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(fail(format!(
                "{len} bytes at offset {start} run past the end of the {size}-byte file (truncated?)"
            )));
        }
        PackedWeight::from_bytes(self.map.clone(), start, len, ty, dims, None)
            .map_err(|e| fail(e.to_string()))
    }

    /// All metadata.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A string metadata value, e.g. `general.architecture`.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        match self.content.metadata.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// `general.architecture` (city96's convention: `flux`, `sd3`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.metadata_str("general.architecture")
    }

    fn info(&self, name: &str) -> Result<&candle_core::quantized::gguf_file::TensorInfo> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| err(&self.path, format!("no tensor `{name}`")))
    }
}

/// Writes a GGUF (v3) file of `metadata` and `tensors`, in the order
/// given, atomically: to a temporary file beside `path`, synced, then
/// renamed over it. fp8 and scaled weights have no GGUF type and are
/// refused.
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: &[(&str, &Value)],
    tensors: &[(&str, &PackedWeight)],
) -> Result<()> {
    let path = path.as_ref();
    for (name, t) in tensors {
        if t.stored_type().gguf_id().is_none() || t.scale().is_some() {
            return Err(err(
                path,
                format!(
                    "tensor `{name}`: GGUF cannot store {}{} weights",
                    if t.scale().is_some() { "scaled " } else { "" },
                    t.stored_type()
                ),
            ));
        }
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| err(path, "not a file path"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_to(&tmp, metadata, tensors);
    match result.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err(path, format!("cannot write: {e}")))
        }
    }
}

fn write_to(
    tmp: &Path,
    metadata: &[(&str, &Value)],
    tensors: &[(&str, &PackedWeight)],
) -> std::io::Result<()> {
    let file = std::fs::File::create(tmp)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    let mut pos = 24usize;
    for (key, value) in metadata {
        pos += write_str(&mut w, key)?;
        pos += write_u32(&mut w, value_type(value))?;
        pos += write_value(&mut w, value)?;
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        pos += write_str(&mut w, name)?;
        pos += write_u32(&mut w, t.shape().len() as u32)?;
        for &d in t.shape().iter().rev() {
            w.write_all(&(d as u64).to_le_bytes())?;
            pos += 8;
        }
        pos += write_u32(&mut w, t.stored_type().gguf_id().expect("checked"))?;
        w.write_all(&(offset as u64).to_le_bytes())?;
        pos += 8;
        offset += t.stored_size().next_multiple_of(ALIGNMENT);
    }
    w.write_all(&vec![0u8; pos.next_multiple_of(ALIGNMENT) - pos])?;
    for (_, t) in tensors {
        w.write_all(t.bytes())?;
        let n = t.stored_size();
        w.write_all(&vec![0u8; n.next_multiple_of(ALIGNMENT) - n])?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

fn write_u32(w: &mut impl Write, v: u32) -> std::io::Result<usize> {
    w.write_all(&v.to_le_bytes())?;
    Ok(4)
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<usize> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())?;
    Ok(8 + s.len())
}

/// GGUF's value type ids (gguf.h's `gguf_type`).
fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

/// One value's bytes (candle's own writer is private); returns the count.
fn write_value(w: &mut impl Write, v: &Value) -> std::io::Result<usize> {
    let bytes: Vec<u8> = match v {
        Value::U8(x) => vec![*x],
        Value::I8(x) => x.to_le_bytes().to_vec(),
        Value::U16(x) => x.to_le_bytes().to_vec(),
        Value::I16(x) => x.to_le_bytes().to_vec(),
        Value::U32(x) => x.to_le_bytes().to_vec(),
        Value::I32(x) => x.to_le_bytes().to_vec(),
        Value::U64(x) => x.to_le_bytes().to_vec(),
        Value::I64(x) => x.to_le_bytes().to_vec(),
        Value::F32(x) => x.to_le_bytes().to_vec(),
        Value::F64(x) => x.to_le_bytes().to_vec(),
        Value::Bool(x) => vec![u8::from(*x)],
        Value::String(s) => return write_str(w, s),
        Value::Array(items) => {
            let ty = items.first().map_or(4, value_type);
            if items.iter().any(|i| value_type(i) != ty) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a GGUF array mixes value types",
                ));
            }
            let mut n = write_u32(w, ty)?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            n += 8;
            for item in items {
                n += write_value(w, item)?;
            }
            return Ok(n);
        }
    };
    w.write_all(&bytes)?;
    Ok(bytes.len())
}
