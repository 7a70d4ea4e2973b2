// Times as people read them, the same way the CLI prints them: "in 12 min",
// "3 h ago", "now"; the local date and time go in a tooltip.

/** The span between two instants (milliseconds), rounded as the CLI does. */
export function relative(atMs: number, nowMs: number): string {
  const apart = Math.abs(Math.round((atMs - nowMs) / 1000));
  let span: string | null;
  if (apart < 45) span = null;
  else if (apart < 5400) span = `${Math.floor((apart + 30) / 60)} min`;
  else if (apart < 129600) span = `${Math.floor((apart + 1800) / 3600)} h`;
  else span = `${Math.floor((apart + 43200) / 86400)} d`;
  if (span === null) return "now";
  return atMs < nowMs ? `${span} ago` : `in ${span}`;
}

/** The local date and time, for a tooltip: "2026-12-02 14:05". */
export function localTime(atMs: number): string {
  const d = new Date(atMs);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** How an SLA countdown looks: calm, amber in its last quarter, red once
 * due. */
export type Urgency = "ok" | "amber" | "red";

export function urgency(dueMs: number, startedMs: number, nowMs: number): Urgency {
  const left = dueMs - nowMs;
  if (left <= 0) return "red";
  const whole = Math.max(dueMs - startedMs, 1);
  if (left <= whole * 0.25) return "amber";
  return "ok";
}

/** A share as a percentage, or "-" when there was nothing to count. */
export function share(count: number, value: number): string {
  return count === 0 ? "-" : `${(value * 100).toFixed(1)}%`;
}

/** A duration (milliseconds) as "1 h 5 min", "12 min", "40 s". */
export function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  const rest = min % 60;
  if (h < 48) return rest ? `${h} h ${rest} min` : `${h} h`;
  return `${Math.round(h / 24)} d`;
}
