// The console's state, built only from the stream (Subscribe for an
// expert, WatchDesk for a supervisor): every list and timeline is derived
// from it. Events are applied in position order; one at or before the last
// position seen is a duplicate (a resumed stream) and changes nothing.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  Activity,
  SlaClockState,
  SlaTarget,
  SwarmEventReason,
  TicketEventType,
  TicketStatus,
  Visibility,
  type Expert,
  type ExpertActivity,
  type SwarmEvent,
  type Ticket,
  type TicketEvent,
} from "./gen/swarmdesk/v1/swarmdesk_pb";

export interface TimelineItem {
  position: bigint;
  at: number;
  type: TicketEventType;
  actor: string;
  /** A public message, an internal note, or something that happened. */
  kind: "public" | "internal" | "system";
  text: string;
}

export interface TicketRow {
  ticket: Ticket;
  /** Why the tickets reached this stream (for the channel feed). */
  reasons: Set<SwarmEventReason>;
  /** The latest reason: OFFER means "you qualify and it has no owner". */
  lastReason: SwarmEventReason;
  lastAt: number;
}

export interface Breach {
  ticketId: string;
  target: SlaTarget;
  at: number;
  position: bigint;
}

export interface DeskState {
  /** The signed-in expert; empty for supervisors and admins. */
  me: string;
  /** Where a resumed stream starts from. */
  lastPosition: bigint;
  tickets: Map<string, TicketRow>;
  timelines: Map<string, TimelineItem[]>;
  /** Who is viewing or typing, per ticket (ephemeral frames). */
  activity: Map<string, ExpertActivity[]>;
  experts: Map<string, Expert>;
  /** The latest breaches, newest first (at most 50). */
  breaches: Breach[];
  /** Events applied (duplicates not counted). */
  applied: number;
}

export function emptyState(me: string): DeskState {
  return {
    me,
    lastPosition: 0n,
    tickets: new Map(),
    timelines: new Map(),
    activity: new Map(),
    experts: new Map(),
    breaches: [],
    applied: 0,
  };
}

const OPEN_STATUSES = new Set([
  TicketStatus.OPEN,
  TicketStatus.ASSIGNED,
  TicketStatus.WAITING_CUSTOMER,
  TicketStatus.WAITING_VENDOR,
]);

export function isOpen(t: Ticket): boolean {
  return OPEN_STATUSES.has(t.status);
}

const TARGET_NAMES: Record<number, string> = {
  [SlaTarget.OWN]: "time to own",
  [SlaTarget.FIRST_RESPONSE]: "first response",
  [SlaTarget.RESOLVE]: "time to resolve",
};

export function targetName(t: SlaTarget): string {
  return TARGET_NAMES[t] ?? "service level";
}

export const STATUS_NAMES: Record<number, string> = {
  [TicketStatus.OPEN]: "open",
  [TicketStatus.ASSIGNED]: "assigned",
  [TicketStatus.WAITING_CUSTOMER]: "waiting on customer",
  [TicketStatus.WAITING_VENDOR]: "waiting on vendor",
  [TicketStatus.RESOLVED]: "resolved",
  [TicketStatus.CLOSED]: "closed",
};

/** What happened, in words, for the timeline. */
function describe(e: TicketEvent): Pick<TimelineItem, "kind" | "text"> {
  const p = e.payload;
  switch (p.case) {
    case "message":
      return {
        kind: p.value.visibility === Visibility.INTERNAL ? "internal" : "public",
        text: p.value.body,
      };
    case "ownerChanged": {
      const { fromExpertId: from, toExpertId: to } = p.value;
      const verb =
        e.type === TicketEventType.CLAIMED
          ? "claimed"
          : e.type === TicketEventType.TRANSFERRED
            ? "transferred"
            : e.type === TicketEventType.RELEASED
              ? "released"
              : "assigned";
      if (!to) return { kind: "system", text: `${verb} by ${from || e.actorId}` };
      return { kind: "system", text: from ? `${verb} from ${from} to ${to}` : `${verb} to ${to}` };
    }
    case "statusChanged": {
      const { to, note } = p.value;
      const vendor = e.ticket?.vendor;
      const waits =
        to === TicketStatus.WAITING_VENDOR && vendor
          ? ` (${vendor.name}${vendor.reference ? ` #${vendor.reference}` : ""})`
          : "";
      return {
        kind: "system",
        text: `${STATUS_NAMES[to] ?? "status changed"}${waits}${note ? `: ${note}` : ""}`,
      };
    }
    case "helpRequested": {
      const skills = p.value.skills.map((s) => s.tag).join(", ");
      return {
        kind: "system",
        text: `help requested (${skills})${p.value.note ? `: ${p.value.note}` : ""}`,
      };
    }
    case "memberChanged":
      return {
        kind: "system",
        text: `${p.value.expertId} ${e.type === TicketEventType.LEFT ? "left" : "joined"} the swarm`,
      };
    case "slaBreached":
      return { kind: "system", text: `${targetName(p.value.target)} breached` };
    case "ownerLost":
      return { kind: "system", text: `owner ${p.value.expertId} lost: ${p.value.reason}` };
    case "rated":
      return {
        kind: "system",
        text: `rated ${p.value.score}/5${p.value.comment ? `: ${p.value.comment}` : ""}`,
      };
    case "articlesSuggested":
      return { kind: "system", text: `articles suggested: ${p.value.articleIds.join(", ")}` };
    case "articleLinked":
      return { kind: "system", text: `article ${p.value.articleId} linked` };
    default:
      return {
        kind: "system",
        text: e.type === TicketEventType.CREATED ? "created" : "updated",
      };
  }
}

