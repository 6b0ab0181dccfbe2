// The guard's page: draws the daemon's snapshot, keeps it live over server-sent events, shows
// "connection lost" when the stream goes quiet or breaks and reconnects by itself, and sends the
// guard's three actions with a PIN. Every shown string comes from the catalogue, through t().
"use strict";

let messages = {};
let lang = "zh";
let heartbeatMs = 2000;
let state = null;
let receivedAt = 0; // Date.now() when `state` arrived: durations count from state.now
let lastHeard = 0;
let stream = null;
let reconnectTimer = null;
let pending = null; // the action the dialog is asking a PIN for

const $ = (id) => document.getElementById(id);

function t(key, vars) {
  const table = messages[lang] || {};
  let text = key in table ? table[key] : key;
  for (const [name, value] of Object.entries(vars || {})) {
    text = text.split("{" + name + "}").join(String(value));
  }
  return text;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clockOf(iso) { return iso ? iso.slice(11, 19) : ""; }

function ageOf(iso) {
  const nowMs = Date.parse(state.now) + (Date.now() - receivedAt);
  const s = Math.max(0, Math.floor((nowMs - Date.parse(iso)) / 1000));
  if (s < 60) return t("dur_s", { n: s });
  if (s < 3600) return t("dur_m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("dur_h", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return t("dur_d", { d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
}

function stateChip(key, cls) { return el("span", "state s-" + cls, t(key)); }

function since(iso) { return el("span", "muted", t("for", { d: ageOf(iso) }) + " · " + t("since", { t: clockOf(iso) })); }

function actionButton(action, target, label, needsReason) {
  const button = el("button", "act", t("act_" + action));
  button.type = "button";
  button.dataset.action = action;
  button.dataset.target = target;
  button.addEventListener("click", () => openDialog(action, target, label, needsReason));
  return button;
}

function fill(listId, items, draw) {
  const list = $(listId);
  list.replaceChildren();
  if (!items.length) list.append(el("li", "row muted", t("none")));
  for (const item of items) list.append(draw(item));
}

function drawAlarm(a) {
  const row = el("li", "row alarm stage-" + a.stage + (a.test ? " test" : ""));
  row.dataset.alarm = a.alarm_id;
  row.dataset.stage = a.stage;
  row.dataset.test = a.test ? "yes" : "no";
  if (a.test) row.append(el("span", "tag-test", t("alarm_test")));
  row.append(el("span", "name", a.place || a.box));
  row.append(stateChip("stage_" + a.stage, a.stage));
  row.append(el("span", "muted", t("alarm_raised", { t: clockOf(a.raised_at) })));
  if (a.acknowledged_by) {
    row.append(el("span", "muted", t("alarm_acked", { who: a.acknowledged_by, t: clockOf(a.acknowledged_at) })));
  }
  if (a.escalated_at) row.append(el("span", "muted", t("alarm_escalated", { t: clockOf(a.escalated_at) })));
  if (a.siren_silenced_by) {
    row.append(el("span", "muted", t("alarm_silenced", { who: a.siren_silenced_by, t: clockOf(a.siren_silenced_at) })));
  }
  if (a.reset_by) row.append(el("span", "muted", t("alarm_reset", { who: a.reset_by, t: clockOf(a.reset_at) })));
  const actions = el("span", "actions");
  actions.append(actionButton("reset", a.alarm_id, a.place || a.box, a.stage !== "acknowledged"));
  row.append(actions);
  return row;
}

function drawThing(prefix, value, name, sinceIso) {
  const row = el("li", "row");
  row.dataset.state = value;
  row.append(el("span", "name", name));
  row.append(stateChip(prefix + value, value));
  row.append(since(sinceIso));
  return row;
}

function drawDevice(d) {
  const kind = t("kind_" + d.kind);
  const row = drawThing("health_", d.health, (d.place || d.device) + " · " + kind, d.since);
  row.dataset.device = d.device;
  if (d.kind === "alarm_box") {
    const actions = el("span", "actions");
    actions.append(actionButton("test_press", d.device, d.place || d.device, false));
    actions.append(actionButton("silence_siren", d.device, d.place || d.device, false));
    row.append(actions);
  }
  return row;
}

function hm(iso) { return clockOf(iso).slice(0, 5); }

function ledgerKind(kind) {
  const key = "ledger_" + kind;
  const text = t(key);
  return text === key ? kind : text; // a kind the installer named has no text: shown as it is
}

function drawRules(r) {
  const list = $("rule-list");
  list.replaceChildren();
  const windows = r.gate_windows.map((w) => w.name + " " + hm(w.opens_at) + "–" + hm(w.closes_at));
  list.append(el("li", "row", t("rules_windows") + ": " + (windows.join(", ") || t("rules_no_windows"))));
  const patrols = el("li", "row");
  patrols.dataset.rule = "patrols";
  patrols.append(el("span", "name", t("rules_patrols", { done: r.patrols_done, target: r.patrols_target })));
  const met = r.patrols_done >= r.patrols_target;
  patrols.append(met ? stateChip("rules_patrols_met", "synced") : stateChip("rules_patrols_short", "down"));
  list.append(patrols);
  if (!r.open_violations.length) list.append(el("li", "row muted", t("rules_violations") + ": " + t("none")));
  for (const v of r.open_violations) {
    const row = el("li", "row");
    row.dataset.rule = "violation";
    row.append(el("span", "name", v.place));
    row.append(stateChip("rules_violation", "down"));
    row.append(el("span", "muted", t("rules_violation_rule", { rule: v.rule })));
    row.append(since(v.since));
    list.append(row);
  }
  if (!r.overdue_ledger.length) list.append(el("li", "row muted", t("rules_overdue") + ": " + t("none")));
  for (const e of r.overdue_ledger) {
    const row = el("li", "row");
    row.dataset.rule = "overdue";
    row.append(el("span", "name", e.place + " · " + ledgerKind(e.kind)));
    row.append(stateChip("rules_overdue_item", "down"));
    row.append(el("span", "muted", t("rules_due", { t: hm(e.due_at) })));
    list.append(row);
  }
}

function render() {
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.documentElement.lang = lang;
  if (!state) return;
  $("gate-name").textContent = state.gate_name;
  const testMode = $("test-mode");
  testMode.hidden = !state.test_mode_until;
  testMode.textContent = state.test_mode_until ? t("test_mode_on", { t: hm(state.test_mode_until) }) : "";
  const alarms = $("alarm-list");
  alarms.replaceChildren();
  if (!state.alarms.length) alarms.append(el("li", "row muted", t("no_alarms")));
  for (const a of state.alarms) alarms.append(drawAlarm(a));
  fill("path-list", state.paths, (p) => drawThing("path_", p.state, t("dest_" + p.destination), p.since));
  fill("bollard-list", state.bollards, (b) => drawThing("bollard_", b.state, b.place || b.device, b.since));
  fill("door-list", state.doors, (d) => drawThing("door_", d.state, d.place || d.device, d.since));
  fill("device-list", state.devices, drawDevice);
  const offset = state.clock.gate_offset_s;
  $("clock-offset").textContent = offset === null ? t("clock_offset_unknown") : t("clock_offset", { s: offset.toFixed(1) });
  $("clock-offset").className = "chip state " + (offset === null || Math.abs(offset) > 1 ? "s-down" : "s-synced");
  const sync = state.clock.box_synchronised;
  $("clock-sync").textContent = t(sync === null ? "clock_sync_unknown" : sync ? "clock_synced" : "clock_not_synced");
  $("clock-sync").className = "chip state " + (sync === null ? "s-unknown" : sync ? "s-synced" : "s-down");
  $("rules").hidden = !state.rules;
  if (state.rules) drawRules(state.rules);
}

function setConnection(mode) {
  const conn = $("conn");
  conn.className = "conn " + mode;
  conn.dataset.i18n = "conn_" + mode;
  conn.textContent = t("conn_" + mode);
  document.body.classList.toggle("lost", mode === "lost");
}

function connect() {
  reconnectTimer = null;
  if (stream) stream.close();
  stream = new EventSource("events");
  stream.addEventListener("state", (event) => {
    state = JSON.parse(event.data);
    receivedAt = Date.now();
    lastHeard = receivedAt;
    setConnection("live");
    render();
  });
  stream.addEventListener("beat", () => { lastHeard = Date.now(); });
  stream.onerror = () => lose();
}

function lose() {
  setConnection("lost");
  if (stream) { stream.close(); stream = null; }
  if (!reconnectTimer) reconnectTimer = setTimeout(connect, 1000);
}

function watch() {
  if (stream && lastHeard && Date.now() - lastHeard > 3 * heartbeatMs) lose();
  if (state) render();
}

function openDialog(action, target, label, needsReason) {
  pending = { action, target };
  $("dialog-title").textContent = t("act_" + action);
  $("dialog-target").textContent = label;
  $("pin").value = "";
  $("reason").value = "";
  $("reason-label").hidden = !needsReason;
  $("dialog-error").textContent = "";
  $("dialog").hidden = false;
  $("pin").focus();
}

function closeDialog() { $("dialog").hidden = true; pending = null; }

function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  setTimeout(() => { node.hidden = true; }, 4000);
}

async function submitAction(event) {
  event.preventDefault();
  if (!pending) return;
  const body = { action: pending.action, target: pending.target, pin: $("pin").value };
  if (!$("reason-label").hidden && $("reason").value) body.reason = $("reason").value;
  let answer;
  try {
    const response = await fetch("api/action", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    answer = await response.json();
  } catch (err) {
    $("dialog-error").textContent = t("err_network");
    return;
  }
  $("pin").value = "";
  if (answer.ok) {
    const who = { who: answer.by };
    const text = pending.action === "test_press" ? t("done_test_press", who) : t("done", who);
    closeDialog();
    toast(text);
    return;
  }
  const errors = {
    pin_wrong: () => t("err_pin_wrong", { n: answer.attempts_left }),
    locked: () => t("err_locked", { s: Math.ceil(answer.retry_after_s) }),
    refused: () => t("refused_" + answer.reason),
  };
  $("dialog-error").dataset.error = answer.error;
  $("dialog-error").textContent = (errors[answer.error] || (() => t("err_bad_request")))();
}

async function start() {
  const response = await fetch("catalogue.json");
  const catalogue = await response.json();
  messages = catalogue.messages;
  heartbeatMs = catalogue.heartbeat_s * 1000;
  lang = new URLSearchParams(location.search).get("lang") || localStorage.getItem("guard-lang") || catalogue.language;
  if (!(lang in messages)) lang = catalogue.language;
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("guard-lang", lang);
    render();
  });
  $("dialog-form").addEventListener("submit", submitAction);
  $("dialog-cancel").addEventListener("click", closeDialog);
  render();
  connect();
  setInterval(watch, 1000);
}

start().catch(() => { setConnection("lost"); setTimeout(() => location.reload(), 3000); });
