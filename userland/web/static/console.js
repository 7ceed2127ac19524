// llmos web: draws the state the server pushes (server-sent events) into the page's cards.
// No framework and no build step: each card is rebuilt from the newest state, except the
// policy controls, which are kept while the device and its policies stay the same.
"use strict";

let state = null;
let selected = null;  // pid whose details are open

// a process's colour everywhere on the page, kept for its life: on first sight it gets the first colour
// no live process has, so the processes on the page at one time differ (up to the palette's twelve)
const PALETTE = ["#4aa3ff", "#f2b84b", "#3fcf8e", "#ef5d6a", "#b48cff", "#2fd4d9", "#ff8f4a", "#e66bc4",
                 "#9bd85b", "#c9a27e", "#7f9cff", "#d4d65a"];
const colours = new Map();
function colour(pid) {
  if (!pid) return "#6b7385";  // the kernel
  if (!colours.has(pid)) {
    const taken = new Set((state ? state.procs : []).map(p => colours.get(p.pid)));
    colours.set(pid, PALETTE.find(c => !taken.has(c)) || PALETTE[pid % PALETTE.length]);
  }
  return colours.get(pid);
}
function $(id) { return document.getElementById(id); }
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }
function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}
function rate(x) { return x === null || x === undefined ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(1); }
function duration(s) {
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = Math.floor(s % 60);
  return h ? `${h}h${m}m` : m ? `${m}m${sec}s` : `${sec}s`;
}
function name(pid) {
  if (!pid) return "kernel";
  const p = state && state.procs.find(p => p.pid === pid);
  return p ? p.name : `pid ${pid}`;
}
function swatch(pid) { return `<span class="swatch" style="background:${colour(pid)}"></span>`; }

// ---- the header ----------------------------------------------------------------------------
function renderSummary(s) {
  const k = s.kernel;
  $("summary").innerHTML = [
    `kernel <b>${esc(k.name)}</b>`, `up <b>${duration(k.uptime_s)}</b>`, `<b>${k.processes}</b> processes`,
    `<b>${k.devices}</b> devices`, `<b>${rate(k.syscalls_s)}</b> syscalls/s`, `<b>${k.errors}</b> errors`,
    s.admin ? `<b>admin</b> (policy switch on)` : `read-only`,
  ].map(x => `<span>${x}</span>`).join("");
}

// ---- processes -------------------------------------------------------------------------------
function renderProcs(s) {
  $("procs").tBodies[0].innerHTML = s.procs.map(p => `
    <tr data-pid="${p.pid}" class="${p.pid === selected ? "selected" : ""}">
      <td>${swatch(p.pid)}${p.pid}</td><td>${esc(p.name)}</td><td><span class="state ${esc(p.state)}">${esc(p.state)}</span></td>
      <td class="num">${size(p.mem)}</td><td class="num">${p.kv_blocks}</td><td class="num">${rate(p.tokens_s)}</td>
      <td class="num">${rate(p.calls_s)}</td><td class="num">${p.handles}</td>
    </tr>`).join("") || `<tr><td colspan="8" class="empty">no processes</td></tr>`;
}

