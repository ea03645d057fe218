// The pages' one way to call the server: same-origin fetch with the session cookie and the CSRF
// token every page carries in <meta name="csrf-token">. Errors come back as ApiError with the
// REST envelope's code and message ({"error": {"code", "message"}}, docs/protocol.md).

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// api(path, {method, json, form, signal}) -> parsed JSON (or null for an empty body).
// `json`: an object sent as application/json; `form`: a FormData sent as multipart.
export async function api(path, { method = "GET", json, form, signal } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  const response = await fetch(path, { method, headers, body, credentials: "same-origin", signal });
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`,
                       error.message || `${response.status} ${response.statusText}`, data);
  }
  return data;
}

// A short message for a failed call, for an element with role="alert".
export function describeError(error) {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return String(error && error.message ? error.message : error);
}
