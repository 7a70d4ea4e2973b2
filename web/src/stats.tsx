// Stats as pictures (from GetStats over a chosen range), the numbers
// beside every bar.

import { timestampFromMs, type Duration } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { attempt, stats as statsApi } from "./api";
import type { DurationSummary, Stats as StatsMessage } from "./gen/swarmdesk/v1/swarmdesk_pb";
import { targetName } from "./reducer";
import { duration, share } from "./time";

const RANGES: [string, number][] = [
  ["24 h", 24 * 3600_000],
  ["7 days", 7 * 86400_000],
  ["30 days", 30 * 86400_000],
];

const ms = (d?: Duration) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0);

/** A horizontal bar of `value` out of `max`, drawn in SVG. */
function Bar({ value, max, goal, tone = "ok" }: { value: number; max: number; goal?: number; tone?: string }) {
  const w = max > 0 ? Math.max(0, Math.min(1, value / max)) * 200 : 0;
  return (
    <svg class="bar" width="200" height="14" viewBox="0 0 200 14" role="img" aria-hidden="true">
      <rect class="bar-track" x="0" y="2" width="200" height="10" rx="3" />
      <rect class={`bar-fill bar-${tone}`} x="0" y="2" width={w} height="10" rx="3" />
      {goal !== undefined && <line class="bar-goal" x1={goal * 200} x2={goal * 200} y1="0" y2="14" />}
    </svg>
  );
}

function Durations({ label, d, max }: { label: string; d?: DurationSummary; max: number }) {
  const count = Number(d?.count ?? 0n);
  return (
    <tr>
      <th>{label}</th>
      <td>
        <Bar value={ms(d?.median)} max={max} />
      </td>
      <td>{count ? `median ${duration(ms(d?.median))}, p90 ${duration(ms(d?.p90))}` : "-"}</td>
      <td class="muted">{count} counted</td>
    </tr>
  );
}

export function Stats() {
  const [range, setRange] = useState(RANGES[1][1]);
  const [tag, setTag] = useState("");
  const [data, setData] = useState<StatsMessage | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    const to = Date.now();
    attempt(() => statsApi.getStats({ from: timestampFromMs(to - range), to: timestampFromMs(to), tag })).then((r) => {
      if ("ok" in r) {
        setData(r.ok);
        setError("");
      } else setError(r.error);
    });
  }, [range, tag]);
  const max = data ? Math.max(ms(data.timeToOwn?.p90), ms(data.timeToFirstResponse?.p90), ms(data.timeToResolve?.median), 1) : 1;
  return (
    <main class="stats" data-testid="stats">
      <div class="controls">
        {RANGES.map(([label, value]) => (
          <button class={value === range ? "active" : ""} onClick={() => setRange(value)}>
            {label}
          </button>
        ))}
        <input placeholder="skill tag (all)" value={tag} onChange={(e) => setTag((e.target as HTMLInputElement).value.trim())} />
      </div>
      {error && <p class="error">{error}</p>}
      {data && (
        <>
          <p>
            <strong>{String(data.created)}</strong> created, <strong>{String(data.resolved)}</strong> resolved.
          </p>
          <h3>Time to…</h3>
          <table>
            <tbody>
              <Durations label="own" d={data.timeToOwn} max={max} />
              <Durations label="first response" d={data.timeToFirstResponse} max={max} />
              <Durations label="resolve" d={data.timeToResolve} max={max} />
            </tbody>
          </table>
          <h3>Service levels</h3>
          <table>
            <tbody>
              {data.sla.map((t) => {
                const n = Number(t.met + t.breached);
                return (
                  <tr>
                    <th>{targetName(t.target)}</th>
                    <td>
                      <Bar value={t.attainment} max={1} tone={t.attainment >= 0.9 ? "ok" : "warn"} />
                    </td>
                    <td>{share(n, t.attainment)}</td>
                    <td class="muted">
                      {String(t.met)} met, {String(t.breached)} breached
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <h3>Satisfaction</h3>
          <table>
            <tbody>
              <tr>
                <th>satisfied</th>
                <td>
                  <Bar value={data.satisfiedShare} max={1} goal={data.satisfiedGoal} tone={data.satisfiedGoalMet ? "ok" : "warn"} />
                </td>
                <td>
                  {Number(data.ratings) === 0
                    ? "no ratings yet"
                    : `${share(Number(data.ratings), data.satisfiedShare)} against a goal of ${share(1, data.satisfiedGoal)}`}
                </td>
                <td class="muted">
                  {String(data.ratings)} ratings, mean {Number(data.ratings) ? data.csatAverage.toFixed(2) : "-"}
                </td>
              </tr>
            </tbody>
          </table>
          <h3>Knowledge</h3>
          {data.knowledge && (
            <p>
              {String(data.knowledge.articlesSuggested)} articles suggested, {String(data.knowledge.deflections)} deflections,{" "}
              {String(data.knowledge.reused)} reused, {String(data.knowledge.captured)} captured; link rate{" "}
              {share(Number(data.resolved), data.knowledge.linkRate)}.
            </p>
          )}
          <h3>Contributions</h3>
          <table class="ledger">
            <thead>
              <tr>
                <th>expert</th>
                <th>resolved as owner</th>
                <th>swarms joined</th>
                <th>internal notes</th>
                <th>helped others</th>
                <th>articles reused / captured</th>
              </tr>
            </thead>
            <tbody>
              {data.experts.map((e) => (
                <tr>
                  <td>{e.expertId}</td>
                  <td>{String(e.resolvedAsOwner)}</td>
                  <td>{String(e.swarmsJoined)}</td>
                  <td>{String(e.internalNotes)}</td>
                  <td>{String(e.helpedOthersResolve)}</td>
                  <td>
                    {String(e.articlesReused)} / {String(e.articlesCaptured)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </main>
  );
}
