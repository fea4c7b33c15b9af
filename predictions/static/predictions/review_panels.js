/* The review screen's panels beside the image (review.js shows the image and
 * takes the decisions): the model's probabilities, a suspected label error, the
 * votes an adjudication weighs, and more like this. Each renders from the item
 * as the server sent it (review_views.py), and hides or empties for null.
 */
"use strict";

window.reviewPanels = function (el, {isCurrent}) {
    function bars(prediction) {
        el.bars.replaceChildren();
        if (!prediction) return;
        for (const row of prediction.top) {
            const li = document.createElement("li");
            li.classList.toggle("top", row.label_id === prediction.label_id);
            const bar = document.createElement("span");
            bar.className = "bar";
            bar.style.width = (row.probability * 100).toFixed(1) + "%";
            const text = document.createElement("span");
            text.className = "text";
            const name = document.createElement("span");
            name.textContent = row.label;
            const value = document.createElement("span");
            value.textContent = (row.probability * 100).toFixed(1) + "%";
            text.append(name, value);
            li.append(bar, text);
            el.bars.append(li);
        }
    }

    /* A label the latest audit flagged ("Suspected label errors" order): the label given, the one suggested, the score. */
    function suspicion(item) {
        if (!el.suspicion) return;
        const flagged = item ? item.suspicion : null;
        el.suspicion.hidden = !flagged;
        for (const button of el.labels.querySelectorAll("[data-label-id]")) {
            button.classList.toggle("given", Boolean(flagged) && Number(button.dataset.labelId) === flagged.given_label_id);
        }
        if (!flagged) return;
        el.suspicion.querySelector("[data-field=given]").textContent = flagged.given_label;
        el.suspicion.querySelector("[data-field=suggested]").textContent = flagged.suggested_label;
        el.suspicion.querySelector("[data-field=score]").textContent = flagged.score.toFixed(3);
    }

    /* An image waiting for adjudication (Leads): what the independent reviewers said. */
    function votes(item) {
        if (!el.votes) return;
        const said = item ? item.votes : null;
        el.votes.hidden = !said;
        el.votes.querySelector("[data-field=votes]").textContent = said
            ? said.map((vote) => vote.label + " ×" + vote.count).join(", ")
            : "";
    }

    /* More like this: the images most like the current one, with their labels (asked once per image;
     * not for a blind review, where labels would tell what the model's suggestion is hidden to avoid). */
    const similarAsked = new Map();
    function similar(item) {
        if (!el.similar) return;
        const strip = el.similar.querySelector("[data-field=strip]");
        strip.replaceChildren();
        el.similar.hidden = true;
        if (!item || item.prediction.blind || !item.image.similar_url) return;
        if (similarAsked.size > 50) similarAsked.clear();
        if (!similarAsked.has(item.image.id)) {
            similarAsked.set(item.image.id, fetch(item.image.similar_url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
                .then((response) => (response.ok ? response.json() : {items: []}))
                .catch(() => ({items: []})));
        }
        similarAsked.get(item.image.id).then((data) => {
            if (!isCurrent(item)) return; // the screen has moved on
            for (const other of data.items) {
                const link = document.createElement("a");
                link.href = other.change_url;
                link.target = "_blank";
                link.title = other.name + " (" + other.similarity.toFixed(2) + ")";
                const thumb = document.createElement("img");
                thumb.alt = "";
                thumb.loading = "lazy";
                if (other.thumbnail_url) thumb.src = other.thumbnail_url;
                // The label on its own line (cut with an ellipsis when long), so the similarity always shows.
                const caption = document.createElement("span");
                caption.textContent = other.label ? other.label + (other.reviewed ? "" : "?") : "";
                caption.classList.toggle("reviewed", other.reviewed);
                const similarity = document.createElement("span");
                similarity.textContent = other.similarity.toFixed(2);
                link.append(thumb, caption, similarity);
                strip.append(link);
            }
            el.similar.hidden = data.items.length === 0;
        });
    }

    return {bars, suspicion, votes, similar};
};
