//! Times as people read them: the same text from the server and the browser until hydration.

use leptos::prelude::*;

use crate::browser;
use crate::ui::room::RoomCtx;

/// A time as `HH:MM` in UTC (what the server can render).
pub(crate) fn utc_clock(ms: i64) -> String {
    let mins = ms.div_euclid(60_000);
    format!(
        "{:02}:{:02}",
        mins.div_euclid(60).rem_euclid(24),
        mins.rem_euclid(60)
    )
}

/// A moment as `YYYY-MM-DD HH:MM UTC` (the server and the browser render the same text).
pub(crate) fn activity_label(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => String::new(),
    }
}

#[component]
pub(crate) fn Clock(at: i64) -> impl IntoView {
    let ctx = expect_context::<RoomCtx>();
    view! { <time>{move || if ctx.hydrated.get() { browser::clock(at) } else { utc_clock(at) }}</time> }
}
