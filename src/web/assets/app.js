// campaignd dashboard: the little htmx does not do by itself.
// A request that never got an answer (network down, service stopping) says so where the
// page shows errors, instead of failing silently.
document.addEventListener("htmx:sendError", function () {
  var slot = document.querySelector("[data-testid=action-error]") || document.querySelector("[role=alert]");
  if (slot) slot.textContent = "The service did not answer. Check your connection and try again.";
});
