//! The browser's side of "needs you": the person's inbox stream, browser notifications, the
//! service worker and its push subscription, the tab's favicon badge. No-ops on the server.

pub use imp::*;

/// A push subscription as the server takes it: endpoint, p256dh, auth (base64url).
pub type Subscription = (String, String, String);

#[cfg(feature = "hydrate")]
mod imp {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::JsFuture;
    use web_sys::{EventSource, MessageEvent, Notification, NotificationOptions};

    /// The person's inbox stream; closed when dropped.
    pub struct InboxStream {
        es: EventSource,
        _on: Closure<dyn Fn(MessageEvent)>,
    }

    impl Drop for InboxStream {
        fn drop(&mut self) {
            self.es.close();
        }
    }

    /// Calls `on_change` with the workspace id of each change (empty: maybe any). The browser
    /// reconnects by itself; the first event of each connection is an empty one (fetch again).
    pub fn open_inbox_stream(on_change: impl Fn(String) + 'static) -> Option<InboxStream> {
        let es = EventSource::new("/api/inbox/events").ok()?;
        let on = Closure::<dyn Fn(MessageEvent)>::new(move |ev: MessageEvent| {
            let data = ev.data().as_string().unwrap_or_default();
            let ws = serde_json::from_str::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v["workspaceId"].as_str().map(str::to_string))
                .unwrap_or_default();
            on_change(ws);
        });
        es.add_event_listener_with_callback("inbox", on.as_ref().unchecked_ref())
            .ok()?;
        Some(InboxStream { es, _on: on })
    }

    /// `granted`, `denied`, `default`, or `unsupported`.
    pub fn permission() -> String {
        let supported = web_sys::window()
            .is_some_and(|w| js_sys::Reflect::has(&w, &"Notification".into()).unwrap_or(false));
        if !supported {
            return "unsupported".into();
        }
        match Notification::permission() {
            web_sys::NotificationPermission::Granted => "granted",
            web_sys::NotificationPermission::Denied => "denied",
            _ => "default",
        }
        .into()
    }

    /// Asks for the permission (only ever from a click), then calls `done` with the answer.
    pub fn request_permission(done: impl FnOnce(String) + 'static) {
        let Ok(promise) = Notification::request_permission() else {
            done(permission());
            return;
        };
        wasm_bindgen_futures::spawn_local(async move {
            let _ = JsFuture::from(promise).await;
            done(permission());
        });
    }

    /// Whether the person is looking at this page now.
    pub fn in_front() -> bool {
        web_sys::window()
            .and_then(|w| w.document())
            .is_some_and(|d| !d.hidden() && d.has_focus().unwrap_or(false))
    }

    /// Shows a notification; clicking it focuses the tab and opens `url`. One per `tag`: a newer
    /// one replaces it.
    pub fn show(title: &str, body: &str, tag: &str, url: &str) {
        let options = NotificationOptions::new();
        options.set_body(body);
        options.set_tag(tag);
        options.set_icon("/favicon.svg");
        let Ok(n) = Notification::new_with_options(title, &options) else {
            return;
        };
        let url = url.to_string();
        let onclick = Closure::<dyn Fn()>::new(move || {
            if let Some(w) = web_sys::window() {
                let _ = w.focus();
                let _ = w.location().set_href(&url);
            }
        });
        n.set_onclick(Some(onclick.as_ref().unchecked_ref()));
        onclick.forget();
    }

    /// Registers the service worker and subscribes to pushes with the instance's VAPID key.
    pub fn subscribe_push(
        vapid_key: String,
        done: impl FnOnce(Result<super::Subscription, String>) + 'static,
    ) {
        wasm_bindgen_futures::spawn_local(async move {
            done(subscribe(&vapid_key).await.map_err(|e| {
                e.as_string()
                    .or_else(|| {
                        js_sys::Reflect::get(&e, &"message".into())
                            .ok()
                            .and_then(|m| m.as_string())
                    })
                    .unwrap_or_else(|| "push is not available in this browser".into())
            }))
        });
    }

    async fn subscribe(vapid_key: &str) -> Result<super::Subscription, JsValue> {
        let window = web_sys::window().ok_or("no window")?;
        let container = window.navigator().service_worker();
        JsFuture::from(container.register("/sw.js")).await?;
        // Subscribing needs the worker active: `ready` waits for it.
        let registration: web_sys::ServiceWorkerRegistration =
            JsFuture::from(container.ready()?).await?.dyn_into()?;
        let manager = registration.push_manager()?;
        let key = base64_url_bytes(vapid_key).ok_or("a bad VAPID key")?;
        let options = web_sys::PushSubscriptionOptionsInit::new();
        options.set_user_visible_only(true);
        options.set_application_server_key(&js_sys::Uint8Array::from(key.as_slice()));
        let sub: web_sys::PushSubscription =
            JsFuture::from(manager.subscribe_with_options(&options)?)
                .await?
                .dyn_into()?;
        // JSON.stringify calls the subscription's toJSON: endpoint and base64url keys.
        let text: String = js_sys::JSON::stringify(&sub)?.into();
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let get = |p: &str| v.pointer(p).and_then(|s| s.as_str()).map(str::to_string);
        match (get("/endpoint"), get("/keys/p256dh"), get("/keys/auth")) {
            (Some(e), Some(p), Some(a)) => Ok((e, p, a)),
            _ => Err("the browser gave an incomplete subscription".into()),
        }
    }

    fn base64_url_bytes(s: &str) -> Option<Vec<u8>> {
        let std = s.replace('-', "+").replace('_', "/");
        let padded = format!("{std}{}", "=".repeat((4 - std.len() % 4) % 4));
        let bin = web_sys::window()?.atob(&padded).ok()?;
        Some(bin.chars().map(|c| c as u8).collect())
    }

    /// Puts a count on the tab's icon (none at 0).
    pub fn favicon_badge(count: usize) {
        let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
            return;
        };
        let href = if count == 0 {
            "/favicon.svg".to_string()
        } else {
            let label = if count > 9 {
                "9+".into()
            } else {
                count.to_string()
            };
            let svg = format!(
                "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><circle cx='16' cy='16' r='16' fill='%23d33'/><text x='16' y='22' font-size='18' text-anchor='middle' fill='white' font-family='sans-serif'>{label}</text></svg>"
            );
            format!("data:image/svg+xml,{svg}")
        };
        let link = match doc.query_selector("link[rel='icon']").ok().flatten() {
            Some(l) => l,
            None => {
                let Ok(l) = doc.create_element("link") else {
                    return;
                };
                let _ = l.set_attribute("rel", "icon");
                if let Some(head) = doc.head() {
                    let _ = head.append_child(&l);
                }
                l
            }
        };
        let _ = link.set_attribute("href", &href);
        let _ = link.set_attribute("data-count", &count.to_string());
    }

    /// Runs `f` once after `ms` milliseconds.
    pub fn after(ms: i32, f: impl FnOnce() + 'static) {
        let Some(w) = web_sys::window() else { return };
        let cb = Closure::once_into_js(f);
        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), ms);
    }
}

#[cfg(not(feature = "hydrate"))]
mod imp {
    pub struct InboxStream;

    pub fn open_inbox_stream(_on_change: impl Fn(String) + 'static) -> Option<InboxStream> {
        None
    }
    pub fn permission() -> String {
        "unsupported".into()
    }
    pub fn request_permission(_done: impl FnOnce(String) + 'static) {}
    pub fn in_front() -> bool {
        true
    }
    pub fn show(_title: &str, _body: &str, _tag: &str, _url: &str) {}
    pub fn subscribe_push(
        _vapid_key: String,
        _done: impl FnOnce(Result<super::Subscription, String>) + 'static,
    ) {
    }
    pub fn favicon_badge(_count: usize) {}
    pub fn after(_ms: i32, _f: impl FnOnce() + 'static) {}
}
