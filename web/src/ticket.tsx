// One ticket: its row in a list, and the pane with its clocks, who else is
// on it, its timeline (internal notes set apart), the composer and the
// actions the API allows.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { signal } from "@preact/signals";
import { useEffect, useRef, useState } from "preact/hooks";
import { attempt, knowledge, tickets } from "./api";
import {
  Activity,
  Priority,
  Rank,
  Role,
  SlaClockState,
  TicketStatus,
  Visibility,
  type ArticleHit,
  type SlaClock,
  type Ticket,
  type Token,
} from "./gen/swarmdesk/v1/swarmdesk_pb";
import { desk, version } from "./live";
import { isTyping, nextDeadline, others, STATUS_NAMES, targetName, type TicketRow } from "./reducer";
import { localTime, relative, urgency } from "./time";

/** One clock for every countdown on the page (one timer, not one each). */
const clock = signal(Date.now());
setInterval(() => (clock.value = Date.now()), 1000);

/** The time now; the component re-renders as it moves. */
function useNow(): number {
  return clock.value;
}

export function When({ ms }: { ms: number }) {
  const now = useNow();
  return <time title={localTime(ms)}>{relative(ms, now)}</time>;
}

const PRIORITY: Record<number, string> = {
  [Priority.P1]: "P1",
  [Priority.P2]: "P2",
  [Priority.P3]: "P3",
  [Priority.P4]: "P4",
};

export function priorityName(p: Priority): string {
  return PRIORITY[p] ?? "P3";
}

export function Countdown({ ticket }: { ticket: Ticket }) {
  const now = useNow();
  const next = nextDeadline(ticket);
  if (ticket.breached.length > 0 && !next) return <span class="sla sla-red">breached</span>;
  if (!next) return <span class="sla sla-none">—</span>;
  const level = urgency(next.dueMs, next.startedMs, now);
  return (
    <span class={`sla sla-${level}`} title={`${targetName(next.target)} due ${localTime(next.dueMs)}`} data-sla={level}>
      {targetName(next.target)} {relative(next.dueMs, now)}
    </span>
  );
}

export function TicketRowView(props: { row: TicketRow; selected: boolean; open: boolean; onOpen: () => void }) {
  const { ticket } = props.row;
  const ref = useRef<HTMLLIElement>(null);
  useEffect(() => {
    if (props.selected) ref.current?.scrollIntoView({ block: "nearest" });
  }, [props.selected]);
  return (
    <li
      ref={ref}
      class={`row${props.selected ? " selected" : ""}${props.open ? " open" : ""}`}
      data-ticket={ticket.id}
      onClick={props.onOpen}
    >
      <span class={`prio prio-${priorityName(ticket.priority).toLowerCase()}`}>{priorityName(ticket.priority)}</span>
      <span class="id">{ticket.id}</span>
      <span class="title">{ticket.title}</span>
      <span class="owner">{ticket.ownerId || "unowned"}</span>
      <span class="status">{STATUS_NAMES[ticket.status]}</span>
      <Countdown ticket={ticket} />
    </li>
  );
}

function Clock({ clock }: { clock: SlaClock }) {
  const now = useNow();
  let text: string;
  let level = "none";
  if (clock.state === SlaClockState.RUNNING && clock.due) {
    const due = timestampMs(clock.due);
    text = `due ${relative(due, now)}`;
    level = due <= now ? "red" : "ok";
  } else if (clock.state === SlaClockState.MET && clock.metAt) {
    text = `met ${relative(timestampMs(clock.metAt), now)}`;
  } else if (clock.state === SlaClockState.PAUSED) {
    text = "paused";
  } else {
    text = "not tracked";
  }
  if (clock.breachedAt) level = "red";
  return (
    <li class={`clock sla-${level}`}>
      <span>{targetName(clock.target)}</span> {text}
      {clock.breachedAt && <strong> · breached</strong>}
    </li>
  );
}

/** Reports what this tab does on a ticket: viewing while open, typing
 * while the composer changes; idle when it closes. */
function useActivity(ticketId: string, expertId: string | null): () => void {
  const lastTyping = useRef(0);
  useEffect(() => {
    if (!expertId) return;
    const report = (activity: Activity) =>
      attempt(() => tickets.reportActivity({ expertId, ticketId, activity }));
    report(Activity.VIEWING);
    const renew = setInterval(() => report(Activity.VIEWING), 10_000);
    return () => {
      clearInterval(renew);
      report(Activity.IDLE);
    };
  }, [ticketId, expertId]);
  return () => {
    if (!expertId || Date.now() - lastTyping.current < 3000) return;
    lastTyping.current = Date.now();
    attempt(() => tickets.reportActivity({ expertId, ticketId, activity: Activity.TYPING }));
  };
}

type Mode = "reply" | "note";

