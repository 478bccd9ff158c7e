// The console's one way to the API: the session cookie goes along by itself, the
// CSRF token is added to every change, and an RFC 9457 problem becomes an Error
// carrying its status and detail.

let csrf = "";
let onLoggedOut = () => {};

export function setSession(info) { csrf = info ? info.csrf_token : ""; }
export function whenLoggedOut(fn) { onLoggedOut = fn; }

export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const detail = (data && data.detail) || resp.statusText;
    if (resp.status === 401 && !path.startsWith("/console/session")) onLoggedOut();
    throw new ApiError(resp.status, detail);
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}
