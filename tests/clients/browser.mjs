// A browser front end on another origin than Switchyard's: headless
// Chromium loads a page from this script's own HTTP server, and the page
// calls Switchyard with fetch, as a React app on a dev server does. The
// browser enforces CORS; nothing here bypasses it.
//
// Usage: node browser.mjs PLAYWRIGHT_CORE_ENTRY CHROMIUM SWITCHYARD_URL KEY PAGE_HOST
// Prints one JSON object: what the page saw, or the error fetch raised.

import http from "node:http";
import { createRequire } from "node:module";

const [entry, chromiumPath, base, key, pageHost] = process.argv.slice(2);
const { chromium } = createRequire(import.meta.url)(entry);

const server = http.createServer((_, response) => {
  response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  response.end("<!doctype html><title>front end</title><p>chat</p>");
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://${pageHost}:${server.address().port}/`;

// What the page does: a thread, a run streamed as it is made, the same
// run's events again after the second, and the simple chat's stream for an
// end user. Runs in the page, with the page's origin.
async function frontEnd({ base, key }) {
  const auth = { Authorization: `Bearer ${key}` };
  const json = { ...auth, "Content-Type": "application/json" };

  // The stream's events, read as they arrive.
  async function read(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    return text
      .split("\n\n")
      .filter((block) => block.trim() && !block.startsWith(":"))
      .map((block) => {
        const event = { event: "message", data: [] };
        for (const line of block.split("\n")) {
          const [field, ...rest] = line.split(":");
          const value = rest.join(":").replace(/^ /, "");
          if (field === "data") event.data.push(value);
          else if (field) event[field] = value;
        }
        event.data = event.data.join("\n");
        return event;
      });
  }

  try {
    const created = await fetch(`${base}/v1/threads`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ title: "from the browser" }),
    });
    const thread = await created.json();
    const started = await fetch(`${base}/v1/threads/${thread.id}/runs`, {
      method: "POST",
      headers: {
        ...json,
        Accept: "text/event-stream",
        "Idempotency-Key": crypto.randomUUID(),
      },
      body: JSON.stringify({ input: { content: "Hello from a browser" }, stream: true }),
    });
    const live = await read(started);
    const runId = JSON.parse(live[0].data).run_id;
    const again = await read(
      await fetch(`${base}/v1/runs/${runId}/events`, {
        headers: { ...auth, "Last-Event-ID": "2" },
      }),
    );
    const simple = await read(
      await fetch(`${base}/api/chat/stream?format=message`, {
        method: "POST",
        headers: { ...json, "X-Switchyard-End-User": "visitor-1" },
        body: JSON.stringify({ message: "Hi, simple chat" }),
      }),
    );
    return {
      thread_status: created.status,
      run_status: started.status,
      live: live.map((e) => ({ id: e.id, event: e.event, data: JSON.parse(e.data) })),
      replayed_ids: again.map((e) => Number(e.id)),
      simple: simple.map((e) => ({ event: e.event, data: e.data })),
    };
  } catch (error) {
    return { error: `${error.name}: ${error.message}` };
  }
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  const refused = [];
  page.on("console", (message) => {
    if (message.type() === "error") refused.push(message.text());
  });
  await page.goto(pageUrl);
  const seen = await page.evaluate(frontEnd, { base, key });
  console.log(JSON.stringify({ page: pageUrl, ...seen, console_errors: refused }));
} finally {
  await browser.close();
  server.close();
}
