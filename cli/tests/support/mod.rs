//! What the `weft` binary's tests share: where the repository is, and
//! output as text.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The weft binary, blind to the user's own plugin and model directories.
pub fn weft_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command
        .env_remove("WEFT_PLUGINS")
        .env_remove("WEFT_MODELS")
        .env("XDG_DATA_HOME", "/nonexistent/weft-tests")
        .env("XDG_CONFIG_HOME", "/nonexistent/weft-tests");
    command
}
