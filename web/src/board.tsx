// A supervisor's board, live from WatchDesk: open tickets by status with
// their SLA state, who is online with load and capacity, breaches as they
// fire, and the named swarms.

import { useState } from "preact/hooks";
import { TicketStatus, type Token } from "./gen/swarmdesk/v1/swarmdesk_pb";
import { desk, version } from "./live";
import { isOpen, loads, STATUS_NAMES, targetName, type TicketRow } from "./reducer";
import { TicketPane, TicketRowView, When } from "./ticket";

const COLUMNS = [TicketStatus.OPEN, TicketStatus.ASSIGNED, TicketStatus.WAITING_CUSTOMER, TicketStatus.WAITING_VENDOR];
const SWARMS = ["sev1", "triage", "backlog"];

export function Board({ who }: { who: Token }) {
  void version.value;
  const [open, setOpen] = useState<string | null>(null);

  const byStatus = new Map<TicketStatus, TicketRow[]>(COLUMNS.map((s) => [s, []]));
  const named = new Map<string, TicketRow[]>(SWARMS.map((s) => [s, []]));
  for (const row of desk.tickets.values()) {
    if (!isOpen(row.ticket)) continue;
    byStatus.get(row.ticket.status)?.push(row);
    for (const swarm of row.ticket.escalatedTo) named.get(swarm)?.push(row);
  }
  for (const rows of byStatus.values()) rows.sort((a, b) => a.ticket.priority - b.ticket.priority || b.lastAt - a.lastAt);
  const load = loads(desk);
  const people = [...desk.experts.values()].sort((a, b) => Number(b.online) - Number(a.online) || a.id.localeCompare(b.id));

  return (
    <main class="board">
      <section class="columns" aria-label="Open tickets by status">
        {COLUMNS.map((status) => {
          const rows = byStatus.get(status)!;
          return (
            <div class="column" data-testid={`column-${status}`}>
              <h3>
                {STATUS_NAMES[status]} <span class="count">{rows.length}</span>
              </h3>
              <ul class="rows">
                {rows.slice(0, 200).map((row) => (
                  <TicketRowView row={row} selected={false} open={row.ticket.id === open} onOpen={() => setOpen(row.ticket.id)} />
                ))}
                {rows.length > 200 && <li class="empty">and {rows.length - 200} more</li>}
              </ul>
            </div>
          );
        })}
      </section>
      <aside class="side">
        <section aria-label="Breaches">
          <h3>Breaches</h3>
          <ul class="breaches" data-testid="breaches">
            {desk.breaches.length === 0 && <li class="empty">None yet.</li>}
            {desk.breaches.slice(0, 20).map((b) => (
              <li class="breach" data-ticket={b.ticketId}>
                <a href="#/board" onClick={() => setOpen(b.ticketId)}>
                  {b.ticketId}
                </a>{" "}
                {targetName(b.target)} <When ms={b.at} />
              </li>
            ))}
          </ul>
        </section>
        <section aria-label="Experts">
          <h3>Experts</h3>
          <table class="people" data-testid="people">
            <thead>
              <tr>
                <th>expert</th>
                <th>state</th>
                <th>load</th>
              </tr>
            </thead>
            <tbody>
              {people.map((e) => (
                <tr class={e.online ? "online" : "offline"} data-expert={e.id}>
                  <td>{e.displayName || e.id}</td>
                  <td>{e.online ? (e.presence === 2 ? "away" : "online") : "offline"}</td>
                  <td>
                    {load.get(e.id) ?? 0}/{e.capacity}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
        <section aria-label="Named swarms">
          <h3>Named swarms</h3>
          {SWARMS.map((swarm) => (
            <p>
              <strong>{swarm}</strong> {named.get(swarm)!.length} open{" "}
              {named
                .get(swarm)!
                .slice(0, 5)
                .map((r) => (
                  <a href="#/board" onClick={() => setOpen(r.ticket.id)}>
                    {r.ticket.id}{" "}
                  </a>
                ))}
            </p>
          ))}
        </section>
      </aside>
      {open && (
        <div class="drawer">
          <button class="linkish close" onClick={() => setOpen(null)}>
            close
          </button>
          <TicketPane id={open} who={who} />
        </div>
      )}
    </main>
  );
}
