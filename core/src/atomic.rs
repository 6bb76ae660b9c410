//! Atomic file output: write a temp file beside the target, sync, rename.
//! A crash or Ctrl-C can leave a stray temp file but never a half-written output.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("output path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The first free `{prefix}_{counter:05}_.{ext}` in `dir`, ComfyUI's naming.
pub fn next_numbered_path(dir: &Path, prefix: &str, ext: &str) -> PathBuf {
    (1u32..)
        .map(|n| dir.join(format!("{prefix}_{n:05}_.{ext}")))
        .find(|p| !p.exists())
        .expect("some counter is free")
}
