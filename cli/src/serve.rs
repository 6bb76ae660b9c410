//! `weft serve`: the command-line face of weft-server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use weft_core::{Previews, Registry};
use weft_model_paths::{ModelKind, ModelPaths};
use weft_server::{Dirs, Limits, ServerConfig};

use crate::PreviewArg;

#[derive(Args)]
pub struct ServeArgs {
    /// Listen on ADDR instead of 127.0.0.1; `--listen` alone means every
    /// interface (0.0.0.0). A non-loopback address needs --token or --insecure.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "0.0.0.0")]
    listen: Option<IpAddr>,
    #[arg(long, default_value_t = 8188)]
    port: u16,
    /// A bearer token every request must carry (`Authorization: Bearer
    /// TOKEN`; a browser opens `/?token=TOKEN` once and keeps a cookie).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Serve a non-loopback address without a token.
    #[arg(long)]
    insecure: bool,
    /// The static folder of a `comfyui-frontend-package` (its `static/`,
    /// holding index.html), served at `/`.
    #[arg(long, value_name = "DIR")]
    frontend: Option<PathBuf>,
    /// Where SaveImage writes (ComfyUI's `output/`).
    #[arg(long = "output-directory", default_value = "output")]
    output: PathBuf,
    /// Uploads and LoadImage's files (ComfyUI's `input/`).
    #[arg(long = "input-directory", default_value = "input")]
    input: PathBuf,
    /// The user's settings and saved workflows (ComfyUI's `user/`).
    #[arg(long = "user-directory", default_value = "user")]
    user: PathBuf,
    /// Memory for loaded models and cached results, in MiB (default: the
    /// machine's memory less 2 GiB).
    #[arg(long = "max-ram", value_name = "MIB")]
    max_ram: Option<usize>,
    /// Worker threads for independent nodes (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Largest upload, in MiB.
    #[arg(long = "max-upload-size", value_name = "MIB", default_value_t = 100)]
    max_upload: usize,
    /// Live previews sent as binary frames while sampling. None by default,
    /// as in ComfyUI: some API clients count preview frames as images.
    #[arg(long, alias = "preview-method", value_enum, default_value_t = PreviewArg::None)]
    preview: PreviewArg,
}

pub fn serve(args: ServeArgs, registry: Registry, paths: ModelPaths) -> ExitCode {
    if let Some(dir) = &args.frontend {
        if !dir.join("index.html").is_file() {
            eprintln!(
                "error: --frontend {} has no index.html (use the `static` folder inside the installed comfyui_frontend_package)",
                dir.display()
            );
            return ExitCode::from(2);
        }
    }
    let config = ServerConfig {
        addr: SocketAddr::new(
            args.listen.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            args.port,
        ),
        token: args.token,
        insecure: args.insecure,
        frontend: args.frontend,
        dirs: Dirs {
            output: args.output,
            input: args.input,
            temp: weft_nodes::image::preview_dir(),
            user: args.user,
        },
        limits: Limits {
            upload_bytes: args.max_upload << 20,
            ..Limits::default()
        },
        max_ram_bytes: crate::max_ram_bytes(args.max_ram),
        workers: args.workers,
        previews: Previews {
            method: args.preview.method(),
            decoder_folders: paths.folders(ModelKind::VaeApprox).to_vec(),
            ..Previews::default()
        },
    };
    match weft_server::serve_blocking(config, registry, paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
