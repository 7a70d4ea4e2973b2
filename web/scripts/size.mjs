// Prints the gzipped size of the built JavaScript and fails over the
// budget (150 KB, issue #16).
import { readdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const BUDGET = 150 * 1024;
const dir = new URL("../dist/assets/", import.meta.url).pathname;
let total = 0;
for (const name of readdirSync(dir)) {
  if (!name.endsWith(".js")) continue;
  const gz = gzipSync(readFileSync(join(dir, name)), { level: 9 }).length;
  total += gz;
  console.log(`${name}: ${(gz / 1024).toFixed(1)} KB gzipped`);
}
console.log(`JavaScript: ${(total / 1024).toFixed(1)} KB gzipped (budget ${BUDGET / 1024} KB)`);
if (total > BUDGET) {
  console.error("over the budget");
  process.exit(1);
}
