/* The upload page's requests: a selection cut into parts of at most so many files
and bytes, and one part sent as one multipart POST (images/upload_views.py).

``send`` resolves with the server's JSON answer, or rejects with
{retry, status, message}: ``retry`` true for what may pass when sent again (a
lost connection, a 5xx or 429), false for an answer that will not change (a
refusal, a signed-out session). Nothing here touches the page; upload.js shows
the progress it is told of.
*/
"use strict";

window.uploadRequests = (function () {
  function plan(items, {maxFiles, maxBytes}) {
    const parts = [];
    let part = [];
    let bytes = 0;
    for (const item of items) {
      if (part.length && (part.length >= maxFiles || bytes + item.size > maxBytes)) {
        parts.push(part);
        part = [];
        bytes = 0;
      }
      part.push(item);
      bytes += item.size;
    }
    if (part.length) {
      parts.push(part);
    }
    return parts;
  }

  // fields: the form's other fields; files: [{file, path}]; onProgress(fraction of the
  // body sent); onSent(): the body is sent and the server is storing it.
  function send({url, token, fields, files, onProgress, onSent}) {
    return new Promise((resolve, reject) => {
      const body = new FormData();
      body.append("csrfmiddlewaretoken", token);
      for (const [name, value] of Object.entries(fields)) {
        body.append(name, value);
      }
      for (const {file, path} of files) {
        body.append("files", file, file.name);
        body.append("paths", path);
      }
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", token);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable && event.total) {
          onProgress(event.loaded / event.total);
        }
      });
      xhr.upload.addEventListener("load", () => {
        onProgress(1);
        onSent();
      });
      xhr.addEventListener("load", () => {
        const answer = xhr.response;
        if (xhr.status === 200 && answer && answer.batch) {
          resolve(answer);
        } else if (xhr.status === 200) {
          // Redirected to the login page: the session ended.
          reject({retry: false, status: 401, message: "you were signed out; sign in again in another tab, then press Retry now"});
        } else if (xhr.status >= 500 || xhr.status === 429) {
          reject({retry: true, message: `the server answered ${xhr.status}`});
        } else {
          const said = answer && answer.error ? answer.error : `the server answered ${xhr.status} ${xhr.statusText}`;
          reject({retry: false, status: xhr.status, message: said});
        }
      });
      xhr.addEventListener("error", () => reject({retry: true, message: "the connection was lost"}));
      xhr.addEventListener("timeout", () => reject({retry: true, message: "the server did not answer in time"}));
      xhr.send(body);
    });
  }

  return {plan, send};
})();
