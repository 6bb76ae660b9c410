//! `weft`: run, check, watch and list node graphs.

mod models;
mod node_docs;
mod plugins;
mod render;
mod serve;
mod watch;
mod workflow;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weft_core::{
    CancelToken, Diagnostics, EventSink, Executor, PreviewMethod, Previews, Registry, RunOptions,
    SourceFile, ValidGraph,
};
use weft_model_paths::{ModelKind, ModelPaths};
use weft_plugin_host::PluginHost;

// Graphs are many small allocations (parsing, validation, per-node state);
// mimalloc handles them several times faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a graph that failed validation (nothing ran).
const EXIT_INVALID: u8 = 2;
/// Exit status for a run where some node failed or the run was interrupted.
const EXIT_RUN_FAILED: u8 = 1;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "A typed node-graph runtime for guided image generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A plugin directory (repeatable). Default: the directories in
    /// `WEFT_PLUGINS`, else `~/.local/share/weft/plugins` if it exists.
    #[arg(long = "plugins", value_name = "DIR", global = true)]
    plugins: Vec<PathBuf>,
    /// Load no plugins, not even from the default directory.
    #[arg(long, global = true, conflicts_with = "plugins")]
    no_plugins: bool,
    /// A model root (repeatable): a folder of ComfyUI model folders
    /// (`checkpoints/`, `vae/`, `loras/`, …) or a ComfyUI install, whose
    /// `models/` and `extra_model_paths.yaml` are read as ComfyUI reads them.
    /// Also searched: `WEFT_MODELS`, then the roots in ~/.config/weft/config.ron.
    #[arg(long = "models", value_name = "DIR", global = true)]
    models: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a graph and run what its output nodes need.
    Run {
        #[command(flatten)]
        graph: GraphArgs,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Validate a graph without running anything.
    Check {
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Convert a ComfyUI workflow (API or UI JSON, or a PNG ComfyUI saved)
    /// to a weft graph file, node ids taken from titles where unique.
    Convert {
        /// The workflow JSON, or a PNG with a `prompt` or `workflow` chunk.
        input: PathBuf,
        /// The RON file to write (default: print it).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Re-validate and re-run incrementally on every save, keeping results in memory.
    Watch {
        #[command(flatten)]
        graph: GraphArgs,
        #[command(flatten)]
        exec: ExecArgs,
        /// Quiet time after a save before reloading, in milliseconds.
        #[arg(long, default_value_t = 20)]
        debounce_ms: u64,
    },
    /// Train one of weft's own models from a RON config (see assets/mnist/*.ron).
    Train {
        /// The training config.
        config: PathBuf,
        /// Continue from the config's resume checkpoint, exactly.
        #[arg(long)]
        resume: bool,
    },
    /// Measure guidance: accuracy, Fréchet distance and diversity of generated
    /// digits for each model, guidance weight and step count (see assets/mnist/eval.ron).
    Eval {
        /// The evaluation config.
        config: PathBuf,
    },
    /// List the model files found in the model folders, with the family of each.
    Models {
        /// Only this kind of folder (`checkpoints`, `vae`, `loras`, `unet`, …).
        kind: Option<String>,
    },
    /// Rewrite a model file (safetensors or GGUF) as GGUF with its weight
    /// matrices quantised, as ComfyUI-GGUF's converter does (names kept;
    /// vectors f32; other matrices f16).
    Quantize {
        /// The model file to read.
        input: PathBuf,
        /// The GGUF file to write (atomically).
        output: PathBuf,
        /// The block type: q8_0, q6_k, q5_k, q4_k, q5_0, q4_0, f16, bf16, …
        #[arg(long = "type", default_value = "q8_0")]
        ty: String,
    },
    /// Serve ComfyUI's HTTP and WebSocket API (and its web UI with
    /// --frontend), so ComfyUI's clients and workflows drive weft.
    Serve(serve::ServeArgs),
    /// List node types with their schemas.
    Nodes {
        /// Show only this node type.
        r#type: Option<String>,
        /// Print the schemas as JSON.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print the README's node reference.
        #[arg(long)]
        markdown: bool,
    },
    /// Manage plugin libraries: `weft plugin install PATH`.
    #[command(subcommand)]
    Plugin(plugins::PluginCommand),
}

#[derive(Args)]
struct GraphArgs {
    /// The graph file (RON), a ComfyUI workflow (API or UI JSON), or a PNG
    /// saved by weft's or ComfyUI's SaveImage (runs the graph it embeds).
    graph: PathBuf,
    /// Override an input: `--set node.input=value` or `--set param=value`.
    #[arg(long = "set", value_name = "TARGET=VALUE")]
    overrides: Vec<String>,
    /// How to report progress.
    #[arg(long, value_enum, default_value_t = EventMode::Auto)]
    events: EventMode,
}

#[derive(Args)]
struct ExecArgs {
    /// Directory for saved outputs.
    #[arg(long, default_value = "output")]
    out: PathBuf,
    /// Worker threads for independent nodes (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Memory for loaded models and cached results, in MiB (default: the
    /// machine's memory less 2 GiB). Least useful results go first;
    /// memory-mapped weights are not counted (the OS can drop their pages).
    #[arg(long = "max-ram", alias = "cache-mb", value_name = "MIB")]
    max_ram: Option<usize>,
    /// Compute only these nodes (and what they need) instead of the output nodes.
    #[arg(long = "target", value_name = "NODE")]
    targets: Vec<String>,
    /// Live previews while sampling, kept as `preview.png` in the output
    /// folder (and sent as `preview` events in JSON mode): `latent2rgb`
    /// (cheap, at latent size), `taesd` (TAESD decoders from `vae_approx/`,
    /// at image size; latent2rgb where none is found) or `none`.
    #[arg(long, value_enum, default_value_t = PreviewArg::Latent2rgb)]
    preview: PreviewArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PreviewArg {
    /// No previews.
    None,
    /// The latent projected to RGB (ComfyUI's factors), at latent resolution.
    Latent2rgb,
    /// TAESD decoders from the `vae_approx` model folder, at image resolution.
    Taesd,
}

impl PreviewArg {
    fn method(self) -> PreviewMethod {
        match self {
            PreviewArg::None => PreviewMethod::None,
            PreviewArg::Latent2rgb => PreviewMethod::Latent2Rgb,
            PreviewArg::Taesd => PreviewMethod::Taesd,
        }
    }
}

/// `--max-ram` in MiB, or physical memory less 2 GiB of headroom (4 GiB
/// when it cannot be read).
fn max_ram_bytes(mib: Option<usize>) -> usize {
    const HEADROOM: usize = 2 << 30;
    match mib {
        Some(mib) => mib << 20,
        None => weft_models::memory::total_bytes()
            .map_or(4 << 30, |total| total.saturating_sub(HEADROOM).max(1 << 30)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventMode {
    /// Progress bars on a terminal, plain lines otherwise.
    Auto,
    /// One JSON object per line on stdout.
    Json,
    /// Plain lines on stderr.
    Plain,
}

impl ExecArgs {
    /// Run options for `graph`, whose folder relative model paths resolve
    /// in; preview decoders come from the `vae_approx` folders of `paths`.
    /// `--max-ram`, or physical memory less 2 GiB of headroom (4 GiB when
    /// it cannot be read).
    fn max_ram_bytes(&self) -> usize {
        max_ram_bytes(self.max_ram)
    }

    fn options(&self, graph: &Path, paths: &ModelPaths) -> RunOptions {
        let method = self.preview.method();
        let mut opts = RunOptions {
            out_dir: self.out.clone(),
            targets: (!self.targets.is_empty()).then(|| self.targets.clone()),
            base_dir: graph_folder(graph),
            previews: Previews {
                method,
                decoder_folders: paths.folders(ModelKind::VaeApprox).to_vec(),
                ..Previews::default()
            },
            ..RunOptions::default()
        };
        if let Some(w) = self.workers {
            opts.workers = w.max(1);
        }
        opts
    }
}

/// The absolute folder of a graph file.
fn graph_folder(graph: &Path) -> Option<PathBuf> {
    let dir = graph.parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).ok()
}

fn main() -> ExitCode {
    weft_kernels::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let paths = match models::paths(&cli.models) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let files = weft_nodes::ModelFiles::new(paths);
    let mut registry = weft_nodes::builtin_registry_with(&files);
    let mut plugins = PluginHost::new();
    // Installing checks the one library alone; nothing else need load.
    let plugin_dirs = if cli.no_plugins || matches!(cli.command, Command::Plugin(_)) {
        Vec::new()
    } else {
        weft_plugin_host::plugin_dirs(&cli.plugins)
    };
    plugins::remember_search((!cli.no_plugins).then_some(&plugin_dirs[..]));
    // A broken plugin costs its own node types, never the run.
    for error in plugins.load_dirs(&plugin_dirs, &mut registry) {
        eprintln!("error: {error}; continuing without it");
    }
    match cli.command {
        Command::Run { graph, exec } => {
            let opts = exec.options(&graph.graph, files.paths());
            let sink = render::with_preview_file(render::sink(graph.events), &opts.out_dir);
            let valid = match load(&graph, &registry, &sink) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let cancel = interrupt_token();
            let executor = Executor::new(exec.max_ram_bytes());
            match executor.run(&valid, &opts, &sink, &cancel) {
                Ok(report) if report.success() => ExitCode::SUCCESS,
                Ok(report) => {
                    render::summarize_failures(graph.events, &report);
                    ExitCode::from(EXIT_RUN_FAILED)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::Check { graph } => {
            let sink = render::sink(graph.events);
            match load(&graph, &registry, &sink) {
                Ok(valid) => {
                    if graph.events != EventMode::Json {
                        println!(
                            "{}: ok ({} nodes)",
                            graph.graph.display(),
                            valid.nodes.len()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Watch {
            graph,
            exec,
            debounce_ms,
        } => {
            let opts = exec.options(&graph.graph, files.paths());
            let sink = render::with_preview_file(render::sink(graph.events), &opts.out_dir);
            let plugins = watch::Plugins {
                host: plugins,
                dirs: plugin_dirs,
            };
            let run = watch::Run {
                cache_bytes: exec.max_ram_bytes(),
                opts,
            };
            watch::watch(&graph, run, registry, plugins, &sink, debounce_ms)
        }
        Command::Train { config, resume } => {
            // weft's models are small: candle's per-op threading costs more
            // than it gains on them (175 against 216 images/s for the flow
            // DiT), so each op runs on one thread and a config's `shards`
            // put the cores to work on parts of the batch instead. Nothing
            // else runs yet, so setting the variable races with no reader.
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                std::env::set_var("RAYON_NUM_THREADS", "1");
            }
            match weft_train::train(&config, resume, std::io::stderr().is_terminal()) {
                Ok(report) => {
                    let tail = &report.losses[report.losses.len().saturating_sub(50)..];
                    let final_loss = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
                    eprintln!(
                        "trained steps {}..{} in {:.0} s ({:.1} images/s), final loss {final_loss:.4} (mean of the last {}); wrote {}",
                        report.start_step,
                        report.end_step,
                        report.seconds,
                        report.images_per_sec,
                        tail.len(),
                        report.output.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::Eval { config } => {
            match weft_train::eval::evaluate(&config, &mut |line| eprintln!("{line}")) {
                Ok(report) => {
                    println!("{}", weft_train::eval::markdown(&report));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_INVALID)
                }
            }
        }
        Command::Serve(args) => {
            let paths = files.paths().clone();
            serve::serve(args, registry, paths)
        }
        Command::Models { kind } => models::print(files.paths(), kind.as_deref()),
        Command::Quantize { input, output, ty } => models::quantize(&input, &output, &ty),
        Command::Convert { input, output } => workflow::convert(&input, output.as_ref(), &registry),
        Command::Nodes {
            r#type,
            json,
            markdown,
        } => node_docs::print(&registry, files.paths(), r#type.as_deref(), json, markdown),
        Command::Plugin(command) => plugins::run(command, &cli.plugins),
    }
}

/// Reads and validates the graph, reporting errors; the error is the exit code.
fn load(args: &GraphArgs, registry: &Registry, sink: &EventSink) -> Result<ValidGraph, ExitCode> {
    read_and_validate(&args.graph, &args.overrides, registry).map_err(|e| {
        report_invalid(args.events, &e, sink);
        ExitCode::from(EXIT_INVALID)
    })
}

/// Why a graph could not be loaded.
enum LoadError {
    Io(String),
    Invalid(Diagnostics),
}

fn read_and_validate(
    path: &Path,
    overrides: &[String],
    registry: &Registry,
) -> Result<ValidGraph, LoadError> {
    // An unknown node type may be a plugin's: say where plugins were looked for.
    validate_file(path, overrides, registry).map_err(|e| match e {
        LoadError::Invalid(d) => LoadError::Invalid(plugins::explain_unknown_types(d, registry)),
        other => other,
    })
}

fn validate_file(
    path: &Path,
    overrides: &[String],
    registry: &Registry,
) -> Result<ValidGraph, LoadError> {
    if workflow::is_png(path) {
        return workflow::load_png(path, overrides, registry);
    }
    let source = SourceFile::new(path.display().to_string(), read_text(path)?);
    if weft_workflow::is_json(source.text()) {
        return workflow::load_json(source, overrides, registry);
    }
    weft_core::load(source, registry, overrides).map_err(LoadError::Invalid)
}

/// A graph file's text; it must be UTF-8.
fn read_text(path: &Path) -> Result<String, LoadError> {
    let text = std::fs::read(path)
        .map_err(|e| LoadError::Io(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(text).map_err(|e| {
        LoadError::Io(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn report_invalid(mode: EventMode, error: &LoadError, sink: &EventSink) {
    let lines: Vec<String> = match error {
        LoadError::Io(message) => vec![message.clone()],
        LoadError::Invalid(d) => d.to_string().lines().map(str::to_string).collect(),
    };
    if mode == EventMode::Json {
        sink.emit(weft_core::Event::GraphInvalid { errors: lines });
        return;
    }
    match error {
        LoadError::Io(message) => eprintln!("error: {message}"),
        LoadError::Invalid(d) => eprint!("{}", d.render(std::io::stderr().is_terminal())),
    }
}

/// A token that Ctrl-C cancels; a second Ctrl-C exits at once.
fn interrupt_token() -> CancelToken {
    let token = CancelToken::new();
    let handler_token = token.clone();
    let installed = ctrlc::set_handler(move || {
        if handler_token.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupting: finishing the current step (Ctrl-C again to quit now)");
        handler_token.cancel();
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will not interrupt cleanly: {e}");
    }
    token
}
