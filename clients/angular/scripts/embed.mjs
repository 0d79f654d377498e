// Copies the editor's production build (`ng build`, into dist/) to services/api/assets/editor/,
// committed so `cargo run` needs no Node: the API embeds the files and serves them at
// /editor/. `--check` fails when the committed files are not what the sources build to (the
// build is deterministic: no output hashing).
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const assets = join(root, "../../services/api/assets/editor");
const check = process.argv.includes("--check");
const FILES = ["index.html", "main.js", "styles.css", "3rdpartylicenses.txt"];

let stale = [];
for (const name of FILES) {
  const built = await readFile(join(root, "dist", name), "utf8");
  const path = join(assets, name);
  const current = await readFile(path, "utf8").catch(() => undefined);
  if (current === built) continue;
  stale.push(name);
  if (!check) {
    await mkdir(assets, { recursive: true });
    await writeFile(path, built);
  }
}
if (check && stale.length > 0) {
  console.error(`services/api/assets/editor/{${stale.join(",")}} differ from what clients/angular builds to:`);
  console.error("run `npm run build` in clients/angular and commit the result");
  process.exit(1);
}
