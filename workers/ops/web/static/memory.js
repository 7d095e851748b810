// The memory page: one uPlot chart per worker node (parent + each child), the listener and
// Redis, redrawn from /api/memory every WATCHKEEPER_WEB_REFRESH seconds. Recycles and hard
// stops are drawn as red vertical marks. window.wkCharts holds the charts (tests read it).
(function () {
  "use strict";
  var root = document.getElementById("charts");
  var refresh = parseFloat(root.dataset.refresh || "3") * 1000;
  var palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  window.wkCharts = {};

  function markPlugin(marks) {
    return {
      hooks: {
        draw: function (u) {
          var ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#d00";
          ctx.fillStyle = "#d00";
          ctx.font = "11px sans-serif";
          (u.wkMarks || []).forEach(function (m) {
            var x = Math.round(u.valToPos(m.t, "x", true));
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.fillText(m.label, x + 3, u.bbox.top + 12);
          });
          ctx.restore();
        }
      }
    };
  }

  function draw(id, title, chart) {
    var labels = Object.keys(chart.series);
    var data = [chart.t].concat(labels.map(function (l) { return chart.series[l]; }));
    var key = labels.join("|");
    var existing = window.wkCharts[id];
    if (existing && existing.wkKey === key) {
      existing.wkMarks = chart.marks || [];
      existing.setData(data);
      existing.wkData = chart;
      return;
    }
    var box = document.getElementById("chart-" + id);
    if (!box) {
      box = document.createElement("section");
      box.id = "chart-" + id;
      box.className = "chart";
      box.dataset.chart = id;
      root.appendChild(box);
    }
    if (existing) { existing.destroy(); }
    box.innerHTML = "";
    var h = document.createElement("h2");
    h.textContent = title;
    box.appendChild(h);
    var opts = {
      width: Math.min(root.clientWidth || 900, 1100),
      height: 240,
      series: [{}].concat(labels.map(function (l, i) {
        // Processes sample at their own moments: a series is null at the others' times, so
        // lines span those gaps and every point is drawn (a new process has only a few).
        return { label: l, stroke: palette[i % palette.length], width: 1.5, spanGaps: true,
          points: { show: true, size: 5 },
          value: function (u, v) { return v == null ? "-" : v.toFixed(1) + " MB"; } };
      })),
      axes: [{}, { label: "MB", size: 60 }],
      plugins: [markPlugin()]
    };
    var u = new uPlot(opts, data, box);
    u.wkKey = key;
    u.wkMarks = chart.marks || [];
    u.wkData = chart;
    window.wkCharts[id] = u;
  }

  function load() {
    fetch("/api/memory", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        Object.keys(d.nodes).forEach(function (node) {
          draw("node-" + node.replace(/[^A-Za-z0-9_-]/g, "_"), "worker " + node, d.nodes[node]);
        });
        if (d.listener) { draw("listener", "TCP listener", d.listener); }
        if (d.redis) { draw("redis", "Redis used_memory", d.redis); }
        if (!Object.keys(d.nodes).length && !d.listener) {
          root.textContent = "No memory points yet: workers publish one every " + d.interval_s + " s.";
        }
        root.dataset.loaded = String(Date.now());
      })
      .catch(function () { /* the next tick tries again */ });
  }

  load();
  setInterval(load, refresh);
})();
