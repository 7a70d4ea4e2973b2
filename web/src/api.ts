// The API over gRPC-web, same origin as the page (so no CORS): one
// transport whose interceptor adds the signed-in token to every call.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { signal } from "@preact/signals";
import {
  AdminService,
  ExpertService,
  KnowledgeService,
  Role,
  StatsService,
  TicketService,
  type Token,
} from "./gen/swarmdesk/v1/swarmdesk_pb";

const KEY = "swarmdesk.token";

/** The token for this tab: in memory and sessionStorage, never localStorage. */
export const token = signal<string | null>(sessionStorage.getItem(KEY));
/** Who the token is (WhoAmI), once signed in. */
export const me = signal<Token | null>(null);
/** Why the last session ended, shown on the sign-in screen. */
export const signedOutBecause = signal<string>("");

export function signIn(secret: string, who: Token): void {
  sessionStorage.setItem(KEY, secret);
  token.value = secret;
  me.value = who;
  signedOutBecause.value = "";
}

export function signOut(why = ""): void {
  sessionStorage.removeItem(KEY);
  token.value = null;
  me.value = null;
  signedOutBecause.value = why;
}

const bearer: Interceptor = (next) => (req) => {
  if (token.value) req.header.set("authorization", `Bearer ${token.value}`);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const tickets = createClient(TicketService, transport);
export const experts = createClient(ExpertService, transport);
export const admin = createClient(AdminService, transport);
export const stats = createClient(StatsService, transport);
export const knowledge = createClient(KnowledgeService, transport);

/** A revoked or expired token: back to the sign-in screen. */
export function isUnauthenticated(e: unknown): boolean {
  return ConnectError.from(e).code === Code.Unauthenticated;
}

/** The server's own words for a failed call. */
export function reason(e: unknown): string {
  const err = ConnectError.from(e);
  return err.rawMessage || err.message;
}

/** Runs a call; a revoked token signs out, other failures come back as text. */
export async function attempt<T>(call: () => Promise<T>): Promise<{ ok: T } | { error: string }> {
  try {
    return { ok: await call() };
  } catch (e) {
    if (isUnauthenticated(e)) {
      signOut("Your token is no longer valid (revoked or expired). Sign in again.");
    }
    return { error: reason(e) };
  }
}

export function roleName(role: Role): string {
  return (
    { [Role.ADMIN]: "admin", [Role.SUPERVISOR]: "supervisor", [Role.EXPERT]: "expert", [Role.BOT]: "bot" }[
      role as number
    ] ?? "unknown"
  );
}
