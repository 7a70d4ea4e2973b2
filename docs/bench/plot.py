"""Plots create, baseline and (where the run has it) the durable floor:
latency and throughput against concurrency, from one JSON line of
`swarmdesk bench` (python3 docs/bench/plot.py FILE.json OUT.png)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

figures = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
levels = sorted(
    int(k.split("_c")[1]) for k in figures if k.startswith("create_rps_c") and figures[k]
)
fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
series = [("create", "-o"), ("baseline", "--s"), ("durable", ":^")]
for name, style in [(n, s) for n, s in series if figures.get(f"{n}_rps_c{levels[0]}")]:
    for q in ("p50", "p99"):
        lat.plot(levels, [figures[f"{name}_{q}_us_c{c}"] / 1000 for c in levels], style,
                 label=f"{name} {q}")
    thr.plot(levels, [figures[f"{name}_rps_c{c}"] for c in levels], style, label=name)
lat.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="latency (ms)",
        title="CreateTicket vs bare Echo and DurableEcho")
thr.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="Throughput")
for ax in (lat, thr):
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
