/* The review screen: keyboard-driven, one image at a time.
 *
 * The page arrives with the first two claimed images. The screen always holds
 * the current image plus one preloaded behind it, so after a decision the next
 * image shows at once; decisions, skips and undos are posted in the background
 * to the admin's small JSON endpoints (urls in #review-config).
 *
 * The strip of recent decisions is the undo history. The page renders it from the
 * server, so Z still works after a reload or new filters; a decision joins it (and
 * the "reviewed today" count) at the key press, and its answer fills in the review id.
 * The panels beside the image (probabilities, suspicion, votes, more like this)
 * are review_panels.js's.
 */
(function () {
    "use strict";

    const HOLD = 2; // images the screen keeps claimed: the current one and the next
    const STRIP_SIZE = 8; // recent decisions shown, as many as the server renders
    const config = JSON.parse(document.getElementById("review-config").textContent);
    const csrfToken = document.querySelector("input[name=csrfmiddlewaretoken]").value;

    const el = {
        stage: document.getElementById("review-stage"),
        image: document.getElementById("review-image"),
        empty: document.getElementById("review-empty"),
        name: document.getElementById("review-name"),
        predicted: document.getElementById("review-predicted"),
        confidence: document.getElementById("review-confidence"),
        bars: document.getElementById("review-bars"),
        labels: document.getElementById("review-labels"),
        today: document.getElementById("review-today"),
        left: document.getElementById("review-left"),
        message: document.getElementById("review-message"),
        help: document.getElementById("review-help"),
        suspicion: document.getElementById("review-suspicion"),
        similar: document.getElementById("review-similar"),
        votes: document.getElementById("review-votes"),
        recent: document.getElementById("review-recent"),
    };

    const state = {
        items: [],          // [current, next, ...] as sent by the server
        shownAt: 0,
        left: config.left,
        moreLeft: config.more_left,
        reviewedToday: config.reviewed_today,
        // Recent decisions, newest first: {decision: promise of the review id (null if refused),
        // review, image, label, outcome, predicted}.
        strip: [],
        // Decisions and undos on their way: until none is, the server's count and strip may be a step behind.
        inflight: 0,
        // Images whose decision or skip is still on its way: the server may not
        // know yet, so `next` must not hand them back.
        pending: new Set(),
        fetching: null,     // the pending `next` request, if any
        exhausted: false,   // the server had nothing more to give
    };

    const labelsByKey = new Map(config.labels.filter((l) => l.key).map((l) => [l.key.toLowerCase(), l]));
    const labelsById = new Map(config.labels.map((l) => [String(l.id), l]));
    const panels = window.reviewPanels(el, {isCurrent: (item) => state.items[0] === item});

    function post(url, fields) {
        const body = new URLSearchParams();
        for (const [name, value] of Object.entries(fields)) {
            for (const one of [].concat(value)) {
                if (one !== null && one !== undefined) body.append(name, one);
            }
        }
        return fetch(url, {
            method: "POST",
            body: body,
            credentials: "same-origin",
            headers: {"X-CSRFToken": csrfToken, "Accept": "application/json"},
        }).then((response) =>
            response.json().catch(() => ({})).then((data) => {
                if (!response.ok) {
                    const error = new Error(data.error || ("The server answered " + response.status + "."));
                    error.status = response.status;
                    throw error;
                }
                return data;
            })
        );
    }

    function say(text, isError) {
        el.message.textContent = text || "";
        el.message.classList.toggle("error", Boolean(isError));
    }

    function preload(item) {
        const image = new Image();
        image.src = item.image.url;
        item.preloaded = image;
    }

    function renderCounters() {
        el.today.textContent = state.reviewedToday;
        el.left.textContent = Math.max(state.left, 0) + (state.moreLeft ? "+" : "");
    }

    const OUTCOME_MARKS = {confirmed: "✓", corrected: "✎", labelled: "•"};

    function stripEntry(entry) {
        return Object.assign({decision: Promise.resolve(entry.review)}, entry);
    }

    function renderStrip() {
        const strip = el.recent.querySelector("[data-field=strip]");
        strip.replaceChildren();
        for (const entry of state.strip) {
            const button = document.createElement("button");
            button.type = "button";
            button.className = "review-recent-entry " + entry.outcome;
            button.dataset.imageId = entry.image.id;
            if (entry.review) button.dataset.review = entry.review;
            const outcome = entry.outcome === "corrected" && entry.predicted
                ? "corrected (model: " + entry.predicted + ")"
                : entry.outcome;
            button.title = entry.image.name + ": " + entry.label + ", " + outcome
                + ". Click to undo it and decide again.";
            const thumb = document.createElement("img");
            thumb.alt = entry.image.name;
            thumb.src = entry.image.thumbnail_url;
            const caption = document.createElement("span");
            caption.textContent = OUTCOME_MARKS[entry.outcome] + " " + entry.label;
            button.append(thumb, caption);
            button.addEventListener("click", () => {
                button.blur();
                undo(entry);
            });
            strip.append(button);
        }
        el.recent.hidden = state.strip.length === 0;
    }

    function stripRemove(entry) {
        state.strip = state.strip.filter((other) => other !== entry);
        renderStrip();
    }

    /* An undo refused (the decision stands): its entry back in its place, before the ones made before it. */
    function stripRestore(entry, older) {
        if (state.strip.includes(entry)) return;
        const at = state.strip.findIndex((other) => older.includes(other));
        state.strip.splice(at === -1 ? state.strip.length : at, 0, entry);
        state.strip = state.strip.slice(0, STRIP_SIZE);
        renderStrip();
    }

    /* An answer's count and strip, once no other decision or undo is on its way (until then, the screen's own
     * step-by-step account is ahead of any one answer). */
    function settle(data) {
        state.inflight -= 1;
        if (state.inflight > 0) return;
        state.reviewedToday = data.reviewed_today;
        if (data.recent) {
            state.strip = data.recent.map(stripEntry);
            renderStrip();
        }
    }

    function show() {
        const item = state.items[0];
        el.stage.classList.remove("zoomed");
        for (const button of el.labels.querySelectorAll("[data-label-id]")) {
            button.classList.toggle("predicted", Boolean(item) && Number(button.dataset.labelId) === item.prediction.label_id);
        }
        if (!item) {
            el.image.hidden = true;
            el.image.removeAttribute("src");
            el.name.textContent = "";
            el.predicted.textContent = "";
            el.confidence.textContent = "";
            panels.bars(null);
            panels.suspicion(null);
            panels.similar(null);
            panels.votes(null);
            el.empty.hidden = !state.exhausted;
            if (!state.exhausted) say("Loading…");
            renderCounters();
            return;
        }
        el.empty.hidden = true;
        el.image.hidden = false;
        el.image.src = item.image.url;
        el.image.alt = item.image.name;
        // Tiny images are blown up to the stage; large ones just fit.
        el.image.classList.toggle("fit", item.image.width < 400 && item.image.height < 400);
        el.name.textContent = item.image.name;
        el.name.href = item.image.change_url;
        // Blind review (an overlap image with REVIEW_BLIND): the model's suggestion is not sent.
        const blind = Boolean(item.prediction.blind);
        el.predicted.textContent = blind ? "hidden (independent review)" : item.prediction.label;
        el.confidence.textContent = blind ? "" : (item.prediction.confidence * 100).toFixed(1) + "%";
        panels.bars(item.prediction);
        panels.suspicion(item);
        panels.votes(item);
        panels.similar(item);
        renderCounters();
        state.shownAt = performance.now();
        fill();
    }

    /* Keep HOLD images on hand: claim the missing ones and preload them. */
    function fill() {
        const missing = HOLD - state.items.length;
        if (missing <= 0 || state.fetching || state.exhausted) return state.fetching || Promise.resolve();
        const held = state.items.map((item) => item.image.id);
        state.fetching = post(config.urls.next, {count: missing, exclude: held.concat([...state.pending])})
            .then((data) => {
                const known = new Set(state.items.map((item) => item.image.id).concat([...state.pending]));
                const fresh = data.items.filter((item) => !known.has(item.image.id));
                fresh.forEach(preload);
                const wasEmpty = state.items.length === 0;
                state.items.push(...fresh);
                if (fresh.length < missing) state.exhausted = true;
                state.fetching = null;
                if (wasEmpty) {
                    say("");
                    show();
                } else {
                    fill();
                }
            })
            .catch((error) => {
                state.fetching = null;
                say("Could not load the next image: " + error.message, true);
            });
        return state.fetching;
    }

    function secondsSpent() {
        return ((performance.now() - state.shownAt) / 1000).toFixed(1);
    }

    function decide(label) {
        const item = state.items[0];
        if (!item) return;
        if (label === "confirm" && item.prediction.blind) {
            say("The model's label is hidden for this image: choose a label.", true);
            return;
        }
        const fields = {image: item.image.id, prediction: item.prediction.id, label: label, seconds: secondsSpent()};
        const chosen = label === "confirm" ? item.prediction.label_id : Number(label);
        const entry = {
            review: null,
            image: {
                id: item.image.id,
                name: item.image.name,
                thumbnail_url: item.image.thumbnail_url || item.image.url,
            },
            label: label === "confirm" ? item.prediction.label : labelsById.get(String(label)).name,
            outcome: item.prediction.blind ? "labelled"
                : chosen === item.prediction.label_id ? "confirmed" : "corrected",
            predicted: item.prediction.blind ? null : item.prediction.label,
        };
        state.items.shift();
        state.left -= 1;
        state.reviewedToday += 1;
        state.inflight += 1;
        state.pending.add(item.image.id);
        state.strip = [entry].concat(state.strip).slice(0, STRIP_SIZE);
        renderStrip();
        show();
        entry.decision = post(config.urls.decide, fields).finally(() => state.pending.delete(item.image.id)).then(
            (data) => {
                Object.assign(entry, data.decision);
                settle(data);
                renderStrip();
                renderCounters();
                return data.review;
            },
            (error) => {
                state.inflight -= 1;
                state.left += 1;
                state.reviewedToday -= 1;
                stripRemove(entry);
                renderCounters();
                say(item.image.name + ": " + error.message, true);
                return null;
            }
        );
        say("");
    }

    function skip() {
        const item = state.items.shift();
        if (!item) return;
        // A skipped image comes back once nothing else is left, so there is something to ask for again.
        state.exhausted = false;
        state.pending.add(item.image.id);
        show();
        post(config.urls.skip, {image: item.image.id})
            .catch((error) => say(error.message, true))
            .finally(() => state.pending.delete(item.image.id));
    }

    /* Take back `entry` (a click on the strip), else the newest decision: the strip's, or with an empty strip
     * the latest one the server knows. The image comes back on screen. */
    function undo(entry) {
        const target = entry || state.strip[0];
        const older = target ? state.strip.slice(state.strip.indexOf(target) + 1) : [];
        if (target) stripRemove(target);
        const reviewId = target ? target.decision : Promise.resolve(undefined);
        reviewId
            .then((id) => {
                if (id === null) return null; // refused when it was made: there is nothing to take back
                state.inflight += 1;
                return post(config.urls.undo, id === undefined ? {} : {review: id}).then(
                    (data) => {
                        state.reviewedToday -= 1;
                        settle(data);
                        return data;
                    },
                    (error) => {
                        state.inflight -= 1;
                        throw error;
                    }
                );
            })
            .then((data) => {
                if (!data) {
                    say("Nothing to undo.");
                    return;
                }
                if (data.item) {  // open again (not when a decision made since labelled it)
                    state.left += 1;
                    state.items = state.items.filter((item) => item.image.id !== data.item.image.id);
                    state.items.unshift(data.item);
                }
                show();
                say(data.message);
            })
            .catch((error) => {
                // 404: nothing of it is live any more; anything else leaves the decision as it was.
                if (target && error.status !== 404) stripRestore(target, older);
                renderCounters();
                say(error.status === 404 ? "Nothing to undo." : error.message, error.status !== 404);
            });
    }

    function toggleHelp(force) {
        el.help.hidden = force === undefined ? !el.help.hidden : !force;
    }

    function command(name) {
        if (name === "confirm") decide("confirm");
        else if (name === "skip") skip();
        else if (name === "undo") undo();
        else if (name === "help") toggleHelp();
    }

    document.addEventListener("keydown", (event) => {
        if (event.ctrlKey || event.metaKey || event.altKey) return;
        const target = event.target;
        if (target.closest && target.closest("input, select, textarea, form")) return;
        const key = event.key;
        if (key === "?") {
            toggleHelp();
        } else if (key === "Escape") {
            toggleHelp(false);
        } else if (!el.help.hidden) {
            return;
        } else if (key === "Enter") {
            command("confirm");
        } else if (key === "s" || key === "S" || key === "ArrowRight") {
            command("skip");
        } else if (key === "z" || key === "Z" || key === "Backspace") {
            command("undo");
        } else if (labelsByKey.has(key.toLowerCase())) {
            decide(labelsByKey.get(key.toLowerCase()).id);
        } else {
            return;
        }
        event.preventDefault();
    });

    el.labels.addEventListener("click", (event) => {
        const button = event.target.closest("[data-label-id]");
        if (button) decide(button.dataset.labelId);
    });
    for (const button of document.querySelectorAll("[data-command]")) {
        button.addEventListener("click", () => command(button.dataset.command));
    }
    el.stage.addEventListener("click", () => {
        if (state.items.length) el.stage.classList.toggle("zoomed");
    });
    el.help.addEventListener("click", (event) => {
        if (event.target === el.help) toggleHelp(false);
    });

    state.strip = config.recent.map(stripEntry);
    renderStrip();
    state.items = config.items.slice();
    state.items.forEach(preload);
    state.exhausted = state.items.length < HOLD;
    show();
})();