async function showDetail(pid) {
  selected = pid;
  const box = $("detail");
  const reply = await fetch(`/api/proc/${pid}`);
  const d = await reply.json();
  if (selected !== pid) return;
  box.hidden = false;
  if (!reply.ok) { box.innerHTML = `<span class="empty">pid ${pid}: ${esc(d.error)}</span>`; return; }
  const handles = d.handles.map(h => `<tr><td>${h.handle}</td><td>${h.kind}</td><td>${esc(h.device)}</td>
      <td>${h.kind === "tensor" ? esc(`${h.dtype}[${h.shape.join("×")}]`) : h.kind === "kv" ? esc(h.pool) : ""}</td>
      <td class="num">${h.bytes ? size(h.bytes) : ""}</td><td class="num">${h.holders}</td><td>${esc(h.lost)}</td></tr>`).join("");
  const models = d.models.map(m => `<li>model ${m.model} (${esc(m.arch)}${m.compression ? ", " + esc(m.compression) : ""}) on ${esc(m.device)}: ${size(m.bytes)}</li>`).join("");
  const kv = d.kv.map(k => `<li>${esc(k.device)}/${esc(k.pool)}: ${k.blocks} blocks (${k.blocks * k.block_size} token slots)</li>`).join("");
  const queued = d.queued.map(q => `<li>${esc(q.device)}: ${esc(q.work)}${q.model ? " model " + q.model : ""} ${esc(q.state)} ×${q.items}</li>`).join("");
  box.innerHTML = `<h3>${swatch(pid)}pid ${pid} · ${esc(d.name)} · parent ${d.ppid} · OS pid ${d.os_pid} · ${size(d.mem)}</h3>
    <div class="cols">
      <div><table class="grid"><thead><tr><th>handle</th><th>kind</th><th>device</th><th>what</th><th class="num">bytes</th>
        <th class="num">holders</th><th></th></tr></thead><tbody>${handles || `<tr><td colspan="7" class="empty">no handles</td></tr>`}</tbody></table></div>
      <div><h3>Models it pays for</h3><ul>${models || `<li class="empty">none</li>`}</ul>
        <h3>KV blocks</h3><ul>${kv || `<li class="empty">none</li>`}</ul></div>
      <div><h3>Waiting work</h3><ul>${queued || `<li class="empty">none</li>`}</ul></div>
    </div>`;
}

// ---- devices -----------------------------------------------------------------------------------
function renderDevices(s) {
  $("devices").innerHTML = s.devices.map(d => `
    <div class="device" data-device="${esc(d.name)}">
      <div class="top"><span class="name">${esc(d.name)}</span>
        <span class="meta">${esc(d.kind)} · node ${esc(d.node)}${d.simulated ? " · simulated time" : ""}</span>
        <span class="state ${esc(d.state)}">${esc(d.state)}</span></div>
      <canvas class="spark" data-device="${esc(d.name)}"></canvas>
      <div class="figures">
        <div>utilisation<b>${d.util === null || d.util === undefined ? "–" : (100 * d.util).toFixed(0) + "%"}</b></div>
        <div>memory<b>${size(d.used)}</b>of ${size(d.capacity)}, ${size(Math.max(0, d.capacity - d.used))} free</div>
        <div>queued<b>${d.queued}</b>policy ${esc(d.policy || "–")}</div>
        <div>driver restarts<b>${d.restarts}</b></div>
      </div>
    </div>`).join("");
  for (const d of s.devices) drawSpark(document.querySelector(`canvas.spark[data-device="${CSS.escape(d.name)}"]`), d.history, s.history_s);
}

function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  return [g, w, h];
}

function drawSpark(canvas, points, span) {
  const [g, w, h] = fitCanvas(canvas);
  const x = t => w * (1 + t / span), y = u => h - 2 - (h - 16) * u;  // the top 14 px hold the label
  g.strokeStyle = "#222a3a";
  for (const u of [0.25, 0.5, 0.75, 1]) { g.beginPath(); g.moveTo(0, y(u)); g.lineTo(w, y(u)); g.stroke(); }
  g.fillStyle = "#5f687c"; g.font = "10px system-ui";
  g.fillText(`last ${span.toFixed(0)} s, 0–100%`, 4, 10);
  if (!points.length) return;
  g.beginPath(); g.moveTo(x(points[0][0]), h);
  for (const [t, u] of points) g.lineTo(x(t), y(u));
  g.lineTo(x(points[points.length - 1][0]), h); g.closePath();
  g.fillStyle = "rgba(74,163,255,.25)"; g.fill();
  g.beginPath();
  points.forEach(([t, u], i) => i ? g.lineTo(x(t), y(u)) : g.moveTo(x(t), y(u)));
  g.strokeStyle = "#4aa3ff"; g.lineWidth = 1.5; g.stroke();
}

