//! The pages, one per route.

pub mod home;
mod no_access;
mod not_found;
mod workspace;

pub(crate) use home::HomePage;
pub(crate) use no_access::NoAccess;
pub(crate) use not_found::NotFound;
pub(crate) use workspace::WorkspacePage;
