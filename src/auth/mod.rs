//! Who is asking, and what they may do.
//!
//! Browsers get a server-issued identity in a cookie session (tower-sessions with its Postgres
//! store; the cookie is HttpOnly and SameSite=Lax and holds only the session id). Scripts and bots
//! send an API token, the operator may send `HUDDLE_ADMIN_TOKEN`. [`identify`] resolves each
//! request once into a [`Caller`] that handlers and server functions read; [`Auth`] decides what a
//! caller may do in a workspace (owner, member, viewer) and manages invites and tokens.
//!
//! - `store`: people, memberships, invites, tokens in Postgres (secrets as SHA-256 only).
//! - `service`: the rules, for server functions and handlers.
//! - `links`: the sign-in and invite links a browser opens.

pub mod links;
mod service;
pub mod store;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

pub use service::{Auth, AuthOptions, Grant, Kick, Need};

use crate::error::{ApiError, ErrorCode};

/// Session keys.
const PERSON_KEY: &str = "person";
const CSRF_KEY: &str = "csrf";
/// The person `HUDDLE_ADMIN_TOKEN` stands for.
pub const OPERATOR_ID: &str = "operator";

/// Who sent a request, as [`identify`] found out.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No session and no token.
    Nobody,
    Person(Person),
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub display_name: String,
    pub instance_owner: bool,
    pub may_create: bool,
    /// Browsers only: the token their no-JS forms carry.
    pub csrf: Option<String>,
}

impl Person {
    fn from_row(row: store::PersonRow, csrf: Option<String>) -> Self {
        Person {
            id: row.id,
            display_name: row.display_name,
            instance_owner: row.instance_owner,
            may_create: row.may_create || row.instance_owner,
            csrf,
        }
    }
}

/// The caller of the current server function (or page render).
pub fn caller() -> Caller {
    leptos::prelude::use_context::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>().cloned())
        .unwrap_or(Caller::Nobody)
}

/// A new random secret, URL-safe.
pub fn new_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// What is stored of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pages a browser opens: its first visit to one of them gets it an identity.
fn is_page(path: &str) -> bool {
    path == "/"
        || (path.starts_with("/w/") && !path.ends_with("/send"))
        || path.starts_with("/join/")
        || path.starts_with("/sign-in/")
}

/// Resolves who sent the request (for pages, the API and the forms; static files skip it).
pub async fn identify(State(auth): State<Auth>, mut req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path();
    let page = req.method() == Method::GET && is_page(path);
    if !(page || path.starts_with("/api/") || path == "/new" || path.ends_with("/send")) {
        return next.run(req).await;
    }
    // Nobody gets an identity for looking: only a person naming themselves does here (opening a
    // valid link makes one in its handler). Anonymous traffic stores nothing.
    let create = req.method() == Method::POST && path == "/api/me/name";
    let caller = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            match token {
                Some(token) => auth.by_token(token).await,
                None => Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "Send API tokens as `Authorization: Bearer <token>`.",
                )),
            }
        }
        None => match req.extensions().get::<tower_sessions::Session>().cloned() {
            Some(session) => auth.by_session(&session, create).await,
            None => Ok(Caller::Nobody),
        },
    };
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
