//! The links a browser opens: the operator's sign-in link and invite links. Both answer with a
//! redirect into the app, or a short page saying what went wrong.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use tower_sessions::Session;

use super::{Auth, Caller};
use crate::error::ApiError;

/// A small page for a link that did not work (people open these, scripts do not).
fn refusal(err: ApiError) -> Response {
    let message = err
        .message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Huddle</title>\
         <link rel=\"stylesheet\" href=\"/pkg/huddle.css\"></head><body><main class=\"not-found\">\
         <h1>Huddle</h1><p data-testid=\"link-error\">{message}</p><a href=\"/\">Back to Huddle</a>\
         </main></body></html>"
    );
    // Its own policy: the stylesheet loads (the default one lets nothing load), nothing runs.
    let csp = (
        axum::http::header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'",
    );
    let status = axum::http::StatusCode::from_u16(err.code.http_status())
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, [csp], Html(page)).into_response()
}

/// `GET /join/{secret}`: joins a workspace with the invite's role (or may create workspaces).
pub async fn join(
    State(auth): State<Auth>,
    Extension(caller): Extension<Caller>,
    session: Option<Extension<Session>>,
    Path(secret): Path<String>,
) -> Response {
    let session = session.map(|Extension(s)| s);
    match auth.join(&caller, session.as_ref(), &secret).await {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => refusal(e),
    }
}

/// `GET /sign-in/{secret}`: the browser that opens this run's link becomes the instance owner.
pub async fn sign_in(
    State(auth): State<Auth>,
    Extension(caller): Extension<Caller>,
    session: Option<Extension<Session>>,
    Path(secret): Path<String>,
) -> Response {
    let session = session.map(|Extension(s)| s);
    match auth.sign_in(&caller, session.as_ref(), &secret).await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(e) => refusal(e),
    }
}
