/* The demo shop's own page script: its consent banner and buttons call the Segmentor snippet. */
(function (window, document) {
  "use strict";

  var status = document.getElementById("demo-status");
  var banner = document.getElementById("consent-banner");

  function show(text) { if (status) status.textContent = text; }

  function update() {
    var s = window.segmentor;
    if (s && s.hasConsent()) {
      show("Consent given. Visitor id: " + s.visitorId());
      if (banner) banner.hidden = true;
    } else {
      show("No consent yet: nothing is sent.");
      if (banner) banner.hidden = false;
    }
  }

  function on(id, handler) {
    var el = document.getElementById(id);
    if (el) el.addEventListener("click", handler);
  }

  on("consent-accept", function () { window.segmentor.consent(true).then(update); update(); });
  on("consent-decline", function () { if (banner) banner.hidden = true; show("You declined: nothing is sent."); });
  on("consent-withdraw", function () { window.segmentor.consent(false).then(update); });

  Array.prototype.forEach.call(document.querySelectorAll("[data-demo-identify]"), function (button) {
    button.addEventListener("click", function () {
      if (!window.segmentor.hasConsent()) { show("Agree first: without consent the snippet sends nothing."); return; }
      window.segmentor.identify({ email: button.getAttribute("data-email"), signature: button.getAttribute("data-signature") })
        .then(function (data) { show(data ? "Signed in as " + button.getAttribute("data-email") : "Sign-in was refused."); });
    });
  });

  Array.prototype.forEach.call(document.querySelectorAll("[data-demo-cart]"), function (button) {
    button.addEventListener("click", function () {
      if (!window.segmentor.hasConsent()) { show("Agree first: without consent the snippet sends nothing."); return; }
      window.segmentor.track("add_to_cart", { product: button.getAttribute("data-demo-cart") })
        .then(function (data) { show(data ? "Sent add_to_cart." : "The event was refused."); });
    });
  });

  document.addEventListener("segmentor:filled", update);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", update); else update();
})(window, document);
