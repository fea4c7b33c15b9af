/* The image changelist as a table or a gallery (images/templates/admin/images/image/change_list.html).

The gallery is the list's own rows shown as large tiles: thumbnail, name, the
label (the decision, else the model's with its confidence). Selecting a tile
ticks its row's action checkbox, so the admin's actions, its counter and
"select all" work on a gallery selection as on the table. The label buttons
(and their keys, the review screen's) post the selection to the "Set label…"
action with the label chosen: the action's rules decide (predictions/admin/gallery.py).

Mouse: a click selects or unselects a tile, Shift+click extends from the last
one, a double click opens the image. Keys: the arrows move, Space selects,
Shift+arrow extends, Enter opens, Ctrl+A selects all, Escape clears. The view
chosen is remembered (localStorage).
*/
"use strict";

(function () {
  const VIEW_KEY = "images.imageList.view";
  const views = document.getElementById("image-list-views");
  const gallery = document.getElementById("image-gallery");
  const table = document.getElementById("result_list");
  if (!views || !gallery) {
    return;
  }
  const tools = document.getElementById("image-gallery-tools");
  const help = document.getElementById("image-gallery-help");
  const count = document.getElementById("image-gallery-count");
  const labelButtons = Array.from(document.querySelectorAll("#image-gallery-labels button[data-label]"));
  const form = document.getElementById("changelist-form");
  const tiles = [];
  let anchor = null; // the tile a Shift selection extends from

  views.hidden = false;
  if (!table) {
    // An empty list: nothing to show as tiles.
    views.querySelector("[data-view=gallery]").disabled = true;
    return;
  }

  // --- tiles from the rows ---------------------------------------------------------

  function cellText(row, name) {
    const cell = row.querySelector(`.field-${name}`);
    return cell ? cell.innerText.trim() : "";
  }

  function tileFor(row, index) {
    const checkbox = row.querySelector("input.action-select");
    const link = row.querySelector("th a, td a");
    const thumbnail = row.querySelector(".field-thumbnail_tag img");
    const name = cellText(row, "original_name");
    // label_seen: the column as those not told which images are gold see it (predictions/admin/gold.py).
    const final = cellText(row, "final_label") || cellText(row, "label_seen");
    const predicted = cellText(row, "predicted_label");
    const confidence = cellText(row, "confidence");
    const empty = (text) => !text || text === "-" || text === "–";

    const tile = document.createElement("div");
    tile.className = "image-tile";
    tile.setAttribute("role", "option");
    tile.setAttribute("aria-selected", "false");
    tile.tabIndex = index === 0 ? 0 : -1;
    tile.dataset.id = checkbox ? checkbox.value : "";
    tile.title = name;

    const picture = document.createElement("div");
    picture.className = "image-tile-picture";
    if (thumbnail) {
      const image = document.createElement("img");
      image.src = thumbnail.getAttribute("src");
      image.alt = name;
      image.loading = "lazy";
      picture.append(image);
    } else {
      picture.classList.add("image-tile-waiting");
      picture.textContent = "no thumbnail yet";
    }
    const caption = document.createElement("div");
    caption.className = "image-tile-caption";
    const title = document.createElement("a");
    title.className = "image-tile-name";
    title.textContent = name;
    title.tabIndex = -1;
    if (link) {
      title.href = link.getAttribute("href");
    }
    const label = document.createElement("div");
    label.className = "image-tile-label";
    if (!empty(final)) {
      label.classList.add("decided");
      label.textContent = final;
      label.title = `Labelled ${final}${empty(predicted) ? "" : `; the model says ${predicted} (${confidence})`}`;
    } else if (!empty(predicted)) {
      label.textContent = `${predicted} · ${confidence}`;
      label.title = `The model says ${predicted} with confidence ${confidence}; not reviewed yet`;
    } else {
      label.classList.add("quiet");
      label.textContent = "not predicted yet";
    }
    caption.append(title, label);
    tile.append(picture, caption);
    tiles.push({tile, checkbox, href: link ? link.getAttribute("href") : null});
    return tile;
  }

  function build() {
    const rows = Array.from(table.querySelectorAll("tbody tr"));
    const fragment = document.createDocumentFragment();
    rows.forEach((row, index) => fragment.append(tileFor(row, index)));
    gallery.append(fragment);
    syncFromCheckboxes();
  }

  // --- selection, kept in the rows' checkboxes ---------------------------------------

  function entry(tile) {
    return tiles.find((item) => item.tile === tile);
  }

  function setSelected(item, selected) {
    if (item.checkbox && item.checkbox.checked !== selected) {
      // A click, as a person's: the admin's actions.js updates its counter and the row.
      item.checkbox.click();
    }
    item.tile.setAttribute("aria-selected", String(Boolean(item.checkbox && item.checkbox.checked)));
  }

  function syncFromCheckboxes() {
    let selected = 0;
    for (const item of tiles) {
      const on = Boolean(item.checkbox && item.checkbox.checked);
      item.tile.setAttribute("aria-selected", String(on));
      selected += on ? 1 : 0;
    }
    count.textContent = `${selected} selected`;
    for (const button of labelButtons) {
      button.disabled = selected === 0;
    }
  }

  function selectRange(from, to, selected) {
    const start = Math.min(from, to);
    const end = Math.max(from, to);
    tiles.slice(start, end + 1).forEach((item) => setSelected(item, selected));
  }

  function toggle(index, extend) {
    const item = tiles[index];
    if (extend && anchor !== null) {
      selectRange(anchor, index, true);
    } else {
      setSelected(item, !(item.checkbox && item.checkbox.checked));
      anchor = index;
    }
    syncFromCheckboxes();
  }

  function focusTile(index) {
    const target = tiles[Math.max(0, Math.min(tiles.length - 1, index))];
    if (!target) {
      return;
    }
    for (const item of tiles) {
      item.tile.tabIndex = item === target ? 0 : -1;
    }
    target.tile.focus();
  }

  function columns() {
    // Tiles in the first row: how far Up and Down move.
    const top = tiles[0].tile.offsetTop;
    const perRow = tiles.findIndex((item) => item.tile.offsetTop !== top);
    return perRow === -1 ? tiles.length : perRow;
  }

  gallery.addEventListener("click", (event) => {
    const tile = event.target.closest(".image-tile");
    if (!tile || event.target.closest("a")) {
      return;
    }
    const index = tiles.indexOf(entry(tile));
    toggle(index, event.shiftKey);
    focusTile(index);
  });
  gallery.addEventListener("dblclick", (event) => {
    const item = entry(event.target.closest(".image-tile"));
    if (item && item.href) {
      window.location.assign(item.href);
    }
  });
  gallery.addEventListener("keydown", (event) => {
    const tile = event.target.closest(".image-tile");
    if (!tile || event.altKey) {
      return;
    }
    const index = tiles.indexOf(entry(tile));
    const moves = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(), ArrowDown: columns()};
    if (event.key in moves) {
      event.preventDefault();
      const next = Math.max(0, Math.min(tiles.length - 1, index + moves[event.key]));
      if (event.shiftKey) {
        if (anchor === null) {
          anchor = index;
        }
        selectRange(anchor, next, true);
        syncFromCheckboxes();
      }
      focusTile(next);
    } else if (event.key === " ") {
      event.preventDefault();
      toggle(index, event.shiftKey);
    } else if (event.key === "Enter" && tiles[index].href) {
      event.preventDefault();
      window.location.assign(tiles[index].href);
    } else if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "a") {
      event.preventDefault();
      selectAll(true);
    } else if (event.key === "Escape") {
      selectAll(false);
    } else if (!event.ctrlKey && !event.metaKey) {
      const button = labelButtons.find((candidate) => candidate.dataset.key && candidate.dataset.key === event.key.toLowerCase());
      if (button && !button.disabled) {
        event.preventDefault();
        button.click();
      }
    }
  });
  // The admin's own checkboxes (the header's "select all", its "clear selection") move the tiles too.
  form.addEventListener("change", () => syncFromCheckboxes());

  function selectAll(selected) {
    tiles.forEach((item) => setSelected(item, selected));
    anchor = null;
    syncFromCheckboxes();
  }

  document.getElementById("image-gallery-all").addEventListener("click", () => selectAll(true));
  document.getElementById("image-gallery-none").addEventListener("click", () => selectAll(false));

  // --- a label for the selection, through the "Set label…" action ----------------------

  for (const button of labelButtons) {
    button.addEventListener("click", () => {
      const chosen = tiles.filter((item) => item.checkbox && item.checkbox.checked);
      if (!chosen.length) {
        return;
      }
      const post = document.createElement("form");
      post.method = "post";
      post.action = window.location.pathname + window.location.search;
      post.hidden = true;
      const fields = [
        ["csrfmiddlewaretoken", form.querySelector("input[name=csrfmiddlewaretoken]").value],
        ["action", "set_label"],
        ["select_across", "0"],
        ["apply", "yes"],
        ["label", button.dataset.label],
        ...chosen.map((item) => ["_selected_action", item.checkbox.value]),
      ];
      for (const [name, value] of fields) {
        const input = document.createElement("input");
        input.type = "hidden";
        input.name = name;
        input.value = value;
        post.append(input);
      }
      document.body.append(post);
      labelButtons.forEach((other) => (other.disabled = true));
      post.submit();
    });
  }

  // --- the two views -----------------------------------------------------------------

  function show(view) {
    const asGallery = view === "gallery";
    if (asGallery && !tiles.length) {
      build();
    }
    table.hidden = asGallery;
    gallery.hidden = !asGallery;
    tools.hidden = !asGallery;
    help.hidden = !asGallery;
    document.body.classList.toggle("image-list-gallery", asGallery);
    for (const button of views.querySelectorAll("[data-view]")) {
      button.setAttribute("aria-pressed", String(button.dataset.view === view));
    }
    try {
      localStorage.setItem(VIEW_KEY, view);
    } catch (error) {
      // Private windows may refuse storage: the view is then not remembered.
    }
  }

  views.addEventListener("click", (event) => {
    const button = event.target.closest("[data-view]");
    if (button) {
      show(button.dataset.view);
      if (button.dataset.view === "gallery") {
        focusTile(0);
      }
    }
  });

  let remembered = "table";
  try {
    remembered = localStorage.getItem(VIEW_KEY) || "table";
  } catch (error) {
    remembered = "table";
  }
  show(remembered === "gallery" ? "gallery" : "table");
})();
