// The whisperq page: submit a file or URL, follow its events, download the result, list your tasks; the Files and
// Live tabs (the Live tab's own code is live.js).
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("key");
keyInput.value = localStorage.getItem("whisperq-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("whisperq-key", keyInput.value); listTasks(); });

function headers() {
  return keyInput.value ? { Authorization: `Bearer ${keyInput.value}` } : {};
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const answer = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({}));
    throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${answer.status}`);
  }
  return answer;
}

// Server-sent events read with fetch, so that the API key can go in a header.
async function follow(taskId, onEvent) {
  const answer = await api(`/v1/tasks/${taskId}/events`);
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let carriage = "";  // a CR at the end of a chunk may be half of a CRLF
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const text = carriage + value;
    carriage = text.endsWith("\r") ? "\r" : "";
    buffer += text.slice(0, text.length - carriage.length).replace(/\r\n?/g, "\n");  // lines end in CRLF, LF or CR
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { type: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event.type = line.slice(6).trim();
        else if (line.startsWith("data:")) event.data += line.slice(5).trim();
      }
      if (event.data && onEvent(event.type, JSON.parse(event.data)) === false) { reader.cancel(); return; }
    }
  }
}

$("submit").addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const form = new FormData();
  const file = $("file").files[0];
  if (file) form.append("file", file);
  else if ($("url").value) form.append("url", $("url").value);
  else return say("Choose a file or give a URL.", true);
  for (const name of ["language", "task_type"]) if ($(name).value) form.append(name, $(name).value);
  $("transcript").textContent = "";
  $("downloads").hidden = true;
  try {
    say("Uploading…");
    const task = await (await api("/v1/tasks", { method: "POST", body: form })).json();
    say(`Task ${task.id}: ${task.status}`);
    $("progress").hidden = false;
    await follow(task.id, (type, data) => {
      if (type === "status") say(`Task ${task.id}: ${data.status}`);
      if (type === "segment") {
        $("progress").value = data.progress;
        $("transcript").textContent += (($("transcript").textContent ? " " : "") + data.segment.text.trim());
      }
      if (type === "final") { finish(data); return false; }
      return true;
    });
  } catch (error) {
    say(error.message, true);
  }
  listTasks();
});

function finish(task) {
  $("progress").value = 1;
  if (task.status !== "completed") return say(`Task ${task.id}: ${task.status}${task.error ? ` (${task.error.message})` : ""}`, true);
  say(`Task ${task.id}: completed`);
  $("transcript").textContent = task.result.text.trim();
  for (const link of $("downloads").querySelectorAll("a")) {
    link.onclick = (clicked) => { clicked.preventDefault(); download(task.id, link.dataset.format); };
  }
  $("downloads").hidden = false;
}

async function download(taskId, format) {
  const blob = await (await api(`/v1/tasks/${taskId}/result?format=${format}`)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${taskId}.${format === "text" ? "txt" : format}`;
  link.click();
  URL.revokeObjectURL(link.href);
}

async function listTasks() {
  try {
    const page = await (await api("/v1/tasks?limit=20")).json();
    $("tasks").replaceChildren(...page.tasks.map((task) => {
      const row = document.createElement("tr");
      for (const value of [new Date(task.created_at).toLocaleString(), task.status, task.model, task.id]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    }));
  } catch (error) {
    say(error.message, true);
  }
}

$("refresh").addEventListener("click", listTasks);
listTasks();

// Tabs, as the ARIA authoring practices have them: the arrow keys, Home and End move between tabs; Tab goes into the panel.
const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectTab(tab, focus = false) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  history.replaceState(null, "", tab.id === "tab-files" ? location.pathname + location.search : `#${tab.id.slice(4)}`);
}

for (const [index, tab] of tabs.entries()) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (pressed) => {
    const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 }[pressed.key];
    if (next === undefined) return;
    pressed.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length], true);
  });
}
const tabOfHash = () => (location.hash === "#live" ? $("tab-live") : $("tab-files"));
window.addEventListener("hashchange", () => selectTab(tabOfHash()));
if (location.hash === "#live") selectTab(tabOfHash());
