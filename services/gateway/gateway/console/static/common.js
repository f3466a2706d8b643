// Shared by the console's pages: copy buttons, countdowns, .env lines, calls to the JSON API.

/** Every [data-copy] button copies the text of the element its selector names. */
export function wireCopyButtons(root = document) {
  root.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    await copyText(source.textContent, button);
  });
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard permission (an insecure origin): leave the text selected to copy by hand.
    const range = document.createRange();
    range.selectNodeContents(button.previousElementSibling || button);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  if (button) {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  }
}

/** Writes "3 h 12 min 5 s" into element until expiresAt (ISO), then "expired". */
export function countdown(element, expiresAt) {
  if (!expiresAt) { element.textContent = "never"; return () => {}; }
  const end = Date.parse(expiresAt);
  const tick = () => {
    let left = Math.max(0, Math.round((end - Date.now()) / 1000));
    if (left === 0) { element.textContent = "expired"; return; }
    const h = Math.floor(left / 3600); left -= h * 3600;
    const m = Math.floor(left / 60); const s = left - m * 60;
    element.textContent = (h ? `${h} h ` : "") + (h || m ? `${m} min ` : "") + `${s} s`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

const ENV_KEYS = { postgres: "DATABASE_URL", redis: "REDIS_URL", mongo: "MONGODB_URL", nats: "NATS_URL", webhook: "WEBHOOK_URL" };
const S3_KEYS = { ENDPOINT: "endpoint", REGION: "region", BUCKET: "bucket", ACCESS_KEY_ID: "access_key", SECRET_ACCESS_KEY: "secret_key" };

/** What an app connects to: the connection URL, or a webhook's receive URL. */
export function connectUrl(resource) {
  const credentials = resource.credentials || {};
  return resource.connection_url || credentials.receive_url || credentials.endpoint || "";
}

/** The .env lines the CLI would write for this resource (the same names). */
export function envLines(resource) {
  const credentials = resource.credentials || {};
  if (resource.kind === "s3") {
    return Object.entries(S3_KEYS)
      .filter(([, field]) => credentials[field] != null)
      .map(([name, field]) => `S3_${name}=${credentials[field]}`).join("\n");
  }
  const key = ENV_KEYS[resource.kind] || "URL";
  let lines = `${key}=${connectUrl(resource)}`;
  if (resource.kind === "nats" && credentials.creds) {
    lines += "\n# NATS_CREDS: save credentials.creds to a file and put its path here";
  }
  return lines;
}

/** A call to the JSON API; throws an Error carrying the API's message on a non-2xx answer. */
export async function api(method, path, { headers = {}, body } = {}) {
  const response = await fetch(path, {
    method,
    headers: { Accept: "application/json", ...headers },
    body,
    credentials: "same-origin",
    cache: "no-store",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.message || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = data.error;
    throw error;
  }
  return data;
}

/** The resource token in this page's fragment (#spn_…): it never reaches a server's log. */
export function tokenFromFragment() {
  const value = decodeURIComponent(window.location.hash.replace(/^#/, ""));
  return /^spn_[A-Za-z0-9_-]{20,}$/.test(value) ? value : null;
}
