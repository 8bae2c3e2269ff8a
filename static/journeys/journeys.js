// The journey pages' small behaviours (no inline script: the Content-Security-Policy forbids it).
// Everything works without it; it only hides the fields that do not apply and tidies the builder.
(function () {
  "use strict";

  function checkedValue(name) {
    const checked = document.querySelector(`input[name="${name}"]:checked`);
    return checked ? checked.value : "";
  }

  // --- settings: the chosen trigger's own fields, the cooldown only for "again after a cooldown" ---
  function syncSettings() {
    const trigger = checkedValue("trigger");
    document.querySelectorAll("[data-trigger-field]").forEach((box) => {
      box.hidden = box.dataset.triggerField !== trigger;
    });
    const entry = checkedValue("entry");
    document.querySelectorAll("[data-entry-field]").forEach((box) => {
      box.hidden = box.dataset.entryField !== entry;
    });
  }

  // --- a send step's variants: the target's own field (segment or stage) ---
  function syncVariant(fieldset) {
    const select = fieldset.querySelector("select[data-variant-target]");
    if (!select) return;
    fieldset.querySelectorAll("[data-variant-field]").forEach((box) => {
      box.hidden = box.dataset.variantField !== select.value;
    });
  }

  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name === "trigger" || target.name === "entry") syncSettings();
    if (target.matches("select[data-variant-target]")) syncVariant(target.closest("fieldset"));
  });

  // --- the builder: one "add a step" menu open at a time, its choice focused ---
  document.addEventListener("toggle", (event) => {
    const details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.classList.contains("add-step") || !details.open) return;
    document.querySelectorAll("details.add-step[open]").forEach((other) => {
      if (other !== details) other.open = false;
    });
    const select = details.querySelector("select");
    if (select) select.focus();
  }, true);

  function init() {
    if (document.querySelector('input[name="trigger"]')) syncSettings();
    document.querySelectorAll("fieldset.variant-fields").forEach(syncVariant);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
