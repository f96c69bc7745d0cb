// pyloto operations console: refreshes the live machine's counts and the charts in place.
(function () {
  "use strict";
  var machine = document.getElementById("machine");
  if (!machine) { return; }
  var stamp = document.getElementById("updated-at");
  var charts = document.getElementById("charts");
  var every = 2000;

  function apply(data) {
    Object.keys(data.counts).forEach(function (state) {
      var text = document.getElementById("count-" + state);
      if (text) { text.textContent = String(data.counts[state]); }
    });
    // An arrow not taken in the last hour is dimmed and shows no number.
    machine.querySelectorAll("g.edge").forEach(function (edge) {
      var n = data.taken[edge.getAttribute("data-transition")] || 0;
      edge.classList.toggle("idle", n === 0);
      var text = edge.querySelector("text.edge-count");
      if (text) { text.textContent = n ? String(n) : ""; }
      var tip = edge.querySelector("title");
      if (tip) { tip.textContent = tip.textContent.replace(/, \d+ in the last hour$/, ", " + n + " in the last hour"); }
    });
    // The arrows into a funnel (failed, merged, ...) are counted together beside its box.
    machine.querySelectorAll("text.into-count").forEach(function (text) {
      var state = text.getAttribute("data-state");
      var n = 0;
      Object.keys(data.taken).forEach(function (key) {
        if (key.slice(key.indexOf(">") + 1) === state) { n += data.taken[key]; }
      });
      text.textContent = n ? "into " + state + ": " + n : "";
    });
    if (charts) { charts.innerHTML = data.charts; }
    stamp.textContent = data.updated_at;
  }

  function tick() {
    fetch("/ops/api/summary", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location.assign("/ops/login"); return null; }
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { stamp.textContent = "refresh failed; retrying"; })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
