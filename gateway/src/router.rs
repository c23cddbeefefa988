//! Every route, in one table that reads top to bottom.

use axum::routing::{get, post};
use axum::Router;

use crate::{auth, devtools, error, functions, health, http, realtime, rest, storage, AppState};

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let cors = http::cors::layer(&state.config);
    let routes = Router::new()
        .route("/health", get(health::health))
        .nest("/auth/v1", auth::routes(&state.config))
        .route("/rest/v1/", get(rest::openapi::openapi))
        .nest("/rest/v1", rest::routes())
        .route("/api/catalog/refresh", post(rest::catalog_refresh))
        .merge(devtools::routes(&state.config))
        .nest("/ws", realtime::routes())
        .nest("/storage/v1", storage::routes())
        .route("/functions/v1/", get(functions::list))
        .nest("/functions/v1", functions::routes())
        .fallback(error::not_found)
        .with_state(state);
    let routes = match cors {
        Some(c) => routes.layer(c),
        None => routes,
    };
    http::trace::layer(routes)
}
