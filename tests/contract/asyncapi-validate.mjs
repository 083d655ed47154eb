// Validates an AsyncAPI document with the official parser (@asyncapi/parser) and prints
// every diagnostic as one JSON line: {"severity": 0|1|2|3, "code", "message", "path"}.
// Severity 0 is an error, 1 a warning (Spectral's scale). Usage: node asyncapi-validate.mjs FILE
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.ASYNCAPI_PARSER_DIR + "/");
const { Parser } = require("@asyncapi/parser");

const text = readFileSync(process.argv[2], "utf8");
const parser = new Parser();
const { diagnostics } = await parser.parse(text);
for (const d of diagnostics) {
  console.log(JSON.stringify({
    severity: d.severity, code: d.code, message: d.message, path: d.path.join("."),
  }));
}
console.log(JSON.stringify({ done: true, count: diagnostics.length }));
