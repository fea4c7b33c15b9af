/* The image page's keys (predictions/admin/image_page.py): ← and → follow the previous and
   next links, a label's key presses its button. Keys typed into a field are left alone. */
"use strict";
document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    let target = null;
    if (event.key === "ArrowLeft") target = document.getElementById("image-previous");
    else if (event.key === "ArrowRight") target = document.getElementById("image-next");
    else target = [...document.querySelectorAll("#image-browse button[data-key]")]
        .find((button) => button.dataset.key === event.key.toLowerCase());
    if (target) {
        event.preventDefault();
        target.click();
    }
});
