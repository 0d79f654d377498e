// Starts the real one binary (target/<profile>/flowsync) for the SDK's server tests and the
// end-to-end test, and a streaming chat-completions endpoint for `llm` nodes.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root (this file runs from clients/typescript/build/test). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

export interface System {
  url: string;
  stop(): Promise<void>;
}

/** A free TCP port on loopback. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** The one binary on a free port over a fresh data directory. */
export async function startSystem(env: Record<string, string> = {}): Promise<System> {
  const binary = process.env.FLOWSYNC_BIN ?? join(REPO, "target/debug/flowsync");
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: run \`cargo build -p flowsync\` first (scripts/test does)`);
  }
  const dir = mkdtempSync(join(tmpdir(), "flowsync-ts-"));
  const port = await freePort();
  const child: ChildProcess = spawn(binary, ["--listen", `127.0.0.1:${port}`, "--data-dir", dir], {
    env: { PATH: process.env.PATH ?? "", RUST_LOG: process.env.RUST_LOG ?? "warn", ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  // Never outlive the test process.
  process.once("exit", () => child.kill("SIGKILL"));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`flowsync exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (i > 600) throw new Error("flowsync did not become ready in 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    async stop() {
      child.kill("SIGKILL");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An OpenAI-compatible chat endpoint that streams `tokens`, one per SSE chunk. */
export interface ChatStub {
  url: string;
  close(): Promise<void>;
  /**
   * The next answer stops after `after` tokens until `release()`: a model caught halfway;
   * `reached` resolves once those tokens are written.
   */
  holdNext(after: number): { reached: Promise<void>; release(): void };
}

export async function chatStub(tokens: readonly string[]): Promise<ChatStub> {
  let gate: { after: number; reached: () => void; open: Promise<void> } | undefined;
  const server: Server = createServer((req, res) => {
    const held = gate;
    gate = undefined;
    req.resume();
    req.on("end", async () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const [i, t] of tokens.entries()) {
        if (held && i === held.after) {
          held.reached();
          await held.open;
        }
        res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: t } }] })}\n\n`);
      }
      res.end("data: [DONE]\n\n");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    close: () => new Promise((r) => server.close(() => r())),
    holdNext(after) {
      let reached!: () => void;
      let release!: () => void;
      const reachedP = new Promise<void>((r) => (reached = r));
      const open = new Promise<void>((r) => (release = r));
      gate = { after, reached, open };
      return { reached: reachedP, release };
    },
  };
}
