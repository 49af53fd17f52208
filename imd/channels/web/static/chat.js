// imd's web chat: the long connection's frames over the WebSocket at /ws
// (docs/web.rst), QID queries for the roster and history, and the upload
// API for files.  Plain JavaScript, no build step.
"use strict";

const T = {
  AUTH: 65537, PING: 65538, KICK: 65539,
  ACK: 196608, MESSAGE: 196609, PRESENCE: 196610, RECEIPT: 196611, RECALL: 196612,
  ROSTER_ADD_REQ: 200705, ROSTER_ADD_RESP: 200706, CHATROOM: 200708,
  NOTIFY_ROSTER_ADD: 262144, NOTIFY_MESSAGE: 262146, NOTIFY_GROUP_DATA: 262148,
  NOTIFY_RECALL: 262149, NOTIFY_RECEIPT: 262150,
};
const PING_EVERY = 60000;
const RECALL_WINDOW = 120000;

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const newId = () => Date.now().toString(36) + Math.random().toString(36).slice(2, 10);

const state = {
  uid: null, token: null, ws: null, authed: false, stopped: true, retry: 0, pinger: null,
  convs: new Map(),     // "u:bob" | "g:<gid>" -> conversation
  active: null,
  pending: new Map(),   // "<msgtype>/<msgid>" -> {resolve, reject}
  outbox: new Map(),    // msgid -> IM_MESSAGE body not yet acknowledged
};

// -- the wire ---------------------------------------------------------------

function send(msgtype, body) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ msgtype, body }));
    return true;
  }
  return false;
}

function request(msgtype, body) {
  body = Object.assign({ msgid: newId() }, body);
  return new Promise((resolve, reject) => {
    state.pending.set(`${msgtype}/${body.msgid}`, { resolve, reject });
    if (!send(msgtype, body)) {
      state.pending.delete(`${msgtype}/${body.msgid}`);
      reject(new Error("not connected"));
    }
  });
}

async function qid(name, body = {}) {
  const response = await fetch(`/qid/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${state.token}` },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.err || response.statusText);
  return answer;
}

const rows = (table) => table.result.map((pairs) => Object.fromEntries(pairs.map((p) => [p.n, p.v])));

function connect() {
  state.stopped = false;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => authenticate(ws);
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    receive(frame.msgtype, frame.body || {});
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.authed = false;
    clearInterval(state.pinger);
    for (const { reject } of state.pending.values()) reject(new Error("connection lost"));
    state.pending.clear();
    if (state.stopped) return;  // kicked or logged out: the status says why
    setStatus("offline");
    // Back off up to 10 s; what was missed is pushed after the next IM_AUTH.
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(() => { if (!state.stopped && state.ws === ws) connect(); }, delay);
  };
}

async function authenticate(ws) {
  try {
    await request(T.AUTH, { uid: state.uid, token: state.token, res: resource() });
  } catch (e) {
    if (state.ws === ws && /token/i.test(e.message)) logout(e.message);
    return;
  }
  state.authed = true;
  state.retry = 0;
  setStatus("online");
  state.pinger = setInterval(() => send(T.PING, {}), PING_EVERY);
  request(T.PRESENCE, { type: "online" }).catch(() => {});
  // Messages typed while offline go now, under the msgid they had: the
  // server stores a resent message once.
  for (const body of state.outbox.values()) sendMessage(body);
  loadContacts();
}

function resource() {
  let res = sessionStorage.getItem("imd.res");
  if (!res) sessionStorage.setItem("imd.res", (res = "web-" + newId().slice(-8)));
  return res;
}

function receive(msgtype, body) {
  switch (msgtype) {
    case T.ACK: {
      const key = `${body.type}/${body.msgid}`;
      const waiter = state.pending.get(key);
      if (waiter) {
        state.pending.delete(key);
        body.err ? waiter.reject(new Error(body.err)) : waiter.resolve(body);
      }
      break;
    }
    case T.MESSAGE: return incoming(body, false);
    case T.NOTIFY_MESSAGE: return incoming(body, true);
    case T.NOTIFY_RECEIPT: return receipt(body);
    case T.NOTIFY_RECALL: return recalled(body);
    case T.PRESENCE: return presence(body);
    case T.ROSTER_ADD_REQ: return friendRequest(body);
    case T.NOTIFY_ROSTER_ADD:
      conversation(`u:${body.frd}`);
      // Announced again, so the new friend learns we are online and tells back.
      request(T.PRESENCE, { type: "online" }).catch(() => {});
      return render();
    case T.CHATROOM: return body.type === "0" ? groupInvite(body) : null;
    case T.NOTIFY_GROUP_DATA: conversation(`g:${body.gid}`, body.gname); return render();
    case T.KICK:
      state.stopped = true;
      setStatus(`signed out: ${body.reason}`);
      return;
  }
}

