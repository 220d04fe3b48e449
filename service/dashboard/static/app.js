// The dashboard's one script (loaded with the page's CSP nonce): live progress over one server-sent event
// stream per page, a confirmation before destructive forms, nothing else. Every value it writes is text.
"use strict";

(function () {
  function setField(root, name, value) {
    root.querySelectorAll('[data-field="' + name + '"]').forEach(function (node) {
      if (node.tagName === "PROGRESS") { node.value = value; node.textContent = value + "%"; }
      else { node.textContent = String(value); }
    });
  }

  function showCounts(root, counts) {
    ["pending", "processing", "completed", "error", "cancelled", "total"].forEach(function (name) {
      if (name in counts) setField(root, name, counts[name]);
    });
    setField(root, "progress", counts.progress);
    setField(root, "progress-text", counts.progress + "%");
    setField(root, "state", counts.pending === 0 && counts.processing === 0 ? "done" : "running");
  }

  function ended(message) {
    var main = document.getElementById("main");
    if (!main || document.getElementById("stream-ended")) return;
    var p = document.createElement("p");
    p.id = "stream-ended";
    p.className = "notice problem";
    p.setAttribute("role", "alert");
    p.textContent = message;
    main.insertBefore(p, main.firstChild);
  }

  function follow(url, handlers) {
    var source = new EventSource(url);
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) {
        handlers[name](event.data ? JSON.parse(event.data) : {});
        if (name === "done") source.close();
      });
    });
    source.addEventListener("error", function (event) {
      if (event.data) { source.close(); ended("Your session ended: sign in again to see live progress."); }
    });
    return source;
  }

  // The batches page: one stream for every batch listed.
  document.querySelectorAll("[data-live-batches]").forEach(function (table) {
    var ids = table.getAttribute("data-live-batches").split(",").filter(Boolean);
    if (!ids.length) return;
    var query = ids.map(function (id) { return "id=" + id; }).join("&");
    follow("/events/batches?" + query, {
      counts: function (counts) {
        table.querySelectorAll("tr[data-batch]").forEach(function (row) {
          if (row.getAttribute("data-batch") === counts.batch_id) showCounts(row, counts);
        });
      },
      done: function () {}
    });
  });

  // One batch: its counts, and its table of jobs fetched again (at most every 2 s) while they change.
  document.querySelectorAll("[data-live-batch]").forEach(function (card) {
    var id = card.getAttribute("data-live-batch");
    var jobs = document.getElementById("jobs");
    var timer = null;
    function refreshJobs() {
      if (!jobs || timer) return;
      timer = setTimeout(function () {
        timer = null;
        fetch(jobs.getAttribute("data-fragment"), {credentials: "same-origin", cache: "no-store"})
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) {
            if (html === null) return;
            var doc = new DOMParser().parseFromString(html, "text/html");
            jobs.replaceChildren.apply(jobs, Array.from(doc.body.childNodes));
          });
      }, 2000);
    }
    var first = true;
    follow("/events/batches/" + id, {
      counts: function (counts) { showCounts(card, counts); if (!first) refreshJobs(); first = false; },
      done: function (counts) { showCounts(card, counts); refreshJobs(); }
    });
  });

  // One job that is not final: the page is read again once it changes.
  document.querySelectorAll("[data-live-job]").forEach(function (card) {
    var id = card.getAttribute("data-live-job");
    var shown = null;
    follow("/events/jobs/" + id, {
      job: function (job) {
        if (shown !== null && job.status !== shown) location.reload();
        shown = job.status;
        setField(card, "status", job.status);
      },
      done: function () { location.reload(); }
    });
  });

  // The overview: its counts and queue depth as they change (the page is read again when a worker comes or goes).
  document.querySelectorAll("[data-live-overview]").forEach(function () {
    var workers = null;
    follow("/events/overview", {
      overview: function (said) {
        Object.keys(said.counts).forEach(function (status) {
          document.querySelectorAll('[data-count="' + status + '"]').forEach(function (node) {
            node.textContent = said.counts[status].toLocaleString("en");
          });
        });
        Object.keys(said.queue_depth).forEach(function (name) {
          document.querySelectorAll('[data-queue="' + name + '"]').forEach(function (node) {
            node.textContent = said.queue_depth[name].toLocaleString("en");
          });
        });
        if (workers !== null && (workers === 0) !== (said.workers === 0)) location.reload();
        workers = said.workers;
      }
    });
  });

  // Destructive forms ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
