// Validate GLB files with the Khronos glTF validator (npm: gltf-validator); print one JSON report per file.
// Usage: node tests/gltf_validate.mjs <validator module dir> file.glb...
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const [dir, ...files] = process.argv.slice(2);
const validator = createRequire(import.meta.url)(dir);
for (const file of files) {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), { maxIssues: 50 });
  const { numErrors, numWarnings, messages } = report.issues;
  console.log(JSON.stringify({ file, errors: numErrors, warnings: numWarnings,
    messages: messages.filter((m) => m.severity === 0).slice(0, 10).map((m) => `${m.code} ${m.pointer ?? ""}: ${m.message}`) }));
}