// -- conversations ----------------------------------------------------------

function conversation(key, name) {
  let conv = state.convs.get(key);
  if (!conv) {
    const [kind, id] = [key.slice(0, 1), key.slice(2)];
    conv = { key, group: kind === "g", id, name: name || id, unread: 0, online: new Set(),
             messages: new Map(), loaded: false };
    state.convs.set(key, conv);
  } else if (name) {
    conv.name = name;
  }
  return conv;
}

function keyOf(msg, mine) {
  if (msg.gid) return `g:${msg.gid}`;
  return `u:${mine ? msg.to : msg.from}`;
}

function addMessage(conv, msg) {
  const key = `${msg.from}/${msg.msgid}`;
  const known = conv.messages.get(key);
  if (known) {
    Object.assign(known, { recalled: known.recalled || msg.recalled === "1" });
    return false;
  }
  conv.messages.set(key, {
    msgid: msg.msgid, from: msg.from, to: msg.to, gid: msg.gid, kind: msg.kind || "text",
    body: msg.body, recalled: msg.recalled === "1", status: msg.status || "",
    time: Number(msg.stime) || Date.now(),
  });
  return true;
}

function incoming(msg, copy) {
  const mine = copy || msg.from === state.uid;
  const conv = conversation(keyOf(msg, mine));
  const added = addMessage(conv, Object.assign({}, msg, { status: mine ? "sent" : "" }));
  if (!copy) {
    // The server keeps a message for us until this acknowledgement.
    send(T.ACK, msg.gid ? { type: T.MESSAGE, msgid: msg.msgid, gid: msg.gid, seq: msg.seq }
                        : { type: T.MESSAGE, msgid: msg.msgid, from: msg.from });
    if (added && !mine) {
      const target = msg.gid ? { gid: msg.gid } : { to: msg.from };
      send(T.RECEIPT, Object.assign({ msgid: msg.msgid, kind: "delivered" }, target));
      if (state.active === conv.key && document.visibilityState === "visible") {
        send(T.RECEIPT, Object.assign({ msgid: msg.msgid, kind: "read" }, target));
      } else {
        conv.unread += 1;
      }
    }
  }
  render();
}

function receipt(body) {
  const conv = state.convs.get(body.gid ? `g:${body.gid}` : `u:${body.from}`);
  const msg = conv && conv.messages.get(`${state.uid}/${body.msgid}`);
  if (!msg) return;
  if (body.kind === "read") {
    // Read up to here: what came before was read too.
    for (const other of conv.messages.values()) {
      if (other.from === state.uid && other.time <= msg.time && !other.gid === !msg.gid) other.status = "read";
    }
  } else if (msg.status !== "read") {
    msg.status = body.kind;
  }
  render();
}

function recalled(body) {
  const conv = state.convs.get(body.gid ? `g:${body.gid}` : `u:${body.from === state.uid ? body.to : body.from}`);
  const msg = conv && conv.messages.get(`${body.from}/${body.msgid}`);
  if (msg) { msg.recalled = true; render(); }
}

function presence(body) {
  const conv = conversation(`u:${body.from}`);
  if (body.type === "leave" || body.show === "offline") conv.online.delete(body.from_res);
  else conv.online.add(body.from_res);
  render();
}

function friendRequest(body) {
  send(T.ACK, { type: T.ROSTER_ADD_REQ, msgid: body.msgid });
  const item = el("li", {}, `${body.from} wants to be friends `);
  item.append(el("button", {
    textContent: "Accept",
    onclick: () => { request(T.ROSTER_ADD_RESP, { to: body.from, msgid: body.msgid, accept: true }); item.remove(); },
  }));
  $("#requests").append(item);
}

function groupInvite(body) {
  send(T.ACK, { type: T.CHATROOM, msgid: body.msgid });
  const item = el("li", {}, `${body.from} invites you to ${body.gname} `);
  item.append(el("button", {
    textContent: "Join",
    onclick: () => { request(T.CHATROOM, { type: "1", gid: body.gid, accept: true }); item.remove(); },
  }));
  $("#requests").append(item);
}

