//! `weft serve`: ComfyUI's server API over weft's engine, so ComfyUI's web
//! UI, its API clients and scripts drive weft unchanged.
//!
//! The async side ([`routes`]) only checks, queues and reports; one
//! executor thread ([`worker`]) runs prompts in order through one
//! `Executor`, so models stay loaded and an edited prompt re-runs only what
//! changed. A prompt's events reach only the sockets of the client that
//! queued it ([`clients`]). Every request passes [`security::guard`].

pub mod clients;
pub mod config;
pub mod queue;
mod routes;
pub mod security;
pub mod state;
pub mod worker;

use std::sync::Arc;

use weft_core::Registry;
use weft_model_paths::ModelPaths;

pub use config::{Dirs, Limits, ServerConfig};
use state::AppState;

/// Creates the folders and the executor thread, and returns the app to
/// serve. The folders are made absolute, so saved files map back to
/// `/view` URLs.
pub fn app(
    mut config: ServerConfig,
    registry: Registry,
    paths: ModelPaths,
) -> std::io::Result<axum::Router> {
    for dir in [
        &mut config.dirs.output,
        &mut config.dirs.input,
        &mut config.dirs.temp,
        &mut config.dirs.user,
    ] {
        std::fs::create_dir_all(&*dir)?;
        *dir = dir.canonicalize()?;
    }
    let state = AppState {
        queue: Arc::new(queue::Queue::new(config.limits.history)),
        config: Arc::new(config),
        registry: Arc::new(registry),
        paths: Arc::new(paths),
        clients: Arc::new(clients::Clients::default()),
    };
    worker::spawn(state.clone())?;
    Ok(routes::router(state))
}

/// Serves until the process ends (or the listener fails).
pub async fn serve(
    config: ServerConfig,
    registry: Registry,
    paths: ModelPaths,
) -> Result<(), String> {
    config.check()?;
    let addr = config.addr;
    let app = app(config, registry, paths).map_err(|e| format!("cannot prepare folders: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!(
        "weft serve: listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

/// [`serve`] on its own runtime, for the command line: two threads answer
/// requests (the executor thread does the work).
pub fn serve_blocking(
    config: ServerConfig,
    registry: Registry,
    paths: ModelPaths,
) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server runtime: {e}"))?
        .block_on(serve(config, registry, paths))
}
