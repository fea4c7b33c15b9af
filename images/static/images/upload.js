/* The upload page (images/templates/admin/images/image/upload.html, views in images/upload_views.py).

Files are chosen or dropped (files, folders through webkitGetAsEntry where the
browser allows, zips), listed, and sent as several requests of at most
data-part-files files and data-part-bytes bytes into ONE upload batch: the
first request creates it, the next ones name it (and the upload key finds it
when the first answer was lost). Each file has its bar and its outcome; the
whole upload has one bar. A request that fails on the way (a dropped
connection, a server error) is sent again, a few times by itself, then with
"Retry now": the server skips what it already stored ("already stored in this
upload"). At the end the upload's summary becomes the admin's message on the
batch's page, where the page goes.

What the user gives is read by upload_sources.js, the requests are planned and
sent by upload_requests.js; this script is the page: the list, the bars, the
outcomes, the retries. Without the scripts the form posts as a plain form. The
form's data-state says where the upload is (idle, uploading, waiting,
finishing, done, failed).
*/
"use strict";

(function () {
  const form = document.getElementById("upload_form");
  if (!form || !window.FormData || !window.XMLHttpRequest || !window.uploadSources || !window.uploadRequests) {
    return;
  }
  const input = document.getElementById("id_files");
  const nameInput = document.getElementById("id_name");
  const overlapInput = document.getElementById("id_overlap_share"); // Leads only
  const dropRow = document.getElementById("upload-drop-row");
  const drop = document.getElementById("upload-drop");
  const folderInput = document.getElementById("upload-folder-input");
  const panel = document.getElementById("upload-progress");
  const totalBar = document.getElementById("upload-total-bar");
  const totalText = document.getElementById("upload-total-text");
  const statusLine = document.getElementById("upload-status");
  const retryButton = document.getElementById("upload-retry");
  const clearButton = document.getElementById("upload-clear");
  const errorNote = document.getElementById("upload-error");
  const rows = panel.querySelector("tbody");
  const submit = form.querySelector("input[type=submit]");
  const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  // Waits before sending a failed request again by itself; then "Retry now".
  const RETRY_DELAYS_MS = [1000, 3000, 10000];
  // Room for the multipart framing and the other fields in a request.
  const REQUEST_OVERHEAD_BYTES = 1024 * 1024;

  const items = []; // {file, path, row, bar, outcome, size, done}
  const upload = {batch: null, key: null, parts: [], next: 0, bytesDone: 0, bytesTotal: 0, counts: null};

  dropRow.hidden = false;
  setState("idle");

  function setState(state) {
    form.dataset.state = state;
  }

  function running() {
    return ["uploading", "waiting", "finishing"].includes(form.dataset.state);
  }

  // --- choosing and dropping ------------------------------------------------------

  function humanSize(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let size = bytes;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${size} bytes` : `${size.toFixed(1)} ${units[unit]}`;
  }

  function add(chosen) {
    if (running() || !chosen.length) {
      return;
    }
    const fragment = document.createDocumentFragment();
    for (const {file, path} of chosen) {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      name.className = "upload-file-name";
      name.textContent = path || file.name;
      const size = document.createElement("td");
      size.className = "upload-file-size";
      size.textContent = humanSize(file.size);
      const sent = document.createElement("td");
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = 0;
      sent.append(bar);
      const outcome = document.createElement("td");
      outcome.className = "upload-file-outcome";
      outcome.textContent = "waiting";
      row.append(name, size, sent, outcome);
      fragment.append(row);
      items.push({file, path, row, bar, outcome, size: file.size, done: false});
    }
    rows.append(fragment);
    panel.hidden = false;
    errorNote.hidden = true;
    showTotals();
  }

  input.addEventListener("change", () => {
    add(uploadSources.fromInput(input.files));
    // The list holds them now; the same files may be chosen again.
    input.value = "";
  });
  folderInput.addEventListener("change", () => {
    add(uploadSources.fromInput(folderInput.files, {folder: true}));
    folderInput.value = "";
  });
  document.getElementById("upload-choose-folder").addEventListener("click", () => folderInput.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  clearButton.addEventListener("click", () => {
    if (running()) {
      return;
    }
    items.length = 0;
    rows.replaceChildren();
    panel.hidden = true;
  });

  for (const target of [form, drop]) {
    target.addEventListener("dragover", (event) => {
      if (event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files")) {
        event.preventDefault();
        event.dataTransfer.dropEffect = running() ? "none" : "copy";
        drop.classList.add("dragging");
      }
    });
  }
  form.addEventListener("dragleave", (event) => {
    if (!form.contains(event.relatedTarget)) {
      drop.classList.remove("dragging");
    }
  });
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (running() || !event.dataTransfer) {
      return;
    }
    uploadSources.fromDrop(event.dataTransfer).then(add, (error) => showError(`Could not read the dropped folder: ${error}`));
  });

  // --- sending -----------------------------------------------------------------------

  function limit(name, fallback) {
    const value = Number(form.dataset[name]);
    return Number.isFinite(value) && value > 0 ? value : fallback;
  }

  function plan(pending) {
    // Read when the upload starts, so a page (or a test) may set smaller parts.
    const maxFiles = Math.max(1, Math.min(limit("partFiles", 50), limit("maxFiles", Infinity)));
    const maxBytes = Math.min(limit("partBytes", 64 * 1024 * 1024), limit("maxBytes", Infinity) - REQUEST_OVERHEAD_BYTES);
    return uploadRequests.plan(pending, {maxFiles, maxBytes});
  }

  form.addEventListener("submit", (event) => {
    if (!items.length) {
      return; // a plain post: the form says what is missing
    }
    event.preventDefault();
    if (running()) {
      return;
    }
    if (!upload.key) {
      upload.key = window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    }
    upload.parts = plan(items.filter((item) => !item.done));
    upload.next = 0;
    upload.bytesTotal = items.reduce((sum, item) => sum + item.size, 0);
    upload.bytesDone = items.filter((item) => item.done).reduce((sum, item) => sum + item.size, 0);
    submit.disabled = true;
    clearButton.hidden = true;
    sendAll();
  });

  retryButton.addEventListener("click", () => {
    if (form.dataset.state === "failed") {
      sendAll();
    }
  });
  window.addEventListener("online", () => {
    if (form.dataset.state === "failed") {
      sendAll();
    }
  });
  window.addEventListener("beforeunload", (event) => {
    if (form.dataset.state === "uploading" || form.dataset.state === "waiting") {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  async function sendAll() {
    setState("uploading");
    retryButton.hidden = true;
    while (upload.next < upload.parts.length) {
      const part = upload.parts[upload.next];
      const answer = await sendWithRetries(part);
      if (answer === null) {
        return; // stopped: "Retry now" carries on from this part
      }
      upload.next += 1;
    }
    await finish();
  }

  async function sendWithRetries(part) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const answer = await send(part);
        settle(part, answer);
        return answer;
      } catch (failure) {
        showSent(part, 0);
        if (failure.status === 400) {
          settleRefused(part, failure.message);
          return {}; // this part's files are refused; the others go on
        }
        if (!failure.retry) {
          unsent(part);
          stop(`The upload stopped: ${failure.message}.`);
          return null;
        }
        if (attempt >= RETRY_DELAYS_MS.length) {
          unsent(part);
          stop(
            `The upload stopped: ${failure.message}. What was stored is kept; "Retry now" sends the rest ` +
              "(files already stored are skipped).",
          );
          return null;
        }
        setState("waiting");
        status(`${capitalised(failure.message)}; sending again in ${RETRY_DELAYS_MS[attempt] / 1000} s…`);
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
        setState("uploading");
      }
    }
  }

  function send(part) {
    const fields = {name: nameInput ? nameInput.value : "", upload_key: upload.key};
    if (overlapInput) {
      fields.overlap_share = overlapInput.value;
    }
    if (upload.batch) {
      fields.batch = upload.batch;
    }
    for (const item of part) {
      item.outcome.textContent = "sending";
    }
    return uploadRequests.send({
      url: form.dataset.partUrl,
      token,
      fields,
      files: part,
      onProgress: (fraction) => showSent(part, fraction),
      onSent: () => {
        for (const item of part) {
          item.outcome.textContent = "storing";
        }
        status("Storing the files just sent…");
      },
    });
  }

  // --- showing --------------------------------------------------------------------

  function showSent(part, fraction) {
    const partBytes = part.reduce((sum, item) => sum + item.size, 0);
    const sent = fraction * partBytes;
    let offset = 0;
    for (const item of part) {
      const own = item.size ? (sent - offset) / item.size : fraction >= 1 ? 1 : 0;
      item.bar.value = Math.max(0, Math.min(1, own));
      offset += item.size;
    }
    totalBar.value = upload.bytesTotal ? Math.min(1, (upload.bytesDone + sent) / upload.bytesTotal) : 0;
  }

  function settle(part, answer) {
    upload.batch = answer.batch;
    upload.counts = answer.counts;
    const byIndex = new Map();
    for (const entry of answer.entries) {
      if (!byIndex.has(entry.index)) {
        byIndex.set(entry.index, []);
      }
      byIndex.get(entry.index).push(entry);
    }
    part.forEach((item, index) => showOutcome(item, byIndex.get(index) || []));
    finishPart(part);
  }

  function settleRefused(part, message) {
    for (const item of part) {
      item.outcome.textContent = `refused: ${message}`;
      item.row.className = "upload-rejected";
    }
    finishPart(part);
  }

  function unsent(part) {
    for (const item of part) {
      item.outcome.textContent = "not sent yet";
    }
  }

  function finishPart(part) {
    for (const item of part) {
      item.done = true;
      item.bar.value = 1;
      upload.bytesDone += item.size;
    }
    totalBar.value = upload.bytesTotal ? Math.min(1, upload.bytesDone / upload.bytesTotal) : 1;
    showTotals();
  }

  function said(entry) {
    if (entry.status === "accepted") {
      return entry.resent ? entry.reason : entry.reason ? `stored (${entry.reason})` : "stored";
    }
    return `${entry.status === "duplicate" ? "duplicate" : "rejected"}: ${entry.reason}`;
  }

  function showOutcome(item, entries) {
    item.outcome.replaceChildren();
    if (!entries.length) {
      item.outcome.textContent = "no answer for this file";
      return;
    }
    const statuses = entries.map((entry) => entry.status);
    item.row.className = statuses.includes("rejected")
      ? "upload-rejected"
      : statuses.includes("duplicate")
        ? "upload-duplicate"
        : "upload-stored";
    if (entries.length === 1 && entries[0].file === (item.path || item.file.name)) {
      item.outcome.textContent = said(entries[0]);
      return;
    }
    // An archive: one line of counts, its members' outcomes below.
    const count = (status) => statuses.filter((value) => value === status).length;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `${entries.length} file(s): ${count("accepted")} stored, ${count("duplicate")} duplicate(s), ${count("rejected")} rejected`;
    const list = document.createElement("ul");
    for (const entry of entries) {
      const line = document.createElement("li");
      line.textContent = `${entry.file}: ${said(entry)}`;
      list.append(line);
    }
    details.append(summary, list);
    item.outcome.append(details);
  }

  function showTotals() {
    const done = items.filter((item) => item.done).length;
    const bytes = items.reduce((sum, item) => sum + item.size, 0);
    let text = `${done} of ${items.length} file(s) sent (${humanSize(bytes)} in all)`;
    if (upload.counts) {
      const {accepted, duplicate, rejected} = upload.counts;
      text += ` · this upload: ${accepted} stored, ${duplicate} duplicate(s), ${rejected} rejected`;
    }
    totalText.textContent = text;
  }

  function status(text) {
    statusLine.textContent = text;
  }

  function capitalised(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function showError(text) {
    errorNote.textContent = text;
    errorNote.hidden = false;
  }

  function stop(text) {
    setState("failed");
    status(text);
    retryButton.hidden = false;
  }

  async function finish() {
    totalBar.value = 1;
    if (!upload.batch) {
      setState("failed");
      status("Nothing was stored.");
      submit.disabled = false;
      return;
    }
    setState("finishing");
    status("All files sent. Opening the upload's page…");
    const url = form.dataset.finishUrl.replace(/\/0\/finish\/$/, `/${upload.batch}/finish/`);
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: {"X-CSRFToken": token, Accept: "application/json"},
        credentials: "same-origin",
      });
      if (!response.ok) {
        throw new Error(`the server answered ${response.status}`);
      }
      const answer = await response.json();
      setState("done");
      window.location.assign(answer.url);
    } catch (error) {
      setState("done");
      const link = document.createElement("a");
      link.href = form.dataset.batchUrl.replace(/\/0\/change\/$/, `/${upload.batch}/change/`);
      link.textContent = "Open the upload's page";
      statusLine.replaceChildren(`All files sent (${error.message} when summing up). `, link);
    }
  }
})();
