// vaultwatch web UI: keyboard triage and live updates on the alert queue. Plain JS, no build step.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Posts a form-encoded action with the CSRF header; resolves to the parsed JSON reply.
  function post(url, fields) {
    var body = new URLSearchParams(fields);
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), "Accept": "application/json" },
      body: body,
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.detail || ("HTTP " + r.status)); }
        return data;
      });
    });
  }

  function announce(text, isError) {
    var box = document.getElementById("live-status");
    if (!box) { return; }
    box.textContent = text;
    box.className = "flash " + (isError ? "error" : "ok");
  }

  // Sign out answers 204, so post it from script and then show the login page.
  var logout = document.querySelector("form[data-logout]");
  if (logout) {
    logout.addEventListener("submit", function (ev) {
      ev.preventDefault();
      post(logout.getAttribute("action"), {}).then(
        function () { window.location.href = logout.getAttribute("data-logout"); },
        function () { window.location.href = logout.getAttribute("data-logout"); }
      );
    });
  }

  // On an alert page, scroll the timeline to the first entry that made the alert.
  var rowsBox = document.getElementById("timeline-rows");
  var hit = rowsBox && rowsBox.querySelector("tr.in-alert");
  if (hit) { rowsBox.scrollTop = Math.max(0, hit.offsetTop - 60); }

  var body = document.getElementById("queue-body");
  if (!body) { return; }
  var base = body.getAttribute("data-base") || "";

  function rows() { return Array.prototype.slice.call(body.querySelectorAll("tr[data-alert-id]")); }
  function current() { return body.querySelector("tr.selected"); }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.setAttribute("aria-selected", "false"); });
    if (!row) { return; }
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
  }

  function setStatus(row, st) {
    var cell = row.querySelector(".status");
    if (cell) {
      cell.textContent = st.replace("_", " ");
      cell.className = "status status-" + st;
    }
    row.setAttribute("data-status", st);
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var i = all.indexOf(current());
    select(all[Math.max(0, Math.min(all.length - 1, i < 0 ? 0 : i + step))]);
  }

  function triage(row, to) {
    var comment = "";
    if (to === "false_positive") {
      comment = window.prompt("Why is this a false positive?", "");
      if (comment === null) { return; }
    }
    var id = row.getAttribute("data-alert-id");
    post(base + "/alerts/" + encodeURIComponent(id) + "/status", { to: to, comment: comment }).then(
      function (data) {
        setStatus(row, data.status);
        announce("Alert " + id + " is now " + data.status.replace("_", " "), false);
      },
      function (err) { announce("Could not update " + id + ": " + err.message, true); }
    );
  }

  document.addEventListener("keydown", function (ev) {
    var tag = (ev.target && ev.target.tagName) || "";
    if (/^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(tag) || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var row = current();
    if (ev.key === "j") { move(1); }
    else if (ev.key === "k") { move(-1); }
    else if (ev.key === "Enter" && row && tag !== "A") { window.location.href = row.getAttribute("data-href"); }
    else if (ev.key === "a" && row) { triage(row, "acknowledged"); }
    else if (ev.key === "r" && row) { triage(row, "resolved"); }
    else if (ev.key === "f" && row) { triage(row, "false_positive"); }
    else { return; }
    ev.preventDefault();
  });

  body.addEventListener("click", function (ev) {
    var row = ev.target.closest("tr[data-alert-id]");
    if (row && !ev.target.closest("a")) { select(row); }
  });

  // Live updates: every alert event on the stream asks the server for the row as this page's
  // filters would render it (204 when it does not match), so filtering stays on the server.
  var streamUrl = body.getAttribute("data-stream");
  if (!streamUrl || !window.EventSource || body.getAttribute("data-live") !== "1") { return; }
  var dot = document.getElementById("live-dot");
  var source = new EventSource(streamUrl, { withCredentials: true });
  source.onopen = function () { if (dot) { dot.classList.add("on"); } };
  source.onerror = function () { if (dot) { dot.classList.remove("on"); } };

  // The stream sends "event: alert" with the alert object (vaultwatch.alert/v1 fields) as data.
  function parse(data) {
    try { var msg = JSON.parse(data); return msg && msg.id ? msg : null; } catch (e) { return null; }
  }

  // Changes are fetched one at a time; a flood (a bulk action, a replay) asks for a reload instead.
  var pending = [];
  var busy = false;
  var MAX_PENDING = 25;

  var latest = {};

  function onAlert(ev) {
    var msg = parse(ev.data);
    if (!msg) { return; }
    var id = msg.id;
    latest[id] = msg;
    if (pending.indexOf(id) >= 0) { return; }
    if (pending.length >= MAX_PENDING) {
      announce("Many alerts changed: reload the page to see them all.", false);
      return;
    }
    pending.push(id);
    if (!busy) { next(); }
  }

  function next() {
    var id = pending.shift();
    if (!id) { busy = false; return; }
    busy = true;
    refreshRow(id).then(next, next);
  }

  function refreshRow(id) {
    var url = base + "/alerts/" + encodeURIComponent(id) + "/row" + window.location.search;
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      var shown = body.querySelector('tr[data-alert-id="' + CSS.escape(id) + '"]');
      if (r.status === 204 && shown && latest[id] && latest[id].status) {
        // No longer matches the filters (closed elsewhere, say): keep the row, show its new status.
        setStatus(shown, latest[id].status);
        return;
      }
      if (r.status !== 200) { return; }
      return r.text().then(function (html) {
        var tmp = document.createElement("tbody");
        tmp.innerHTML = html.trim();
        var fresh = tmp.querySelector("tr[data-alert-id]");
        if (!fresh) { return; }
        var old = body.querySelector('tr[data-alert-id="' + CSS.escape(id) + '"]');
        var wasSelected = old && old.classList.contains("selected");
        if (old) { old.replaceWith(fresh); } else { body.insertBefore(fresh, body.firstChild); }
        fresh.classList.add("fresh");
        if (wasSelected) { select(fresh); }
        var empty = document.getElementById("queue-empty");
        if (empty) { empty.remove(); }
        var total = document.getElementById("queue-total");
        if (total && !old) { total.textContent = String(Number(total.textContent || "0") + 1); }
      });
    });
  }
  source.addEventListener("alert", onAlert);
  window.addEventListener("beforeunload", function () { source.close(); });
})();
