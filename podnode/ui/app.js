// The status page: asks for a token once when the node wants one (a 401 says so), keeps it in this tab's
// sessionStorage, reads the live feed, and terminates executions through the action API. No data is ever put
// in a URL; every request carries the token as an Authorization header.

import { readFeed } from "./feed.js";
import { render } from "./render.js";

const TOKEN_KEY = "podToken";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || "";

function setConnection(state, text) {
  const badge = $("conn");
  badge.dataset.state = state;
  badge.textContent = text || state;
}

function askForToken(problem) {
  $("main").hidden = true;
  $("token-form").hidden = false;
  $("token-problem").textContent = problem || "";
  setConnection("auth", "token needed");
  $("token-input").focus();
}

let tokenGiven = null;   // resolves when the form is submitted

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token-input").value.trim();
  $("token-input").value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-form").hidden = true;
  if (tokenGiven) tokenGiven();
});

async function terminate(id, button) {
  button.disabled = true;
  $("action-problem").textContent = "";
  const body = new URLSearchParams({ action: "terminateExecution", executionId: String(id) });
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const response = await fetch("/POD/", { method: "POST", headers, body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("action-problem").textContent = `terminate ${id}: ${answer.error || response.status}`;
      button.disabled = false;
    } else {
      button.textContent = "terminating…";
    }
  } catch (err) {
    $("action-problem").textContent = `terminate ${id}: ${err}`;
    button.disabled = false;
  }
}

function onEvent(type, data) {
  if (type === "summary") {
    $("main").hidden = false;
    setConnection("live", "live");
    render(data, { terminate });
  } else if (type === "problem") {
    setConnection("problem", data.error || "problem");
  }
}

async function main() {
  let pause = 500;
  for (;;) {
    let result;
    try {
      result = await readFeed("/status/feed", token, onEvent);
    } catch (err) {
      result = { status: 0, message: String(err) };
    }
    if (result.status === 401) {
      const wasSet = Boolean(token);
      sessionStorage.removeItem(TOKEN_KEY);
      token = "";
      askForToken(wasSet ? `That token was refused: ${result.message}` : "");
      await new Promise((resolve) => { tokenGiven = resolve; });
      pause = 500;
      continue;
    }
    if (result.status === 200) {
      pause = 500;   // the server ends each feed after a minute: connect again at once
    } else {
      setConnection("down", result.status ? `error ${result.status}: ${result.message}` : "node unreachable");
      pause = Math.min(pause * 2, 5000);
    }
    await new Promise((resolve) => setTimeout(resolve, result.status === 200 ? 0 : pause));
  }
}

main();
