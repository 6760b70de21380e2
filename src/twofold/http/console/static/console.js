// The console's only script: live regions and the version picker. Each fetches an HTML fragment
// the server rendered (and escaped) and puts it in place; without script the pages still work.
"use strict";

const REFRESH_EVERY = 2000; // milliseconds between refreshes of a live region

async function fragment(url) {
  const answer = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
  return answer.ok ? answer.text() : null;
}

for (const region of document.querySelectorAll("[data-refresh]")) {
  setInterval(async () => {
    const html = await fragment(region.dataset.refresh);
    if (html !== null) region.innerHTML = html;
  }, REFRESH_EVERY);
}

for (const picker of document.querySelectorAll("[data-state-picker]")) {
  const target = document.getElementById(picker.dataset.target);
  const label = document.getElementById(picker.dataset.label);
  let latest = 0; // answers can arrive out of order while the slider moves: only the last asked is shown
  picker.addEventListener("input", async () => {
    const asked = ++latest;
    label.textContent = picker.value;
    const url = new URL(picker.dataset.source, window.location.href);
    url.searchParams.set("version", picker.value);
    const html = await fragment(url);
    if (html !== null && asked === latest) target.innerHTML = html;
  });
}
