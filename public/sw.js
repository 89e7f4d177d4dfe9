// Huddle's service worker: shows the pushes Huddle sends when no Huddle tab is open (the payload
// is decrypted by the browser; it is JSON: title, body, url, tag), and opens the row on a click.
self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (_) {
    data = { title: "Huddle", body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(
    self.registration.showNotification(data.title || "Huddle", {
      body: data.body || "",
      tag: data.tag || undefined,
      icon: "/favicon.svg",
      data: { url: data.url || "/" },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((tabs) => {
      for (const tab of tabs) {
        if ("focus" in tab && "navigate" in tab) {
          return tab.focus().then(() => tab.navigate(url));
        }
      }
      return self.clients.openWindow(url);
    }),
  );
});
