// The Flamenco Manager dashboard: jobs, tasks and their logs, workers, the latest image, the
// farm status. It reads the user API, and the event stream tells it what to read again:
// events say *what* changed, the API says what it looks like now. So a missed or reordered
// event never leaves the page wrong for longer than the next reload of that part.
//
// Rows are kept per ID and updated in place, so focus and selection survive live updates.

import { api, listen } from "./api.js";

const config = JSON.parse(document.getElementById("flamenco-config").textContent);

// --- small DOM helpers ---------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function badge(status) {
  return h("span", { class: "badge", "data-status": status || "new", text: status || "new" });
}

function updateBadge(element, status) {
  element.dataset.status = status || "new";
  setText(element, status || "new");
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function ago(iso) {
  if (!iso) return "never";
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const steps = [
    [60, "second"],
    [3600, "minute", 60],
    [86400, "hour", 3600],
    [Infinity, "day", 86400],
  ];
  for (const [limit, unit, size = 1] of steps) {
    if (Math.abs(seconds) < limit) return relative.format(Math.round(seconds / size), unit);
  }
  return "";
}

function timeElement(iso) {
  const element = h("time", { "data-rel": "" });
  setTime(element, iso);
  return element;
}

function setTime(element, iso) {
  element.dateTime = iso || "";
  element.title = iso ? new Date(iso).toLocaleString() : "";
  setText(element, ago(iso));
}

function duration(seconds) {
  if (seconds === undefined || seconds === null) return "";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${whole % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function progressCell(percent, label) {
  const bar = h("progress", { max: 100, value: percent, "aria-label": label });
  return h("div", { class: "progress-cell" }, bar, h("span", { text: `${percent}%` }));
}

function updateProgress(cell, percent) {
  cell.querySelector("progress").value = percent;
  setText(cell.querySelector("span"), `${percent}%`);
}

/** Keep `tbody`'s rows in the order of `items`, one per key, reusing existing rows. */
function syncRows(tbody, items, key, create, update) {
  const existing = new Map();
  for (const row of tbody.rows) existing.set(row.dataset.key, row);
  let previous = null;
  for (const item of items) {
    const id = key(item);
    let row = existing.get(id);
    if (row) existing.delete(id);
    else {
      row = create(item);
      row.dataset.key = id;
    }
    update(row, item);
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (wanted !== row) tbody.insertBefore(row, wanted);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
}

// No forced layout to restart a running flash (reading offsetWidth did that, for each changed
// row: on a long table that kept the page busy for minutes); a row still flashing stays so.
function flash(row) {
  if (row.classList.contains("row-flash")) return;
  row.classList.add("row-flash");
  row.addEventListener("animationend", () => row.classList.remove("row-flash"), { once: true });
  row.addEventListener("animationcancel", () => row.classList.remove("row-flash"), { once: true });
}

/** Run `fn` at most once per `ms`, never twice at once, and always once more after a request. */
function throttled(fn, ms) {
  let running = false;
  let pending = false;
  let timer = null;
  let last = 0;
  async function run() {
    timer = null;
    if (running) {
      pending = true;
      return;
    }
    running = true;
    pending = false;
    last = Date.now();
    try {
      await fn();
    } catch (error) {
      reportError(error);
    } finally {
      running = false;
      if (pending) request();
    }
  }
  function request() {
    if (timer !== null) return;
    if (running) {
      pending = true;
      return;
    }
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  }
  return request;
}

// --- notifications and confirmation --------------------------------------------------------

const toasts = document.getElementById("toasts");

function toast(message, kind = "info") {
  const element = h("div", { class: `toast ${kind}`, text: message });
  if (kind === "error") element.setAttribute("role", "alert");
  toasts.append(element);
  setTimeout(() => element.remove(), kind === "error" ? 8000 : 4000);
}

function reportError(error) {
  const details = error && error.errors && error.errors.length ? `: ${error.errors.join("; ")}` : "";
  toast(`${(error && error.message) || error}${details}`, "error");
}

const confirmDialog = document.getElementById("confirm");

function confirmAction(title, text, okLabel) {
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  confirmDialog.returnValue = "";
  const opener = document.activeElement;
  confirmDialog.showModal();
  return new Promise((resolve) => {
    confirmDialog.addEventListener(
      "close",
      () => {
        if (opener && opener.isConnected) opener.focus();
        resolve(confirmDialog.returnValue === "ok");
      },
      { once: true },
    );
  });
}

/**
 * Run an action from a button and report the outcome. The button is marked busy, not disabled,
 * meanwhile: a disabled button would drop the keyboard focus.
 */
async function act(button, work, done) {
  if (button) {
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
  }
  try {
    await work();
    if (done) toast(done);
  } catch (error) {
    reportError(error);
  } finally {
    if (button) button.removeAttribute("aria-busy");
    refreshAfterAction();
  }
}

/**
 * Enable or disable a button as the state allows. When the focused button becomes disabled the
 * focus moves to `fallback` (the panel's heading) instead of being lost to the page.
 */
function allow(button, allowed, fallback) {
  if (!allowed && document.activeElement === button && fallback) fallback.focus();
  button.disabled = !allowed;
}

// --- state and routing ---------------------------------------------------------------------

const state = {
  view: "jobs",
  jobId: null,
  taskId: null,
  workerId: null,
  jobs: new Map(),
  jobOrder: [],
  nextCursor: "",
  pageSize: 50,
  tasks: [],
  taskOffset: 0,
  workers: [],
  worker: null,
  follow: true,
  logLines: 200,
};

function parseRoute() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const view = ["jobs", "workers", "image"].includes(parts[0]) ? parts[0] : "jobs";
  return {
    view,
    jobId: view === "jobs" ? parts[1] || null : null,
    taskId: view === "jobs" && parts[2] === "tasks" ? parts[3] || null : null,
    workerId: view === "workers" ? parts[1] || null : null,
  };
}

function go(hash) {
  if (window.location.hash !== hash) window.location.hash = hash;
}

/** A deleted job: leave its page at once, so that nothing asks for the job or its task again. */
function forgetJob(id) {
  state.jobs.delete(id);
  if (state.jobId !== id) return;
  go("#/jobs");
  applyRoute(); // Now, not at the hashchange: a reload of the job could start before it.
}

function applyRoute() {
  const route = parseRoute();
  const viewChanged = route.view !== state.view;
  const jobChanged = route.jobId !== state.jobId;
  const taskChanged = route.taskId !== state.taskId;
  const workerChanged = route.workerId !== state.workerId;
  Object.assign(state, route);
  for (const name of ["jobs", "workers", "image"]) {
    document.getElementById(`view-${name}`).hidden = name !== state.view;
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === state.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const titles = { jobs: "Jobs", workers: "Workers", image: "Latest image" };
  document.title = `${titles[state.view]} · ${config.manager_name}`;
  if (state.view === "jobs") {
    markSelected(jobsView.tbody, state.jobId);
    if (jobChanged || viewChanged) {
      state.tasks = [];
      if (jobChanged) {
        state.taskOffset = 0;
        jobDetail.filter.value = "";
      }
      renderJobDetail();
      if (state.jobId) loadJob();
    }
    if (taskChanged || jobChanged || viewChanged) {
      renderTaskDetail();
      if (state.taskId) {
        // Bring the task into view once it is filled in, so its log fits the window.
        taskDetail.scrollPending = true;
        loadTask();
      }
    }
    markSelected(jobDetail.tbody, state.taskId);
    if (viewChanged) loadJobs();
  } else if (state.view === "workers") {
    if (viewChanged) loadWorkers();
    markSelected(workersView.tbody, state.workerId);
    if (workerChanged || viewChanged) {
      state.worker = null;
      renderWorkerDetail();
      if (state.workerId) loadWorker();
    }
  } else if (state.view === "image") {
    loadImage();
  }
}

function markSelected(tbody, id) {
  if (!tbody) return;
  for (const row of tbody.rows) {
    row.setAttribute("aria-selected", row.dataset.key === id ? "true" : "false");
  }
}

// --- farm status ---------------------------------------------------------------------------

const farmElement = document.getElementById("farm-status");

const loadFarm = throttled(async () => {
  const farm = await api("GET", "/api/farm");
  const stateElement = farmElement.querySelector(".farm-state");
  stateElement.dataset.state = farm.state;
  setText(stateElement, `Farm ${farm.state}`);
  const workers = Object.values(farm.workers).reduce((sum, count) => sum + count, 0);
  const awake = farm.workers.awake || 0;
  const running = (farm.tasks.active || 0) + (farm.tasks["cancel-requested"] || 0);
  const waiting =
    (farm.tasks.queued || 0) + (farm.tasks["claimed-by-manager"] || 0) + (farm.tasks["soft-failed"] || 0);
  setText(
    farmElement.querySelector(".farm-counts"),
    `${awake} of ${workers} workers awake · ${running} running · ${waiting} waiting`,
  );
}, 500);

// --- jobs ----------------------------------------------------------------------------------

const JOB_FILTERS = [
  ["", "All statuses"],
  ["active,queued,requeued,cancel-requested,fail-requested", "Unfinished"],
  ["active", "Active"],
  ["queued", "Queued"],
  ["paused", "Paused"],
  ["completed", "Completed"],
  ["failed,construction-failed", "Failed"],
  ["canceled", "Canceled"],
];

// A job's tasks are shown a page at a time: a job of 100,000 tasks in one table was 49 MB of JSON
// and 100,000 rows, which kept the browser busy for minutes once its tasks started changing.
const TASK_PAGE = 500;

const TASK_FILTERS = [
  ["", "All statuses"],
  ["failed,soft-failed", "Failed"],
  ["active,cancel-requested", "Running"],
  ["queued,claimed-by-manager,paused", "Waiting"],
  ["completed", "Completed"],
  ["canceled", "Canceled"],
];

/** As many jobs as one page of GET /api/jobs may hold. */
const MAX_JOBS_SHOWN = 500;

const jobsView = buildJobsView();
const jobDetail = buildJobDetail();
const taskDetail = buildTaskDetail();

function buildJobsView() {
  const section = document.getElementById("view-jobs");
  const status = h(
    "select",
    { id: "job-filter-status", onchange: () => loadJobs() },
    JOB_FILTERS.map(([value, label]) => h("option", { value, text: label })),
  );
  let searchTimer = null;
  const search = h("input", {
    id: "job-search",
    type: "search",
    placeholder: "Job name contains…",
    autocomplete: "off",
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => loadJobs(), 250);
    },
  });
  const count = h("span", { class: "count", "aria-live": "polite" });
  const tbody = h("tbody");
  const table = h(
    "table",
    { id: "jobs-table", "aria-label": "Jobs" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col", text: "Name" }),
        h("th", { scope: "col", text: "Status" }),
        h("th", { scope: "col", text: "Progress" }),
        h("th", { scope: "col", text: "Priority" }),
        h("th", { scope: "col", class: "hide-medium", text: "Type" }),
        h("th", { scope: "col", text: "Submitted" }),
      ),
    ),
    tbody,
  );
  const empty = h("p", { class: "empty", text: "No jobs yet." });
  const more = h("button", {
    type: "button",
    class: "button",
    text: "Show more jobs",
    hidden: true,
    onclick: () => {
      state.pageSize = Math.min(state.pageSize + 50, MAX_JOBS_SHOWN);
      loadJobs();
    },
  });
  const capped = h("p", {
    class: "muted",
    id: "jobs-capped",
    hidden: true,
    text: `The newest ${MAX_JOBS_SHOWN} jobs are shown: filter or search to find older ones.`,
  });
  const listPanel = h(
    "div",
    { class: "panel jobs-list" },
    h("div", { class: "panel-head" }, h("h2", { text: "Jobs" }), count),
    h(
      "form",
      { class: "toolbar", role: "search", onsubmit: (event) => event.preventDefault() },
      h("div", { class: "field" }, h("label", { for: "job-filter-status", text: "Status" }), status),
      h("div", { class: "field" }, h("label", { for: "job-search", text: "Search" }), search),
    ),
    h("div", { class: "table-wrap" }, table),
    empty,
    more,
    capped,
  );
  const detail = h("div", { class: "job-side" });
  section.append(listPanel, detail);
  return { status, search, tbody, count, empty, more, capped, detail };
}

function jobProgress(job) {
  const counts = job.task_counts || {};
  const total = Object.values(counts).reduce((sum, count) => sum + count, 0);
  const done = counts.completed || 0;
  return { total, done, percent: total ? Math.round((100 * done) / total) : 0 };
}

const loadJobs = throttled(async () => {
  const params = new URLSearchParams({ limit: String(state.pageSize) });
  if (jobsView.status.value) params.set("status", jobsView.status.value);
  if (jobsView.search.value.trim()) params.set("search", jobsView.search.value.trim());
  const page = await api("GET", `/api/jobs?${params}`);
  state.jobs = new Map(page.jobs.map((job) => [job._id, job]));
  state.jobOrder = page.jobs.map((job) => job._id);
  state.nextCursor = page.next_cursor;
  renderJobs();
}, 500);

function renderJobs() {
  const jobs = state.jobOrder.map((id) => state.jobs.get(id)).filter(Boolean);
  syncRows(jobsView.tbody, jobs, (job) => job._id, createJobRow, updateJobRow);
  markSelected(jobsView.tbody, state.jobId);
  jobsView.empty.hidden = jobs.length > 0;
  jobsView.empty.textContent =
    jobsView.status.value || jobsView.search.value ? "No jobs match." : "No jobs yet.";
  // At the most one page may hold, more jobs cannot be shown: say so, not a button that does
  // nothing.
  const full = state.pageSize >= MAX_JOBS_SHOWN;
  jobsView.more.hidden = !state.nextCursor || full;
  jobsView.capped.hidden = !state.nextCursor || !full;
  setText(jobsView.count, `${jobs.length}${state.nextCursor ? "+" : ""} shown`);
}

function createJobRow(job) {
  const link = h("a", { href: `#/jobs/${job._id}` });
  const row = h(
    "tr",
    { onclick: (event) => event.target.closest("a") || go(`#/jobs/${job._id}`) },
    h("td", { class: "name" }, link),
    h("td", {}, badge(job.status)),
    h("td", {}, progressCell(0, `Progress of ${job.name}`)),
    h("td", { class: "num" }),
    h("td", { class: "hide-medium types" }),
    h("td", { class: "when" }, timeElement(job._created)),
  );
  return row;
}

function updateJobRow(row, job) {
  const [name, status, progress, priority, type, created] = row.cells;
  setText(name.firstChild, job.name);
  const badgeElement = status.firstChild;
  if (badgeElement.dataset.status !== job.status) {
    if (badgeElement.dataset.status) flash(row);
    updateBadge(badgeElement, job.status);
  }
  const { total, done, percent } = jobProgress(job);
  updateProgress(progress.firstChild, percent);
  progress.title = `${done} of ${total} tasks completed`;
  setText(priority, String(job.priority));
  setText(type, job.job_type);
  setTime(created.firstChild, job._created);
}

// --- one job -------------------------------------------------------------------------------

function buildJobDetail() {
  const panel = h("div", { class: "panel job-detail", id: "job-detail" });
  const placeholder = h("div", { class: "panel" }, h("p", { class: "empty", text: "Select a job to see its tasks." }));
  const title = h("h2", { id: "job-title", tabindex: "-1" });
  const status = badge("");
  const bar = h("progress", { max: 100, value: 0, "aria-labelledby": "job-progress-text" });
  const progressText = h("span", { id: "job-progress-text" });
  const facts = h("dl", { class: "facts two" });
  const buttons = {};
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Job actions" });
  for (const [requested, label, done, danger] of [
    ["cancel-requested", "Cancel", "Canceling the job.", true],
    ["paused", "Pause", "Job paused."],
    ["queued", "Resume", "Job resumed."],
    ["requeued", "Requeue", "Job requeued."],
  ]) {
    buttons[requested] = h("button", {
      type: "button",
      class: danger ? "button danger" : "button",
      text: label,
      "data-action": requested,
      onclick: (event) => jobStatusAction(event.currentTarget, requested, label, done),
    });
    actions.append(buttons[requested]);
  }
  const priority = h("input", { id: "job-priority", type: "number", min: 1, max: 100, required: true });
  const priorityForm = h(
    "form",
    {
      onsubmit: (event) => {
        event.preventDefault();
        const value = Number(priority.value);
        act(event.submitter, () => api("POST", `/api/jobs/${state.jobId}/priority`, { priority: value }), `Priority set to ${value}.`);
      },
    },
    h("div", { class: "field inline" }, h("label", { for: "job-priority", text: "Priority" }), priority),
    h("button", { type: "submit", class: "button", text: "Set", "aria-label": "Set priority" }),
  );
  const remove = h("button", {
    type: "button",
    class: "button danger",
    text: "Delete job",
    onclick: async (event) => {
      const job = state.jobs.get(state.jobId) || jobDetail.job;
      const ok = await confirmAction(
        "Delete this job?",
        `“${job ? job.name : state.jobId}”, its tasks and their logs will be deleted. This cannot be undone.`,
        "Delete job",
      );
      if (!ok) return;
      const id = state.jobId;
      await act(
        event.currentTarget,
        async () => {
          await api("DELETE", `/api/jobs/${id}`);
          forgetJob(id);
        },
        "Job deleted.",
      );
    },
  });
  actions.append(
    h("span", { class: "sep", "aria-hidden": "true" }),
    priorityForm,
    h("span", { class: "sep", "aria-hidden": "true" }),
    remove,
  );
  const tbody = h("tbody");
  const table = h(
    "table",
    { id: "tasks-table", "aria-label": "Tasks of the job" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col", class: "col-name", text: "Task" }),
        h("th", { scope: "col", class: "col-status", text: "Status" }),
        h("th", { scope: "col", class: "col-worker", text: "Worker" }),
        h("th", { scope: "col", class: "col-progress", text: "Progress" }),
        h("th", { scope: "col", class: "col-activity", text: "Activity" }),
        h("th", { scope: "col", class: "col-duration", text: "Duration" }),
      ),
    ),
    tbody,
  );
  const filter = h(
    "select",
    {
      id: "task-filter-status",
      onchange: () => {
        state.taskOffset = 0;
        loadJob();
      },
    },
    TASK_FILTERS.map(([value, label]) => h("option", { value, text: label })),
  );
  const range = h("span", { class: "count", id: "task-range", "aria-live": "polite" });
  const turnPage = (step) => {
    state.taskOffset = Math.max(0, state.taskOffset + step * TASK_PAGE);
    loadJob();
  };
  const previous = h("button", { type: "button", class: "button subtle", text: "Previous", "aria-label": "Previous tasks", onclick: () => turnPage(-1) });
  const next = h("button", { type: "button", class: "button subtle", text: "Next", "aria-label": "Next tasks", onclick: () => turnPage(1) });
  panel.append(
    h("div", { class: "panel-head" }, title, status),
    h("div", { class: "job-progress" }, bar, progressText),
    facts,
    actions,
    h("h3", { text: "Tasks" }),
    h(
      "div",
      { class: "toolbar task-toolbar" },
      h("div", { class: "field inline" }, h("label", { for: "task-filter-status", text: "Task status" }), filter),
      range,
      h("span", { class: "spacer" }),
      previous,
      next,
    ),
    h("div", { class: "table-wrap tasks-wrap" }, table),
  );
  jobsView.detail.append(placeholder, panel);
  return { panel, placeholder, title, status, bar, progressText, facts, buttons, priority, remove, tbody, filter, range, previous, next, job: null };
}

