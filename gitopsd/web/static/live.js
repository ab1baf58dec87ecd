// Live updates without a polling loop: the server says "change" over server-sent events (/events), and each
// region marked data-live fetches its page again (htmx, hx-trigger="gitopsd:change"). While the daemon
// restarts, the page says "reconnecting"; once back, it refreshes what it missed.
(function () {
  "use strict";
  var source = null;
  var down = false;

  function show(state) {
    var el = document.getElementById("connection");
    if (!el) return;
    el.setAttribute("data-state", state);
    el.querySelector(".conn-text").textContent = state;
  }

  function refresh() {
    if (!window.htmx) return;
    document.querySelectorAll("[data-live]").forEach(function (el) { window.htmx.trigger(el, "gitopsd:change"); });
  }

  function connect() {
    source = new EventSource("/events");
    source.addEventListener("hello", function () {
      show("live");
      if (down) refresh();
      down = false;
    });
    source.addEventListener("change", refresh);
    source.onerror = function () {
      down = true;
      show("reconnecting");
      if (source.readyState === EventSource.CLOSED) {   // the browser gave up (an error answer): try again later
        setTimeout(connect, 2000);
      }
    };
  }

  // A running deployment's Ansible output: HTML the server escaped, appended as it comes.
  function stream(pre) {
    var out = new EventSource(pre.getAttribute("data-stream"));
    out.addEventListener("output", function (e) {
      var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.insertAdjacentHTML("beforeend", e.data + "\n");
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    out.addEventListener("end", function () { out.close(); pre.setAttribute("data-ended", "true"); refresh(); });
    // Never again from the start (the lines would repeat): after a lost stream, the page's reload shows it all.
    out.onerror = function () { out.close(); pre.insertAdjacentHTML("beforeend", "\n(stream lost: reload the page for the rest)\n"); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    connect();
    var pre = document.querySelector("pre[data-stream]");
    if (pre) stream(pre);
  });
  window.addEventListener("pagehide", function () { if (source) source.close(); });
})();
