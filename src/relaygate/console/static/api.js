// The management API client: New API's envelope {success, message, data} in, ApiError out.
// Who is signed in: {id, username, role} in localStorage (not secret); an access token, when
// the user signed in with one instead of a password, only in sessionStorage (gone with the tab).
const WHO = "relaygate.who";
const ACCESS = "relaygate.access";

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
  get unauthorized() {
    return this.status === 401;
  }
}

export function who() {
  try {
    return JSON.parse(localStorage.getItem(WHO) || "null");
  } catch {
    return null;
  }
}

export function signIn(user, access) {
  localStorage.setItem(WHO, JSON.stringify({ id: user.id, username: user.username, role: user.role }));
  if (access) sessionStorage.setItem(ACCESS, access);
  else sessionStorage.removeItem(ACCESS);
}

export function signOut() {
  localStorage.removeItem(WHO);
  sessionStorage.removeItem(ACCESS);
}

function headers(hasBody) {
  const out = { Accept: "application/json" };
  const me = who();
  if (me) out["New-Api-User"] = String(me.id);
  const access = sessionStorage.getItem(ACCESS);
  if (access) out.Authorization = `Bearer ${access}`;
  if (hasBody) out["Content-Type"] = "application/json";
  return out;
}

/** One call; resolves to `data`, rejects with an ApiError carrying the server's message. */
export async function api(method, path, body, extraHeaders = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: { ...headers(body !== undefined), ...extraHeaders },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (err) {
    throw new ApiError(`Cannot reach the server (${err.message}). Check your connection and try again.`);
  }
  let data;
  try {
    data = await resp.json();
  } catch {
    throw new ApiError(`The server answered HTTP ${resp.status} without a readable body.`, resp.status);
  }
  if (resp.status === 401) {
    const message = data.message || "Please sign in again.";
    if (who()) window.dispatchEvent(new CustomEvent("relaygate:unauthorized", { detail: message }));
    throw new ApiError(message, 401);
  }
  if (!data || data.success !== true) {
    const message = (data && (data.message || (data.error && data.error.message))) || `Request failed (HTTP ${resp.status})`;
    throw new ApiError(message, resp.status);
  }
  return data.data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}