// ---- scheduler ---------------------------------------------------------------------------------
function renderSched(s) {
  $("sched-hint").textContent = s.admin ? "switching a policy calls sched_set" : "read-only: start llmos web as the kernel's owner to switch";
  const box = $("sched");
  for (const d of s.devices) {
    let el = box.querySelector(`.sched-dev[data-device="${CSS.escape(d.name)}"]`);
    const key = d.policies.join(",") + (s.admin ? ":admin" : "");
    if (!el || el.dataset.key !== key) {
      if (!el) { el = document.createElement("div"); el.className = "sched-dev"; el.dataset.device = d.name; box.appendChild(el); }
      el.dataset.key = key;
      const control = s.admin && d.policies.length ? `
        <select class="policy-select" data-device="${esc(d.name)}">${d.policies.map(p => `<option>${esc(p)}</option>`).join("")}</select>
        <button class="policy-apply" data-device="${esc(d.name)}">switch</button>` : "";
      el.innerHTML = `<div class="policy"><b>${esc(d.name)}</b> policy <span class="current"></span>${control}</div><ul class="queue"></ul>`;
      const select = el.querySelector("select");
      if (select) select.value = d.policy;
    }
    el.querySelector(".current").textContent = d.policy || "–";
    el.querySelector(".queue").innerHTML = d.queue.map((q, i) => `
      <li style="--c:${colour(q.pid)}" data-pid="${q.pid}"><span class="pos">${i + 1}.</span>${esc(name(q.pid))} (${q.pid}):
        ${esc(q.work)}${q.model ? " model " + q.model : ""}${q.state ? " · " + esc(q.state) : ""}${q.items > 1 ? " ×" + q.items : ""}</li>`).join("")
      || `<li class="empty">nothing waiting</li>`;
  }
}

async function switchPolicy(device) {
  const select = document.querySelector(`select.policy-select[data-device="${CSS.escape(device)}"]`);
  const reply = await fetch("/api/sched", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify({device, policy: select.value})});
  const body = await reply.json();
  showError(reply.ok ? "" : `sched_set ${device} ${select.value}: ${body.error}`);
}

// ---- memory --------------------------------------------------------------------------------------
function renderMemory(s) {
  $("memory").innerHTML = s.memory.map(m => {
    const held = Object.entries(m.by_process), most = Math.max(1, ...held.map(([, n]) => n));
    const bars = held.map(([pid, n]) => `<div class="holder" data-pid="${pid}"><span class="who">${swatch(+pid)}${esc(name(+pid))} (${pid})</span>
      <span class="bar"><span style="width:${100 * n / most}%;background:${colour(+pid)}"></span></span><span class="amount">${size(n)}</span></div>`).join("");
    const pools = m.pools.map(p => {
      const blocks = [...p.marks].map((mark, i) => {
        const pid = p.owners[i];
        const cls = {u: "used", s: "shared", c: "cached", ".": ""}[mark];
        return `<i class="blk ${cls}" data-pid="${pid}" style="--c:${colour(pid)}" title="block ${i}: ${pid ? esc(name(pid)) + " (" + pid + ")" : cls || "free"}${mark === "s" ? ", shared" : ""}"></i>`;
      }).join("");
      const host = p.host_total ? `<div class="blocks host">${p.host_owners.map((pid, i) =>
        `<i class="blk ${pid ? "swapped" : ""}" data-pid="${pid}" style="--c:${colour(pid)}" title="host block ${i}${pid ? ": " + esc(name(pid)) : ""}"></i>`).join("")}</div>` : "";
      return `<div class="pool" data-pool="${esc(p.pool)}"><h3>${esc(m.device)} / ${esc(p.pool)}</h3>
        <div class="counts">${p.used}/${p.total} blocks used (${p.block_size} tokens, ${size(p.block_bytes)} each) ·
          ${p.shared} shared · ${p.cached} cached · ${p.sequences} sequences${p.host_total ? ` · ${p.swapped} swapped (${p.host_used}/${p.host_total} host blocks)` : ""}${p.hit_rate === null ? "" : ` · prefix hit rate ${(100 * p.hit_rate).toFixed(1)}%`}</div>
        <div class="blocks">${blocks}</div>${host}</div>`;
    }).join("");
    return `<div class="memdev"><div class="line"><b>${esc(m.device)}</b><span>${size(m.used)} used of ${size(m.capacity)} (${(100 * m.used / m.capacity).toFixed(2)}%), ${size(m.free)} free</span></div>
      ${bars || `<div class="empty">no tensor memory held</div>`}${pools}</div>`;
  }).join("") || `<span class="empty">no device memory</span>`;
}

