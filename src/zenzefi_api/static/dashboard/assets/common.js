// What both dashboard pages share: logging in, calling the JSON API, formatting, charts.
//
// The login token lives in sessionStorage: it survives moving between the two pages and reloads
// but not closing the tab, and is never sent anywhere except as the API's bearer header.
// Every value from the API reaches the page through textContent, never as HTML.

const TOKEN_KEY = "zenzefi.token";
const API = "/api/v1";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `The server answered ${status}`);
    this.status = status;
  }
}

export const byId = (id) => document.getElementById(id);

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

async function detailOf(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : "";
  } catch {
    return "";
  }
}

/** GET a JSON resource of the API with the bearer token; 401 means the login has ended. */
export async function api(path) {
  const response = await fetch(API + path, {
    headers: { Authorization: `Bearer ${getToken()}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401) {
    forgetToken();
    throw new Unauthorized("Your login has ended; log in again.");
  }
  if (!response.ok) {
    throw new ApiError(response.status, await detailOf(response));
  }
  return response.json();
}

function loginMessage(status, detail) {
  if (status === 401) return "Wrong email or password.";
  if (status === 429) return "Too many attempts. Wait a minute and try again.";
  return detail || `Logging in failed (the server answered ${status}).`;
}

/** Show the login form until the API accepts the credentials; resolves with the user. */
function logIn() {
  const section = byId("login");
  const form = byId("login-form");
  const message = byId("login-message");
  const submit = byId("login-submit");
  section.hidden = false;
  byId("main").dataset.state = "login";
  byId("login-email").focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.hidden = true;
      submit.disabled = true;
      try {
        const response = await fetch(`${API}/auth/login`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({
            email: byId("login-email").value.trim(),
            password: byId("login-password").value,
          }),
        });
        if (!response.ok) {
          message.textContent = loginMessage(response.status, await detailOf(response));
          message.hidden = false;
          return;
        }
        const body = await response.json();
        sessionStorage.setItem(TOKEN_KEY, body.access_token);
        const me = await api("/users/me");
        form.reset();
        section.hidden = true;
        resolve(me);
      } catch (error) {
        message.textContent =
          error instanceof ApiError ? error.message : "The server could not be reached.";
        message.hidden = false;
      } finally {
        submit.disabled = false;
      }
    });
  });
}

/** The logged-in user: from the stored token if it is still good, else through the form. */
async function currentUser() {
  if (getToken()) {
    try {
      return await api("/users/me");
    } catch (error) {
      if (!(error instanceof Unauthorized)) throw error;
    }
  }
  return logIn();
}

function showShell(me) {
  byId("who").textContent = me.username;
  byId("admin-link").hidden = !me.is_superuser;
  byId("logout").addEventListener("click", () => {
    forgetToken();
    window.location.assign("/dashboard");
  });
  byId("nav").hidden = false;
}

/** A failure that stops the whole page, in words; a 401 sends the user back to the form. */
export function showPageError(error) {
  if (error instanceof Unauthorized) {
    window.location.reload();
    return;
  }
  const message = byId("page-message");
  message.textContent =
    error instanceof ApiError
      ? error.message
      : "The page could not load its data. Try again in a moment.";
  message.hidden = false;
  byId("main").dataset.state = "error";
}

/** A failure of one section, shown in it; the rest of the page carries on. */
export function showSectionError(section, error) {
  if (error instanceof Unauthorized) {
    showPageError(error);
    return;
  }
  const message = section.querySelector(".section-error");
  message.textContent =
    error instanceof ApiError ? error.message : "The server could not be reached.";
  message.hidden = false;
}

export function clearSectionError(section) {
  section.querySelector(".section-error").hidden = true;
}

/** Log in if needed, then run the page; `render(me)` fills the page. */
export async function startPage(render) {
  let me;
  try {
    me = await currentUser();
  } catch (error) {
    showPageError(error);
    return;
  }
  showShell(me);
  try {
    await render(me);
  } catch (error) {
    showPageError(error);
  }
}

/** Wire the Day / Week / Month buttons; `load(period)` runs at once and on every change, one
 * at a time, so a slow answer never overwrites a later choice. */
export async function periodSwitch(container, load) {
  const buttons = [...container.querySelectorAll("button[data-period]")];
  let current = "day";
  const first = load(current);
  let loading = first.catch(() => undefined);
  for (const button of buttons) {
    button.addEventListener("click", () => {
      if (button.dataset.period === current) return;
      current = button.dataset.period;
      for (const other of buttons) other.setAttribute("aria-pressed", String(other === button));
      const period = current;
      loading = loading.then(() => load(period)).catch(showPageError);
    });
  }
  await first;
}

export function setText(id, value) {
  byId(id).textContent = value;
}

export function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

export function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

const counts = new Intl.NumberFormat();

export function formatCount(value) {
  return counts.format(value);
}

/** Money arrives as a string with two decimals and is shown as it came. */
export function formatZnc(value) {
  return `${value} ZNC`;
}

const BYTE_UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${BYTE_UNITS[unit]}`;
}

export function formatDuration(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return `${minutes} min`;
  return total > 0 ? "under a minute" : "0 min";
}

export function formatMinutes(minutes) {
  return minutes < 1 && minutes > 0 ? "under a minute" : formatDuration(minutes * 60);
}

const moments = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const hours = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const days = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

export function formatMoment(iso) {
  return iso ? moments.format(new Date(iso)) : "—";
}

/** The chart label of a bucket: its start, as an hour of the day or as a date. */
export function bucketLabel(iso, bucket) {
  const start = new Date(iso);
  return bucket === "hour" ? hours.format(start) : days.format(start);
}

export function windowText(stats) {
  return `${formatMoment(stats.start_time)} – ${formatMoment(stats.end_time)}`;
}

export const COLORS = {
  blue: "#2f80c9",
  teal: "#2a9d8f",
  orange: "#e07a1f",
  red: "#c8553d",
  purple: "#7b5ea7",
};

/** Draw a chart on `canvas`, or give the one already there new data (after a period switch). */
export function drawChart(canvas, type, data, options = {}) {
  const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  const existing = window.Chart.getChart(canvas);
  if (existing) {
    existing.data = data;
    existing.update(reduceMotion ? "none" : undefined);
    return existing;
  }
  const { plugins = {}, ...rest } = options;
  return new window.Chart(canvas, {
    type,
    data,
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: reduceMotion ? false : { duration: 300 },
      interaction: { mode: "index", intersect: false },
      ...rest,
      plugins: {
        // In the order the datasets are listed, whatever order they are drawn in.
        legend: { position: "bottom", labels: { sort: (a, b) => a.datasetIndex - b.datasetIndex } },
        ...plugins,
      },
    },
  });
}
