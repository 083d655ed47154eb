// Test glue for scripts/mcp-conformance.sh: the MCP conformance suite's client sends no
// credentials, and /mcp rightly refuses a request without an API key. This loopback proxy
// adds `Authorization: Bearer $MCP_KEY` and passes everything else (Origin and Host
// included, for the DNS-rebinding scenario) through unchanged, streaming both ways.
// Usage: MCP_KEY=... node mcp-auth-proxy.mjs RELAY_PORT   (prints "proxy listening on PORT")
import http from "node:http";

const relayPort = Number(process.argv[2]);
const key = process.env.MCP_KEY;
const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${key}` };
  const up = http.request({ host: "127.0.0.1", port: relayPort, path: req.url, method: req.method, headers },
    (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
  up.on("error", () => { res.writeHead(502); res.end(); });
  req.pipe(up);
  res.on("close", () => up.destroy());
});
server.listen(0, "127.0.0.1", () => console.log(`proxy listening on ${server.address().port}`));