async function jobStatusAction(button, requested, label, done) {
  const id = state.jobId;
  if (requested === "cancel-requested") {
    const job = jobDetail.job;
    const ok = await confirmAction(
      "Cancel this job?",
      `Tasks of “${job ? job.name : id}” that wait are canceled; running ones are stopped.`,
      "Cancel job",
    );
    if (!ok) return;
  }
  await act(button, async () => {
    const job = await api("POST", `/api/jobs/${id}/status`, { status: requested, reason: `${label} from the dashboard` });
    showJob(job);
  }, done);
}

function renderJobDetail() {
  const shown = Boolean(state.jobId);
  jobDetail.panel.hidden = !shown;
  jobDetail.placeholder.hidden = shown;
  if (!shown) {
    jobDetail.job = null;
    return;
  }
  const job = state.jobs.get(state.jobId);
  if (job) showJob(job);
  else {
    setText(jobDetail.title, "Loading…");
    syncRows(jobDetail.tbody, [], () => "", null, null);
  }
}

function fact(label, value) {
  return [h("dt", { text: label }), h("dd", {}, value)];
}

function showJob(job) {
  if (job._id !== state.jobId) return;
  const previous = jobDetail.job;
  jobDetail.job = job;
  if (state.jobs.has(job._id)) {
    state.jobs.set(job._id, job);
    const row = [...jobsView.tbody.rows].find((candidate) => candidate.dataset.key === job._id);
    if (row) updateJobRow(row, job);
  }
  setText(jobDetail.title, job.name);
  updateBadge(jobDetail.status, job.status);
  const { total, done, percent } = jobProgress(job);
  jobDetail.bar.value = percent;
  setText(jobDetail.progressText, `${done} of ${total} tasks completed (${percent}%)`);
  jobDetail.facts.replaceChildren(
    ...fact("Type", job.job_type),
    ...fact("Submitted", h("span", {}, timeElement(job._created), job.submitter ? ` by ${job.submitter}` : "")),
    ...fact("Updated", timeElement(job._updated)),
    ...(job.status_reason ? fact("Reason", job.status_reason) : []),
    ...(job.description ? fact("Description", job.description) : []),
    ...fact("ID", h("span", { class: "mono", text: job._id })),
  );
  const allowed = config.job_actions[job.status] || [];
  for (const [requested, button] of Object.entries(jobDetail.buttons)) {
    allow(button, allowed.includes(requested), jobDetail.title);
  }
  const running = (job.task_counts.active || 0) + (job.task_counts["cancel-requested"] || 0);
  allow(jobDetail.remove, running === 0, jobDetail.title);
  jobDetail.remove.title = running > 0 ? "A job cannot be deleted while its tasks run." : "";
  if (!previous || previous._id !== job._id || document.activeElement !== jobDetail.priority) {
    jobDetail.priority.value = job.priority;
  }
  renderTaskRange();
}

