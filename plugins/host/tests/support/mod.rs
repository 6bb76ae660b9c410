//! What the plugin tests share: building and loading plugins (Rust
//! cdylibs of this workspace, C sources with the system compiler), and
//! running graphs with them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use weft_core::{
    CancelToken, EventSink, Executor, Registry, RunOptions, RunReport, SourceFile, ValidGraph,
};
use weft_plugin_host::PluginHost;

pub use weft_kernels::testing::max_diff as max_abs_diff;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Rust plugin of this workspace, built as a cdylib beside the test binary.
pub fn rust_plugin(crate_name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    [deps.join(&file), deps.parent().unwrap().join(&file)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{file} was not built next to {}", deps.display()))
}

/// Builds a C plugin with the system compiler against the headers in
/// `include` (the current ABI's: `plugins/abi/include`), as a user would.
pub fn c_plugin_with(include: &str, source: &str, defines: &[&str], out: &Path) -> PathBuf {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&compiler)
        .args([
            "-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
        ])
        .arg("-I")
        .arg(repo().join(include))
        .args(defines)
        .arg(repo().join(source))
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{compiler}`: {e}"));
    assert!(status.success(), "{compiler} failed on {source}");
    out.to_path_buf()
}

/// [`c_plugin_with`] the current ABI's header.
pub fn c_plugin(source: &str, defines: &[&str], out: &Path) -> PathBuf {
    c_plugin_with("plugins/abi/include", source, defines, out)
}

pub fn library_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

pub fn with_plugins(paths: &[PathBuf]) -> (Registry, PluginHost) {
    let mut registry = weft_nodes::builtin_registry();
    let mut host = PluginHost::new();
    for path in paths {
        host.load(path, &mut registry)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    (registry, host)
}

/// Validates `text`, a graph whose nodes the tests target by id (an output
/// node is added, since weft refuses graphs that would do nothing).
pub fn graph(registry: &Registry, text: &str) -> ValidGraph {
    let end = text.rfind('}').expect("a node map");
    let nodes = text[..end].trim_end().trim_end_matches(',');
    let text = format!("{nodes}, \"__output\": Print(value: 0) {}", &text[end..]);
    weft_core::load(SourceFile::new("plugin_test.ron", text), registry, &[])
        .unwrap_or_else(|d| panic!("{d}"))
}

pub fn run(executor: &Executor, graph: &ValidGraph, targets: &[&str]) -> RunReport {
    let opts = RunOptions {
        targets: Some(targets.iter().map(|t| t.to_string()).collect()),
        ..RunOptions::default()
    };
    executor
        .run(graph, &opts, &EventSink::new(|_| {}), &CancelToken::new())
        .unwrap()
}

/// An image with structure: a sampled exact-Gaussian latent, shown as an image.
pub const IMAGE_SOURCE: &str = r#"
        "model": ExactGaussianModel(means: "-0.5,0.5", stds: "0.3,0.3", weights: "1,1", parameterization: "flow"),
        "cond": ClassLabel(labels: "0,1"),
        "guider": BasicGuider(model: Link("model", "MODEL"), conditioning: Link("cond", "CONDITIONING")),
        "sampler": KSamplerSelect(sampler_name: "euler"),
        "sigmas": FlowMatchScheduler(steps: 4, shift: 1.0),
        "noise": RandomNoise(noise_seed: 3),
        "latent": EmptyLatent(width: 8, height: 6, channels: 3, batch_size: 2),
        "sample": SamplerCustomAdvanced(noise: Link("noise", "NOISE"), guider: Link("guider", "GUIDER"),
            sampler: Link("sampler", "SAMPLER"), sigmas: Link("sigmas", "SIGMAS"), latent_image: Link("latent", "LATENT")),
        "image": LatentToImage(latent: Link("sample", "output")),
"#;
