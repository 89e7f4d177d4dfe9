//! The axum server: shared state, routes, health check, graceful shutdown.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Form, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, AuthOptions, Caller};
use crate::config::Config;
use crate::config::SandboxMode;
use crate::embedded_postgres::{EmbeddedPostgres, EmbeddedPostgresError};
use crate::error::{ApiError, ErrorCode};
use crate::limits::Limits;
use crate::room::{Registry, RoomDeps, RoomError};
use crate::sandbox::hosts::HostConfig;
use crate::sandbox::limits::{CgroupSupport, SandboxLimits};
use crate::sandbox::local::{Isolation, LocalProvider};
pub use crate::sandbox::{SandboxConfig, Sandboxes};
use crate::sandbox_agent::PostgresPersist;
use crate::sandbox_agent::process::{ProcessError, SandboxAgentProcess};
pub use crate::state::AppState;
use crate::state::status_of;
use crate::store::{self, StoreError};
use crate::ui::{App, shell};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    EmbeddedPostgres(#[from] EmbeddedPostgresError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid Leptos configuration: {0}")]
    LeptosConfig(#[from] leptos::config::errors::LeptosConfigError),
    #[error("could not serve on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    SandboxAgent(#[from] ProcessError),
    #[error("{0}")]
    Sandbox(String),
}

/// The pages' routes, listed once per process: while Leptos lists them it holds back the data of
/// every page rendering anywhere in the process, and a page that asked in that window never
/// answered (leptos#4773). Several apps share a process in the tests.
static PAGE_ROUTES: std::sync::LazyLock<Vec<leptos_axum::AxumRouteListing>> =
    std::sync::LazyLock::new(|| generate_route_list(App));

/// All routes: pages, the JSON API, the form fallback, health, static files.
pub fn router(state: AppState) -> Router {
    let routes = PAGE_ROUTES.clone();
    let leptos_options = state.leptos_options().clone();
    let ctx_state = state.clone();
    let api_state = state.clone();
    Router::new()
        .route(
            "/api/{*fn_name}",
            any(move |req: Request<Body>| {
                let state = api_state.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let registered: Vec<_> = server_fn::axum::server_fn_paths()
                        .filter(|(p, _)| *p == path)
                        .map(|(_, m)| m)
                        .collect();
                    if registered.is_empty() {
                        return ApiError::not_found(format!(
                            "There is no endpoint {}.",
                            short(&path)
                        ))
                        .into_response();
                    }
                    if !registered.contains(req.method()) {
                        return ApiError::new(
                            ErrorCode::MethodNotAllowed,
                            "The API takes POST requests with a JSON body.",
                        )
                        .into_response();
                    }
                    forget_thread_owner();
                    leptos_axum::handle_server_fns_with_context(
                        move || provide_context(state.clone()),
                        req,
                    )
                    .await
                    .into_response()
                }
            }),
        )
        .route(
            "/api/workspace/{id}/events",
            get(crate::room_sse::room_events),
        )
        .route(
            "/api/workspace/{id}/images/{image_id}",
            get(workspace_image),
        )
        .route(
            "/api/workspace/{id}/threads/{thread}/{file}",
            get(thread_export),
        )
        .route("/api/inbox/events", get(crate::needs_you::inbox_events))
        .route("/join/{secret}", get(crate::auth::links::join))
        .route("/sign-in/{secret}", get(crate::auth::links::sign_in))
        .route("/new", post(create_workspace_form))
        .route("/w/{id}/send", post(send_form))
        .leptos_routes_with_context(&state, routes, page_context(ctx_state), move || {
            shell(leptos_options.clone())
        })
        .fallback_service(static_files(&state))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        // Pages set their own (with the render's nonce); everything else may run nothing.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        // Inside `json_errors`, so that its 413 leaves as JSON too. Prompts may carry images;
        // every other request is held to the small limit, chunked or not. Ours is the only
        // limit: axum's own (2 MB, which would refuse a prompt with images) is off.
        .layer(middleware::from_fn(body_limits))
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Who is asking: inside the cross-site guard (refused requests never touch sessions).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::identify,
        ))
        .layer(sessions(&state))
        // No request waits forever for its answer (a stuck handler would hold the browser's
        // connection); streams answer at once and are not held to it.
        .layer(middleware::from_fn(answer_deadline))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cross_site_guard,
        ))
        .with_state(state.clone())
        // Other nodes' forwarded actions: authenticated by the cluster secret, not by the host
        // name, the origin or a person (they come as the owner's own callers' actions). The
        // health check is asked by load balancers at the node's own address; it says nothing.
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/internal/room", post(crate::cluster::forward::serve))
                .route("/internal/metrics", get(crate::cluster::forward::metrics))
                .layer(axum::extract::DefaultBodyLimit::max(
                    MAX_PROMPT_BODY_BYTES * 2,
                ))
                .with_state(state),
        )
        .layer(TraceLayer::new_for_http())
}

