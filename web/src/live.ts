// The tab's one stream: Subscribe for an expert, WatchDesk for a
// supervisor or admin. It resumes after the last position it applied
// whenever it drops (a network blip, a server restart), so the lists and
// timelines never miss or repeat an event.

import { signal } from "@preact/signals";
import { attempt, experts, isUnauthenticated, signOut, tickets } from "./api";
import { Role, SwarmEventReason, type SwarmEvent } from "./gen/swarmdesk/v1/swarmdesk_pb";
import { apply, emptyState, type DeskState } from "./reducer";

export type LinkState = "connecting" | "live" | "reconnecting";

/** Shown in the top bar. */
export const link = signal<LinkState>("connecting");
/** Bumped (at most once a frame) when the state changed: screens re-read it. */
export const version = signal(0);
/** New assignments not yet looked at (the title badge). */
export const unseen = signal(0);

export let desk: DeskState = emptyState("");

/** What the page measures of itself (read by the end-to-end tests). */
export const metrics = {
  /** Milliseconds from an event's arrival to the render that showed it. */
  latencies: [] as number[],
  applied: 0,
  connects: 0,
};
(globalThis as { swarmdeskMetrics?: typeof metrics }).swarmdeskMetrics = metrics;

let arrivals: number[] = [];
let scheduled = false;

function changed(): void {
  if (scheduled) return;
  scheduled = true;
  setTimeout(() => {
    scheduled = false;
    version.value++;
  }, 0);
}

/** Called by the screen after each render: how long the events took. */
export function rendered(): void {
  if (arrivals.length === 0) return;
  const now = performance.now();
  for (const at of arrivals) metrics.latencies.push(now - at);
  if (metrics.latencies.length > 10_000) metrics.latencies.splice(0, metrics.latencies.length - 10_000);
  arrivals = [];
}

function notifyAssigned(m: SwarmEvent, startedAt: number): void {
  const e = m.event;
  if (m.reason !== SwarmEventReason.ASSIGNED || !e?.at) return;
  // Replayed history is not news.
  if (Number(e.at.seconds) * 1000 < startedAt - 5000) return;
  unseen.value++;
  if ("Notification" in globalThis && Notification.permission === "granted" && document.hidden) {
    new Notification(`${e.ticketId} is yours`, { body: e.ticket?.title ?? "" });
  }
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Everyone registered, for a board; the stream's expert frames keep
 * them current (a frame that came first wins). */
async function loadExperts(state: DeskState, pageToken = ""): Promise<void> {
  const r = await attempt(() => experts.listExperts({ pageSize: 500, pageToken }));
  if (!("ok" in r) || state !== desk) return;
  for (const e of r.ok.experts) if (!state.experts.has(e.id)) state.experts.set(e.id, e);
  changed();
  if (r.ok.nextPageToken) await loadExperts(state, r.ok.nextPageToken);
}

/** Streams until `stop` aborts; `me` is the expert id (empty for a board). */
export async function follow(role: Role, me: string, stop: AbortSignal): Promise<void> {
  desk = emptyState(me);
  version.value++;
  const startedAt = Date.now();
  if (role !== Role.EXPERT) loadExperts(desk);
  let backoff = 250;
  while (!stop.aborted) {
    link.value = link.value === "live" ? "reconnecting" : link.value;
    try {
      const options = {
        signal: stop,
        onHeader: () => {
          link.value = "live";
          metrics.connects++;
          backoff = 250;
        },
      };
      const stream =
        role === Role.EXPERT
          ? experts.subscribe({ expertId: me, afterPosition: desk.lastPosition }, options)
          : tickets.watchDesk({ afterPosition: desk.lastPosition }, options);
      for await (const m of stream) {
        if (apply(desk, m)) {
          if (m.event) {
            arrivals.push(performance.now());
            metrics.applied = desk.applied;
            notifyAssigned(m, startedAt);
          }
          changed();
        }
      }
    } catch (e) {
      if (stop.aborted) return;
      if (isUnauthenticated(e)) {
        signOut("Your token is no longer valid (revoked or expired). Sign in again.");
        return;
      }
    }
    if (stop.aborted) return;
    link.value = "reconnecting";
    await sleep(backoff, stop);
    backoff = Math.min(backoff * 2, 4000);
  }
}