async function loadContacts() {
  try {
    const roster = await qid("QID_IM_GET_ROSTER_ALL");
    for (const friend of JSON.parse(roster.result)) conversation(`u:${friend.fid}`, friend.fname || friend.name || friend.fid);
    for (const group of rows(await qid("QID_IM_GET_GROUP_LIST"))) conversation(`g:${group.gid}`, group.gname);
  } catch (e) { /* shown again on the next connection */ }
  render();
}

async function openConversation(key) {
  const conv = conversation(key);
  state.active = key;
  if (!conv.loaded) {
    try {
      const history = conv.group ? await qid("QID_IM_GET_GROUP_MSG_HISTORY", { gid: conv.id })
                                 : await qid("QID_IM_GET_ROSTER_MSG_HISTORY", { msgto: conv.id });
      for (const msg of rows(history)) addMessage(conv, Object.assign(msg, { status: msg.from === state.uid ? "sent" : "" }));
      conv.loaded = true;
    } catch (e) { /* the live messages still show */ }
  }
  markRead(conv);
  render();
}

function markRead(conv) {
  if (!conv.unread) return;
  conv.unread = 0;
  const last = [...conv.messages.values()].filter((m) => m.from !== state.uid).pop();
  if (last) send(T.RECEIPT, Object.assign({ msgid: last.msgid, kind: "read" }, conv.group ? { gid: conv.id } : { to: conv.id }));
}

// -- sending ----------------------------------------------------------------

function compose(kind, text) {
  const conv = state.convs.get(state.active);
  if (!conv) return;
  const body = { msgid: newId(), type: conv.group ? "1" : "0", to: conv.id, kind, body: text,
                 time: new Date().toISOString() };
  if (conv.group) body.gid = conv.id;
  addMessage(conv, Object.assign({ from: state.uid, status: "sending" }, body));
  state.outbox.set(body.msgid, body);
  sendMessage(body);
  render();
}

async function sendMessage(body) {
  try {
    await request(T.MESSAGE, body);
  } catch (e) {
    if (state.authed) {
      // Refused, not lost: it will not be resent.
      state.outbox.delete(body.msgid);
      setMessageStatus(body, `failed: ${e.message}`);
    }
    return;
  }
  state.outbox.delete(body.msgid);
  setMessageStatus(body, "sent");
}

function setMessageStatus(body, status) {
  const conv = state.convs.get(body.gid ? `g:${body.gid}` : `u:${body.to}`);
  const msg = conv && conv.messages.get(`${state.uid}/${body.msgid}`);
  if (msg && (msg.status === "sending" || status.startsWith("failed"))) msg.status = status;
  render();
}

function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  const bar = $("#progress");
  xhr.open("POST", "/upload/mobileFileUpload");
  xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
  xhr.onloadend = () => {
    bar.hidden = true;
    if (xhr.status !== 200) return alert(`upload failed: ${xhr.responseText}`);
    const { fileId } = JSON.parse(xhr.responseText);
    const kind = file.type.startsWith("image/") ? "image" : "file";
    compose(kind, JSON.stringify({ fileId, name: file.name, size: file.size }));
  };
  bar.value = 0;
  bar.hidden = false;
  xhr.send(form);
}

// -- the page ---------------------------------------------------------------

function setStatus(text) {
  const status = $("#status");
  status.textContent = text;
  status.className = "status" + (text === "online" ? " online" : "");
}

function renderBody(msg) {
  if (msg.recalled) return el("span", { className: "body" }, "message recalled");
  if (msg.kind === "image" || msg.kind === "file") {
    let file;
    try { file = JSON.parse(msg.body); } catch (e) { file = null; }
    if (file && file.fileId) {
      const href = `/upload/mobileFileDownload?fileId=${encodeURIComponent(file.fileId)}&token=${encodeURIComponent(state.token)}`;
      const link = el("a", { href, download: file.name || "file", className: "body" });
      link.append(msg.kind === "image" ? el("img", { src: href, alt: file.name, style: "max-width:240px;display:block" })
                                       : `${file.name} (${file.size} bytes)`);
      return link;
    }
  }
  return el("span", { className: "body" }, msg.body);
}

const STATUS_MARK = { sending: "…", sent: "✓", delivered: "✓✓", read: "read" };