/// Leptos leaves the owner of the page it last started rendering as the thread's current owner
/// (`Owner::new_root` sets it; nothing unsets it), and a server function's `Owner::new()` would
/// hang under that page's. Called just before one is made, in the same poll.
fn forget_thread_owner() {
    if let Some(owner) = Owner::current() {
        owner.unset();
    }
}

/// Static files, else the not-found page (a page like the others: their policy, with its nonce).
/// Not Leptos's `file_and_error_handler`: for a file it read the response options of the
/// thread's current owner, a page render in progress (above), and took that page's headers
/// (its policy with the nonce) for the file; the page went out under the policy that lets
/// nothing run, and never hydrated.
fn static_files(state: &AppState) -> Router {
    use axum::handler::HandlerWithoutStateExt;
    let options = state.leptos_options().clone();
    let page = {
        let options = options.clone();
        leptos_axum::render_app_async_with_context(page_context(state.clone()), move || {
            shell(options.clone())
        })
    };
    let not_found = move |req: Request<Body>| {
        let page = page.clone();
        async move {
            let mut res = page(req).await;
            if res.status() == StatusCode::OK {
                *res.status_mut() = StatusCode::NOT_FOUND;
            }
            res
        }
    };
    Router::new().fallback_service(
        tower_http::services::ServeDir::new(&*options.site_root)
            .precompressed_gzip()
            .precompressed_br()
            .call_fallback_on_method_not_allowed(true)
            .fallback(not_found.into_service()),
    )
}

/// What every page render has: the app's state, and its policy.
fn page_context(state: AppState) -> impl Fn() + Clone + Send + Sync + 'static {
    move || {
        provide_context(state.clone());
        page_csp();
    }
}

/// The Content-Security-Policy of a page: scripts only with this render's nonce (Leptos puts it on
/// its own), WebAssembly allowed, no inline handlers, images from self and data: only, no framing.
fn page_csp() {
    let (Some(nonce), Some(res)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
        &*nonce
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        res.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// Browser sessions: an HttpOnly, SameSite=Lax cookie with the session id; the session (who
/// this browser is) is kept in Postgres. Secure when the public address is https.
fn sessions(
    state: &AppState,
) -> tower_sessions::SessionManagerLayer<tower_sessions_sqlx_store::PostgresStore> {
    let store = tower_sessions_sqlx_store::PostgresStore::new(state.pool().clone());
    tower_sessions::SessionManagerLayer::new(store)
        .with_name("huddle_session")
        .with_http_only(true)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_secure(state.secure_cookies())
        // A session exists only for someone who acted (see `auth::identify`); one unused for 90
        // days expires, and the store's sweep deletes it.
        .with_expiry(tower_sessions::Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::days(90),
        ))
}

/// Largest request body accepted (a prompt's text is at most 16,000 characters)...
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// ...but a prompt may carry images (4 of 1 MB, in base64).
pub const MAX_PROMPT_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Refuses a body over [`MAX_BODY_BYTES`] ([`MAX_PROMPT_BODY_BYTES`] for a prompt) with a 413:
/// at once by its declared length, else (a chunked body) once it has sent more than that. What
/// passes is read whole here, so no handler reads past the limit.
async fn body_limits(req: Request<Body>, next: Next) -> Response {
    let limit = if req.uri().path() == "/api/workspace/prompt" {
        MAX_PROMPT_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request is too large; the limit is {limit} bytes here."),
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => too_large(),
    }
}
/// `/healthz` answers within this, database or not.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

async fn healthz(State(state): State<AppState>) -> Response {
    // Stopping: a load balancer sends nobody new here while the node hands its rooms over.
    if state.shutdown().is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "This node is stopping.").into_response();
    }
    let unavailable =
        || ApiError::new(ErrorCode::Unavailable, "The database is unavailable.").into_response();
    // On the connections the leases are renewed on: a node whose pool requests have taken for
    // a while is busy, not down (taking it out would pile its load on the others).
    match tokio::time::timeout(HEALTH_TIMEOUT, store::ping(state.registry().beats())).await {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check failed");
            unavailable()
        }
        Err(_) => {
            tracing::error!("health check timed out");
            unavailable()
        }
    }
}

