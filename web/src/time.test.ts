import { describe, expect, it } from "vitest";
import { duration, relative, share, urgency } from "./time";

const NOW = Date.UTC(2026, 11, 2, 11, 14, 56);

describe("relative", () => {
  it("reads as the CLI prints it", () => {
    expect(relative(NOW, NOW)).toBe("now");
    expect(relative(NOW - 30_000, NOW)).toBe("now");
    expect(relative(NOW + 12 * 60_000, NOW)).toBe("in 12 min");
    expect(relative(NOW - 50_000, NOW)).toBe("1 min ago");
    expect(relative(NOW - 3 * 3_600_000, NOW)).toBe("3 h ago");
    expect(relative(NOW - 2 * 86_400_000, NOW)).toBe("2 d ago");
    expect(relative(NOW + 13 * 3_600_000, NOW)).toBe("in 13 h");
  });
});

describe("urgency", () => {
  const start = NOW;
  const due = NOW + 60 * 60_000; // an hour
  it("is calm, then amber near the end, then red once due", () => {
    expect(urgency(due, start, NOW)).toBe("ok");
    expect(urgency(due, start, due - 20 * 60_000)).toBe("ok");
    expect(urgency(due, start, due - 10 * 60_000)).toBe("amber");
    expect(urgency(due, start, due)).toBe("red");
    expect(urgency(due, start, due + 1)).toBe("red");
  });
});

describe("share and duration", () => {
  it("show a dash where nothing was counted", () => {
    expect(share(0, 0)).toBe("-");
    expect(share(4, 0.75)).toBe("75.0%");
  });
  it("reads durations in the largest sensible unit", () => {
    expect(duration(40_000)).toBe("40 s");
    expect(duration(12 * 60_000)).toBe("12 min");
    expect(duration(65 * 60_000)).toBe("1 h 5 min");
    expect(duration(72 * 3_600_000)).toBe("3 d");
  });
});
