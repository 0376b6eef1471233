// Switchyard's AI SDK surface driven by the `ai` package's own client side:
// DefaultChatTransport sends the requests useChat sends and parses the UI
// message stream with the SDK's schema; readUIMessageStream folds it into
// UIMessages. Usage: node ai_sdk.mjs AI_PACKAGE_ENTRY BASE_URL TOKEN.
// Prints one JSON object with what the SDK made of each exchange.

import { pathToFileURL } from "node:url";

const [entry, base, token] = process.argv.slice(2);
const { DefaultChatTransport, readUIMessageStream } = await import(pathToFileURL(entry).href);

const transport = new DefaultChatTransport({
  api: `${base}/api/chat`,
  headers: { authorization: `Bearer ${token}` },
});

const user = (id, text) => ({ id, role: "user", parts: [{ type: "text", text }] });

// The last UIMessage a UI message stream folds into.
async function fold(stream) {
  let last;
  for await (const message of readUIMessageStream({ stream, terminateOnError: true })) {
    last = message;
  }
  return last;
}

async function send(chatId, messages) {
  const stream = await transport.sendMessages({
    chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  return fold(stream);
}

const chatId = `chat-${Date.now()}`;
const first = await send(chatId, [user("u1", "Hello there")]);
const second = await send(chatId, [
  user("u1", "Hello there"),
  first,
  user("u2", "/tool current_time"),
]);
// Nothing is running now: no stream to resume.
const idle = await transport.reconnectToStream({ chatId });

// A slow answer, resumed while it streams.
const slowChat = `slow-${Date.now()}`;
const original = await transport.sendMessages({
  chatId: slowChat,
  // The scripted model echoes it word by word: several seconds of stream,
  // so that the resume comes while it runs, however busy the machine.
  messages: [user("s1", `Tell me a long story about ${"lighthouses and the sea ".repeat(10)}`)],
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
});
const resumed = await fold(await transport.reconnectToStream({ chatId: slowChat }));
const completed = await fold(original);

console.log(
  JSON.stringify({ chatId, first, second, idle: idle === null, slowChat, resumed, completed }),
);
