import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  Activity,
  SlaBreachedSchema,
  SlaTarget,
  SwarmEventReason,
  SwarmEventSchema,
  TicketEventType,
  TicketStatus,
  Visibility,
  type SwarmEvent,
} from "./gen/swarmdesk/v1/swarmdesk_pb";
import { apply, counts, emptyState, list, loads, others } from "./reducer";

let clock = Date.UTC(2026, 11, 3, 9, 0, 0);

/** A stream message about `ticket`, as the server sends it. */
function event(
  position: number,
  ticket: string,
  opts: {
    type?: TicketEventType;
    reason?: SwarmEventReason;
    owner?: string;
    members?: string[];
    status?: TicketStatus;
    note?: { body: string; visibility: Visibility };
  } = {},
): SwarmEvent {
  clock += 1000;
  return create(SwarmEventSchema, {
    position: BigInt(position),
    reason: opts.reason ?? SwarmEventReason.SWARM,
    event: {
      position: BigInt(position),
      ticketId: ticket,
      type: opts.type ?? (opts.note ? TicketEventType.MESSAGE : TicketEventType.CREATED),
      at: timestampFromMs(clock),
      actorId: "ann",
      ticket: {
        id: ticket,
        title: `title of ${ticket}`,
        ownerId: opts.owner ?? "",
        swarmMemberIds: opts.members ?? [],
        status: opts.status ?? (opts.owner ? TicketStatus.ASSIGNED : TicketStatus.OPEN),
      },
      payload: opts.note ? { case: "message", value: opts.note } : { case: undefined },
    },
  });
}

describe("apply", () => {
  it("builds the lists and the timeline from events, the latest ticket winning", () => {
    const s = emptyState("ann");
    apply(s, event(1, "T-1", { reason: SwarmEventReason.OFFER }));
    apply(s, event(2, "T-2", { owner: "ann", reason: SwarmEventReason.ASSIGNED }));
    apply(s, event(3, "T-3", { owner: "bob", members: ["ann"], reason: SwarmEventReason.UPDATE }));
    expect(list(s, "claimable").map((r) => r.ticket.id)).toEqual(["T-1"]);
    expect(list(s, "mine").map((r) => r.ticket.id)).toEqual(["T-2"]);
    expect(list(s, "swarms").map((r) => r.ticket.id)).toEqual(["T-3"]);
    // Newest activity first.
    expect(list(s, "feed").map((r) => r.ticket.id)).toEqual(["T-3", "T-2", "T-1"]);
    expect(counts(s)).toEqual({ mine: 1, swarms: 1, feed: 3, claimable: 1 });

    // bob claims T-1: it leaves Claimable.
    apply(s, event(4, "T-1", { owner: "bob", type: TicketEventType.CLAIMED }));
    expect(list(s, "claimable")).toEqual([]);
    expect(loads(s).get("bob")).toBe(2);

    // Resolved tickets leave every list.
    apply(s, event(5, "T-2", { owner: "ann", status: TicketStatus.RESOLVED, type: TicketEventType.STATUS_CHANGED }));
    expect(list(s, "mine")).toEqual([]);
    expect(s.timelines.get("T-2")!.length).toBe(2);
  });

  it("keeps internal notes apart from public messages", () => {
    const s = emptyState("ann");
    apply(s, event(1, "T-1", { owner: "ann" }));
    apply(s, event(2, "T-1", { owner: "ann", note: { body: "check the tunnel", visibility: Visibility.INTERNAL } }));
    apply(s, event(3, "T-1", { owner: "ann", note: { body: "we are on it", visibility: Visibility.PUBLIC } }));
    const kinds = s.timelines.get("T-1")!.map((i) => [i.kind, i.text]);
    expect(kinds).toEqual([
      ["system", "created"],
      ["internal", "check the tunnel"],
      ["public", "we are on it"],
    ]);
  });

  it("ignores what a resumed stream sends again: no duplicate, no gap", () => {
    const s = emptyState("ann");
    const first = [1, 2, 3].map((p) => event(p, "T-1", { owner: "ann", note: { body: `m${p}`, visibility: Visibility.PUBLIC } }));
    first.forEach((e) => apply(s, e));
    expect(s.lastPosition).toBe(3n);
    // The stream drops and resumes after 2 (say a proxy replayed): 3 again, then 4.
    const resumed = [event(3, "T-1", { owner: "ann" }), event(4, "T-1", { owner: "ann", note: { body: "m4", visibility: Visibility.PUBLIC } })];
    const appliedNow = resumed.map((e) => apply(s, e));
    expect(appliedNow).toEqual([false, true]);
    expect(s.timelines.get("T-1")!.map((i) => i.text)).toEqual(["m1", "m2", "m3", "m4"]);
    expect(s.applied).toBe(4);
  });

  it("takes activity and expert frames without moving the position", () => {
    const s = emptyState("ann");
    apply(s, event(7, "T-1"));
    apply(
      s,
      create(SwarmEventSchema, {
        activity: {
          ticketId: "T-1",
          experts: [
            { expertId: "ann", activity: Activity.VIEWING },
            { expertId: "bob", activity: Activity.TYPING, displayName: "Bob" },
          ],
        },
      }),
    );
    apply(s, create(SwarmEventSchema, { expert: { id: "bob", online: true, capacity: 3 } }));
    expect(s.lastPosition).toBe(7n);
    expect(others(s, "T-1").map((a) => a.displayName)).toEqual(["Bob"]);
    expect(s.experts.get("bob")!.online).toBe(true);
  });

  it("records breaches newest first", () => {
    const s = emptyState("");
    apply(s, event(1, "T-1"));
    const breach = event(2, "T-1", { type: TicketEventType.SLA_BREACHED });
    breach.event!.payload = {
      case: "slaBreached",
      value: create(SlaBreachedSchema, { target: SlaTarget.OWN }),
    };
    apply(s, breach);
    expect(s.breaches.map((b) => b.ticketId)).toEqual(["T-1"]);
    expect(s.timelines.get("T-1")![1].text).toBe("time to own breached");
  });
});
