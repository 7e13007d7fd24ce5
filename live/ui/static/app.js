// The avatarcam control page: polls /api/state, posts actions, shows the MJPEG live view.
// No libraries: the page works offline. The token came in the URL; the server set it as a
// cookie, and it is also passed on explicitly for the streams.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const auth = token ? { "X-Avatarcam-Token": token } : {};
const $ = (id) => document.getElementById(id);
const history = [];  // [time ms, fps, latency ms] of the last minute
let state = null;

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...auth },
    body: JSON.stringify(body || {}),
  });
  const reply = await response.json().catch(() => ({ ok: false, error: response.statusText }));
  setTimeout(refresh, 150);
  return reply;
}

function startLive() {
  const img = $("live");
  const query = token ? "?token=" + encodeURIComponent(token) + "&" : "?";
  img.src = "/stream/live.mjpg" + query + "t=" + Date.now();
  img.onerror = () => setTimeout(() => { if (!document.hidden) startLive(); }, 1000);
}

function gallery(s) {
  const box = $("gallery");
  const names = s.avatars.map((a) => a.name).join("/");
  if (box.dataset.names !== names) {
    box.dataset.names = names;
    box.replaceChildren(...s.avatars.map((a) => {
      const figure = document.createElement("figure");
      figure.dataset.index = a.index;
      const img = document.createElement("img");
      img.src = `/api/avatars/${a.index}/thumb.jpg?n=${encodeURIComponent(a.name)}`;
      img.alt = a.name;
      const caption = document.createElement("figcaption");
      caption.textContent = (a.index < 9 ? `${a.index + 1}: ` : "") + a.name;
      figure.append(img, caption);
      figure.title = a.face_found ? a.name : a.name + " (no face found: centre crop)";
      figure.onclick = () => post("/api/avatar", { index: a.index });
      return figure;
    }));
  }
  for (const figure of box.children) {
    figure.classList.toggle("current", Number(figure.dataset.index) === s.avatar);
  }
}

function info(s) {
  const rows = [
    ["engine", `${s.engine.backend} (${s.engine.precision}, ${s.engine.device})`],
    ["camera", `${s.camera.name}` + (s.camera.size ? ` ${s.camera.size.join("x")}` : "") +
      (s.camera.fps ? ` at ${s.camera.fps} fps` : "") + ` (${s.camera.status})`],
    ["virtual camera", s.virtual_camera ?
      `${s.virtual_camera.device} ${s.virtual_camera.size.join("x")}` : "off"],
    ["avatar", s.avatars[s.avatar] ? s.avatars[s.avatar].name : "-"],
    ["frames", String(s.frames)],
  ];
  $("info").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
}

function controls(s) {
  for (const button of document.querySelectorAll("button[data-key]")) {
    const keys = s.keys[button.dataset.key];
    if (keys && !button.querySelector("kbd")) {
      const kbd = document.createElement("kbd"); kbd.textContent = keys; button.append(kbd);
    }
    if (button.dataset.toggle) button.classList.toggle("on", Boolean(s[button.dataset.toggle]));
  }
  $("motion-value").textContent = "x" + s.motion_scale.toFixed(1);
  $("motion-keys").textContent = `${s.keys.motion_weaker} / ${s.keys.motion_stronger}`;
  if (document.activeElement !== $("motion")) $("motion").value = s.motion_scale;
  $("smoothing-value").textContent = s.motion_smoothing > 0 ? s.motion_smoothing.toFixed(1) : "off";
  $("smoothing-keys").textContent = `${s.keys.smoothing_weaker} / ${s.keys.smoothing_stronger}`;
  if (document.activeElement !== $("smoothing")) $("smoothing").value = s.motion_smoothing;
  if (document.activeElement !== $("label")) $("label").value = s.label || "";
}

function plot() {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, now = Date.now();
  ctx.clearRect(0, 0, w, h);
  const maxFps = Math.max(30, ...history.map((p) => p[1] || 0));
  const maxMs = Math.max(100, ...history.map((p) => p[2] || 0));
  const line = (index, max, color) => {
    ctx.strokeStyle = color; ctx.beginPath();
    history.forEach((p, i) => {
      const x = w - ((now - p[0]) / 60000) * w, y = h - ((p[index] || 0) / max) * (h - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(1, maxFps, "#3c9");
  line(2, maxMs, "#f96");
  ctx.fillStyle = "#ccc";
  ctx.fillText(`fps (green, top ${maxFps.toFixed(0)})  latency ms (orange, top ${maxMs.toFixed(0)})`, 6, 12);
}

async function refresh() {
  let s;
  try {
    const response = await fetch("/api/state", { headers: auth, cache: "no-store" });
    if (!response.ok) throw new Error(await response.text());
    s = await response.json();
  } catch (error) {
    $("status").textContent = "not connected: " + error.message;
    $("status").className = "error";
    return;
  }
  state = s;
  $("status").textContent = s.status;
  $("status").className = "";
  $("fps").textContent = s.fps ? `${s.fps.toFixed(1)} fps` : "";
  $("warnings").textContent = s.warnings.join(" | ");
  $("stages").textContent = Object.entries(s.stages)
    .map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(" · ") +
    (s.view_delay_ms != null ? ` · this view +${s.view_delay_ms.toFixed(1)} ms` : "");
  history.push([Date.now(), s.fps, s.stages.latency]);
  while (history.length && Date.now() - history[0][0] > 60000) history.shift();
  gallery(s); info(s); controls(s); plot();
  $("drop").style.display = s.uploads ? "" : "none";
}

async function upload(file) {
  const result = $("upload-result");
  result.textContent = `checking ${file.name}...`;
  result.className = "";
  const response = await fetch("/api/upload?name=" + encodeURIComponent(file.name), {
    method: "POST", headers: auth, body: file,
  });
  const reply = await response.json().catch(() => ({ ok: false, error: response.statusText }));
  if (reply.ok) {
    result.textContent = `added ${reply.name}`;
  } else {
    result.textContent = "refused: " + reply.error;
    result.className = "error";
  }
  refresh();
}

for (const button of document.querySelectorAll("button[data-post]")) {
  button.onclick = () => post(button.dataset.post);
}
$("motion").onchange = (e) => post("/api/motion", { scale: Number(e.target.value) });
$("smoothing").onchange = (e) => post("/api/motion", { smoothing: Number(e.target.value) });
$("label-set").onclick = () => post("/api/label", { text: $("label").value || null });
$("file").onchange = (e) => { if (e.target.files[0]) upload(e.target.files[0]); };
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
};
$("obs").href = "/obs" + (token ? "?token=" + encodeURIComponent(token) : "");

// A hidden tab stops its stream: the loop's process then encodes nothing for it.
document.addEventListener("visibilitychange", () => {
  if (document.hidden) $("live").removeAttribute("src"); else startLive();
});

startLive();
refresh();
setInterval(refresh, 1000);