// ---- timeline -------------------------------------------------------------------------------------
const WINDOW_S = 30;
function renderTimeline(s) {
  const tl = s.timeline, canvas = $("timeline");
  const lane = 26, top = 14;
  canvas.style.height = `${top + Math.max(1, tl.devices.length) * lane + 18}px`;
  const [g, w, h] = fitCanvas(canvas);
  const left = 70, x = t => left + (w - left - 8) * (1 + t / WINDOW_S);
  g.font = "11px system-ui"; g.fillStyle = "#5f687c"; g.strokeStyle = "#222a3a";
  for (let t = -WINDOW_S; t <= 0; t += 5) {
    g.beginPath(); g.moveTo(x(t), top - 4); g.lineTo(x(t), h - 14); g.stroke();
    g.fillText(t ? `${t}s` : "now", x(t) - 10, h - 3);
  }
  const seen = new Set();
  tl.devices.forEach((dev, i) => {
    const y = top + i * lane;
    g.fillStyle = "#8a93a6"; g.fillText(dev, 4, y + lane / 2 + 3);
    for (const [d, pid, start, end, what, from, to] of tl.slices) {  // a batched step: one band per process served
      if (d !== dev || end < -WINDOW_S) continue;
      seen.add(pid);
      const x0 = x(Math.max(start, -WINDOW_S)), x1 = Math.max(x(end), x0 + 1), band = lane - 8;
      g.fillStyle = colour(pid); g.fillRect(x0, y + 3 + band * from, x1 - x0, Math.max(1, band * (to - from)));
    }
    for (const [d, t, what] of tl.marks) {
      if (d !== dev || t < -WINDOW_S) continue;
      g.fillStyle = "#ef5d6a"; g.fillRect(x(t) - 1, y, 2, lane - 2);
    }
  });
  const alive = new Set(s.procs.map(p => p.pid)), pids = [...seen].sort((a, b) => a - b);
  const gone = pids.filter(pid => pid && !alive.has(pid)).length;
  $("timeline-legend").innerHTML = pids.filter(pid => !pid || alive.has(pid))
    .map(pid => `<span>${swatch(pid)}${esc(name(pid))} (${pid})</span>`).join("")
    + (gone ? `<span>and ${gone} process${gone > 1 ? "es" : ""} that have exited</span>` : "")
    + (tl.marks.length ? `<span><span class="swatch" style="background:#ef5d6a;width:3px"></span>preemption, swap or eviction</span>` : "")
    || `<span class="empty">no device work in the last ${WINDOW_S} s</span>`;
}

// ---- wiring -----------------------------------------------------------------------------------------
function showError(text) { const b = $("error"); b.hidden = !text; b.textContent = text; }

function render(s) {
  if (s.error) { showError(`the kernel does not answer: ${s.error} (${s.errno})`); $("live").className = "dot off"; return; }
  showError("");
  state = s;
  renderSummary(s); renderProcs(s); renderDevices(s); renderSched(s); renderMemory(s); renderTimeline(s);
  if (selected !== null && !s.procs.some(p => p.pid === selected)) { selected = null; $("detail").hidden = true; }
}

document.addEventListener("click", event => {
  const row = event.target.closest("#procs tbody tr[data-pid]");
  if (row) {
    const pid = +row.dataset.pid;
    if (pid === selected) { selected = null; $("detail").hidden = true; renderProcs(state); return; }
    showDetail(pid); renderProcs(state); return;
  }
  const apply = event.target.closest("button.policy-apply");
  if (apply) switchPolicy(apply.dataset.device);
});

setInterval(() => { if (selected !== null) showDetail(selected); }, 2000);

const events = new EventSource("/api/events");
events.addEventListener("state", e => { $("live").className = "dot on"; render(JSON.parse(e.data)); });
events.onerror = () => { $("live").className = "dot off"; };
