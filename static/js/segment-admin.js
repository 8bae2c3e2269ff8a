// The segment admin's rule editor: a live count of the contacts the JSON rules match.
// Posts {"tenant", "segment", "rules"} to the admin-only preview view (segments/admin.py),
// debounced, and shows the count or the validator's errors with their paths.
(function () {
  "use strict";

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function init(editor) {
    var output = document.getElementById(editor.id + "_preview");
    var tenantSelect = document.getElementById("id_tenant");
    var timer = null;
    var latest = 0;

    function tenantId() {
      var value = editor.dataset.tenant || (tenantSelect && tenantSelect.value);
      return value ? Number(value) : null;
    }

    function show(text, isError) {
      output.textContent = text;
      output.className = isError ? "errornote" : "help";
    }

    function showErrors(errors) {
      output.textContent = "";
      output.className = "errornote";
      var list = document.createElement("ul");
      errors.forEach(function (error) {
        var item = document.createElement("li");
        item.textContent = (error.path || "rules") + ": " + error.message;
        list.appendChild(item);
      });
      output.appendChild(list);
    }

    function update() {
      if (editor.disabled) {
        show("A static segment has no rules: its members are hand-picked.", false);
        return;
      }
      var tenant = tenantId();
      if (!tenant) {
        show("Choose a tenant to count its contacts.", false);
        return;
      }
      var rules;
      try {
        rules = JSON.parse(editor.value || "null");
      } catch (error) {
        show("Not valid JSON yet: " + error.message, true);
        return;
      }
      var request = ++latest;
      show("Counting…", false);
      fetch(editor.dataset.previewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({
          tenant: tenant,
          segment: editor.dataset.segment ? Number(editor.dataset.segment) : null,
          rules: rules,
        }),
      })
        .then(function (response) {
          return response.json().then(function (body) {
            return { ok: response.ok, body: body };
          });
        })
        .then(function (result) {
          if (request !== latest) return; // a newer edit is on its way
          var body = result.body;
          if (!result.ok) show(body.error || "Could not count.", true);
          else if (body.errors && body.errors.length) showErrors(body.errors);
          else if (body.timed_out) show("The count took too long and was cancelled.", true);
          else show(body.count.toLocaleString() + " contacts match now (" + Math.round(body.elapsed_ms) + " ms).", false);
        })
        .catch(function () {
          if (request === latest) show("Could not count: the server did not answer.", true);
        });
    }

    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(update, 400);
    }

    editor.addEventListener("input", schedule);
    if (tenantSelect && !editor.dataset.tenant) tenantSelect.addEventListener("change", schedule);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea[data-segment-rules]").forEach(init);
  });
})();
