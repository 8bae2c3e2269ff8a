/*! Segmentor website snippet: consent-gated events, identify and personalised content slots.
 *
 *   <script src="https://segmentor.example/static/js/segmentor.js" defer
 *           data-segmentor-key="pk_live_…" data-segmentor-endpoint="https://segmentor.example/p/v1/"></script>
 *   segmentor.consent(true)    // when the visitor agreed (your consent banner calls this)
 *
 * Until consent it sends nothing and stores nothing: the page keeps its own content. After consent
 * it keeps a random visitor id in localStorage, sends a page view, and fills every
 * <div data-segmentor-slot="hero"> with the content chosen for the visitor (as text and
 * attributes, never as HTML). consent(false) forgets the id and puts the page's content back.
 * No eval, no inline code: it runs under a strict Content-Security-Policy.
 */
(function (window, document) {
  "use strict";

  var STORAGE_KEY = "segmentor.vid";
  var state = { key: "", endpoint: "", consented: false, visitorId: null, originals: [], debug: false };

  function warn(message, detail) {
    if (state.debug && window.console) window.console.warn("segmentor: " + message, detail || "");
  }

  function storage() {
    try {
      var s = window.localStorage;
      return s;
    } catch (e) {
      return null; // blocked (privacy mode, sandboxed frame): keep the id for this page only
    }
  }

  function randomId() {
    var c = window.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var bytes = new Uint8Array(16);
    c.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function storedId() {
    var s = storage();
    var id = s && s.getItem(STORAGE_KEY);
    return id && /^[A-Za-z0-9_-]{8,64}$/.test(id) ? id : null;
  }

  function url(path) {
    return state.endpoint + path + "?key=" + encodeURIComponent(state.key);
  }

  // A JSON body sent as text/plain is a "simple" cross-origin request: no preflight round trip.
  function post(path, payload) {
    if (!state.consented || !state.key) return Promise.resolve(null);
    payload.visitor_id = state.visitorId;
    return window.fetch(url(path), {
      method: "POST", body: JSON.stringify(payload), credentials: "omit", keepalive: true, mode: "cors"
    }).then(function (response) {
      if (response.status === 204) return {};
      return response.json().then(function (data) {
        if (!response.ok) { warn(path + " answered " + response.status, data); return null; }
        return data;
      });
    }, function (error) { warn(path + " failed", error); return null; });
  }

  function safeUrl(value) {
    if (typeof value !== "string" || !value) return "";
    if (value.charAt(0) === "/" && value.charAt(1) !== "/") return value;
    return /^https?:\/\//i.test(value) ? value : "";
  }

  function slotElements() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-segmentor-slot]"));
  }

  function remember(el) {
    if (el.hasAttribute("data-segmentor-variant")) return;
    state.originals.push({ el: el, nodes: Array.prototype.slice.call(el.childNodes).map(function (n) { return n.cloneNode(true); }) });
  }

  function restoreAll() {
    state.originals.forEach(function (o) {
      while (o.el.firstChild) o.el.removeChild(o.el.firstChild);
      o.nodes.forEach(function (n) { o.el.appendChild(n); });
      o.el.removeAttribute("data-segmentor-variant");
    });
    state.originals = [];
  }

  function part(el, field, tag) {
    var found = el.querySelector('[data-segmentor-field="' + field + '"]');
    if (found) return found;
    var made = document.createElement(tag);
    made.setAttribute("data-segmentor-field", field);
    el.appendChild(made);
    return made;
  }

  function fill(el, content) {
    remember(el);
    // Markup without data-segmentor-field parts is replaced by a plain headline, text, image and link.
    if (!el.querySelector("[data-segmentor-field]")) { while (el.firstChild) el.removeChild(el.firstChild); }
    var slotKey = el.getAttribute("data-segmentor-slot");
    var headline = part(el, "headline", "h2");
    headline.textContent = content.headline || "";
    headline.hidden = !content.headline;
    var body = part(el, "body", "p");
    body.textContent = content.body || "";
    body.hidden = !content.body;
    var image = part(el, "image", "img");
    var src = safeUrl(content.image_url);
    if (src) { image.setAttribute("src", src); image.setAttribute("alt", content.headline || ""); } else { image.removeAttribute("src"); }
    image.hidden = !src;
    var cta = part(el, "cta", "a");
    var href = safeUrl(content.cta_url);
    cta.textContent = content.cta_label || "";
    if (href) cta.setAttribute("href", href); else cta.removeAttribute("href");
    cta.hidden = !(href && content.cta_label);
    var variant = content.variant === null || content.variant === undefined ? "default" : String(content.variant);
    if (!cta.hasAttribute("data-segmentor-bound")) {
      cta.setAttribute("data-segmentor-bound", "1");
      cta.addEventListener("click", function () {
        // keepalive: the request outlives the page the link leaves (a beacon would also send cookies).
        if (state.consented) post("click/", { slot: slotKey, variant: el.getAttribute("data-segmentor-variant") });
      });
    }
    el.setAttribute("data-segmentor-variant", variant);
    el.dispatchEvent(new window.CustomEvent("segmentor:filled", { bubbles: true, detail: { slot: slotKey, variant: variant } }));
  }

  function refresh() {
    var els = slotElements();
    var keys = [];
    els.forEach(function (el) {
      var k = el.getAttribute("data-segmentor-slot");
      if (k && keys.indexOf(k) < 0) keys.push(k);
    });
    if (!keys.length) return Promise.resolve(null);
    return post("decide/", { slots: keys }).then(function (data) {
      if (!data || !data.slots || !state.consented) return data;
      els.forEach(function (el) {
        var content = data.slots[el.getAttribute("data-segmentor-slot")];
        if (content) fill(el, content);
      });
      return data;
    });
  }

  function track(name, properties) {
    return post("events/", { events: [{ event: String(name), properties: properties || {}, idempotency_key: randomId() }] });
  }

  function page() {
    var l = window.location;
    return track("page_view", { url: l.href, path: l.pathname, title: document.title, referrer: document.referrer || "" });
  }

  function start() {
    page();
    return refresh();
  }

  var api = {
    init: function (options) {
      options = options || {};
      state.key = String(options.key || "");
      var endpoint = String(options.endpoint || "/p/v1/");
      state.endpoint = endpoint.charAt(endpoint.length - 1) === "/" ? endpoint : endpoint + "/";
      state.debug = !!options.debug;
      // An id is stored only after consent, so finding one means the visitor agreed on an earlier page.
      var id = options.rememberConsent === false ? null : storedId();
      if (id) { state.visitorId = id; state.consented = true; return start(); }
      return Promise.resolve(null);
    },
    consent: function (granted) {
      var s = storage();
      if (!granted) {
        state.consented = false;
        state.visitorId = null;
        if (s) s.removeItem(STORAGE_KEY);
        restoreAll();
        return Promise.resolve(null);
      }
      if (state.consented) return Promise.resolve(null);
      state.visitorId = storedId() || randomId();
      if (s) { try { s.setItem(STORAGE_KEY, state.visitorId); } catch (e) { warn("could not store the visitor id", e); } }
      state.consented = true;
      return start();
    },
    track: track,
    page: page,
    refresh: refresh,
    identify: function (who) {
      who = who || {};
      var payload = { signature: who.signature || "" };
      if (who.external_id) payload.external_id = String(who.external_id); else payload.email = String(who.email || "");
      return post("identify/", payload).then(function (data) { return data ? refresh().then(function () { return data; }) : null; });
    },
    visitorId: function () { return state.consented ? state.visitorId : null; },
    hasConsent: function () { return state.consented; }
  };
  window.segmentor = api;

  // Configured from the script tag (no inline code needed): data-segmentor-key, data-segmentor-endpoint.
  var tag = document.currentScript;
  if (tag && tag.getAttribute("data-segmentor-key")) {
    var go = function () {
      api.init({ key: tag.getAttribute("data-segmentor-key"), endpoint: tag.getAttribute("data-segmentor-endpoint") || undefined,
                 debug: tag.hasAttribute("data-segmentor-debug") });
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", go); else go();
  }
})(window, document);
