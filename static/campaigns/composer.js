// The campaign composer's small behaviours (no inline script: the Content-Security-Policy forbids it).
// Everything works without it; this only hides the fields that do not apply and fills suggestions.
(function () {
  "use strict";

  function checkedValue(name) {
    const checked = document.querySelector(`input[name="${name}"]:checked`);
    return checked ? checked.value : "";
  }

  // --- variant: the target's own field (segment or stage), and the suggested call to action ---
  const ctaMap = (() => {
    const node = document.getElementById("cta-by-stage");
    return node ? JSON.parse(node.textContent) : null;
  })();

  function suggestion() {
    if (!ctaMap) return "";
    const stage = document.querySelector("[data-cta-stage]");
    const key = checkedValue("target") === "stage" && stage ? stage.value : "";
    return ctaMap[key] || ctaMap[""];
  }

  function syncTarget() {
    const target = checkedValue("target");
    document.querySelectorAll("[data-target-field]").forEach((box) => {
      box.hidden = box.dataset.targetField !== target;
    });
    const label = document.querySelector("[data-suggested-cta]");
    if (label) label.textContent = suggestion();
  }

  // --- schedule: the detail of the chosen option only ---
  function syncSchedule() {
    const schedule = checkedValue("schedule");
    document.querySelectorAll("[data-schedule-field]").forEach((box) => {
      box.hidden = box.dataset.scheduleField !== schedule;
    });
  }

  document.addEventListener("change", (event) => {
    const name = event.target.name;
    if (name === "target" || name === "target_stage") syncTarget();
    if (name === "schedule") syncSchedule();
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-suggest-cta]");
    if (!button) return;
    const input = document.querySelector("[data-cta-label]");
    if (!input) return;
    input.value = suggestion();
    // Let the live preview know, as if the person had typed it.
    input.dispatchEvent(new Event("input", { bubbles: true }));
  });

  // --- the email preview: its HTML loads into a sandboxed frame of its own (emails need inline styles,
  // which this page's policy forbids), by posting the form as typed to the frame.
  function loadEmailFrame() {
    const frame = document.querySelector("iframe[data-frame-url]");
    const form = document.getElementById("variant-form");
    if (!frame || !form) return;
    const action = form.getAttribute("action");
    form.setAttribute("action", frame.dataset.frameUrl);
    form.setAttribute("target", frame.name);
    form.submit(); // submit() fires no submit event: neither htmx nor the confirmations see it
    if (action === null) form.removeAttribute("action");
    else form.setAttribute("action", action);
    form.removeAttribute("target");
  }

  document.addEventListener("htmx:afterSettle", (event) => {
    if (event.detail.target && event.detail.target.id === "variant-preview") loadEmailFrame();
  });

  function init() {
    if (document.querySelector('input[name="target"]')) syncTarget();
    if (document.querySelector('input[name="schedule"]')) syncSchedule();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
