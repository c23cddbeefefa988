//! Every route, in one table that reads top to bottom.

use axum::routing::{get, post};
use axum::Router;

use crate::{agent, auth, channels, devtools, functions, health, http, realtime, rest, storage, webhooks, workbench, AppState};

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    // REST's process-wide settings (error format, pre-request, max rows), set once.
    rest::init_settings(&state.config);
    let cors = http::cors::layer(&state.config);
    // REST and auth: the body is received first (under the body-rate limits), then the
    // handler runs under REQUEST_TIMEOUT. Functions receive their body the same way.
    let bounded = || axum::middleware::from_fn_with_state(state.clone(), http::timeout::bounded);
    let buffered = || axum::middleware::from_fn_with_state(state.clone(), http::timeout::buffer_body);
    let routes = Router::new()
        .route("/health", get(health::health))
        .nest("/auth/v1", auth::routes(&state.config).layer(bounded()))
        .route("/rest/v1/", get(rest::openapi::openapi).options(rest::openapi::options))
        .nest("/rest/v1", rest::routes().merge(webhooks_or_table(&state)).layer(bounded()))
        .route("/api/catalog/refresh", post(rest::catalog_refresh).route_layer(axum::middleware::from_fn_with_state(state.config.clone(), http::service::only_service)))
        .merge(devtools::routes(&state.config))
        .nest("/ws", realtime::routes())
        .nest("/realtime/v1", channels::routes().merge(channels::api_routes().layer(bounded())))
        .nest("/storage/v1", storage::routes())
        .merge(workbench::routes(&state).layer(bounded()))
        .merge(agent::routes(&state).layer(bounded()))
        .route("/functions/v1/", get(functions::list))
        .nest("/functions/v1", functions::routes().layer(buffered()))
        .fallback(http::errors::not_found)
        .with_state(state);
    let routes = match cors {
        // The CORS layer answers every OPTIONS as a preflight: only real preflights
        // (with Access-Control-Request-Method) go to it; a plain OPTIONS reaches the
        // routes (REST answers it with an Allow header, as PostgREST does).
        Some(c) => {
            let plain = routes.clone();
            // Around the whole router (a fallback of an empty one), not per route:
            // the request is routed once, by whichever router takes it.
            Router::new().fallback_service(routes.layer(c)).layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                let plain = plain.clone();
                async move {
                    let preflight = req.headers().contains_key(axum::http::header::ACCESS_CONTROL_REQUEST_METHOD);
                    // A request without Origin is not a CORS request: no CORS headers,
                    // and no CORS `Vary` (PostgREST's own `Vary` stays alone).
                    let cross_origin = req.headers().contains_key(axum::http::header::ORIGIN);
                    if (req.method() == axum::http::Method::OPTIONS && !preflight) || !cross_origin {
                        tower::ServiceExt::oneshot(plain, req).await.unwrap_or_else(|e| match e {})
                    } else {
                        next.run(req).await
                    }
                }
            }))
        }
        None => routes,
    };
    // A panicking handler ends its own request with a 500, never the process; every
    // error leaves in the contract's JSON shape, with the request's id, logged.
    let routes = routes.layer(tower_http::catch_panic::CatchPanicLayer::custom(http::errors::panic_response));
    http::edge::layer(routes)
}

/// The contract's webhook API lives at `/rest/v1/webhooks`, where PostgREST would
/// serve a table named `webhooks`. The API is the service role's; any other caller
/// of a database that has such a table (in the request's schema) gets the table,
/// as its Supabase client expects.
fn webhooks_or_table(state: &AppState) -> Router<AppState> {
    let tables = rest::routes().with_state(state.clone());
    let service_only = axum::middleware::from_fn_with_state(state.config.clone(), http::service::only_service);
    webhooks::routes().route_layer(service_only).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        move |axum::extract::State(s): axum::extract::State<AppState>, req: axum::extract::Request, next: axum::middleware::Next| {
            let tables = tables.clone();
            async move {
                let service = matches!(http::caller::Caller::resolve(req.headers(), None, &s.config), Ok(Some(c)) if c.kind == http::caller::KeyKind::Service);
                let cache = s.schema_cache.get();
                let has_table = rest::prefer::schema(req.headers(), req.method(), &s.config.db_schemas).is_ok_and(|schema| cache.table(schema, "webhooks").is_some());
                if !service && has_table {
                    return tower::ServiceExt::oneshot(tables, req).await.unwrap_or_else(|e| match e {});
                }
                next.run(req).await
            }
        },
    ))
}