export function TicketPane({ id, who }: { id: string; who: Token }) {
  void version.value;
  const row = desk.tickets.get(id);
  const timeline = desk.timelines.get(id) ?? [];
  const expertId = who.role === Role.EXPERT ? who.expertId : null;
  const typing = useActivity(id, expertId);
  const [mode, setMode] = useState<Mode>("reply");
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const composer = useRef<HTMLTextAreaElement>(null);
  const bottom = useRef<HTMLLIElement>(null);

  useEffect(() => {
    bottom.current?.scrollIntoView({ block: "end" });
  }, [timeline.length, id]);

  useEffect(() => {
    if (!expertId) return;
    const onKey = (e: KeyboardEvent) => {
      if ((e.target as HTMLElement | null)?.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key !== "r" && e.key !== "n") return;
      e.preventDefault();
      setMode(e.key === "r" ? "reply" : "note");
      composer.current?.focus();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [expertId]);

  if (!row) return <section class="pane empty">{id} is not on this screen.</section>;
  const t = row.ticket;
  const watchers = others(desk, id);

  const run = async (call: () => Promise<unknown>) => {
    setError("");
    const r = await attempt(call);
    if ("error" in r) setError(r.error);
    return "ok" in r;
  };

  const send = async () => {
    const body = text.trim();
    if (!body || !expertId) return;
    const visibility = mode === "note" ? Visibility.INTERNAL : Visibility.PUBLIC;
    if (await run(() => tickets.postMessage({ ticketId: id, authorId: expertId, body, visibility }))) setText("");
  };

  return (
    <section class="pane" aria-label={`Ticket ${id}`} data-testid="ticket">
      <header class="ticket-head">
        <h2>
          <span class={`prio prio-${priorityName(t.priority).toLowerCase()}`}>{priorityName(t.priority)}</span> {t.id}{" "}
          <span class="title" data-testid="ticket-title">
            {t.title}
          </span>
        </h2>
        <p class="meta">
          {STATUS_NAMES[t.status]} · owner <strong>{t.ownerId || "none"}</strong>
          {t.swarmMemberIds.length > 0 && <> · swarm {t.swarmMemberIds.join(", ")}</>} · from {t.requester}
          {t.escalatedTo.length > 0 && <> · escalated to {t.escalatedTo.join(", ")}</>}
        </p>
        <ul class="clocks">
          {t.sla.map((c) => (
            <Clock clock={c} />
          ))}
        </ul>
        <p class="activity" data-testid="activity">
          {watchers.map((a) => (
            <span class={isTyping(a) ? "typing" : "viewing"} data-expert={a.expertId}>
              {a.displayName || a.expertId} {isTyping(a) ? "is typing…" : "is viewing"}
            </span>
          ))}
        </p>
      </header>
      {t.description && <p class="description">{t.description}</p>}
      <ol class="timeline" data-testid="timeline">
        {timeline.map((item) => (
          <li class={`item item-${item.kind}`} data-position={String(item.position)}>
            <div class="item-head">
              {item.kind === "internal" && <span class="badge-internal">Internal note</span>}
              <strong>{item.actor}</strong> <When ms={item.at} />
            </div>
            <div class="item-body">{item.text}</div>
          </li>
        ))}
        <li ref={bottom} class="end" aria-hidden="true" />
      </ol>
      {expertId && (
        <div class={`composer composer-${mode}`}>
          <div class="modes" role="tablist">
            <button role="tab" aria-selected={mode === "reply"} class={mode === "reply" ? "active" : ""} onClick={() => setMode("reply")}>
              Reply
            </button>
            <button role="tab" aria-selected={mode === "note"} class={mode === "note" ? "active" : ""} onClick={() => setMode("note")}>
              Internal note
            </button>
          </div>
          <textarea
            ref={composer}
            data-testid="composer"
            value={text}
            placeholder={mode === "note" ? "Only the swarm sees this" : "The customer sees this"}
            onInput={(e) => {
              setText((e.target as HTMLTextAreaElement).value);
              typing();
            }}
            onKeyDown={(e) => {
              if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
                e.preventDefault();
                send();
              }
            }}
          />
          <button class="primary" onClick={send} data-testid="send">
            {mode === "note" ? "Add note" : "Send reply"}
          </button>
        </div>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <Actions ticket={t} who={who} run={run} />
      <Suggestions ticket={t} />
    </section>
  );
}

function Actions(props: { ticket: Ticket; who: Token; run: (call: () => Promise<unknown>) => Promise<boolean> }) {
  const { ticket: t, who, run } = props;
  const [form, setForm] = useState<"" | "help" | "transfer" | "vendor" | "resolve">("");
  const [a, setA] = useState("");
  const [b, setB] = useState("");
  const me = who.expertId;
  const isExpert = who.role === Role.EXPERT;
  const owner = t.ownerId;
  const member = t.swarmMemberIds.includes(me);
  const ticketId = t.id;
  const open = t.status !== TicketStatus.RESOLVED && t.status !== TicketStatus.CLOSED;
  const status = (status: TicketStatus, extra: object = {}) =>
    run(() => tickets.updateStatus({ ticketId, expertId: me, status, ...extra }));
  const done = (ok: boolean) => {
    if (ok) {
      setForm("");
      setA("");
      setB("");
    }
  };
  const input = (value: string, set: (v: string) => void, placeholder: string, testid: string) => (
    <input value={value} placeholder={placeholder} data-testid={testid} onInput={(e) => set((e.target as HTMLInputElement).value)} />
  );
  return (
    <div class="actions" data-testid="actions">
      {isExpert && !owner && open && <button onClick={() => run(() => tickets.claimTicket({ ticketId, expertId: me }))}>Claim</button>}
      {isExpert && owner !== me && !member && open && (
        <button data-testid="join" onClick={() => run(() => tickets.joinSwarm({ ticketId, expertId: me }))}>
          Join swarm
        </button>
      )}
      {isExpert && member && (
        <button onClick={() => run(() => tickets.leaveSwarm({ ticketId, expertId: me }))}>Leave swarm</button>
      )}
      {isExpert && (owner === me || member) && open && <button onClick={() => setForm("help")}>Request help</button>}
      {owner && (owner === me || !isExpert) && open && (
        <>
          <button onClick={() => setForm("transfer")}>Transfer</button>
          <button onClick={() => run(() => tickets.releaseTicket({ ticketId, expertId: owner }))}>Release</button>
        </>
      )}
      {isExpert && owner === me && open && (
        <>
          <button onClick={() => status(TicketStatus.WAITING_CUSTOMER)}>Waiting on customer</button>
          <button onClick={() => setForm("vendor")}>Waiting on vendor</button>
          <button onClick={() => setForm("resolve")}>Resolve</button>
        </>
      )}
      {isExpert && owner === me && !open && <button onClick={() => status(TicketStatus.ASSIGNED)}>Reopen</button>}
      {form === "help" && (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            const skills = a.split(",").map((s) => s.trim()).filter(Boolean).map((tag) => ({ tag, minRank: Rank.L1 }));
            done(await run(() => tickets.requestHelp({ ticketId, expertId: me, skills, note: b })));
          }}
        >
          {input(a, setA, "skills, e.g. network, vpn", "help-skills")}
          {input(b, setB, "what you need", "help-note")}
          <button type="submit">Ask the swarm</button>
        </form>
      )}
      {form === "transfer" && (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            done(await run(() => tickets.transferTicket({ ticketId, fromExpertId: owner, toExpertId: a.trim() })));
          }}
        >
          {input(a, setA, "to expert id", "transfer-to")}
          <button type="submit">Transfer</button>
        </form>
      )}
      {form === "vendor" && (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            done(await status(TicketStatus.WAITING_VENDOR, { vendor: { name: a.trim(), reference: b.trim() } }));
          }}
        >
          {input(a, setA, "vendor name", "vendor-name")}
          {input(b, setB, "their reference", "vendor-reference")}
          <button type="submit">Wait on vendor</button>
        </form>
      )}
      {form === "resolve" && (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            const knowledgeUse = a.trim().startsWith("KB-")
              ? { case: "reuseArticleId" as const, value: a.trim() }
              : a.trim()
                ? { case: "captureArticle" as const, value: { title: a.trim(), body: b.trim(), tags: t.skills.map((s) => s.tag) } }
                : { case: undefined };
            done(await status(TicketStatus.RESOLVED, { knowledge: knowledgeUse }));
          }}
        >
          {input(a, setA, "KB-7 to reuse, or a title to capture (optional)", "resolve-article")}
          {input(b, setB, "the article's body, when capturing", "resolve-body")}
          <button type="submit">Resolve</button>
        </form>
      )}
    </div>
  );
}

function Suggestions({ ticket }: { ticket: Ticket }) {
  const [hits, setHits] = useState<ArticleHit[]>([]);
  const [query, setQuery] = useState("");
  useEffect(() => {
    attempt(() => knowledge.suggestArticles({ text: `${ticket.title}\n${ticket.description}`, limit: 3 })).then(
      (r) => "ok" in r && setHits(r.ok.suggestions),
    );
  }, [ticket.id]);
  const search = async (e: Event) => {
    e.preventDefault();
    if (!query.trim()) return;
    const r = await attempt(() => knowledge.searchArticles({ query, limit: 5 }));
    if ("ok" in r) setHits(r.ok.hits);
  };
  return (
    <aside class="suggestions" aria-label="Knowledge">
      <h3>Knowledge</h3>
      <form onSubmit={search}>
        <input value={query} placeholder="Search articles" onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
      </form>
      <ul>
        {hits.length === 0 && <li class="empty">No suggestions.</li>}
        {hits.map((h) => (
          <li>
            <a href={`#/kb?${h.articleId}`}>
              {h.articleId} {h.title}
            </a>
            <p class="snippet">{h.snippet}</p>
          </li>
        ))}
      </ul>
    </aside>
  );
}
