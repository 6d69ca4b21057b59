// The recnode console: reads /console/api/overview every 2 s and renders it; plays
// any file (MP4 and WebM natively, HLS with hls.js, or natively where the browser
// has no Media Source Extensions); StopRecord / PauseRecord / ResumeRecord through /console/api. Text from
// the node is only ever set as textContent.
"use strict";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);
let pollTimer = null;
let hls = null;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { showLogin(); throw new Error("log in"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.Message || body.error || `HTTP ${response.status}`);
  return body;
}

function showLogin() {
  clearTimeout(pollTimer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const response = await fetch("/console/login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  if (!response.ok) { $("login-error").textContent = "Wrong ServerSecret or console token."; return; }
  $("token").value = "";
  $("login").hidden = true;
  refresh();
}

async function logout() {
  await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
  showLogin();
}

async function refresh() {
  clearTimeout(pollTimer);
  const query = new URLSearchParams({ room: $("filter-room").value.trim(), status: $("filter-status").value });
  try {
    render(await api(`/console/api/overview?${query}`));
    $("app").hidden = false;
    $("logout").hidden = false;
  } catch (error) {
    if (error.message === "log in") return;
    $("action-error").textContent = `Cannot reach the node: ${error.message}`;
  }
  pollTimer = setTimeout(refresh, POLL_MS);
}

function render(data) {
  const node = data.node;
  $("node-state").textContent = `${node.version} · ${node.state}`;
  const facts = [["streams", `${node.streams} / ${node.maxStreams}`], ["active tasks", `${node.activeTasks} / ${node.maxTasks}`],
    ["CPU", `${Math.round(node.cpu * 100)} %`], ["load", `${Math.round(node.load * 100)} %`], ["workers", node.workers.length]];
  $("node").replaceChildren(...facts.flatMap(([k, v]) => [element("dt", { text: k }), element("dd", { text: String(v) })]));
  $("workers").tBodies[0].replaceChildren(...node.workers.map((w) =>
    element("tr", {}, element("td", { text: String(w.pid) }), element("td", { text: w.room }), element("td", { text: w.stream }))));
  $("callbacks").tBodies[0].replaceChildren(...data.callbacks.map((c) => element("tr", {},
    element("td", { text: c.taskId }), element("td", { text: String(c.sequence) }), element("td", { text: String(c.event) }),
    element("td", { text: c.host }), element("td", { text: String(c.attempts) }), element("td", { text: c.state, class: "state" }))));
  $("tasks").replaceChildren(...(data.tasks.length ? data.tasks.map(renderTask) : [element("p", { class: "muted", text: "No tasks." })]));
}

function renderTask(task) {
  const live = task.status === "recording" || task.status === "paused" || task.status === "initialising";
  const buttons = element("div", { class: "buttons" });
  if (live) {
    buttons.append(element("button", { class: "danger", "data-action": "stop", "data-task": task.taskId, text: "Stop",
      onclick: () => act(task.taskId, "stop") }));
    buttons.append(task.status === "paused"
      ? element("button", { "data-action": "resume", "data-task": task.taskId, text: "Resume", onclick: () => act(task.taskId, "resume") })
      : element("button", { "data-action": "pause", "data-task": task.taskId, text: "Pause", onclick: () => act(task.taskId, "pause") }));
  }
  const head = element("div", { class: "task-head" },
    element("strong", { text: task.taskId }), element("span", { text: `room ${task.roomId}` }),
    element("span", { class: `badge ${task.status}`, text: task.status, "data-status-of": task.taskId }),
    element("span", { class: "muted", text: `${task.format} · ${time(task.beginMs)}` }), buttons);
  const streams = task.streams.length ? element("table", {},
    element("thead", {}, element("tr", {}, ...["stream", "user", "input", "video loss", "audio loss"].map((t) => element("th", { text: t })))),
    element("tbody", {}, ...task.streams.map((s) => element("tr", {},
      element("td", { text: s.streamId }), element("td", { text: s.userId }), element("td", { text: s.input }),
      element("td", { text: s.tracks.video ? `${s.tracks.video.lossPercent} %` : "" }),
      element("td", { text: s.tracks.audio ? `${s.tracks.audio.lossPercent} %` : "" }))))) : null;
  const files = task.files.length ? element("table", {},
    element("thead", {}, element("tr", {}, ...["file", "stream", "status", "size", "duration", "kb/s", "picture", ""].map((t) => element("th", { text: t })))),
    element("tbody", {}, ...task.files.map((f) => element("tr", {},
      element("td", { text: f.fileId.split("/").pop(), title: f.fileId }), element("td", { text: f.streamId }),
      element("td", { text: f.status }), element("td", { text: bytes(f.size) }), element("td", { text: `${f.durationS} s` }),
      element("td", { text: String(f.kbps) }), element("td", { text: f.width ? `${f.width}×${f.height}` : "" }),
      element("td", {}, f.url.startsWith("http") ? element("button", { class: "quiet", "data-play": f.fileId, text: "Play",
        onclick: () => play(f) }) : element("span", { class: "muted", text: "in a bucket" })))))) : element("p", { class: "muted", text: "No file yet." });
  return element("div", { class: "task", "data-task": task.taskId }, head, streams, files);
}

async function act(taskId, action) {
  $("action-error").textContent = "";
  try {
    await api(`/console/api/tasks/${encodeURIComponent(taskId)}/${action}`, { method: "POST" });
  } catch (error) {
    $("action-error").textContent = `${action} ${taskId}: ${error.message}`;
  }
  refresh();
}

function play(file) {
  const video = $("player");
  $("player-panel").hidden = false;
  $("player-title").textContent = file.fileId.split("/").pop();
  $("player-error").textContent = "";
  if (hls) { hls.destroy(); hls = null; }
  const isHls = new URL(file.url).pathname.endsWith(".m3u8");
  // hls.js wherever Media Source Extensions exist (a browser's own HLS varies: Chromium's
  // newer one refuses live playlists); the browser's own HLS where they do not (iPhone).
  if (isHls && window.Hls && window.Hls.isSupported()) {
    hls = new window.Hls();
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (data.fatal) $("player-error").textContent = `HLS: ${data.type} ${data.details}`;
    });
    hls.loadSource(file.url);
    hls.attachMedia(video);
  } else if (isHls && !video.canPlayType("application/vnd.apple.mpegurl")) {
    $("player-error").textContent = "This browser cannot play HLS, and hls.js is not installed (.ci/vendor-hlsjs).";
    return;
  } else {
    video.src = file.url;
  }
  video.play().catch((error) => { $("player-error").textContent = `play: ${error.message}`; });
  $("player-panel").scrollIntoView();
}

function closePlayer() {
  if (hls) { hls.destroy(); hls = null; }
  const video = $("player");
  video.pause();
  video.removeAttribute("src");
  video.load();
  $("player-panel").hidden = true;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  $("player-close").addEventListener("click", closePlayer);
  $("player").addEventListener("error", () => {
    const error = $("player").error;
    if (error) $("player-error").textContent = `video: ${error.message || error.code}`;
  });
  refresh();
});