/** How many tasks the filter selects, by the job's counts. */
function filteredTaskCount(job) {
  const counts = job.task_counts || {};
  const statuses = jobDetail.filter.value ? jobDetail.filter.value.split(",") : Object.keys(counts);
  return statuses.reduce((sum, status) => sum + (counts[status] || 0), 0);
}

function renderTaskRange() {
  const job = jobDetail.job;
  if (!job) return;
  const total = filteredTaskCount(job);
  const first = state.tasks.length ? state.taskOffset + 1 : 0;
  const last = state.taskOffset + state.tasks.length;
  const paged = total > TASK_PAGE || state.taskOffset > 0;
  setText(jobDetail.range, paged ? `${first}–${last} of ${total}` : `${state.tasks.length} shown`);
  // One page: no buttons to turn it.
  jobDetail.previous.hidden = !paged;
  jobDetail.next.hidden = !paged;
  allow(jobDetail.previous, state.taskOffset > 0, jobDetail.title);
  allow(jobDetail.next, state.tasks.length === TASK_PAGE && last < total, jobDetail.title);
}

// Tasks of the open job that changed while its page of tasks was on its way: the page may have
// been read before the change, so they are read again once it is shown.
const changedWhileLoading = new Set();
let tasksLoading = false;

const loadJob = throttled(async () => {
  const id = state.jobId;
  if (!id) return;
  const offset = state.taskOffset;
  const filter = jobDetail.filter.value;
  tasksLoading = true;
  changedWhileLoading.clear();
  try {
    const params = new URLSearchParams({ limit: String(TASK_PAGE), offset: String(offset) });
    if (filter) params.set("status", filter);
    const [job, tasks] = await Promise.all([
      api("GET", `/api/jobs/${id}`),
      api("GET", `/api/jobs/${id}/tasks?${params}`),
    ]);
    // Another job, page or filter was asked for meanwhile: its own load follows.
    if (id !== state.jobId || offset !== state.taskOffset || filter !== jobDetail.filter.value) return;
    if (tasks.tasks.length === 0 && offset > 0) {
      // The page emptied (tasks left the filter): go back to the first.
      state.taskOffset = 0;
      loadJob();
      return;
    }
    state.tasks = tasks.tasks;
    showJob(job);
    renderTasks();
    const shown = new Set(state.tasks.map((task) => task._id));
    for (const taskId of changedWhileLoading) if (shown.has(taskId)) dirtyTasks.add(taskId);
    if (dirtyTasks.size) refreshDirtyTasks();
  } catch (error) {
    if (error.status === 404) {
      // Gone while the page looked elsewhere: nothing to say about it.
      if (id !== state.jobId) return;
      toast("That job does not exist (any more).", "error");
      go("#/jobs");
      return;
    }
    throw error;
  } finally {
    tasksLoading = false;
    changedWhileLoading.clear();
  }
}, 700);

