// imd's admin console: the JSON API under /admin/api/ (docs/web.rst) and
// the Prometheus text of /metrics.  The session is an HttpOnly cookie.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const button = (text, onclick) => el("button", { type: "button", textContent: text, onclick });

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(`/admin/api/${path}`, options);
  const answer = await response.json();
  if (response.status === 401) { showLogin(); throw new Error(answer.err); }
  if (!response.ok) throw new Error(answer.err || response.statusText);
  return answer;
}

function act(promise) {
  $("#error").textContent = "";
  return promise.then(refresh, (e) => { $("#error").textContent = e.message; });
}

function fill(section, rows) {
  $(`#${section} tbody`).replaceChildren(...rows.map((cells) => {
    const row = el("tr");
    for (const cell of cells) row.append(el("td", {}, cell));
    return row;
  }));
}

async function refresh() {
  const [sessions, users, groups, apps, outbox, log] = await Promise.all(
    ["sessions", "users", "groups", "apps", "outbox", "log"].map((path) => api(path)));
  $("#session-counts").textContent = Object.entries(sessions.counts).map(([c, n]) => `${c}: ${n}`).join(", ");
  fill("sessions", sessions.sessions.map((s) => [s.uid, s.channel, s.resource, s.show || "",
    button("Kick", () => act(api("sessions/kick", { uid: s.uid, channel: s.channel, resource: s.resource })))]));
  fill("users", users.users.map((u) => [u.uid + (u.admin ? " (admin)" : ""), u.name,
    u.disabled ? "disabled" : "active",
    el("span", {},
      button(u.disabled ? "Enable" : "Disable", () => act(api(`users/${encodeURIComponent(u.uid)}/disabled`, { disabled: !u.disabled }))),
      " ",
      button("Reset password", () => {
        const password = prompt(`New password for ${u.uid}`);
        if (password) act(api(`users/${encodeURIComponent(u.uid)}/password`, { password }));
      }))]));
  fill("groups", groups.groups.map((g) => [g.gid, g.name, g.creator, String(g.members)]));
  fill("apps", apps.apps.map((a) => [a.name, a.app_key,
    button("Remove", () => confirm(`Remove app ${a.name}?`) && act(api(`apps/${encodeURIComponent(a.name)}/remove`, {})))]));
  $("#outbox-stats").textContent = `${outbox.depth} waiting, ${outbox.dead} dead`;
  fill("outbox", outbox.rows.map((r) => [String(r.id), r.kind, String(r.attempts), r.dead ? "dead" : "pending",
    r.last_error, r.dead ? el("span", {}, button("Retry", () => act(api("outbox/retry", { ids: [r.id] }))), " ",
                                   button("Drop", () => act(api("outbox/drop", { ids: [r.id] })))) : ""]));
  $("#log-lines").textContent = log.lines.map((l) =>
    `${new Date(l.time * 1000).toISOString().slice(11, 19)} ${l.level} ${l.text}`).join("\n");
}

// -- metrics ----------------------------------------------------------------

const series = { sessions: [], messages: [], errors: [] };
let previous = null;

function total(text, name) {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name + "{") || line.startsWith(name + " ")) sum += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
  }
  return sum;
}

async function sample() {
  const text = await (await fetch("/metrics")).text();
  const now = { at: Date.now(), messages: total(text, "imd_messages_total"), errors: total(text, "imd_errors_total") };
  const values = { sessions: total(text, "imd_sessions") };
  if (previous) {
    const seconds = Math.max(0.001, (now.at - previous.at) / 1000);
    values.messages = (now.messages - previous.messages) / seconds;
    values.errors = (now.errors - previous.errors) / seconds;
  }
  previous = now;
  for (const [name, value] of Object.entries(values)) {
    series[name].push(value);
    if (series[name].length > 60) series[name].shift();
    $(`#m-${name}`).textContent = Math.round(value * 10) / 10;
    draw($(`#g-${name}`), series[name]);
  }
}

function draw(canvas, points) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1, ...points);
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((v, i) => {
    const x = (i / Math.max(1, points.length - 1)) * canvas.width;
    const y = canvas.height - 4 - (v / top) * (canvas.height - 8);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

// -- the page ---------------------------------------------------------------

let timer = null;

function showLogin() {
  clearInterval(timer);
  $("#console").hidden = true;
  $("#login").hidden = false;
}

async function showConsole(uid) {
  $("#who").textContent = uid;
  $("#login").hidden = true;
  $("#console").hidden = false;
  await refresh();
  await sample();
  timer = setInterval(() => { sample().catch(() => {}); refresh().catch(() => {}); }, 2000);
}

$("#login").onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    const { uid } = await api("login", { uid: form.uid.value.trim(), password: form.password.value });
    showConsole(uid);
  } catch (e) { $("#login-error").textContent = e.message; }
};
$("#logout").onclick = () => api("logout", {}).finally(showLogin);
$("#new-user").onsubmit = (event) => {
  event.preventDefault();
  const f = event.target;
  act(api("users", { uid: f.uid.value.trim(), name: f.name.value, password: f.password.value, admin: f.admin.checked })
    .then(() => f.reset()));
};
$("#new-app").onsubmit = (event) => {
  event.preventDefault();
  const f = event.target;
  act(api("apps", { name: f.name.value.trim() }).then((a) => {
    $("#app-secret").textContent = `AppKey ${a.app_key}, AppSecret ${a.app_secret} (shown once)`;
    f.reset();
  }));
};
$("#retry-all").onclick = () => act(api("outbox/retry", { ids: null }));
$("#drop-all").onclick = () => confirm("Drop every dead row?") && act(api("outbox/drop", { ids: null }));

api("me").then(({ uid }) => showConsole(uid), () => showLogin());