/** Applies one stream message; false when it was a duplicate or empty. */
export function apply(state: DeskState, m: SwarmEvent): boolean {
  if (m.activity) {
    state.activity.set(m.activity.ticketId, m.activity.experts);
    return true;
  }
  if (m.expert) {
    state.experts.set(m.expert.id, m.expert);
    return true;
  }
  const e = m.event;
  if (!e || m.position === 0n) return false;
  if (m.position <= state.lastPosition) return false;
  state.lastPosition = m.position;
  state.applied += 1;
  const at = e.at ? timestampMs(e.at) : Date.now();
  if (e.ticket) {
    const row = state.tickets.get(e.ticketId);
    if (row) {
      row.ticket = e.ticket;
      row.reasons.add(m.reason);
      row.lastReason = m.reason;
      row.lastAt = at;
    } else {
      state.tickets.set(e.ticketId, {
        ticket: e.ticket,
        reasons: new Set([m.reason]),
        lastReason: m.reason,
        lastAt: at,
      });
    }
  }
  let timeline = state.timelines.get(e.ticketId);
  if (!timeline) {
    timeline = [];
    state.timelines.set(e.ticketId, timeline);
  }
  timeline.push({ position: m.position, at, type: e.type, actor: e.actorId, ...describe(e) });
  if (e.payload.case === "slaBreached") {
    state.breaches.unshift({
      ticketId: e.ticketId,
      target: e.payload.value.target,
      at,
      position: m.position,
    });
    state.breaches.length = Math.min(state.breaches.length, 50);
  }
  return true;
}

function byRecent(a: TicketRow, b: TicketRow): number {
  return b.lastAt - a.lastAt || a.ticket.priority - b.ticket.priority;
}

function rows(state: DeskState, keep: (r: TicketRow) => boolean): TicketRow[] {
  const out: TicketRow[] = [];
  for (const row of state.tickets.values()) if (keep(row)) out.push(row);
  return out.sort(byRecent);
}

export type ListName = "mine" | "swarms" | "feed" | "claimable";

/** Whether a ticket belongs in one of an expert's lists. */
function belongs(name: ListName, r: TicketRow, me: string): boolean {
  switch (name) {
    case "mine":
      return r.ticket.ownerId === me && isOpen(r.ticket);
    case "swarms":
      return r.ticket.ownerId !== me && r.ticket.swarmMemberIds.includes(me) && isOpen(r.ticket);
    case "feed":
      return isOpen(r.ticket);
    case "claimable":
      return !r.ticket.ownerId && r.ticket.status === TicketStatus.OPEN && r.reasons.has(SwarmEventReason.OFFER);
  }
}

/** An expert's lists, as the screen shows them. */
export function list(state: DeskState, name: ListName): TicketRow[] {
  return rows(state, (r) => belongs(name, r, state.me));
}

/** How many tickets each list holds (one pass, no sorting). */
export function counts(state: DeskState): Record<ListName, number> {
  const out: Record<ListName, number> = { mine: 0, swarms: 0, feed: 0, claimable: 0 };
  for (const r of state.tickets.values()) {
    for (const name of ["mine", "swarms", "feed", "claimable"] as ListName[]) {
      if (belongs(name, r, state.me)) out[name]++;
    }
  }
  return out;
}

/** The clock that matters most now: the earliest running deadline. */
export function nextDeadline(t: Ticket): { target: SlaTarget; dueMs: number; startedMs: number } | null {
  let best: { target: SlaTarget; dueMs: number; startedMs: number } | null = null;
  const started = t.createdAt ? timestampMs(t.createdAt) : 0;
  for (const clock of t.sla) {
    if (clock.state !== SlaClockState.RUNNING || !clock.due) continue;
    const dueMs = timestampMs(clock.due);
    if (!best || dueMs < best.dueMs) best = { target: clock.target, dueMs, startedMs: started };
  }
  return best;
}

/** Open tickets owned per expert (the board's load column). */
export function loads(state: DeskState): Map<string, number> {
  const out = new Map<string, number>();
  for (const { ticket } of state.tickets.values()) {
    if (ticket.ownerId && ticket.status !== TicketStatus.OPEN && isOpen(ticket)) {
      out.set(ticket.ownerId, (out.get(ticket.ownerId) ?? 0) + 1);
    }
  }
  return out;
}

/** Others viewing or typing on a ticket (not me). */
export function others(state: DeskState, ticketId: string): ExpertActivity[] {
  return (state.activity.get(ticketId) ?? []).filter((a) => a.expertId !== state.me);
}

export function isTyping(a: ExpertActivity): boolean {
  return a.activity === Activity.TYPING;
}