function taskDuration(task) {
  const timing = (task.metrics && task.metrics.timing) || {};
  if (timing.total !== undefined) return duration(timing.total);
  const values = Object.values(timing);
  return values.length ? duration(values.reduce((sum, value) => sum + value, 0)) : "";
}

function renderTasks() {
  syncRows(
    jobDetail.tbody,
    state.tasks,
    (task) => task._id,
    (task) => {
      const href = `#/jobs/${task.job}/tasks/${task._id}`;
      return h(
        "tr",
        { onclick: (event) => event.target.closest("a") || go(href) },
        h("td", { class: "name" }, h("a", { href })),
        h("td", {}, badge(task.status)),
        h("td", {}),
        h("td", {}, progressCell(0, `Progress of ${task.name}`)),
        h("td", { class: "activity" }),
        h("td", { class: "num" }),
      );
    },
    (row, task) => {
      const [name, status, worker, progress, activity, time] = row.cells;
      setText(name.firstChild, task.name);
      const badgeElement = status.firstChild;
      if (badgeElement.dataset.status !== task.status) {
        flash(row);
        updateBadge(badgeElement, task.status);
      }
      setText(worker, task.worker || "");
      worker.title = task.worker || "";
      name.title = task.name;
      const percent = task.status === "completed" ? 100 : task.task_progress_percentage || 0;
      updateProgress(progress.firstChild, percent);
      setText(activity, task.activity || "");
      activity.title = task.activity || "";
      setText(time, taskDuration(task));
    },
  );
  markSelected(jobDetail.tbody, state.taskId);
}

