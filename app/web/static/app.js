// omi-backend pages: small progressive enhancements; every page works without them.
"use strict";

// Times arrive in UTC; show them in the browser's own time zone.
const formatter = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function localizeTimes(root) {
  for (const element of root.querySelectorAll("time[datetime]:not([data-local])")) {
    element.dataset.local = "";
    const when = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      element.title = element.textContent;
      element.textContent = formatter.format(when);
    }
  }
}

// htmx does not swap an error answer in: say so instead of failing silently.
function showError(text) {
  const flash = document.getElementById("flash");
  if (flash) flash.textContent = text;
}

document.addEventListener("DOMContentLoaded", () => localizeTimes(document));
document.addEventListener("htmx:load", (event) => localizeTimes(event.target));
document.addEventListener("htmx:beforeRequest", () => showError(""));
document.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail.xhr;
  showError(xhr.responseText && xhr.responseText.length < 300 ? xhr.responseText : `Error ${xhr.status}`);
});
document.addEventListener("htmx:sendError", () => showError("The server could not be reached."));
