// The live feed: GET /status/feed read with fetch() (EventSource cannot send an Authorization header) and its
// text/event-stream parsed here. Calls onEvent(type, data) per event; resolves with the HTTP status when the
// stream ends (the server ends it every minute), rejects on a network error.

export function parseEvents(buffer) {
  // Split off the complete events of `buffer` (each ends with a blank line): [events, rest].
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;   // a comment: the server's ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) events.push({ type, data: data.join("\n") });
  }
  return [events, rest];
}

export async function readFeed(url, token, onEvent, signal) {
  const headers = { Accept: "text/event-stream" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, { headers, signal, cache: "no-store" });
  if (!response.ok || !response.body) {
    let message = "";
    try { message = (await response.json()).error || ""; } catch { /* not JSON */ }
    return { status: response.status, message };
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const [events, rest] = parseEvents(buffer);
    buffer = rest;
    for (const event of events) onEvent(event.type, JSON.parse(event.data));
  }
  return { status: response.status, message: "" };
}
