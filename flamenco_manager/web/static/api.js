// The dashboard's connection to the manager: JSON calls to the user API, and the event stream.
// Both authenticate with the jwtToken cookie that /login set, so no token is handled here.

export class ApiError extends Error {
  constructor(status, message, errors = []) {
    super(message);
    this.status = status;
    this.errors = errors;
  }
}

/** Call the user API; the decoded JSON answer, or null for an empty one. Throws ApiError. */
export async function api(method, path, body = undefined) {
  const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(0, "The manager cannot be reached.");
  }
  if (response.status === 401 || response.status === 498) {
    // The token expired or was revoked: the page at / asks for a new one.
    window.location.assign("/");
    throw new ApiError(response.status, "Please log in again.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (error) {
      data = { message: text.trim() };
    }
  }
  if (!response.ok) {
    const message = (data && data.message) || `${method} ${path} answered ${response.status}`;
    throw new ApiError(response.status, message, (data && data.errors) || []);
  }
  return data;
}

/**
 * Listen to /api/events. `onEvent(kind, data)` gets every job, task and worker event;
 * `onState(state)` hears "live", "connecting" or "offline"; `onResync()` is called after every
 * (re)connection, when events may have been missed and the views should reload.
 */
export function listen({ onEvent, onState, onResync }) {
  let source = null;
  let retry = null;
  let delay = 1000;

  function open() {
    onState("connecting");
    source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      delay = 1000;
      onState("live");
      onResync();
    });
    for (const kind of ["job", "task", "worker"]) {
      source.addEventListener(kind, (message) => {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch (error) {
          return;
        }
        onEvent(kind, data);
      });
    }
    source.addEventListener("overflow", () => {
      // We fell behind: the server closed our stream. Reconnect and reload everything.
      reconnect();
    });
    source.addEventListener("unauthorized", () => {
      // The token expired or was revoked: the server ended the stream; the login page.
      source.close();
      window.location.assign("/");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        reconnect();
      } else {
        onState("connecting");
      }
    });
  }

  function reconnect() {
    if (source) source.close();
    onState("offline");
    clearTimeout(retry);
    retry = setTimeout(async () => {
      // A 401 means the token is gone: the login page takes over.
      try {
        const probe = await fetch("/api/farm", { credentials: "same-origin" });
        if (probe.status === 401 || probe.status === 498) {
          window.location.assign("/");
          return;
        }
      } catch (error) {
        // Still unreachable; try the stream anyway, it reports again.
      }
      delay = Math.min(delay * 2, 15000);
      open();
    }, delay);
  }

  open();
  return () => {
    clearTimeout(retry);
    if (source) source.close();
  };
}
