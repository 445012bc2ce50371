// Heliograph dashboard: our own script. Times in the browser's zone, keyboard, row links, live tail, copy.
"use strict";
(function () {
  const clock = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  const thisYear = new Intl.DateTimeFormat(undefined, Object.assign({ month: "short", day: "numeric" }, clock));
  const otherYear = new Intl.DateTimeFormat(undefined, Object.assign({ year: "numeric", month: "short", day: "numeric" }, clock));
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  function localTimes(root) {
    const year = new Date().getFullYear();
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      const d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.title = full.format(d) + " · " + el.getAttribute("datetime");
      el.textContent = (d.getFullYear() === year ? thisYear : otherYear).format(d);
      el.dataset.local = "1";
    });
  }

  // Chart times of day (server-rendered in UTC) in the browser's zone, with the server's shortening:
  // a time for a day's span, date and time beyond it. Day buckets stay UTC days (the server says so).
  const dayMonth = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const hourMinute = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  function chartLabel(d, span) {
    if (span !== undefined && span <= 86400000) return hourMinute.format(d);
    if (span !== undefined && span > 7 * 86400000) return dayMonth.format(d);
    return dayMonth.format(d) + " " + hourMinute.format(d);
  }
  function localCharts(root) {
    root.querySelectorAll("svg [data-t][data-utc]").forEach(function (el) {
      const d = new Date(Number(el.dataset.t));
      const span = el.dataset.span === undefined ? undefined : Number(el.dataset.span);
      el.textContent = el.textContent.replace(el.dataset.utc, chartLabel(d, span));
      delete el.dataset.utc;
    });
    root.querySelectorAll("[data-zone]").forEach(function (el) {
      el.textContent = "times in " + (Intl.DateTimeFormat().resolvedOptions().timeZone || "your zone");
    });
  }

  // Rows with data-href open on click (links inside keep working) and on Enter.
  function rowTarget(row) {
    return row && (row.dataset.href || (row.querySelector("a[href]") || {}).href);
  }
  document.addEventListener("click", function (e) {
    const row = e.target.closest("tr[data-href]");
    if (!row || e.target.closest("a, button, input, select, label")) return;
    if (window.getSelection && String(window.getSelection())) return;   // selecting text, not opening
    const url = rowTarget(row);
    if (url) { if (e.metaKey || e.ctrlKey) window.open(url); else window.location.href = url; }
  });

  function rows() { return Array.from(document.querySelectorAll("table.nav-rows tbody tr")); }
  function select(row) {
    document.querySelectorAll("tr.selected").forEach(function (r) { r.classList.remove("selected"); });
    if (row) { row.classList.add("selected"); row.scrollIntoView({ block: "nearest" }); }
  }
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const t = e.target;
    const typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
    if (e.key === "Escape" && typing) { t.blur(); return; }
    if (typing) return;
    if (e.key === "/") {
      const search = document.querySelector("[data-search]") || document.querySelector("main input[type=search]");
      if (search) { e.preventDefault(); search.focus(); search.select(); }
    } else if (e.key === "j" || e.key === "k") {
      const all = rows(); if (!all.length) return;
      const i = all.indexOf(document.querySelector("tr.selected"));
      const next = e.key === "j" ? Math.min(all.length - 1, i + 1) : Math.max(0, i < 0 ? 0 : i - 1);
      select(all[next]); e.preventDefault();
    } else if (e.key === "Enter") {
      const url = rowTarget(document.querySelector("tr.selected"));
      if (url) { window.location.href = url; e.preventDefault(); }
    }
  });

  // Copy buttons: <button data-copy="#id"> copies that element's text.
  document.addEventListener("click", function (e) {
    const b = e.target.closest("button[data-copy]");
    if (!b) return;
    const src = document.querySelector(b.dataset.copy);
    if (!src || !navigator.clipboard) return;
    navigator.clipboard.writeText(src.textContent).then(function () {
      const was = b.textContent; b.textContent = "Copied"; setTimeout(function () { b.textContent = was; }, 1200);
    });
  });

  // Live tail: <tbody data-tail="/requests/tail?…"> receives rows' HTML as SSE `row` events.
  function startTail() {
    const body = document.querySelector("tbody[data-tail]");
    const toggle = document.querySelector("[data-tail-toggle]");
    if (!body || !window.EventSource) return;
    let source = null;
    function on() {
      if (source) return;
      source = new EventSource(body.dataset.tail);
      source.addEventListener("row", function (ev) {
        const tpl = document.createElement("template");
        tpl.innerHTML = ev.data.trim();          // server-rendered, escaped by the template
        if (document.querySelector("[data-empty-project]")) { window.location.reload(); return; }
        const row = tpl.content.firstElementChild;
        if (!row || body.querySelector('tr[data-request-id="' + CSS.escape(row.dataset.requestId) + '"]')) return;
        // In time order: a long stream is recorded after shorter calls that began later. A row older
        // than the last one shown belongs to a later page.
        const created = Number(row.dataset.created);
        const shown = Array.from(body.children);
        const before = shown.find(function (r) { return Number(r.dataset.created) < created; });
        if (!before && shown.length && document.querySelector("a[rel=next]")) return;
        row.classList.add("new");
        localTimes(row);
        body.insertBefore(row, before || null);
        const empty = document.querySelector("[data-empty]"); if (empty) empty.hidden = true;
        const table = body.closest("[hidden]"); if (table) table.hidden = false;
      });
      if (toggle) { toggle.classList.add("on"); toggle.setAttribute("aria-pressed", "true"); }
    }
    function off() {
      if (source) { source.close(); source = null; }
      if (toggle) { toggle.classList.remove("on"); toggle.setAttribute("aria-pressed", "false"); }
    }
    if (toggle) toggle.addEventListener("click", function () { if (source) off(); else on(); });
    on();
  }

  // GET filter forms leave empty and default fields out of the URL, so it stays short and shareable.
  document.addEventListener("submit", function (e) {
    const form = e.target;
    if ((form.method || "").toLowerCase() !== "get") return;
    Array.from(form.elements).forEach(function (el) {
      if (el.name && (el.value === "" || el.value === el.dataset.default)) el.disabled = true;
    });
    setTimeout(function () { Array.from(form.elements).forEach(function (el) { el.disabled = false; }); }, 0);
  });

  // Selects with data-autosubmit submit their form on change.
  document.addEventListener("change", function (e) {
    if (e.target.matches("[data-autosubmit]")) e.target.form.requestSubmit();
  });

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    localCharts(document);
    // On a phone the filters start folded, unless some are set.
    document.querySelectorAll("details[data-collapse-sm]:not([data-active])").forEach(function (d) {
      if (window.matchMedia("(max-width: 700px)").matches) d.open = false;
    });
    startTail();
  });
  window.heliograph = { localTimes: localTimes };
})();
