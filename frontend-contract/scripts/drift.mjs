// Regenerates the OpenAPI types into a temp file and fails when they differ from src/schema.d.ts.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "liteskill-schema-"));
const fresh = join(dir, "schema.d.ts");
try {
  const bin = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
  execFileSync(process.execPath, [bin, join(root, "..", "openapi", "openapi.json"), "-o", fresh], {
    cwd: root,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const committed = readFileSync(join(root, "src", "schema.d.ts"), "utf8");
  if (readFileSync(fresh, "utf8") !== committed) {
    console.error("src/schema.d.ts is out of date with ../openapi/openapi.json: run `npm run generate`");
    process.exit(1);
  }
  console.log("src/schema.d.ts is up to date");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
