// A stack's page, reached with its token in the fragment: status, services, live logs, control.
import { api, tokenFromFragment } from "./common.js";

const token = tokenFromFragment();
const problem = document.getElementById("problem");
const status = document.getElementById("action-status");
const logs = document.getElementById("logs");
let refreshTimer = null;

function fail(message) { problem.textContent = message; problem.hidden = false; }

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function show(resource) {
  const stack = resource.stack;
  document.getElementById("stack-h").textContent = `App stack${resource.name ? ` ${resource.name}` : ""}`;
  const badge = document.getElementById("stack-status");
  badge.textContent = stack.status;
  badge.className = `badge ${stack.status === "running" ? "ok" : stack.status === "failed" ? "warn" : ""}`;
  document.getElementById("stack-revision").textContent = `revision ${stack.revision}`;
  const failure = document.getElementById("stack-failure");
  failure.hidden = !stack.failure;
  failure.textContent = stack.failure ? `${stack.failed_service || "A service"} failed: ${stack.failure}` : "";
  const rows = Object.entries(stack.services).map(([name, service]) => {
    const row = document.createElement("tr");
    const url = document.createElement("td");
    if (service.url) {
      const link = document.createElement("a");
      link.href = service.url; link.textContent = service.url; link.rel = "noreferrer";
      url.append(link);
    } else { url.textContent = "—"; }
    row.append(cell(name), cell(service.status), url, cell(service.image || "—", "hide-narrow mono small"));
    return row;
  });
  document.getElementById("services").replaceChildren(...rows);
  const backing = Object.entries(stack.resources).map(([name, child]) => {
    const item = document.createElement("li");
    item.textContent = `${name}: ${child.kind} (${child.status})`;
    return item;
  });
  document.getElementById("backing").replaceChildren(...backing);
  document.getElementById("backing-panel").hidden = backing.length === 0;
  document.getElementById("stack").hidden = false;
}

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const resource = await api("GET", `/resources/${token}`);
    if (resource.kind !== "stack") { window.location.replace(`/console/resource#${token}`); return; }
    show(resource);
    // While something is changing, look again soon.
    const settled = ["running", "failed", "stopped"].includes(resource.stack.status);
    refreshTimer = setTimeout(refresh, settled ? 10000 : 2000);
  } catch (error) {
    fail(error.message);
  }
}

function followLogs() {
  const stream = new EventSource(`/resources/${token}/logs?follow=1`);
  const dot = document.getElementById("live-dot");
  const state = document.getElementById("live-state");
  stream.addEventListener("open", () => {
    // A reconnected stream sends the stored lines again: start the view over.
    logs.textContent = "";
    dot.classList.add("on"); state.textContent = "Live";
  });
  stream.addEventListener("log", (event) => {
    const entry = JSON.parse(event.data);
    const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.append(`${entry.source} | ${entry.line}\n`);
    if (atBottom) logs.scrollTop = logs.scrollHeight;
  });
  stream.addEventListener("closed", () => {
    dot.classList.remove("on"); state.textContent = "The stack was deleted"; stream.close();
  });
  stream.addEventListener("error", () => { dot.classList.remove("on"); state.textContent = "Reconnecting…"; });
}

document.querySelectorAll("[data-action]").forEach((button) => {
  button.addEventListener("click", async () => {
    const action = button.dataset.action;
    status.textContent = `${action}…`;
    try {
      const done = await api("POST", `/stacks/${token}/${action}`);
      status.textContent = `${action}: the stack is ${done.status}.`;
    } catch (error) { status.textContent = `Could not ${action}: ${error.message}`; }
    refresh();
  });
});

document.getElementById("delete").addEventListener("click", async () => {
  if (!window.confirm("Delete this stack, its containers and its backing resources for good?")) return;
  try {
    await api("DELETE", `/resources/${token}`);
    clearTimeout(refreshTimer);
    document.getElementById("stack").hidden = true;
    fail("Deleted. Its URLs and backing resources are gone.");
  } catch (error) { status.textContent = `Could not delete: ${error.message}`; }
});

if (token) { refresh(); followLogs(); } else { fail(problem.textContent); }