// --- one task and its log ------------------------------------------------------------------

function buildTaskDetail() {
  const panel = h("div", { class: "panel task-detail", id: "task-detail", hidden: true });
  const title = h("h2", { id: "task-title", tabindex: "-1" });
  const status = badge("");
  const facts = h("dl", { class: "facts two" });
  const requeue = h("button", {
    type: "button",
    class: "button",
    text: "Requeue task",
    onclick: (event) => act(event.currentTarget, () => api("POST", `/api/tasks/${state.taskId}/requeue`, { reason: "Requeued from the dashboard" }), "Task requeued."),
  });
  const cancel = h("button", {
    type: "button",
    class: "button danger",
    text: "Cancel task",
    onclick: (event) => act(event.currentTarget, () => api("POST", `/api/tasks/${state.taskId}/cancel`, { reason: "Canceled from the dashboard" }), "Task canceled."),
  });
  const close = h("button", {
    type: "button",
    class: "button subtle",
    text: "Close",
    "aria-label": "Close the task",
    onclick: () => go(`#/jobs/${state.jobId}`),
  });
  const lines = h(
    "select",
    {
      id: "log-lines",
      onchange: () => {
        state.logLines = Number(lines.value);
        loadTask();
      },
    },
    [100, 200, 500, 1000].map((count) => h("option", { value: String(count), text: `last ${count} lines`, selected: count === state.logLines })),
  );
  const follow = h("input", {
    id: "log-follow",
    type: "checkbox",
    checked: state.follow,
    onchange: () => {
      state.follow = follow.checked;
      if (state.follow) {
        loadTask();
      }
    },
  });
  const download = h("a", { class: "button", id: "log-download", text: "Download full log", download: "" });
  const log = h("pre", { class: "log", id: "task-log", tabindex: "0", "aria-label": "Task log" });
  panel.append(
    h("div", { class: "panel-head" }, title, status, h("span", { class: "spacer" }), close),
    facts,
    h("div", { class: "actions", role: "group", "aria-label": "Task actions" }, requeue, cancel),
    h("h3", { text: "Log" }),
    h(
      "div",
      { class: "toolbar log-toolbar" },
      h("div", { class: "field inline" }, h("label", { for: "log-lines", text: "Show" }), lines),
      h("label", { class: "field inline", for: "log-follow" }, follow, "Follow live"),
      download,
    ),
    log,
  );
  jobsView.detail.append(panel);
  return { panel, title, status, facts, requeue, cancel, log, download, follow };
}

function renderTaskDetail() {
  taskDetail.panel.hidden = !state.taskId;
  if (state.taskId) {
    setText(taskDetail.title, "Loading…");
    taskDetail.log.textContent = "";
  }
}

const loadTask = throttled(async () => {
  const id = state.taskId;
  if (!id) return;
  let task;
  try {
    task = await api("GET", `/api/tasks/${id}?log_lines=${state.logLines}`);
  } catch (error) {
    if (error.status === 404) {
      if (id !== state.taskId) return;
      toast("That task does not exist (any more).", "error");
      go(`#/jobs/${state.jobId}`);
      return;
    }
    throw error;
  }
  if (id !== state.taskId) return;
  setText(taskDetail.title, task.name);
  updateBadge(taskDetail.status, task.status);
  const failedBy = (task.failed_by_workers || []).map((worker) => worker.identifier).join(", ");
  taskDetail.facts.replaceChildren(
    ...fact("Worker", task.worker || "none yet"),
    ...fact("Task type", task.task_type),
    ...fact("Activity", task.activity || ""),
    ...fact("Updated", timeElement(task.last_updated)),
    ...(failedBy ? fact("Failed on", failedBy) : []),
    ...fact("ID", h("span", { class: "mono", text: task._id })),
  );
  const allowed = config.task_actions[task.status] || [];
  allow(taskDetail.requeue, allowed.includes("requeue"), taskDetail.title);
  allow(taskDetail.cancel, allowed.includes("cancel"), taskDetail.title);
  // ?download=1: the whole log; without it a browser gets a large one trimmed (as from Go).
  taskDetail.download.href = `/logfile/${task.job}/${task._id}?download=1`;
  taskDetail.download.setAttribute("download", `task-${task._id}.txt`);
  const log = taskDetail.log;
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  const text = task.log || "(no log yet)";
  if (log.textContent !== text) {
    log.textContent = text;
    if (state.follow || atBottom) log.scrollTop = log.scrollHeight;
  }
  if (taskDetail.scrollPending) {
    taskDetail.scrollPending = false;
    taskDetail.panel.scrollIntoView({ block: "start" });
  }
}, 500);

// --- workers -------------------------------------------------------------------------------

const workersView = buildWorkersView();

function buildWorkersView() {
  const section = document.getElementById("view-workers");
  const tbody = h("tbody");
  const table = h(
    "table",
    { id: "workers-table", "aria-label": "Workers" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col", text: "Worker" }),
        h("th", { scope: "col", text: "Status" }),
        h("th", { scope: "col", text: "Current task" }),
        h("th", { scope: "col", text: "Last seen" }),
        h("th", { scope: "col", class: "hide-narrow", text: "Address" }),
        h("th", { scope: "col", text: "Platform" }),
        h("th", { scope: "col", class: "hide-narrow", text: "Task types" }),
      ),
    ),
    tbody,
  );
  const count = h("span", { class: "count" });
  const empty = h("p", { class: "empty", text: "No workers have registered yet." });
  const list = h(
    "div",
    { class: "panel workers-list" },
    h("div", { class: "panel-head" }, h("h2", { text: "Workers" }), count),
    h("div", { class: "table-wrap" }, table),
    empty,
  );
  const detail = h("div", { class: "worker-side" });
  section.append(list, detail);
  return { tbody, count, empty, detail };
}

// A worker's current task by name, as the manager names it in the worker's document (an ID
// alone when the task is gone).
function taskLink(worker) {
  const taskId = worker.current_task;
  if (!taskId) return h("span", { class: "muted", text: "none" });
  const text = worker.current_task_name || taskId;
  if (!worker.current_job) return h("span", { class: "mono", text });
  const href = `#/jobs/${worker.current_job}/tasks/${taskId}`;
  return h("a", { href, text, title: `Task ${taskId}` });
}

