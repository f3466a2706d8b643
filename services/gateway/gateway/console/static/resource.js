// A resource's page, reached with its token in the fragment: it calls the JSON API with it.
import { api, connectUrl, countdown, envLines, tokenFromFragment, wireCopyButtons } from "./common.js";

wireCopyButtons();
const token = tokenFromFragment();
const problem = document.getElementById("problem");
const status = document.getElementById("action-status");
const labels = { postgres: "Postgres database", redis: "Redis cache", mongo: "MongoDB database", nats: "NATS JetStream account", s3: "S3 bucket", webhook: "Webhook receiver", stack: "App stack" };
let resource = null;
let stopCountdown = () => {};

function fail(message) { problem.textContent = message; problem.hidden = false; }

function showCredentials() {
  document.getElementById("res-url").textContent = connectUrl(resource);
  document.getElementById("res-env").textContent = envLines(resource);
}

function show() {
  document.getElementById("res-h").textContent = `${labels[resource.kind] || resource.kind}${resource.name ? ` ${resource.name}` : ""}`;
  document.getElementById("res-status").textContent = resource.status;
  document.getElementById("res-tier").textContent = resource.tier;
  document.getElementById("res-id").textContent = resource.id;
  document.getElementById("res-created").textContent = resource.created_at ? new Date(resource.created_at).toLocaleString() : "—";
  stopCountdown();
  stopCountdown = countdown(document.getElementById("res-expiry"), resource.expires_at);
  document.getElementById("extend").hidden = !resource.expires_at || Boolean(resource.parent_id);
  const usage = resource.usage || {};
  document.getElementById("res-usage").textContent = usage.quota_bytes
    ? `${((usage.bytes || 0) / 1048576).toFixed(1)} of ${Math.round(usage.quota_bytes / 1048576)} MB${usage.over_quota ? " (over quota: writes refused)" : ""}`
    : "no quota";
  if (resource.stack) {
    const names = Object.entries(resource.stack.services).map(([name, s]) => `${name}: ${s.status}${s.url ? ` at ${s.url}` : ""}`);
    document.getElementById("stack-services").textContent = `Stack ${resource.stack.status}. ${names.join("; ")}`;
  }
  document.getElementById("claim-hint").hidden = !resource.expires_at;
  document.getElementById("resource").hidden = false;
}

async function load() {
  if (!token) { fail(problem.textContent); return; }
  try {
    resource = await api("GET", `/resources/${token}`);
  } catch (error) { fail(error.message); return; }
  if (resource.kind === "webhook") { window.location.replace(`/console/webhook#${token}`); return; }
  if (resource.kind === "stack") { window.location.replace(`/console/stack#${token}`); return; }
  show();
}

document.getElementById("reveal").addEventListener("click", (event) => {
  const panel = document.getElementById("credentials");
  panel.hidden = !panel.hidden;
  if (panel.hidden) {
    document.getElementById("res-url").textContent = ""; document.getElementById("res-env").textContent = "";
  } else { showCredentials(); }
  event.target.textContent = panel.hidden ? "Reveal" : "Hide";
  event.target.setAttribute("aria-expanded", String(!panel.hidden));
});

document.getElementById("extend").addEventListener("click", async () => {
  try {
    const extended = await api("POST", `/resources/${token}/extend`, {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ttl_seconds: 24 * 3600 }),
    });
    resource = await api("GET", `/resources/${token}`);
    show();
    status.textContent = `Extended: it now expires ${new Date(extended.expires_at).toLocaleString()} (${extended.extensions_left} extensions left).`;
  } catch (error) { status.textContent = `Could not extend: ${error.message}`; }
});

document.getElementById("rotate").addEventListener("click", async () => {
  if (!window.confirm("Rotate the credentials? The current ones stop working at once.")) return;
  try {
    const issued = await api("POST", `/resources/${token}/rotate`);
    resource = { ...resource, connection_url: issued.connection_url, credentials: issued.credentials };
    showCredentials();
    document.getElementById("credentials").hidden = false;
    document.getElementById("reveal").textContent = "Hide";
    status.textContent = issued.note;
  } catch (error) { status.textContent = `Could not rotate: ${error.message}`; }
});

document.getElementById("delete").addEventListener("click", async () => {
  if (!window.confirm("Delete this resource and its data for good?")) return;
  try {
    await api("DELETE", `/resources/${token}`);
    document.getElementById("resource").hidden = true;
    fail("Deleted. Its credentials no longer work.");
  } catch (error) { status.textContent = `Could not delete: ${error.message}`; }
});

load();
