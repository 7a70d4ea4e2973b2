// Starts a real swarmdesk (the binary cargo built) on a free loopback port
// with a temporary data dir, talks to it over gRPC-web from Node, and
// drives Debian's Chromium with playwright-core. Every process started
// here is stopped by its pid.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { chromium } from "playwright-core";
import {
  AdminService,
  ExpertService,
  KnowledgeService,
  TicketService,
} from "./gen/swarmdesk/v1/swarmdesk_pb.js";

const ROOT = resolve(new URL("../..", import.meta.url).pathname);
export const BINARY = process.env.SWARMDESK_BIN ?? join(ROOT, "target/debug/swarmdesk");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` returns something truthy (generous bound). */
export async function until(check, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A server on a free port; `config` is TOML text for --config. */
export async function startServer({ config = "" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "swarmdesk-e2e-"));
  const dataDir = join(dir, "data");
  const port = await freePort();
  const configPath = join(dir, "swarmdesk.toml");
  writeFileSync(configPath, config);
  const server = {
    dir,
    dataDir,
    port,
    url: `http://127.0.0.1:${port}`,
    proc: null,
    log: "",
    adminToken: "",
  };
  server.start = async () => {
    const proc = spawn(
      BINARY,
      ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--config", configPath, "--shutdown-grace", "2"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    proc.stdout.on("data", (d) => (server.log += d));
    proc.stderr.on("data", (d) => (server.log += d));
    server.proc = proc;
    await until(async () => {
      try {
        return (await fetch(server.url + "/")).ok;
      } catch {
        return false;
      }
    }, `the server on ${server.url}\n${server.log}`);
    await until(() => existsSync(join(dataDir, "admin.token")), "admin.token");
    server.adminToken = readFileSync(join(dataDir, "admin.token"), "utf8").trim();
  };
  server.stop = async () => {
    const proc = server.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    process.kill(proc.pid, "SIGTERM");
    const done = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
    if (!done) process.kill(proc.pid, "SIGKILL");
    server.proc = null;
  };
  server.restart = async () => {
    await server.stop();
    await server.start();
  };
  server.destroy = async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  await server.start();
  server.api = clients(server.url, server.adminToken);
  return server;
}

/** The API as one token, over gRPC-web from Node. */
export function clients(url, token) {
  const transport = createGrpcWebTransport({
    baseUrl: url,
    useBinaryFormat: true,
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
    ],
  });
  return {
    tickets: createClient(TicketService, transport),
    experts: createClient(ExpertService, transport),
    admin: createClient(AdminService, transport),
    knowledge: createClient(KnowledgeService, transport),
  };
}

/** Registers an expert and makes their token. */
export async function expert(server, id, skills, capacity = 5) {
  await server.api.experts.registerExpert({
    expert: { id, displayName: id[0].toUpperCase() + id.slice(1), skills, capacity },
  });
  return token(server, 3, id);
}

/** A token of `role` (1 admin, 2 supervisor, 3 expert, 4 bot). */
export async function token(server, role, expertId = "", botName = "") {
  const r = await server.api.admin.createToken({ role, expertId, botName, label: `e2e ${expertId || botName || role}` });
  return { id: r.token.id, secret: r.secret };
}

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function browser() {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
}

/** A page in its own context (its own sessionStorage), with every page
 * error and console error recorded. */
export async function page(b, server) {
  const context = await b.newContext({ viewport: { width: 1360, height: 860 } });
  const p = await context.newPage();
  // Uncaught errors and dialogs (an injected alert would be one); the
  // console's errors apart, as a dropped stream logs a failed fetch.
  p.errors = [];
  p.consoleErrors = [];
  p.on("pageerror", (e) => p.errors.push(String(e)));
  p.on("console", (m) => {
    if (m.type() === "error") p.consoleErrors.push(m.text());
  });
  p.on("dialog", (d) => {
    p.errors.push(`dialog: ${d.message()}`);
    d.dismiss();
  });
  await p.goto(server.url + "/");
  return p;
}

export async function signIn(p, secret) {
  await p.fill("#token", secret);
  await p.click("button[type=submit]");
  await p.waitForSelector('[data-testid="link"].link-live', { timeout: 20_000 });
}
