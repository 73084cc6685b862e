// The messaging-stats charts: Chart.js (from node_modules, served by Django), fed by
// the htmx-polled panel, which carries the recent samples as JSON.
(function () {
  "use strict";
  var charts = {};
  var PRIORITY_COLOURS = { high: "#cd4444", normal: "#007d7e", low: "#8a8a8a" };

  // Counts (messages, queue depth, connections) get whole-number ticks: no "0.5 connections".
  function lineChart(canvas, datasets, counts) {
    var y = { beginAtZero: true };
    if (counts) y.ticks = { precision: 0 };
    return new window.Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: true, aspectRatio: 2, scales: { y: y },
                 plugins: { legend: { display: datasets.length > 1 } } },
    });
  }

  function ensureCharts(root) {
    if (!window.Chart) return false;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var name = canvas.dataset.chart;
      if (charts[name] && charts[name].canvas === canvas) return;
      if (name === "rate") {
        charts.rate = lineChart(canvas, ["high", "normal", "low"].map(function (p) {
          return { label: p, data: [], borderColor: PRIORITY_COLOURS[p], pointRadius: 0 };
        }), true);
      } else if (name === "queues") {
        charts.queues = lineChart(canvas, [
          { label: "queue depth", data: [], borderColor: "#2e1f5e", pointRadius: 0 },
          { label: "pending persistence", data: [], borderColor: "#faa500", pointRadius: 0 },
        ], true);
      } else if (name === "connections") {
        charts.connections = lineChart(canvas, [{ label: "connections", data: [], borderColor: "#007d7e", pointRadius: 0 }], true);
      } else if (name === "memory") {
        charts.memory = lineChart(canvas, [{ label: "memory MB", data: [], borderColor: "#5c5c5c", pointRadius: 0 }]);
      }
    });
    return true;
  }

  function update(samples) {
    var labels = samples.map(function (s) { return s.t; });
    function set(chart, series) {
      if (!chart) return;
      chart.data.labels = labels;
      series.forEach(function (fn, i) { chart.data.datasets[i].data = samples.map(fn); });
      chart.update("none");
    }
    set(charts.rate, ["high", "normal", "low"].map(function (p) { return function (s) { return (s.rate || {})[p] || 0; }; }));
    set(charts.queues, [function (s) { return s.queue_depth; }, function (s) { return s.pending_persistence; }]);
    set(charts.connections, [function (s) { return s.connections; }]);
    set(charts.memory, [function (s) { return s.memory_mb; }]);
    document.querySelectorAll(".ops-stats").forEach(function (el) {
      el.dataset.samples = String(samples.length);
      el.dataset.firstSample = samples.length ? samples[0].t : "";
    });
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var data = document.getElementById("ops-stats-data");
    if (!data || !event.target.closest(".ops-stats")) return;
    var root = event.target.closest(".ops-stats");
    if (!ensureCharts(root)) return;
    update(JSON.parse(data.textContent || "[]"));
  });
})();
