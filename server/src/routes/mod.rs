//! The HTTP surface: every route bare and under `/api/`, as ComfyUI
//! registers them, behind [`crate::security::guard`].

mod files;
mod object_info;
mod prompt;
mod queue;
mod system;
mod userdata;

use axum::extract::DefaultBodyLimit;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use tower_http::services::ServeDir;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let limits = state.config.limits;
    let api = Router::new()
        .route("/prompt", get(prompt::summary).post(prompt::queue_prompt))
        .route("/object_info", get(object_info::all))
        .route("/object_info/{class}", get(object_info::one))
        .route("/queue", get(queue::get_queue).post(queue::edit_queue))
        .route("/interrupt", post(queue::interrupt))
        .route("/free", post(queue::free))
        .route(
            "/history",
            get(queue::get_history).post(queue::edit_history),
        )
        .route("/history/{id}", get(queue::get_history_of))
        .route("/view", get(files::view))
        .route(
            "/upload/image",
            post(files::upload_image).layer(DefaultBodyLimit::max(limits.upload_bytes)),
        )
        .route(
            "/upload/mask",
            post(files::upload_mask).layer(DefaultBodyLimit::max(limits.upload_bytes)),
        )
        .route("/system_stats", get(system::stats))
        .route("/embeddings", get(system::embeddings))
        .route("/extensions", get(system::extensions))
        .route("/models", get(system::model_folders))
        .route("/models/{folder}", get(system::models_in))
        .route("/features", get(system::features))
        .route("/i18n", get(system::empty_object))
        .route("/workflow_templates", get(system::empty_object))
        .route("/users", get(userdata::users).post(userdata::create_user))
        .route(
            "/settings",
            get(userdata::settings).post(userdata::save_settings),
        )
        .route(
            "/settings/{id}",
            get(userdata::setting).post(userdata::save_setting),
        )
        .route("/userdata", get(userdata::list))
        .route("/v2/userdata", get(userdata::list_v2))
        .route(
            "/userdata/{file}",
            get(userdata::read)
                .post(userdata::write)
                .delete(userdata::delete),
        )
        .route("/userdata/{file}/move/{dest}", post(userdata::rename))
        .route("/ws", get(crate::clients::connect));
    let mut app = Router::new().merge(api.clone()).nest("/api", api);
    app = match &state.config.frontend {
        Some(dir) => app.fallback_service(ServeDir::new(dir)),
        None => app.route("/", get(no_frontend)),
    };
    app.layer(DefaultBodyLimit::max(limits.json_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::security::guard,
        ))
        .with_state(state)
}

async fn no_frontend() -> Html<&'static str> {
    Html(
        "<!doctype html><title>weft</title><p>weft serve is running. Point <code>--frontend</code> at a \
         <code>comfyui-frontend-package</code> static folder to use ComfyUI's web UI here, or use the API \
         (<code>/object_info</code>, <code>/prompt</code>, <code>/ws</code>).</p>",
    )
}
