// The dashboard: credentials are fetched only when asked for ("Show URL"), with the CSRF token.
import { api, connectUrl, wireCopyButtons } from "./common.js";

wireCopyButtons();
const csrf = document.getElementById("csrf").dataset.token;

document.querySelectorAll("[data-reveal]").forEach((button) => {
  button.addEventListener("click", async () => {
    const id = button.dataset.reveal;
    const panel = document.getElementById(`cred-${id}`);
    if (!panel.hidden) {
      panel.hidden = true;
      panel.querySelector("[data-secret]").textContent = "";
      button.textContent = "Show URL";
      button.setAttribute("aria-expanded", "false");
      return;
    }
    try {
      const resource = await api("POST", `/console/resources/${id}/credentials`, {
        headers: { "X-CSRF-Token": csrf },
      });
      panel.querySelector("[data-secret]").textContent = connectUrl(resource);
    } catch (error) {
      panel.querySelector("[data-secret]").textContent = `Could not load it: ${error.message}`;
    }
    panel.hidden = false;
    button.textContent = "Hide URL";
    button.setAttribute("aria-expanded", "true");
  });
});
