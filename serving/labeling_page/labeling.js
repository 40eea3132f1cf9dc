// The labeling page of one model (serving/labeling.py): one key per image.
// Class keys: a class named by one key has that key (digits 0-9 press their own digit); the others
// take 1-9, 0, then a, b, c ... in order, whichever are free. Enter takes the highlighted class (the
// model's guess at first); arrows move it; Space skips; Backspace (or Ctrl+Z) undoes.
"use strict";

const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const KEYS = "1234567890abcdefghijklmnopqrstuvwxyz";
let state = null;
let highlight = 0;
let busy = false;
let keys = []; // keys[i]: the shortcut of class i, or null (more classes than keys)

const $ = (id) => document.getElementById(id);

function assignKeys(classes) {
  const own = classes.map((name) => name.toLowerCase());
  const taken = new Set();
  const assigned = own.map((name) => {
    if (name.length === 1 && KEYS.includes(name) && !taken.has(name)) {
      taken.add(name);
      return name;
    }
    return null;
  });
  const free = [...KEYS].filter((key) => !taken.has(key));
  return assigned.map((key) => key || free.shift() || null);
}

function say(text) {
  const message = $("message");
  message.textContent = text || "";
  message.hidden = !text;
}

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const answer = await fetch(base + path, options);
  const data = await answer.json().catch(() => ({error: `the server answered ${answer.status}`}));
  if (!answer.ok) {
    throw new Error(data.error || `the server answered ${answer.status}`);
  }
  return data;
}

function buildButtons() {
  const group = $("classes");
  group.replaceChildren();
  keys = assignKeys(state.classes);
  state.classes.forEach((name, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.class = name;
    button.append(name);
    const key = keys[index];
    button.title = key ? `key ${key}` : "no key: click it";
    if (key && key !== name.toLowerCase()) { // a class named by its key needs no hint
      const hint = document.createElement("kbd");
      hint.textContent = key;
      button.append(hint);
    }
    button.addEventListener("click", () => act("label", {label: name}));
    button.addEventListener("click", () => button.blur()); // keys go to the page again, not to it
    group.append(button);
  });
}

function render() {
  $("model").textContent = state.model;
  document.title = `onebox: label ${state.model}`;
  $("parent").textContent = state.parent;
  const decided = state.labeled + state.skipped;
  $("progress-text").textContent =
    `${state.labeled} of ${state.total} labeled` + (state.skipped ? `, ${state.skipped} skipped` : "");
  $("progress").max = Math.max(state.total, 1);
  $("progress").value = decided;
  if ($("classes").childElementCount !== state.classes.length) {
    buildButtons();
  }
  const current = state.current;
  $("figure").hidden = !current;
  $("done").hidden = Boolean(current) || state.total === 0;
  $("skip").disabled = !current;
  $("merge").disabled = state.labeled === 0;
  if (current) {
    $("image").src = current.image;
    $("guess").textContent =
      `model ${state.model} v${current.model_version} guessed ${current.guess} ` +
      `(${Math.round(current.confidence * 100)}% sure; here for ${current.reason})`;
    highlight = Math.max(0, state.classes.indexOf(current.guess));
  } else if (state.total === 0) {
    $("guess").textContent = "";
    say("The inbox is empty: nothing to label.");
  }
  document.querySelectorAll("#classes button").forEach((button, index) => {
    button.classList.toggle("highlight", Boolean(current) && index === highlight);
    button.disabled = !current;
  });
  if (state.next_image) {
    new Image().src = state.next_image; // fetched ahead: the next image shows at once
  }
}

function labeler() {
  return $("by").value.trim();
}

async function act(what, extra = {}) {
  if (busy || (what !== "undo" && !state.current)) {
    return;
  }
  busy = true;
  try {
    const body = {by: labeler(), ...extra};
    if (what !== "undo") {
      body.sha256 = state.current.sha256;
    }
    state = await call(what, body);
    say("");
    render();
  } catch (error) {
    say(error.message);
  } finally {
    busy = false;
  }
}

async function createVersion() {
  if (busy) {
    return;
  }
  busy = true;
  $("merge").disabled = true;
  $("merge-result").textContent = "creating the dataset version…";
  try {
    const made = await call("merge", {by: labeler()});
    $("merge-result").textContent =
      `Created dataset ${made.dataset} version ${made.version}: ${made.images} images ` +
      `(${made.merged} from the inbox, ${made.left} left there).\n${made.retrain}`;
    say("");
  } catch (error) {
    $("merge-result").textContent = "";
    say(error.message);
  } finally {
    busy = false;
  }
  state = await call("state");
  render();
}

function move(step) {
  if (!state || !state.current) {
    return;
  }
  highlight = (highlight + step + state.classes.length) % state.classes.length;
  document.querySelectorAll("#classes button").forEach((button, index) => {
    button.classList.toggle("highlight", index === highlight);
  });
}

document.addEventListener("keydown", (event) => {
  if (!state || event.target === $("by") || event.altKey || event.metaKey) {
    return;
  }
  const key = event.key.toLowerCase();
  if (event.ctrlKey) {
    if (key === "z") {
      event.preventDefault();
      act("undo");
    }
    return;
  }
  let handled = true;
  if (key === "backspace") {
    act("undo");
  } else if (key === " ") {
    act("skip");
  } else if (key === "enter") {
    if (state.current) {
      act("label", {label: state.classes[highlight]});
    }
  } else if (key === "arrowright" || key === "arrowdown") {
    move(1);
  } else if (key === "arrowleft" || key === "arrowup") {
    move(-1);
  } else if (keys.includes(key)) {
    act("label", {label: state.classes[keys.indexOf(key)]});
  } else {
    handled = false;
  }
  if (handled) {
    event.preventDefault();
  }
});

document.addEventListener("DOMContentLoaded", async () => {
  $("by").value = localStorage.getItem("onebox.labeler") || "";
  $("by").addEventListener("change", () => localStorage.setItem("onebox.labeler", labeler()));
  $("skip").addEventListener("click", () => act("skip"));
  $("undo").addEventListener("click", () => act("undo"));
  $("merge").addEventListener("click", createVersion);
  for (const id of ["skip", "undo", "merge"]) {
    $(id).addEventListener("click", () => $(id).blur()); // Enter and Space label again, not click it
  }
  try {
    state = await call("state");
    render();
  } catch (error) {
    say(error.message);
  }
});
