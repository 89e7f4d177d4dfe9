//! The few browser APIs the room uses: local storage, the room's EventSource with its reconnects,
//! the clipboard, page visibility. On the server every call is a no-op, so components can call them
//! from effects and event handlers without caring where they run.

pub mod notify;

pub use imp::*;

/// Called with each image a paste or drop carries (its type, its bytes in base64), or with why
/// it was refused.
pub type OnImage = std::rc::Rc<dyn Fn(Result<(String, String), String>)>;

#[cfg(feature = "hydrate")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::Closure;
    use web_sys::{EventSource, MessageEvent};

    use crate::model::ROOM_EVENT_KINDS;

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    pub fn local_get(key: &str) -> Option<String> {
        storage()?.get_item(key).ok()?
    }

    pub fn local_set(key: &str, value: &str) {
        if let Some(s) = storage() {
            let _ = s.set_item(key, value);
        }
    }

    /// A random id for this browser's user (not a secret).
    pub fn random_id() -> String {
        (0..4)
            .map(|_| format!("{:08x}", (js_sys::Math::random() * 4_294_967_296.0) as u32))
            .collect()
    }

    pub fn now_ms() -> f64 {
        js_sys::Date::now()
    }

    /// A time as the browser's clock shows it: hours and minutes.
    pub fn clock(ms: i64) -> String {
        let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
        format!("{:02}:{:02}", d.get_hours(), d.get_minutes())
    }

    pub fn encode(s: &str) -> String {
        js_sys::encode_uri_component(s).into()
    }

    pub fn set_title(title: &str) {
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            doc.set_title(title);
        }
    }

    pub fn page_hidden() -> bool {
        web_sys::window()
            .and_then(|w| w.document())
            .is_some_and(|d| d.hidden())
    }

    pub fn location_href() -> String {
        web_sys::window()
            .and_then(|w| w.location().href().ok())
            .unwrap_or_default()
    }

    pub fn reload() {
        if let Some(w) = web_sys::window() {
            let _ = w.location().reload();
        }
    }

    /// Opens another page of Huddle as a fresh page load.
    pub fn go(url: &str) {
        if let Some(w) = web_sys::window() {
            let _ = w.location().set_href(url);
        }
    }

    /// Reads the images a paste or a drop carries, calling `on_image` with each (its type and
    /// its bytes in base64) or with why it was refused; true when there were any.
    pub fn read_images(ev: &leptos::ev::Event, on_image: super::OnImage) -> bool {
        let files = if let Some(c) = ev.dyn_ref::<web_sys::ClipboardEvent>() {
            c.clipboard_data().and_then(|d| d.files())
        } else if let Some(d) = ev.dyn_ref::<web_sys::DragEvent>() {
            d.data_transfer().and_then(|d| d.files())
        } else {
            None
        };
        let Some(files) = files else { return false };
        let mut any = false;
        for i in 0..files.length() {
            let Some(file) = files.get(i) else { continue };
            let mime = file.type_();
            if !mime.starts_with("image/") {
                continue;
            }
            any = true;
            if file.size() > crate::model::MAX_IMAGE_BYTES as f64 {
                on_image(Err(format!(
                    "{} is larger than {} KB.",
                    file.name(),
                    crate::model::MAX_IMAGE_BYTES / 1000
                )));
                continue;
            }
            let Ok(reader) = web_sys::FileReader::new() else {
                continue;
            };
            let done = reader.clone();
            let on_image = on_image.clone();
            let onload = Closure::once(move || {
                let url = done.result().ok().and_then(|v| v.as_string());
                if let Some((_, data)) = url.as_deref().and_then(|u| u.split_once(',')) {
                    on_image(Ok((mime, data.to_string())));
                }
            });
            reader.set_onload(Some(onload.as_ref().unchecked_ref()));
            onload.forget();
            let _ = reader.read_as_data_url(&file);
        }
        any
    }

    pub fn copy_to_clipboard(text: &str) {
        if let Some(w) = web_sys::window() {
            let _ = w.navigator().clipboard().write_text(text);
        }
    }

    // The listeners below belong to the component that adds them: they go with it (on_cleanup),
    // so a room left for another page (client-side navigation) never hears that page's events
    // with signals that are gone.

    /// Calls `f` whenever the page is shown or hidden (`visibilitychange` bubbles to the window).
    pub fn on_visibility_change(f: impl Fn(bool) + 'static) {
        let handle =
            leptos::prelude::window_event_listener_untyped("visibilitychange", move |_| {
                f(page_hidden())
            });
        leptos::prelude::on_cleanup(move || handle.remove());
    }

    /// Runs `f` every `ms` milliseconds.
    pub fn every(ms: u64, f: impl Fn() + 'static) {
        if let Ok(handle) =
            leptos::prelude::set_interval_with_handle(f, std::time::Duration::from_millis(ms))
        {
            leptos::prelude::on_cleanup(move || handle.clear());
        }
    }

    /// Calls `f` when the page is scrolled to near its top.
    pub fn on_scroll_near_top(f: impl Fn() + 'static) {
        let handle = leptos::prelude::window_event_listener_untyped("scroll", move |_| {
            if web_sys::window()
                .and_then(|w| w.scroll_y().ok())
                .unwrap_or(1e9)
                < 200.0
            {
                f();
            }
        });
        leptos::prelude::on_cleanup(move || handle.remove());
    }

    /// The document's scroll height.
    pub fn scroll_height() -> f64 {
        web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.document_element())
            .map_or(0.0, |e| e.scroll_height() as f64)
    }

    /// Scrolls by `dy` (keeps what was on screen in place when rows are added above it).
    pub fn scroll_by(dy: f64) {
        if let Some(w) = web_sys::window() {
            w.scroll_by_with_x_and_y(0.0, dy);
        }
    }

    /// Scrolls to the bottom: a room opens on its latest rows.
    pub fn scroll_to_bottom() {
        if let Some(w) = web_sys::window() {
            w.scroll_to_with_x_and_y(0.0, scroll_height());
        }
    }

    /// The row a link's `#seq-<n>` names: that row, or the last one before it (an ended turn
    /// ends the row before it). False when the address names none.
    pub fn reveal_linked_row() -> bool {
        let Some(n) = web_sys::window()
            .and_then(|w| w.location().hash().ok())
            .and_then(|h| h.strip_prefix("#seq-").and_then(|n| n.parse::<i64>().ok()))
        else {
            return false;
        };
        let Some(rows) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.query_selector_all(".timeline .row[id^='seq-']").ok())
        else {
            return false;
        };
        let mut best = None;
        for i in 0..rows.length() {
            let Some(el) = rows
                .item(i)
                .and_then(|n| n.dyn_into::<web_sys::Element>().ok())
            else {
                continue;
            };
            let seq = el.id()[4..].parse::<i64>().unwrap_or(i64::MAX);
            if seq <= n {
                best = Some(el);
            }
        }
        let Some(el) = best else { return false };
        el.scroll_into_view_with_bool(true);
        let _ = el.class_list().add_1("linked");
        true
    }

    /// Scrolls the element with this id into view, when it is not (the palette's chosen command).
    pub fn reveal(id: &str) {
        if let Some(el) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(id))
        {
            el.scroll_into_view_with_bool(false);
        }
    }

    /// Keeps the page scrolled to the bottom when it was already near it.
    pub fn follow_bottom() {
        let Some(w) = web_sys::window() else { return };
        let Some(doc) = w.document().and_then(|d| d.document_element()) else {
            return;
        };
        let inner = w
            .inner_height()
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let scrolled = w.scroll_y().unwrap_or(0.0) + inner;
        if doc.scroll_height() as f64 - scrolled < 240.0 {
            w.scroll_to_with_x_and_y(0.0, doc.scroll_height() as f64);
        }
    }

    /// Callbacks of a room stream.
    pub struct RoomCallbacks {
        /// A room-log entry, as its JSON text.
        pub on_entry: Box<dyn Fn(String)>,
        /// Someone is typing (a Member as JSON).
        pub on_typing: Box<dyn Fn(String)>,
        /// Who is in the room now (a list of Members as JSON).
        pub on_online: Box<dyn Fn(String)>,
        /// A thread of the workspace changed (a ThreadPulse as JSON).
        pub on_thread: Box<dyn Fn(String)>,
        /// The server's log does not have what the page holds: it sends the whole log again.
        pub on_reset: Box<dyn Fn()>,
        /// Connected or not.
        pub on_status: Box<dyn Fn(bool)>,
        /// The newest seq the page holds, to resume from after a reconnect.
        pub last_seq: Box<dyn Fn() -> i64>,
    }

    /// A JS callback kept alive as long as its EventSource.
    type Listener = Closure<dyn Fn(MessageEvent)>;

    struct Inner {
        base_url: String,
        callbacks: RoomCallbacks,
        current: RefCell<Option<EventSource>>,
        closed: Cell<bool>,
        listeners: RefCell<Vec<Listener>>,
    }

    /// The room's SSE stream. The browser resumes a dropped stream with Last-Event-ID by itself;
    /// when it gives up (the server answered with an error), this reopens it from the newest seq.
    #[derive(Clone)]
    pub struct RoomStream(Rc<Inner>);

    impl RoomStream {
        pub fn open(base_url: String, callbacks: RoomCallbacks) -> Self {
            let stream = RoomStream(Rc::new(Inner {
                base_url,
                callbacks,
                current: RefCell::new(None),
                closed: Cell::new(false),
                listeners: RefCell::new(Vec::new()),
            }));
            stream.connect();
            stream.follow_network();
            stream
        }

        /// When the browser says it is offline, the stream is dropped at once (rather than left to
        /// time out) and reopened from the newest seq when the network is back.
        fn follow_network(&self) {
            let Some(w) = web_sys::window() else { return };
            let weak = Rc::downgrade(&self.0);
            let offline = Closure::<dyn Fn()>::new(move || {
                let Some(inner) = weak.upgrade() else { return };
                if let Some(es) = inner.current.borrow_mut().take() {
                    es.close();
                }
                (inner.callbacks.on_status)(false);
            });
            let weak = Rc::downgrade(&self.0);
            let online = Closure::<dyn Fn()>::new(move || {
                if let Some(inner) = weak.upgrade() {
                    RoomStream(inner).connect();
                }
            });
            let _ = w.add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
            let _ = w.add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
            offline.forget();
            online.forget();
        }

        fn connect(&self) {
            let inner = &self.0;
            if inner.closed.get() {
                return;
            }
            let sep = if inner.base_url.contains('?') {
                '&'
            } else {
                '?'
            };
            let url = format!(
                "{}{sep}after={}",
                inner.base_url,
                (inner.callbacks.last_seq)()
            );
            let Ok(es) = EventSource::new(&url) else {
                return;
            };
            let mut listeners = Vec::new();
            for kind in ROOM_EVENT_KINDS {
                let me = Rc::downgrade(&self.0);
                let cb = Closure::<dyn Fn(MessageEvent)>::new(move |ev: MessageEvent| {
                    if let (Some(inner), Some(data)) = (me.upgrade(), ev.data().as_string()) {
                        (inner.callbacks.on_entry)(data);
                    }
                });
                let _ = es.add_event_listener_with_callback(kind, cb.as_ref().unchecked_ref());
                listeners.push(cb);
            }
            let me = Rc::downgrade(&self.0);
            let typing = Closure::<dyn Fn(MessageEvent)>::new(move |ev: MessageEvent| {
                if let (Some(inner), Some(data)) = (me.upgrade(), ev.data().as_string()) {
                    (inner.callbacks.on_typing)(data);
                }
            });
            let _ = es.add_event_listener_with_callback("typing", typing.as_ref().unchecked_ref());
            listeners.push(typing);
            let me = Rc::downgrade(&self.0);
            let online = Closure::<dyn Fn(MessageEvent)>::new(move |ev: MessageEvent| {
                if let (Some(inner), Some(data)) = (me.upgrade(), ev.data().as_string()) {
                    (inner.callbacks.on_online)(data);
                }
            });
            let _ = es.add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
            listeners.push(online);
            let me = Rc::downgrade(&self.0);
            let thread = Closure::<dyn Fn(MessageEvent)>::new(move |ev: MessageEvent| {
                if let (Some(inner), Some(data)) = (me.upgrade(), ev.data().as_string()) {
                    (inner.callbacks.on_thread)(data);
                }
            });
            let _ = es.add_event_listener_with_callback("thread", thread.as_ref().unchecked_ref());
            listeners.push(thread);
            let me = Rc::downgrade(&self.0);
            let reset = Closure::<dyn Fn(MessageEvent)>::new(move |_| {
                if let Some(inner) = me.upgrade() {
                    (inner.callbacks.on_reset)();
                }
            });
            let _ = es.add_event_listener_with_callback("reset", reset.as_ref().unchecked_ref());
            listeners.push(reset);
            // What this person may do changed (a new role, or removed): the page reloads to show it.
            let access = Closure::<dyn Fn(MessageEvent)>::new(move |_| reload());
            let _ = es.add_event_listener_with_callback("access", access.as_ref().unchecked_ref());
            listeners.push(access);
            let me = Rc::downgrade(&self.0);
            let open = Closure::<dyn Fn(MessageEvent)>::new(move |_| {
                if let Some(inner) = me.upgrade() {
                    (inner.callbacks.on_status)(true);
                }
            });
            es.set_onopen(Some(open.as_ref().unchecked_ref()));
            listeners.push(open);
            let weak = Rc::downgrade(&self.0);
            let error = Closure::<dyn Fn(MessageEvent)>::new(move |_| {
                let Some(inner) = weak.upgrade() else { return };
                (inner.callbacks.on_status)(false);
                let gave_up = inner
                    .current
                    .borrow()
                    .as_ref()
                    .is_some_and(|es| es.ready_state() == EventSource::CLOSED);
                if gave_up && !inner.closed.get() {
                    let again = RoomStream(inner.clone());
                    let retry = Closure::once_into_js(move || again.connect());
                    if let Some(w) = web_sys::window() {
                        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(
                            retry.unchecked_ref(),
                            2000,
                        );
                    }
                }
            });
            es.set_onerror(Some(error.as_ref().unchecked_ref()));
            listeners.push(error);
            if let Some(old) = inner.current.replace(Some(es)) {
                old.close();
            }
            *inner.listeners.borrow_mut() = listeners;
        }
    }

    /// The last handle gone (the room left the page): the stream ends with it.
    impl Drop for Inner {
        fn drop(&mut self) {
            self.closed.set(true);
            if let Some(es) = self.current.get_mut().take() {
                es.close();
            }
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod imp {
    pub fn local_get(_key: &str) -> Option<String> {
        None
    }
    pub fn local_set(_key: &str, _value: &str) {}
    pub fn random_id() -> String {
        String::new()
    }
    pub fn now_ms() -> f64 {
        0.0
    }
    /// On the server there is no local clock to match: UTC until the page takes over.
    pub fn clock(ms: i64) -> String {
        let mins = ms.div_euclid(60_000);
        format!(
            "{:02}:{:02}",
            mins.div_euclid(60).rem_euclid(24),
            mins.rem_euclid(60)
        )
    }
    pub fn encode(s: &str) -> String {
        s.to_string()
    }
    pub fn set_title(_title: &str) {}
    pub fn page_hidden() -> bool {
        false
    }
    pub fn location_href() -> String {
        String::new()
    }
    pub fn copy_to_clipboard(_text: &str) {}
    pub fn read_images(_ev: &leptos::ev::Event, _on_image: super::OnImage) -> bool {
        false
    }
    pub fn reload() {}
    pub fn go(_url: &str) {}
    pub fn on_visibility_change(_f: impl Fn(bool) + 'static) {}
    pub fn every(_ms: u64, _f: impl Fn() + 'static) {}
    pub fn follow_bottom() {}
    pub fn reveal(_id: &str) {}
    pub fn reveal_linked_row() -> bool {
        false
    }
    pub fn on_scroll_near_top(_f: impl Fn() + 'static) {}
    pub fn scroll_height() -> f64 {
        0.0
    }
    pub fn scroll_by(_dy: f64) {}
    pub fn scroll_to_bottom() {}

    pub struct RoomCallbacks {
        pub on_entry: Box<dyn Fn(String)>,
        pub on_typing: Box<dyn Fn(String)>,
        pub on_online: Box<dyn Fn(String)>,
        pub on_thread: Box<dyn Fn(String)>,
        pub on_reset: Box<dyn Fn()>,
        pub on_status: Box<dyn Fn(bool)>,
        pub last_seq: Box<dyn Fn() -> i64>,
    }

    #[derive(Clone)]
    pub struct RoomStream;

    impl RoomStream {
        pub fn open(_base_url: String, _callbacks: RoomCallbacks) -> Self {
            RoomStream
        }
    }
}
