// An expert's screen: Mine / My swarms / Channel feed / Claimable, each
// live from the one stream, and the open ticket beside them.

import { useEffect, useRef, useState } from "preact/hooks";
import type { Token } from "./gen/swarmdesk/v1/swarmdesk_pb";
import { desk, version } from "./live";
import { counts, list, type ListName } from "./reducer";
import { TicketPane, TicketRowView } from "./ticket";

/** Rows drawn per list: enough to work through, few enough to stay fast. */
const SHOWN = 300;

const LISTS: [ListName, string][] = [
  ["mine", "Mine"],
  ["swarms", "My swarms"],
  ["feed", "Channel feed"],
  ["claimable", "Claimable"],
];

export function ExpertScreen({ who }: { who: Token }) {
  void version.value;
  const [current, setCurrent] = useState<ListName>("mine");
  const [selected, setSelected] = useState(0);
  const [open, setOpen] = useState<string | null>(null);
  const rows = list(desk, current);
  const sizes = counts(desk);

  // Read at key time, not when the listener was made.
  const keys = useRef({ rows, selected });
  keys.current = { rows, selected };
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if ((e.target as HTMLElement | null)?.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
      const { rows, selected } = keys.current;
      if (e.key === "j") setSelected(Math.min(selected + 1, Math.max(rows.length - 1, 0)));
      else if (e.key === "k") setSelected(Math.max(selected - 1, 0));
      else if (e.key === "Enter" && rows[selected]) setOpen(rows[selected].ticket.id);
      else return;
      e.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  return (
    <main class="desk">
      <section class="lists" aria-label="Ticket lists">
        <div class="tabs" role="tablist">
          {LISTS.map(([name, label]) => (
            <button
              role="tab"
              aria-selected={current === name}
              class={current === name ? "active" : ""}
              data-testid={`list-${name}`}
              onClick={() => {
                setCurrent(name);
                setSelected(0);
              }}
            >
              {label} <span class="count">{sizes[name]}</span>
            </button>
          ))}
        </div>
        <ul class="rows" data-testid={`rows-${current}`}>
          {rows.length === 0 && <li class="empty">Nothing here.</li>}
          {rows.slice(0, SHOWN).map((row, i) => (
            <TicketRowView
              row={row}
              selected={i === selected}
              open={row.ticket.id === open}
              onOpen={() => {
                setSelected(i);
                setOpen(row.ticket.id);
              }}
            />
          ))}
          {rows.length > SHOWN && <li class="empty">and {rows.length - SHOWN} more</li>}
        </ul>
      </section>
      {open ? <TicketPane id={open} who={who} /> : <section class="pane empty">Open a ticket (j/k, Enter).</section>}
    </main>
  );
}