const loadWorkers = throttled(async () => {
  const list = await api("GET", "/api/workers");
  state.workers = list.workers;
  renderWorkers();
}, 700);

function requestedText(worker) {
  if (!worker.status_requested) return "";
  return `→ ${worker.status_requested}${worker.lazy_status_request ? " (after task)" : ""}`;
}

function renderWorkers() {
  syncRows(
    workersView.tbody,
    state.workers,
    (worker) => worker._id,
    (worker) => {
      const href = `#/workers/${worker._id}`;
      return h(
        "tr",
        { onclick: (event) => event.target.closest("a") || go(href) },
        h("td", { class: "name" }, h("a", { href })),
        h("td", {}, badge(worker.status), " ", h("span", { class: "requested muted" })),
        h("td", {}),
        h("td", { class: "when" }, timeElement(worker.last_activity)),
        h("td", { class: "hide-narrow mono" }),
        h("td", {}),
        h("td", { class: "hide-narrow types" }),
      );
    },
    (row, worker) => {
      const [name, status, task, seen, address, platform, types] = row.cells;
      setText(name.firstChild, worker.nickname || worker._id);
      name.title = worker.nickname || worker._id;
      const badgeElement = status.firstChild;
      if (badgeElement.dataset.status !== (worker.status || "new")) {
        flash(row);
        updateBadge(badgeElement, worker.status);
      }
      setText(status.lastChild, requestedText(worker));
      if (task.dataset.task !== (worker.current_task || "")) {
        task.dataset.task = worker.current_task || "";
        task.replaceChildren(taskLink(worker));
      }
      setTime(seen.firstChild, worker.last_activity);
      setText(address, worker.address || "");
      setText(platform, worker.platform || "");
      setText(types, (worker.supported_task_types || []).join(", "));
    },
  );
  markSelected(workersView.tbody, state.workerId);
  workersView.empty.hidden = state.workers.length > 0;
  setText(workersView.count, `${state.workers.length} registered`);
  if (state.workerId && state.worker) {
    const fresh = state.workers.find((worker) => worker._id === state.workerId);
    if (!fresh) {
      toast("That worker was forgotten.");
      go("#/workers");
    }
  }
}

const DAYS = [
  ["mo", "Mon"],
  ["tu", "Tue"],
  ["we", "Wed"],
  ["th", "Thu"],
  ["fr", "Fri"],
  ["sa", "Sat"],
  ["su", "Sun"],
];

const workerDetail = buildWorkerDetail();

function buildWorkerDetail() {
  const placeholder = h("div", { class: "panel" }, h("p", { class: "empty", text: "Select a worker to act on it." }));
  const panel = h("div", { class: "panel worker-detail", id: "worker-detail", hidden: true });
  const title = h("h2", { id: "worker-title", tabindex: "-1" });
  const status = badge("");
  const facts = h("dl", { class: "facts" });
  const lazy = h("input", { id: "worker-lazy", type: "checkbox" });
  const statusButton = (requested, label, danger) =>
    h("button", {
      type: "button",
      class: danger ? "button danger" : "button",
      text: label,
      "data-action": requested,
      onclick: async (event) => {
        const button = event.currentTarget;
        const worker = state.worker;
        const lazyRequest = lazy.checked;
        if (requested === "shutdown") {
          const ok = await confirmAction(
            "Shut this worker down?",
            `${worker.nickname} ${lazyRequest ? "finishes its current task, then " : ""}signs off and stops. It has to be started again on its machine.`,
            "Shut down",
          );
          if (!ok) return;
        }
        await act(button, async () => {
          const updated = await api("POST", `/api/workers/${state.workerId}/status`, { status: requested, lazy: lazyRequest });
          showWorker(updated);
        }, `${worker.nickname}: ${label.toLowerCase()} requested.`);
      },
    });
  const wake = statusButton("awake", "Wake up");
  const sleep = statusButton("asleep", "Sleep");
  const shutdown = statusButton("shutdown", "Shut down", true);
  const forget = h("button", {
    type: "button",
    class: "button danger",
    text: "Forget worker",
    onclick: async (event) => {
      const worker = state.worker;
      const ok = await confirmAction(
        "Forget this worker?",
        `${worker.nickname} is removed from the manager; its running task is queued again. It registers anew if it runs again.`,
        "Forget worker",
      );
      if (!ok) return;
      const id = state.workerId;
      await act(event.currentTarget, () => api("DELETE", `/api/workers/${id}`), "Worker forgotten.");
      go("#/workers");
    },
  });
  const schedule = buildScheduleForm();
  const blocklist = h("tbody");
  const blocklistEmpty = h("p", { class: "empty", text: "This worker may run every job." });
  const clearAll = h("button", {
    type: "button",
    class: "button",
    text: "Clear blocklist",
    onclick: (event) => act(event.currentTarget, () => api("DELETE", `/api/workers/${state.workerId}/blocklist`), "Blocklist cleared."),
  });
  const blocklistTable = h(
    "table",
    { "aria-label": "Blocklist" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", { scope: "col", text: "Job" }), h("th", { scope: "col", text: "Task type" }), h("th", { scope: "col", text: "Since" }), h("th", { scope: "col", text: "" })),
    ),
    blocklist,
  );
  panel.append(
    h("div", { class: "panel-head" }, title, status),
    facts,
    h(
      "div",
      { class: "actions", role: "group", "aria-label": "Worker actions" },
      wake,
      sleep,
      shutdown,
      h("label", { class: "field inline", for: "worker-lazy" }, lazy, "After the current task"),
      h("span", { class: "sep", "aria-hidden": "true" }),
      forget,
    ),
    schedule.fieldset,
    h(
      "fieldset",
      {},
      h("legend", { text: "Blocklist" }),
      blocklistEmpty,
      h("div", { class: "table-wrap" }, blocklistTable),
      h("div", { class: "actions" }, clearAll),
    ),
  );
  workersView.detail.append(placeholder, panel);
  return { placeholder, panel, title, status, facts, wake, sleep, shutdown, schedule, blocklist, blocklistEmpty, blocklistTable, clearAll };
}

