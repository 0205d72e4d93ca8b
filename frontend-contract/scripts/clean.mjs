// Removes dist/ so a renamed or deleted test never lingers as stale compiled output.
import { rmSync } from "node:fs";
rmSync(new URL("../dist", import.meta.url), { recursive: true, force: true });
