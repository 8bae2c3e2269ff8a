// Charts from data the server renders with json_script (no inline script: the CSP forbids it).
//   {{ chart|json_script:"visits-chart" }}
//   <canvas data-chart="visits-chart" aria-label="Visits per day" role="img"></canvas>
// The JSON is Chart.js's own configuration: {"type": "line", "data": {...}, "options": {...}}.
// Each canvas gets data-rendered="true" once drawn (the browser tests look for it), and is drawn
// again after an htmx swap brings new ones.
(function () {
  const palette = ["#1f6feb", "#d97706", "#16a34a", "#db2777", "#7c3aed", "#0891b2", "#dc2626", "#65a30d"];

  function draw(root) {
    if (typeof Chart === "undefined") {
      return;
    }
    root.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
      if (canvas.dataset.rendered === "true") {
        return;
      }
      const source = document.getElementById(canvas.dataset.chart);
      if (!source) {
        return;
      }
      const config = JSON.parse(source.textContent);
      (config.data.datasets || []).forEach((dataset, index) => {
        const colour = palette[index % palette.length];
        dataset.borderColor = dataset.borderColor || colour;
        dataset.backgroundColor = dataset.backgroundColor || (config.type === "line" ? colour + "33" : colour);
      });
      config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
      new Chart(canvas, config);
      canvas.dataset.rendered = "true";
    });
  }

  document.addEventListener("DOMContentLoaded", () => draw(document));
  document.addEventListener("htmx:afterSwap", (event) => draw(event.target));
})();
