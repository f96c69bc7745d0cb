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
    machine.querySelectorAll("text.edge-count").forEach(function (text) {
      var n = data.taken[text.getAttribute("data-transition")] || 0;
      text.textContent = String(n);
      text.classList.toggle("zero", n === 0);
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
