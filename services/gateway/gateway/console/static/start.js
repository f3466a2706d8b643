// The start page: one button per kind creates one anonymously (POST /<kind>/new, the API itself).
import { api, connectUrl, countdown, envLines, wireCopyButtons } from "./common.js";

wireCopyButtons();
const status = document.getElementById("create-status");
const result = document.getElementById("result");
let stopCountdown = () => {};

document.querySelectorAll("[data-create]").forEach((button) => {
  button.addEventListener("click", async () => {
    const label = button.firstChild.textContent.trim();
    document.querySelectorAll("[data-create]").forEach((b) => { b.disabled = true; });
    status.textContent = `Creating a ${label}…`;
    try {
      const created = await api("POST", `/${button.dataset.create}/new`);
      show(created, label);
      status.textContent = `Your ${label} is ready.`;
    } catch (error) {
      status.textContent = `Could not create it: ${error.message}`;
    } finally {
      document.querySelectorAll("[data-create]").forEach((b) => { b.disabled = false; });
    }
  });
});

function show(created, label) {
  document.getElementById("result-h").textContent = `${label} ${created.id.slice(0, 8)}`;
  document.getElementById("result-url-label").textContent =
    created.kind === "webhook" ? "Receive URL" : created.kind === "s3" ? "Endpoint" : "Connection URL";
  document.getElementById("result-url").textContent = connectUrl(created);
  document.getElementById("result-env").textContent = envLines(created);
  document.getElementById("result-token").textContent = created.token;
  document.getElementById("result-claim").textContent = created.claim_url || "";
  document.getElementById("result-claim-link").href = created.claim_url || "/console";
  document.getElementById("result-console").href = created.console_url || "#";
  stopCountdown();
  stopCountdown = countdown(document.getElementById("result-expiry"), created.expires_at);
  result.hidden = false;
  document.getElementById("result-h").setAttribute("tabindex", "-1");
  document.getElementById("result-h").focus();
}
