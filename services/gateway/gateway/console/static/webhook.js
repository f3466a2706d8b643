// The webhook inspector: the stored requests, then new ones live from the SSE stream.
// The token comes from the fragment; every call goes to the JSON API with it.
import { api, copyText, tokenFromFragment, wireCopyButtons } from "./common.js";

wireCopyButtons();
const token = tokenFromFragment();
const list = document.getElementById("request-list");
const detail = document.getElementById("request-detail");
const liveDot = document.getElementById("live-dot");
const liveState = document.getElementById("live-state");
const requests = new Map();
let receiveUrl = "";
let selected = null;

function setLive(on, text) {
  liveDot.classList.toggle("on", on);
  liveState.textContent = text;
}

function decodeBody(request) {
  if (request.body_encoding !== "base64") return { text: request.body, binary: false };
  const raw = atob(request.body);
  return { text: raw, binary: true, bytes: Array.from(raw, (c) => c.charCodeAt(0)) };
}

function header(request, name) {
  const found = request.headers.find(([key]) => key.toLowerCase() === name);
  return found ? found[1] : "";
}

function prettyBody(request) {
  const body = decodeBody(request);
  if (body.binary) {
    const hex = body.bytes.slice(0, 1024).map((b) => b.toString(16).padStart(2, "0"));
    const rows = [];
    for (let i = 0; i < hex.length; i += 16) rows.push(hex.slice(i, i + 16).join(" "));
    const more = body.bytes.length > 1024 ? `\n… ${body.bytes.length - 1024} more bytes` : "";
    return { kind: `binary, ${request.size} bytes (hex)`, text: rows.join("\n") + more };
  }
  if (!body.text) return { kind: "empty", text: "" };
  const type = header(request, "content-type");
  if (type.includes("json") || /^\s*[[{]/.test(body.text)) {
    try { return { kind: "JSON", text: JSON.stringify(JSON.parse(body.text), null, 2) }; } catch { /* not JSON */ }
  }
  return { kind: type || "text", text: body.text };
}

function shellQuote(value) { return `'${String(value).replace(/'/g, `'\\''`)}'`; }

function asCurl(request) {
  const url = receiveUrl + (request.path === "/" ? "" : request.path) + (request.query ? `?${request.query}` : "");
  const parts = ["curl", "-X", request.method, shellQuote(url)];
  const skip = new Set(["host", "content-length", "user-agent", "accept-encoding", "x-forwarded-for", "x-forwarded-proto"]);
  for (const [name, value] of request.headers) {
    if (!skip.has(name.toLowerCase())) parts.push("-H", shellQuote(`${name}: ${value}`));
  }
  const body = decodeBody(request);
  if (body.text) parts.push(body.binary ? "--data-binary @body.bin" : `--data-raw ${shellQuote(body.text)}`);
  return parts.join(" ");
}

function render(request) {
  selected = request.id;
  for (const item of list.querySelectorAll("button")) {
    item.setAttribute("aria-current", item.dataset.id === request.id ? "true" : "false");
  }
  const view = document.getElementById("detail-template").content.cloneNode(true);
  const field = (name) => view.querySelector(`[data-f="${name}"]`);
  field("method").textContent = request.method;
  field("path").textContent = request.path;
  field("time").textContent = new Date(request.received_at).toLocaleString();
  field("sender").textContent = request.client_ip || "unknown";
  field("size").textContent = `${request.size} bytes`;
  field("query").textContent = request.query || "—";
  field("signature").textContent = request.signature
    ? `${request.signature.status}${request.signature.reason ? ` (${request.signature.reason})` : ""}` : "not checked";
  const rows = field("headers");
  for (const [name, value] of request.headers) {
    const row = document.createElement("tr");
    const th = document.createElement("th"); th.scope = "row"; th.textContent = name;
    const td = document.createElement("td"); td.className = "mono"; td.textContent = value;
    row.append(th, td); rows.append(row);
  }
  const body = prettyBody(request);
  field("body-kind").textContent = `(${body.kind})`;
  field("body").textContent = body.text || "(no body)";
  const curlButton = field("curl-button");
  curlButton.addEventListener("click", () => copyText(asCurl(request), curlButton));
  detail.replaceChildren(view);
}

function add(request, { atTop }) {
  if (requests.has(request.id)) return;
  requests.set(request.id, request);
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.id = request.id;
  const method = document.createElement("span");
  method.className = "badge method"; method.textContent = request.method;
  const path = document.createElement("span");
  path.className = "mono"; path.textContent = request.path + (request.query ? `?${request.query}` : "");
  const when = document.createElement("span");
  when.className = "when"; when.textContent = new Date(request.received_at).toLocaleTimeString();
  button.append(method, path, when);
  button.addEventListener("click", () => render(request));
  item.append(button);
  if (atTop) list.prepend(item); else list.append(item);
  document.getElementById("request-count").textContent = String(requests.size);
  if (atTop || selected === null) render(request);
}

async function start() {
  if (!token) { document.getElementById("missing-token").hidden = false; setLive(false, "No token"); return; }
  let resource;
  try {
    resource = await api("GET", `/resources/${token}`);
  } catch (error) {
    const problem = document.getElementById("missing-token");
    problem.textContent = error.message; problem.hidden = false; setLive(false, "Unavailable");
    return;
  }
  receiveUrl = resource.credentials.receive_url;
  document.getElementById("receive-url").textContent = receiveUrl;
  document.getElementById("try-curl").textContent = `curl -X POST ${receiveUrl} -H 'Content-Type: application/json' -d '{"hello": "world"}'`;
  const kept = resource.limits.requests_kept;
  document.getElementById("receiver-meta").textContent =
    `Keeps the newest ${kept} requests` + (resource.expires_at ? `; expires ${new Date(resource.expires_at).toLocaleString()}.` : ".");
  document.getElementById("receiver").hidden = false;
  document.getElementById("requests-section").hidden = false;
  const stored = await api("GET", `/webhook/${token}/requests`);
  for (const request of stored.requests) add(request, { atTop: false });
  follow();
}

async function catchUp() {
  // Requests that arrived while the stream was reconnecting: oldest first, each on top.
  const stored = await api("GET", `/webhook/${token}/requests`);
  for (const request of stored.requests.reverse()) add(request, { atTop: true });
}

function follow() {
  const stream = new EventSource(`/webhook/${token}/stream`);
  let reconnecting = false;
  stream.addEventListener("open", () => {
    setLive(true, "Live: new requests appear as they arrive");
    if (reconnecting) catchUp().catch(() => {});
    reconnecting = false;
  });
  stream.addEventListener("request", (event) => {
    document.getElementById("empty-hint")?.remove();
    add(JSON.parse(event.data), { atTop: true });
  });
  stream.addEventListener("closed", () => { setLive(false, "The receiver was deleted"); stream.close(); });
  stream.addEventListener("error", () => { reconnecting = true; setLive(false, "Reconnecting…"); });
}

document.getElementById("clear").addEventListener("click", async () => {
  if (!window.confirm("Forget every captured request? New ones keep arriving.")) return;
  await api("DELETE", `/webhook/${token}/requests`);
  requests.clear(); list.replaceChildren(); selected = null;
  document.getElementById("request-count").textContent = "0";
  const hint = document.createElement("p");
  hint.className = "muted"; hint.id = "empty-hint"; hint.textContent = "History cleared. Waiting for the next request…";
  detail.replaceChildren(hint);
});

window.addEventListener("hashchange", () => window.location.reload());
start();