function buildScheduleForm() {
  const active = h("input", { id: "schedule-active", type: "checkbox" });
  const days = DAYS.map(([value, label]) => h("input", { type: "checkbox", value, id: `schedule-${value}` }));
  const start = h("input", { id: "schedule-start", type: "time" });
  const end = h("input", { id: "schedule-end", type: "time" });
  const next = h("p", { class: "muted" });
  const fieldset = h(
    "form",
    {
      onsubmit: (event) => {
        event.preventDefault();
        const body = {
          schedule_active: active.checked,
          days_of_week: days.filter((box) => box.checked).map((box) => box.value).join(" "),
        };
        if (start.value) body.time_start = start.value;
        if (end.value) body.time_end = end.value;
        act(event.submitter, async () => {
          await api("PUT", `/api/workers/${state.workerId}/sleep-schedule`, body);
          loadWorker();
        }, "Sleep schedule saved.");
      },
    },
    h(
      "fieldset",
      {},
      h("legend", { text: "Sleep schedule" }),
      h("label", { class: "field inline", for: "schedule-active" }, active, "Sleep on a schedule"),
      h(
        "fieldset",
        { class: "days" },
        h("legend", { text: "Days (none ticked: every day)" }),
        h("div", { class: "actions" }, DAYS.map(([value, label], index) => h("label", { class: "field inline", for: `schedule-${value}` }, days[index], label))),
      ),
      h(
        "div",
        { class: "toolbar" },
        h("div", { class: "field" }, h("label", { for: "schedule-start", text: "Asleep from" }), start),
        h("div", { class: "field" }, h("label", { for: "schedule-end", text: "until" }), end),
        h("button", { type: "submit", class: "button", text: "Save schedule" }),
      ),
      next,
    ),
  );
  return { fieldset, active, days, start, end, next };
}

function renderWorkerDetail() {
  const shown = Boolean(state.workerId);
  workerDetail.panel.hidden = !shown || !state.worker;
  workerDetail.placeholder.hidden = shown;
}

function showWorker(worker) {
  if (worker._id !== state.workerId) return;
  const first = !state.worker || state.worker._id !== worker._id;
  // Documents leave out what is empty: a task gone since the last one leaves no name behind.
  state.worker = { ...(state.worker || {}), current_task_name: "", current_job: null, ...worker };
  worker = state.worker;
  workerDetail.panel.hidden = false;
  setText(workerDetail.title, worker.nickname || worker._id);
  updateBadge(workerDetail.status, worker.status);
  const task = taskLink(worker);
  workerDetail.facts.replaceChildren(
    ...fact("Requested", requestedText(worker) || "nothing"),
    ...fact("Current task", task),
    ...fact("Last seen", timeElement(worker.last_activity)),
    ...fact("Address", worker.address || ""),
    ...fact("Platform", worker.platform || ""),
    ...fact("Software", worker.software || ""),
    ...fact("Task types", (worker.supported_task_types || []).join(", ")),
    ...fact("ID", h("span", { class: "mono", text: worker._id })),
  );
  allow(workerDetail.wake, worker.status !== "awake" || Boolean(worker.status_requested), workerDetail.title);
  allow(workerDetail.sleep, worker.status !== "asleep" || Boolean(worker.status_requested), workerDetail.title);
  const schedule = worker.sleep_schedule || {};
  const form = workerDetail.schedule;
  if (first || !form.fieldset.contains(document.activeElement)) {
    form.active.checked = Boolean(schedule.schedule_active);
    const days = (schedule.days_of_week || "").split(" ");
    for (const box of form.days) box.checked = days.includes(box.value);
    form.start.value = schedule.time_start ? schedule.time_start.padStart(5, "0") : "";
    form.end.value = schedule.time_end ? (schedule.time_end === "24:00" ? "00:00" : schedule.time_end.padStart(5, "0")) : "";
  }
  setText(form.next, schedule.schedule_active && schedule.next_check ? `Next check ${new Date(schedule.next_check).toLocaleString()}` : "");
  const entries = worker.blacklist || [];
  workerDetail.blocklistEmpty.hidden = entries.length > 0;
  workerDetail.blocklistTable.parentElement.hidden = entries.length === 0;
  allow(workerDetail.clearAll, entries.length > 0, workerDetail.title);
  syncRows(
    workerDetail.blocklist,
    entries,
    (entry) => `${entry.job_id}/${entry.task_type}`,
    (entry) =>
      h(
        "tr",
        {},
        h("td", {}, h("a", { href: `#/jobs/${entry.job_id}`, class: "mono", text: entry.job_id.slice(-8) })),
        h("td", { text: entry.task_type }),
        h("td", { class: "when" }, timeElement(entry._created)),
        h(
          "td",
          {},
          h("button", {
            type: "button",
            class: "button subtle",
            text: "Remove",
            "aria-label": `Remove the block on ${entry.task_type} tasks of job ${entry.job_id}`,
            onclick: (event) => {
              const params = new URLSearchParams({ job_id: entry.job_id, task_type: entry.task_type });
              act(event.currentTarget, () => api("DELETE", `/api/workers/${worker._id}/blocklist?${params}`), "Block removed.");
            },
          }),
        ),
      ),
    () => {},
  );
  workerDetail.placeholder.hidden = true;
}

const loadWorker = throttled(async () => {
  const id = state.workerId;
  if (!id) return;
  try {
    const worker = await api("GET", `/api/workers/${id}`);
    showWorker(worker);
  } catch (error) {
    if (error.status === 404 && id === state.workerId) {
      toast("That worker does not exist (any more).", "error");
      go("#/workers");
      return;
    }
    throw error;
  }
}, 700);

// --- latest image --------------------------------------------------------------------------