function render() {
  const list = $("#conversations");
  list.replaceChildren(...[...state.convs.values()].map((conv) => {
    const item = el("li", { className: conv.key === state.active ? "active" : "", onclick: () => openConversation(conv.key) },
      el("span", { className: "dot" + (conv.group ? " group" : conv.online.size ? " online" : "") }),
      el("span", { className: "name" }, conv.name),
      el("span", { className: "badge" }, conv.unread ? String(conv.unread) : ""));
    item.dataset.key = conv.key;
    return item;
  }));
  const conv = state.convs.get(state.active);
  $("#compose").hidden = !conv;
  $("#invite").hidden = !(conv && conv.group);
  if (!conv) return;
  $("#chat-title").textContent = conv.group ? `${conv.name} (group)` : `${conv.name}${conv.online.size ? " · online" : ""}`;
  const box = $("#messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const sorted = [...conv.messages.values()].sort((a, b) => a.time - b.time);
  box.replaceChildren(...sorted.map((msg) => {
    const mine = msg.from === state.uid;
    const item = el("li", { className: (mine ? "mine" : "") + (msg.recalled ? " recalled" : "") });
    item.dataset.msgid = msg.msgid;
    if (conv.group && !mine) item.append(el("span", { className: "from" }, msg.from));
    item.append(renderBody(msg));
    if (mine) {
      item.append(el("span", { className: "meta" }, msg.recalled ? "" : STATUS_MARK[msg.status] || msg.status));
      if (!msg.recalled && msg.status !== "sending" && Date.now() - msg.time < RECALL_WINDOW) {
        item.append(el("button", {
          className: "recall", type: "button", textContent: "recall",
          onclick: () => request(T.RECALL, Object.assign({ msgid: msg.msgid }, msg.gid ? { gid: msg.gid } : { to: msg.to }))
            .then(() => { msg.recalled = true; render(); }, (e) => alert(e.message)),
        }));
      }
    }
    return item;
  }));
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function start(uid, token) {
  Object.assign(state, { uid, token });
  sessionStorage.setItem("imd.auth", JSON.stringify({ uid, token }));
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#me").textContent = uid;
  connect();
}

function logout(reason) {
  state.stopped = true;
  if (state.ws) state.ws.close();
  sessionStorage.removeItem("imd.auth");
  fetch("/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } }).catch(() => {});
  location.hash = "";
  location.reload();
}

$("#login").onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  const response = await fetch("/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ uid: form.uid.value.trim(), password: form.password.value }),
  });
  const answer = await response.json();
  if (!response.ok) { $("#login-error").textContent = answer.err; return; }
  start(answer.uid, answer.token);
};
$("#logout").onclick = () => logout();
$("#open-chat").onsubmit = async (event) => {
  event.preventDefault();
  // The server's user lookup (QID_IM_FIND_USER): an exact user id or
  // telephone, so a user of any design can be found, and a typo is told.
  const q = event.target.peer.value.trim();
  $("#find-error").textContent = "";
  try {
    const found = rows(await qid("QID_IM_FIND_USER", { q }));
    const user = found.find((u) => u.uid === q) || found[0];
    if (!user) { $("#find-error").textContent = `nobody has the user id or telephone ${q}`; return; }
    event.target.reset();
    conversation(`u:${user.uid}`, user.name || user.uid);
    openConversation(`u:${user.uid}`);
  } catch (e) { $("#find-error").textContent = e.message; }
};
$("#add-friend").onsubmit = (event) => {
  event.preventDefault();
  request(T.ROSTER_ADD_REQ, { to: event.target.peer.value.trim(), msg: "" }).catch((e) => alert(e.message));
  event.target.reset();
};
$("#new-group").onsubmit = async (event) => {
  event.preventDefault();
  const name = event.target.name.value.trim();
  event.target.reset();
  try {
    const gid = (await qid("QID_IM_SET_GROUP", { gname: name })).result;
    conversation(`g:${gid}`, name);
    openConversation(`g:${gid}`);
  } catch (e) { alert(e.message); }
};
$("#invite").onsubmit = (event) => {
  event.preventDefault();
  const conv = state.convs.get(state.active);
  request(T.CHATROOM, { type: "0", gid: conv.id, to: event.target.peer.value.trim() }).catch((e) => alert(e.message));
  event.target.reset();
};
$("#compose").onsubmit = (event) => {
  event.preventDefault();
  const text = $("#text").value;
  if (!text.trim()) return;
  $("#text").value = "";
  compose("text", text);
};
$("#file").onchange = (event) => {
  const [file] = event.target.files;
  if (file) upload(file);
  event.target.value = "";
};
document.addEventListener("visibilitychange", () => {
  const conv = state.convs.get(state.active);
  if (conv && document.visibilityState === "visible") { markRead(conv); render(); }
});

const saved = JSON.parse(sessionStorage.getItem("imd.auth") || "null");
if (saved) start(saved.uid, saved.token);
