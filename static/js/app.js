// Small behaviours without inline script (the Content-Security-Policy forbids it).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// A search with bad input answers 400 with its errors in the fragment: show them
// (htmx does not swap 4xx responses by default).
document.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.xhr.status === 400) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
