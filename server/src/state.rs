//! What every handler shares: the node registry, the model folders, the
//! queue and the connected websockets.

use std::sync::Arc;

use weft_core::Registry;
use weft_model_paths::ModelPaths;

use crate::clients::Clients;
use crate::config::ServerConfig;
use crate::queue::Queue;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub registry: Arc<Registry>,
    pub paths: Arc<ModelPaths>,
    pub queue: Arc<Queue>,
    pub clients: Arc<Clients>,
}
