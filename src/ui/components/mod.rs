//! Small pieces every page uses.

mod clock;
mod error_line;
mod name_tag;
mod toggle;

pub(crate) use clock::{Clock, activity_label};
pub(crate) use error_line::ErrorLine;
pub(crate) use name_tag::NameTag;
pub(crate) use toggle::Toggle;