/// At most a short prefix of something a client sent, for messages.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `GET /api/workspace/{id}/images/{image_id}`: an image sent with a prompt, for the workspace's
/// members (an image type Huddle checked when it took it, never anything to run).
async fn workspace_image(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path((id, image_id)): axum::extract::Path<(String, String)>,
) -> Response {
    match state.image(&caller, &id, &image_id).await {
        Ok((mime_type, data)) => (
            [
                (header::CONTENT_TYPE, mime_type),
                (header::CACHE_CONTROL, "private, max-age=86400".to_string()),
            ],
            data,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `export.md` or `export.jsonl` of a thread, as a download.
async fn thread_export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path((id, thread, file)): axum::extract::Path<(String, String, String)>,
) -> Response {
    use crate::threads::ExportFormat;
    let (format, mime) = match file.as_str() {
        "export.md" => (ExportFormat::Markdown, "text/markdown; charset=utf-8"),
        "export.jsonl" => (ExportFormat::Jsonl, "application/x-ndjson; charset=utf-8"),
        _ => return ApiError::not_found("Exports are export.md and export.jsonl.").into_response(),
    };
    match state.export_thread(&caller, &id, &thread, format).await {
        Ok((name, body)) => (
            [
                (header::CONTENT_TYPE, mime.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct CreateForm {
    agent: Option<String>,
    directory: Option<String>,
    name: Option<String>,
    csrf: String,
}

/// "New workspace" before the page is hydrated: a plain form post that redirects.
async fn create_workspace_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<CreateForm>,
) -> Response {
    let result = match crate::auth::Auth::check_csrf(&caller, &form.csrf) {
        Ok(()) => {
            state
                .create_workspace(
                    &caller,
                    form.agent.as_deref(),
                    form.directory.as_deref(),
                    form.name.as_deref(),
                )
                .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(created) => Redirect::to(&created.url).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct SendForm {
    text: String,
    csrf: String,
    /// A checkbox: present when ticked.
    team_only: Option<String>,
    /// The thread the composer is in (absent: the workspace's first).
    thread: Option<String>,
    /// `thread`: back to the thread's URL; else to the workspace's.
    back: Option<String>,
}

/// The composer before the page is hydrated: a plain form post that comes back to the room.
async fn send_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<SendForm>,
) -> Response {
    let result = match crate::auth::Auth::check_csrf(&caller, &form.csrf) {
        Ok(()) => {
            let team_only = form.team_only.is_some();
            state
                .prompt(
                    &caller,
                    &id,
                    form.thread.as_deref(),
                    crate::state::NewMessage {
                        text: form.text,
                        team_only,
                        ..Default::default()
                    },
                )
                .await
        }
        Err(e) => Err(e),
    };
    let back = match (&form.thread, form.back.as_deref()) {
        (Some(t), Some("thread")) if crate::model::is_valid_thread_id(t) => {
            crate::model::thread_url(&id, t)
        }
        _ => crate::model::workspace_url(&id),
    };
    match result {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Errors of the API and the forms leave as JSON with the right status: server functions answer
/// every error with 500 (their code says which), and the framework's own refusals (a body too
/// large, a form that does not parse) come as text.
/// How long a request may take to get its response's head.
const ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

async fn answer_deadline(req: Request<Body>, next: Next) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    match tokio::time::timeout(ANSWER_DEADLINE, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(request = %what, "no answer within {} s; the request is ended", ANSWER_DEADLINE.as_secs());
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn json_errors(req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let json_route = path.starts_with("/api/") || path == "/new" || path.ends_with("/send");
    let res = next.run(req).await;
    let status = res.status();
    if !json_route || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    if res.headers().contains_key("serverfnerror") {
        let (mut parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        if let Ok(err) = serde_json::from_slice::<ApiError>(&bytes) {
            parts.status = status_of(err.code);
        }
        return Response::from_parts(parts, Body::from(bytes));
    }
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request is too large; the limit is {MAX_PROMPT_BODY_BYTES} bytes."),
        ),
        StatusCode::NOT_FOUND => ApiError::not_found("Not found."),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed.")
        }
        s if s.is_client_error() => ApiError::bad_request(
            "Malformed request: the API takes a JSON body, the forms a urlencoded one.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::new(ErrorCode::Unavailable, "Unavailable; try again shortly.")
        }
        _ => ApiError::internal(),
    };
    err.into_response()
}

/// The host names requests may be addressed to: the public URL's, else the serve address (and
/// `localhost` when that is a loopback address). A default port may be named or not (browsers
/// leave it out), so both forms are listed.
pub fn allowed_hosts(public_url: Option<&str>, addr: std::net::SocketAddr) -> Vec<String> {
    if let Some(url) = public_url.and_then(|u| url::Url::parse(u).ok())
        && let Some(host) = url.host_str()
    {
        let host = host.to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut hosts = vec![format!("{host}:{port}")];
        // The URL parser drops a default port; then it may be named or not.
        if url.port().is_none() {
            hosts.push(host);
        }
        return hosts;
    }
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    hosts
}

/// Whether a browser's `Origin` is this server: our scheme, and one of our host names (with the
/// scheme's default port when it names none).
fn same_origin(origin: &str, scheme: &str, hosts: &[String]) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    url.scheme() == scheme && hosts.contains(&format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Cross-site protection. Requests must be addressed to one of our host names (so DNS
/// rebinding gets nowhere); state-changing ones from a browser must come from our own origin
/// (`Origin`, `Sec-Fetch-Site`), and the API takes JSON only, which a page elsewhere cannot send
/// without our consent. Scripts (no `Origin`) are let through: no browser, no ambient cookies.
async fn cross_site_guard(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let headers = req.headers();
    let header_host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    // HTTP/2 names the host in `:authority` (the URI's), and may send no Host header.
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase());
    // Two Host headers, or a Host and an `:authority` that differ: which one a proxy in front of
    // us believed is unknown.
    if headers.get_all(header::HOST).iter().count() > 1
        || matches!((&header_host, &authority), (Some(h), Some(a)) if h != a)
    {
        return ApiError::bad_request("A request names one host.").into_response();
    }
    let host = header_host.or(authority).unwrap_or_default();
    if !state.allowed_hosts().contains(&host) {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "This server does not answer for the host `{}`.",
                short(&host)
            ),
        )
        .into_response();
    }
    let safe = matches!(
        req.method(),
        &axum::http::Method::GET | &axum::http::Method::HEAD | &axum::http::Method::OPTIONS
    );
    if !safe {
        // Browsers that send Sec-Fetch-Site say exactly where a request comes from; otherwise
        // the Origin must be ours. (With no-referrer, a same-origin form post says `Origin: null`.)
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let (cross_site, foreign_origin) =
            match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
                Some(site) => (site != "same-origin" && site != "none", false),
                None => {
                    let scheme = if state.secure_cookies() {
                        "https"
                    } else {
                        "http"
                    };
                    (
                        false,
                        origin.is_some_and(|o| !same_origin(o, scheme, state.allowed_hosts())),
                    )
                }
            };
        if cross_site || foreign_origin {
            return ApiError::new(
                ErrorCode::Forbidden,
                "Requests from other sites are not accepted.",
            )
            .into_response();
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if req.uri().path().starts_with("/api/") && !json {
            return ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "The API takes JSON: send `Content-Type: application/json`.",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// How long open HTTP connections may take to finish once shutdown began.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the app until `shutdown`, then lets open requests finish within [`DRAIN_DEADLINE`]: a
/// request that never ends (a stuck client, a stream) cannot keep the process from stopping.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let serving = crate::listener::serve(listener, router, shutdown.clone());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_DEADLINE).await;
    };
    tokio::select! {
        served = serving => served,
        _ = deadline => {
            tracing::warn!("HTTP connections were still open {} s after shutdown began; closing them", DRAIN_DEADLINE.as_secs());
            Ok(())
        }
    }
}

/// What a killed Huddle left running wakes its rooms: local sandboxes (adopted, so a running turn
/// goes on, or stopped when their room sleeps) and connections on sandbox hosts (a running turn is
/// re-attached, an idle one closed: nothing else would end its agent there).
async fn wake_leftovers(registry: crate::room::Registry) {
    let mut rooms = Vec::new();
    for ws in registry.sandboxes().leftovers().await {
        match crate::store::threads::to_wake(registry.pool(), &ws).await {
            Ok(threads) => rooms.extend(threads.into_iter().map(|t| (ws.clone(), t))),
            Err(e) => {
                tracing::warn!(workspace = %ws, error = %e, "cannot read the threads of a sandbox left running")
            }
        }
    }
    rooms.extend(registry.sandboxes().host_leftovers().await);
    for (workspace, thread) in rooms {
        let registry = registry.clone();
        let key = crate::room::RoomKey { workspace, thread };
        tokio::spawn(async move {
            // The killed process's lease on the workspace expires within seconds.
            for _ in 0..30 {
                match registry.info(&key).await {
                    Err(RoomError::OwnedElsewhere) => {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %key.workspace, error = %e, "cannot wake a room left running");
                        return;
                    }
                    Ok(_) => return,
                }
            }
        });
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Writes this run's sign-in link to `<data dir>/sign-in-link` (readable by its owner only),
/// for scripts and tests.
async fn write_sign_in_link(data_dir: &std::path::Path, link: &str) -> Result<(), ServerError> {
    use std::os::unix::fs::OpenOptionsExt;
    tokio::fs::create_dir_all(data_dir).await?;
    let path = data_dir.join("sign-in-link");
    let _ = tokio::fs::remove_file(&path).await;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let link = format!("{link}\n");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        options.open(&path)?.write_all(link.as_bytes())
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(())
}

/// Runs Huddle until Ctrl-C or SIGTERM, then shuts everything down in order.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let conf = leptos::config::get_configuration(None)?;
    let mut leptos_options = conf.leptos_options;
    if let Some(addr) = config.addr {
        leptos_options.site_addr = addr;
    }

    let embedded_pg = match &config.database_url {
        Some(_) => None,
        None => Some(EmbeddedPostgres::start(&config.data_dir, config.pg_bin.as_deref()).await?),
    };
    let url = match (&config.database_url, &embedded_pg) {
        (Some(url), _) => {
            tracing::info!("using the Postgres server at DATABASE_URL");
            url.clone()
        }
        (None, Some(pg)) => {
            tracing::info!(data = %pg.data_dir().display(), "using the embedded Postgres cluster");
            pg.url().to_string()
        }
        (None, None) => unreachable!("an embedded cluster is started when DATABASE_URL is unset"),
    };

    let sandboxes = match sandbox_config(&config).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(pg) = embedded_pg {
                pg.stop().await;
            }
            return Err(e);
        }
    };
    let result = serve(&config, &url, leptos_options, sandboxes).await;
    if let Some(pg) = embedded_pg {
        pg.stop().await;
    }
    result
}

/// Where agents run, from the configuration: refuses to start when a sandbox cannot be made here
/// and `HUDDLE_SANDBOX=none` was not asked for.
async fn sandbox_config(config: &Config) -> Result<SandboxConfig, ServerError> {
    let mut hosts = match &config.sandbox_hosts {
        Some(list) => HostConfig::parse_list(list)
            .map_err(|e| ServerError::Sandbox(format!("HUDDLE_SANDBOX_HOSTS: {e}")))?,
        None => Vec::new(),
    };
    if let Some(url) = &config.sandbox_agent_url {
        hosts.push(HostConfig {
            url: url.clone(),
            token: config.sandbox_agent_token.clone(),
            cwd_root: None,
            agents: None,
        });
    }
    let isolation = match config.sandbox {
        SandboxMode::Remote => None,
        _ if config.sandbox_agent_url.is_some() => None,
        SandboxMode::None => {
            tracing::warn!(
                "HUDDLE_SANDBOX=none: agents run on this machine NOT sandboxed, with Huddle's user and files within their reach"
            );
            Some(Isolation::None)
        }
        SandboxMode::Bubblewrap => Some(Isolation::bubblewrap(config.bwrap.as_deref()).await.map_err(|e| {
            ServerError::Sandbox(format!(
                "Huddle runs each workspace's agent in a sandbox, and cannot make one here: {e}. \
                 Install bubblewrap (scripts/setup.sh does), or set HUDDLE_SANDBOX=none to run agents \
                 without a sandbox (only with agents and members you trust)."
            ))
        })?),
    };
    if isolation.is_none() && hosts.is_empty() {
        return Err(ServerError::Sandbox(
            "HUDDLE_SANDBOX=remote needs sandbox hosts: set HUDDLE_SANDBOX_HOSTS".into(),
        ));
    }
    // The one shared server a Huddle before sandboxes ran, left by a crash: its agents go.
    SandboxAgentProcess::stop_left_behind(&config.data_dir.join("sandbox-agent.pid")).await;
    let local = match isolation {
        Some(isolation) => {
            let bin = SandboxAgentProcess::resolve_bin(config.sandbox_agent_bin.as_deref())?;
            let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
            let mut extra_path: Vec<std::path::PathBuf> =
                std::fs::canonicalize(crate::sandbox_agent::process::ADAPTERS_DIR)
                    .into_iter()
                    .collect();
            // Agents installed elsewhere on PATH (a global npm install) are found too.
            extra_path.extend(
                std::env::var_os("PATH")
                    .iter()
                    .flat_map(std::env::split_paths)
                    .filter(|d| d.is_absolute() && !d.starts_with("/usr") && !d.starts_with("/bin"))
                    .filter(|d| {
                        ["claude-agent-acp", "codex-acp", "pi-acp"]
                            .iter()
                            .any(|a| d.join(a).is_file())
                    }),
            );
            let cgroups = CgroupSupport::detect();
            let local = LocalProvider {
                isolation,
                sandbox_agent_bin: bin,
                extra_path,
                agent_env: LocalProvider::agent_env_from(&config.agent_env),
                dir: std::path::absolute(config.data_dir.join("sandboxes"))?,
                cgroups,
                limits: SandboxLimits {
                    pids: config.sandbox_pids,
                    memory: config.sandbox_memory_mb * 1024 * 1024,
                },
            };
            Some(local)
        }
        None => None,
    };
    Ok(SandboxConfig { local, hosts })
}

/// The pieces of a running Huddle, for [`serve`] and for tests that run the app in-process.
pub struct App {
    pub router: Router,
    pub state: AppState,
}

/// How the app behaves, beyond where its database and sandbox-agent are.
pub struct AppOptions {
    /// How long a room with nobody in it and nothing running stays awake.
    pub idle_sleep: std::time::Duration,
    /// The host names (with port) requests may be addressed to.
    pub allowed_hosts: Vec<String>,
    /// Where each workspace's working directory is made (`<dir>/<workspace id>`).
    pub workspaces_dir: std::path::PathBuf,
    pub limits: Limits,
    /// Where people reach Huddle (`http://host:port`): links are made with it.
    pub base_url: String,
    /// `HUDDLE_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// The secret of this run's sign-in link.
    pub sign_in_secret: Option<String>,
    /// `HUDDLE_PROJECTS_ROOT`.
    pub projects_root: Option<std::path::PathBuf>,
    /// `HUDDLE_PUSH_ALLOW_HTTP`.
    pub push_allow_http: bool,
    /// `HUDDLE_OUTBOUND_ALLOW_PRIVATE`.
    pub outbound_allow_private: bool,
    /// Where the other nodes reach this one (`HUDDLE_NODE_URL`).
    pub node_url: Option<String>,
    /// The load balancers whose `X-Forwarded-For` names the client (`HUDDLE_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Builds the app on a migrated pool and where agents run.
pub fn build_app(
    pool: PgPool,
    leptos_options: LeptosOptions,
    sandboxes: SandboxConfig,
    options: AppOptions,
) -> App {
    let shutdown = CancellationToken::new();
    let sandboxes = Sandboxes::new(
        pool.clone(),
        sandboxes,
        Arc::new(PostgresPersist::new(pool.clone())),
        shutdown.clone(),
    );
    tracing::info!(agents = %sandboxes.describe(), "where agents run");
    let beats = crate::store::heartbeat_pool(&pool);
    // Streams and tabs counted across every node (this one under its own id).
    let counts = crate::cluster::counts::NodeCounts::start(
        pool.clone(),
        beats.clone(),
        crate::store::leases::owner_id(),
        shutdown.clone(),
    );
    let registry = Registry::new(RoomDeps {
        pool: pool.clone(),
        beats,
        sandboxes,
        idle_sleep: options.idle_sleep,
        workspaces_dir: options.workspaces_dir,
        max_queue: options.limits.max_queue,
        projects_root: options.projects_root.clone(),
        node_url: options.node_url.clone(),
        nodes: counts.clone(),
    });
    let needs_you = crate::needs_you::NeedsYou::start(
        pool.clone(),
        options.base_url.clone(),
        crate::needs_you::Outbound {
            push_allow_http: options.push_allow_http,
            allow_private: options.outbound_allow_private,
        },
        counts.clone(),
        shutdown.clone(),
    );
    let auth = Auth::new(
        pool.clone(),
        AuthOptions {
            admin_token: options.admin_token,
            sign_in_secret: options.sign_in_secret,
            base_url: options.base_url,
        },
    );
    let state = AppState::new(crate::state::Parts {
        needs_you,
        pool,
        leptos_options,
        registry,
        shutdown,
        allowed_hosts: options.allowed_hosts,
        limits: options.limits,
        trusted_proxies: options.trusted_proxies,
        counts,
        auth,
        projects_root: options.projects_root,
    });
    // Workspaces whose owner stopped renewing (another node died or was cut off, or this one
    // was and is back) are taken over.
    state.registry().spawn_takeover();
    App {
        router: router(state.clone()),
        state,
    }
}

async fn serve(
    config: &Config,
    url: &str,
    leptos_options: LeptosOptions,
    sandboxes: SandboxConfig,
) -> Result<(), ServerError> {
    let addr = leptos_options.site_addr;
    let pool = store::connect(url).await?;
    let hosts = allowed_hosts(config.public_url.as_deref(), addr);
    tracing::info!(hosts = ?hosts, "requests are answered for these host names only");
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let sign_in_secret = crate::auth::new_secret(24);
    let sign_in_link = format!(
        "{}/sign-in/{sign_in_secret}",
        base_url.trim_end_matches('/')
    );
    let options = AppOptions {
        idle_sleep: std::time::Duration::from_secs(config.idle_sleep_secs),
        allowed_hosts: hosts,
        base_url,
        admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
        sign_in_secret: Some(sign_in_secret),
        projects_root: config.projects_root.clone(),
        push_allow_http: config.push_allow_http,
        outbound_allow_private: config.outbound_allow_private,
        trusted_proxies: config.trusted_proxies.clone(),
        node_url: Some(config.node_url.clone().unwrap_or_else(|| {
            let mut here = addr;
            if here.ip().is_unspecified() {
                here.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{here}")
        })),
        // Absolute: the agent's `session/new` needs an absolute `cwd`.
        workspaces_dir: std::path::absolute(config.data_dir.join("workspaces"))?,
        limits: Limits {
            prompts_per_minute: config.prompts_per_minute,
            max_queue: config.max_queue,
            max_streams_per_ip: config.max_streams_per_ip,
            max_streams_per_person: config.max_streams_per_person,
        },
    };
    let App { router, state } = build_app(pool.clone(), leptos_options, sandboxes, options);
    // The nodes' shared secret exists before this node answers anyone (made by the first node).
    state.registry().forwarder().secret().await?;
    // Every node accepts this node's sign-in link while it runs.
    state.auth().spawn_sign_in_link(state.shutdown().clone());
    tokio::spawn(wake_leftovers(state.registry().clone()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!("Huddle is serving on http://{addr}");
    write_sign_in_link(&config.data_dir, &sign_in_link).await?;
    // Printed as it is (not through the log filter), as Jupyter does: the operator opens it.
    println!(
        "\n    Open this link to sign in as the owner of this Huddle (it is valid until Huddle stops):\n\n        {sign_in_link}\n"
    );
    // Expired browser sessions are deleted hourly.
    let expired_sessions = {
        use tower_sessions::ExpiredDeletion;
        let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone());
        tokio::spawn(async move {
            // It stops at its first error (the database was down): start it again.
            loop {
                let hourly = std::time::Duration::from_secs(3600);
                if let Err(e) = store.clone().continuously_delete_expired(hourly).await {
                    tracing::warn!(error = %e, "could not delete expired sessions; trying again later");
                }
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
        })
    };
    let token = state.shutdown().clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    serve_http(listener, router, state.shutdown().clone()).await?;
    expired_sessions.abort();
    state.registry().shutdown().await;
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{allowed_hosts, same_origin};

    #[test]
    fn the_public_url_is_reached_with_or_without_its_default_port() {
        let addr = "127.0.0.1:3000".parse().unwrap();
        for url in ["https://huddle.example:443", "https://Huddle.example/"] {
            let hosts = allowed_hosts(Some(url), addr);
            assert!(hosts.contains(&"huddle.example".into()), "{hosts:?}");
            assert!(hosts.contains(&"huddle.example:443".into()), "{hosts:?}");
            assert!(same_origin("https://huddle.example", "https", &hosts));
            assert!(same_origin("https://huddle.example:443", "https", &hosts));
            assert!(!same_origin("http://huddle.example", "https", &hosts));
        }
        let hosts = allowed_hosts(Some("https://huddle.example:8443"), addr);
        assert_eq!(hosts, ["huddle.example:8443"]);
        let local = allowed_hosts(None, addr);
        assert!(same_origin("http://127.0.0.1:3000", "http", &local));
        assert!(same_origin("http://localhost:3000", "http", &local));
        // Another scheme is another origin.
        assert!(!same_origin("https://127.0.0.1:3000", "http", &local));
        assert!(!same_origin("null", "http", &local));
        assert!(!same_origin("http://evil.example", "http", &local));
    }
}
