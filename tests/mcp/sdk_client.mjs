// Drives fvtt-relay's /mcp with the official TypeScript SDK client (@modelcontextprotocol/sdk).
// Usage: node sdk_client.mjs URL KEY READER_KEY CLIENT_ID   (MCP_NODE_DIR: where npm installed it)
// Prints one JSON object per line; tests/mcp.rs reads them and drives the world in between.
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [url, key, readerKey, clientId] = process.argv.slice(2);
const dir = join(process.env.MCP_NODE_DIR, "node_modules/@modelcontextprotocol/sdk/dist/esm");
const load = (p) => import(pathToFileURL(join(dir, p)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { ResourceUpdatedNotificationSchema } = await load("types.js");

const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const auth = (k) => ({ requestInit: { headers: { Authorization: `Bearer ${k}` } } });

async function connect(k) {
  const client = new Client({ name: "fvtt-relay-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), auth(k));
  await client.connect(transport);
  return { client, transport };
}

try {
  const { client, transport } = await connect(key);
  say({ step: "init", version: transport.protocolVersion ?? null, session: transport.sessionId,
        server: client.getServerVersion()?.name });
  const tools = await client.listTools();
  say({ step: "tools", names: tools.tools.map((t) => t.name) });
  const resources = await client.listResources();
  say({ step: "resources", uris: resources.resources.map((r) => r.uri) });
  const prompts = await client.listPrompts();
  const prompt = await client.getPrompt({ name: "session_summary", arguments: {} });
  say({ step: "prompts", names: prompts.prompts.map((p) => p.name), text: prompt.messages[0].content.text });

  const roll = await client.callTool({ name: "roll_dice", arguments: { formula: "1d20" } });
  say({ step: "roll", isError: roll.isError ?? false, total: roll.structuredContent?.data?.roll?.total });
  const ent = await client.callTool({ name: "get_entity", arguments: { uuid: "Actor.V5OF1QXHjaIy6iO8" } });
  say({ step: "read", isError: ent.isError ?? false, name: ent.structuredContent?.data?.name });
  const sent = await client.callTool({ name: "send_chat", arguments: { content: "hello from the SDK" } });
  say({ step: "write", isError: sent.isError ?? false, text: sent.content[0].text });
  // Progress: the relay answers on an SSE stream with a progress notification first.
  let progress = 0;
  const listed = await client.callTool({ name: "list_encounters", arguments: {} }, undefined,
    { onprogress: () => { progress += 1; } });
  say({ step: "progress", isError: listed.isError ?? false, progress });

  const uri = `foundry://worlds/${clientId}/chat`;
  const updated = new Promise((resolve) => {
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => resolve(n.params.uri));
  });
  await client.subscribeResource({ uri });
  say({ step: "subscribed", uri });
  const got = await Promise.race([updated, new Promise((r) => setTimeout(() => r(null), 10000))]);
  say({ step: "updated", uri: got });
  const read = await client.readResource({ uri });
  say({ step: "resource", uri: read.contents[0].uri, hasMessages: read.contents[0].text.includes("messages") });

  const reader = await connect(readerKey);
  const refused = await reader.client.callTool({ name: "roll_dice", arguments: { formula: "1d4" } });
  say({ step: "scope", isError: refused.isError ?? false, text: refused.content[0].text });
  await reader.client.close();

  say({ step: "offline_call" });
  const off = await client.callTool({ name: "world_info", arguments: {} });
  say({ step: "offline", isError: off.isError ?? false, text: off.content[0].text });

  const sid = transport.sessionId;
  await transport.terminateSession();
  const after = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${key}`,
    "Content-Type": "application/json", Accept: "application/json, text/event-stream",
    "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }) });
  say({ step: "ended", status: after.status });
  await client.close();
  say({ step: "done" });
} catch (e) {
  say({ step: "error", message: String(e?.stack ?? e) });
  process.exit(1);
}
