/* What a user gives the upload page: files chosen, a folder chosen, or files and
folders dropped, as a list of {file, path}. A path is the file's place inside its
folder (site_a/DSC_505.jpg), "" for a file given on its own. Hidden files and
folders are left out, as the import command leaves them out.

Nothing here touches the page; upload.js lists what these give.
*/
"use strict";

window.uploadSources = (function () {
  function notHidden({file, path}) {
    return !(path || file.name).split("/").some((part) => part.startsWith("."));
  }

  function fromInput(fileList, {folder = false} = {}) {
    const found = Array.from(fileList, (file) => ({file, path: file.webkitRelativePath || ""}));
    return folder ? found.filter(notHidden) : found;
  }

  // A drop's items are readable only during its event: call this in the handler.
  // The folders are walked afterwards (the promise), the plain files are at once.
  function fromDrop(dataTransfer) {
    const entries = Array.from(dataTransfer.items || [])
      .filter((item) => item.kind === "file")
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    if (entries.length && entries.every(Boolean)) {
      return walkAll(entries).then((found) => found.filter(notHidden));
    }
    return Promise.resolve(Array.from(dataTransfer.files || [], (file) => ({file, path: ""})));
  }

  async function walkAll(entries) {
    const found = [];
    for (const entry of entries) {
      await walk(entry, found);
    }
    return found;
  }

  async function walk(entry, found) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      const path = entry.fullPath.replace(/^\/+/, "");
      found.push({file, path: path.includes("/") ? path : ""});
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      // readEntries answers a slice at a time (100 in Chromium), and [] at the end.
      for (;;) {
        const children = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!children.length) {
          break;
        }
        for (const child of children) {
          await walk(child, found);
        }
      }
    }
  }

  return {fromInput, fromDrop};
})();