const imageView = (() => {
  const section = document.getElementById("view-image");
  const image = h("img", { alt: "The latest rendered image", hidden: true, id: "latest-image" });
  const empty = h("p", { class: "empty", text: "Nothing has been rendered yet." });
  const stamp = h("p", { class: "muted" });
  section.append(h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", { text: "Latest image" })), image, empty, stamp));
  return { image, empty, stamp, modified: null };
})();

const loadImage = throttled(async () => {
  const latest = await api("GET", "/dashboard/latest-image");
  imageView.image.hidden = !latest.available;
  imageView.empty.hidden = latest.available;
  if (!latest.available || latest.modified === imageView.modified) return;
  imageView.modified = latest.modified;
  imageView.image.src = `/api/latest-image?v=${latest.modified}`;
  setText(imageView.stamp, `Rendered ${new Date(latest.modified * 1000).toLocaleString()}`);
}, 2000);

// --- live updates --------------------------------------------------------------------------

const dirtyJobs = new Set();
const dirtyTasks = new Set();
const dirtyWorkers = new Set();
// As many IDs as one GET /api/jobs/{id}/tasks?id=... or /api/workers?id=... may name.
const MAX_IDS = 200;

// The tasks of the open job that changed, fetched alone: a busy job's tasks change many times a
// second, and its whole list (5 MB of JSON for 10,000 tasks) costs the manager 0.75 s.
const refreshDirtyTasks = throttled(async () => {
  const id = state.jobId;
  const ids = [...dirtyTasks];
  dirtyTasks.clear();
  if (!id || ids.length === 0) return;
  if (ids.length > MAX_IDS) {
    loadJob(); // many changes: the whole page
    return;
  }
  let job, changed;
  try {
    [job, changed] = await Promise.all([
      api("GET", `/api/jobs/${id}`),
      api("GET", `/api/jobs/${id}/tasks?id=${ids.join(",")}`),
    ]);
  } catch (error) {
    if (error.status !== 404) throw error;
    loadJob(); // the job is gone: loadJob says so and leaves
    return;
  }
  if (id !== state.jobId) return;
  showJob(job);
  const fresh = new Map(changed.tasks.map((task) => [task._id, task]));
  state.tasks = state.tasks.map((task) => fresh.get(task._id) || task);
  renderTasks();
}, 700);

// The workers that changed, fetched alone: on a big farm a worker reports progress every few
// seconds, and the whole list of 1,000 workers costs the manager 50 ms.
const refreshDirtyWorkers = throttled(async () => {
  const ids = [...dirtyWorkers];
  dirtyWorkers.clear();
  if (ids.length === 0) return;
  const shown = new Set(state.workers.map((worker) => worker._id));
  if (ids.length > MAX_IDS || !ids.every((workerId) => shown.has(workerId))) {
    loadWorkers(); // many changes, or a worker the page has not listed yet: the whole list
    return;
  }
  const changed = await api("GET", `/api/workers?id=${ids.join(",")}`);
  if (changed.workers.length < ids.length) {
    loadWorkers(); // one of them is gone
    return;
  }
  const fresh = new Map(changed.workers.map((worker) => [worker._id, worker]));
  state.workers = state.workers.map((worker) => fresh.get(worker._id) || worker);
  renderWorkers();
}, 700);

// The open job's own document (status, counts): its tasks come with their own events.
const refreshOpenJob = throttled(async () => {
  const id = state.jobId;
  if (!id) return;
  let job;
  try {
    job = await api("GET", `/api/jobs/${id}`);
  } catch (error) {
    if (error.status !== 404) throw error;
    loadJob(); // the job is gone: loadJob says so and leaves
    return;
  }
  if (id === state.jobId) showJob(job);
}, 700);

const refreshDirtyJobs = throttled(async () => {
  const ids = [...dirtyJobs].filter((id) => state.jobs.has(id));
  dirtyJobs.clear();
  if (ids.length > 5) {
    loadJobs();
    return;
  }
  for (const id of ids) {
    try {
      const job = await api("GET", `/api/jobs/${id}`);
      state.jobs.set(id, job);
      if (id === state.jobId) showJob(job);
    } catch (error) {
      if (error.status !== 404) throw error;
      loadJobs();
    }
  }
  renderJobs();
}, 1000);

function onEvent(kind, data) {
  loadFarm();
  if (kind === "job") {
    if (data.deleted) forgetJob(data.id);
    if (state.view !== "jobs") return;
    if (data.deleted || !state.jobs.has(data.id)) loadJobs();
    else {
      dirtyJobs.add(data.id);
      refreshDirtyJobs();
    }
    if (data.id === state.jobId) refreshOpenJob();
  } else if (kind === "task") {
    if (state.view === "jobs") {
      if (data.job) {
        dirtyJobs.add(data.job);
        refreshDirtyJobs();
      }
      if (data.job === state.jobId) openJobTaskChanged(data);
      if (data.id === state.taskId) loadTask();
    } else if (state.view === "workers" && data.worker) {
      dirtyWorkers.add(data.worker);
      refreshDirtyWorkers();
      if (data.worker === state.workerId) loadWorker();
    } else if (state.view === "image" && data.status === "completed") {
      loadImage();
    }
  } else if (kind === "worker") {
    if (state.view !== "workers") return;
    if (data.deleted) loadWorkers();
    else {
      dirtyWorkers.add(data.id);
      refreshDirtyWorkers();
    }
    if (data.id === state.workerId) loadWorker();
  }
}

/**
 * A task of the open job changed. One on the page shown is read again; one on another page
 * only changes the job's counts, unless the page is filtered and the task may now belong to it.
 */
function openJobTaskChanged(data) {
  if (tasksLoading) changedWhileLoading.add(data.id);
  const filter = jobDetail.filter.value ? jobDetail.filter.value.split(",") : null;
  const shown = state.tasks.some((task) => task._id === data.id);
  const fits = !filter || !data.status || filter.includes(data.status);
  if (shown && fits) {
    dirtyTasks.add(data.id);
    refreshDirtyTasks();
  } else if (filter && (shown || fits)) {
    reloadFilteredPage(); // it joins or leaves the filtered page
  } else {
    refreshOpenJob();
  }
}

let filteredReload = null;

/**
 * Read the filtered page of tasks again, once the changes of the next second have gathered:
 * on a busy farm a filtered page would otherwise be read again for every task that moves.
 */
function reloadFilteredPage() {
  if (filteredReload !== null) return;
  filteredReload = setTimeout(() => {
    filteredReload = null;
    loadJob();
  }, 1000);
}

/** After a user action, read back what it changed even if no event says so. */
function refreshAfterAction() {
  loadFarm();
  if (state.view === "jobs") {
    loadJobs();
    if (state.jobId) loadJob();
    if (state.taskId) loadTask();
  } else if (state.view === "workers") {
    loadWorkers();
    if (state.workerId) loadWorker();
  }
}

function resync() {
  refreshAfterAction();
  if (state.view === "image") loadImage();
}

const liveElement = document.getElementById("live");
const LIVE_TEXT = { live: "live", connecting: "connecting…", offline: "offline, retrying" };

listen({
  onEvent,
  onResync: resync,
  onState: (live) => {
    liveElement.dataset.live = live;
    setText(liveElement, LIVE_TEXT[live]);
  },
});

// Relative times ("2 minutes ago") age without events; a followed log is polled as a backstop.
// The farm status is read again too: an event stream stays open past its token's expiry, so on
// a quiet farm nothing else would find out and the page would go on saying "live".
setInterval(() => {
  for (const element of document.querySelectorAll("time[data-rel]")) setText(element, ago(element.dateTime));
  if (!document.hidden) loadFarm();
}, 15000);
setInterval(() => {
  if (document.hidden) return;
  if (state.view === "jobs" && state.taskId && state.follow) loadTask();
  if (state.view === "image") loadImage();
}, 5000);

window.addEventListener("hashchange", applyRoute);
state.view = null;
applyRoute();
loadFarm();
