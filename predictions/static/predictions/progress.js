/* Live progress on the admin's pages of running work (predictions/admin/progress_views.py).

Every element with data-progress-url (the change page's or the index's script
tag: admin/predictions/live_progress.html) names a JSON view answering
{"fields": {name: html}, "finished": bool}. Every ~2 s (data-interval-ms) this
asks it and puts each field's HTML in place: a change page's read-only field
(.field-<name> .readonly) or an element marked data-live-field="<name>". It
stops once the work is finished, waits while the tab is hidden, and backs off
when the server does not answer (and gives up after a while).
*/
"use strict";

(function () {
  if (window.liveProgressStarted) {
    return;
  }
  window.liveProgressStarted = true;

  const MAX_BACKOFF_MS = 30000;
  const MAX_FAILURES = 10;

  function place(fields) {
    for (const [name, html] of Object.entries(fields)) {
      const targets = document.querySelectorAll(`.field-${CSS.escape(name)} .readonly, [data-live-field="${CSS.escape(name)}"]`);
      for (const target of targets) {
        if (target.innerHTML !== html) {
          target.innerHTML = html;
        }
      }
    }
  }

  function poll(url, interval) {
    let failures = 0;

    function later(delay) {
      setTimeout(ask, delay);
    }

    async function ask() {
      if (document.hidden) {
        document.addEventListener("visibilitychange", ask, {once: true});
        return;
      }
      try {
        const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
        if (!response.ok) {
          throw new Error(`${response.status}`);
        }
        const answer = await response.json();
        failures = 0;
        place(answer.fields || {});
        document.documentElement.dataset.liveProgress = answer.finished ? "finished" : "running";
        if (!answer.finished) {
          later(interval);
        }
      } catch (error) {
        failures += 1;
        if (failures < MAX_FAILURES) {
          later(Math.min(interval * 2 ** failures, MAX_BACKOFF_MS));
        } else {
          document.documentElement.dataset.liveProgress = "stopped";
        }
      }
    }

    later(interval);
  }

  function start() {
    for (const element of document.querySelectorAll("[data-progress-url]")) {
      const interval = Number(element.dataset.intervalMs) || 2000;
      document.documentElement.dataset.liveProgress = "running";
      poll(element.dataset.progressUrl, interval);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
