#!/usr/bin/env python3
"""Summarise one bench/run: jobq against the peer anchors of the same run.

usage: summarize.py RESULTS_DIR
       summarize.py --compare COMPARE_DIR REF   (bench/compare's runs)

RESULTS_DIR/jobq.tsv holds jobq's lines (sync, workload, variant, rep,
metric, value, note); RESULTS_DIR/peers/*.tsv the anchors' lines (run id,
sync, system, workload, variant, rep, metric, value, note).  Every figure is
the median over repetitions with its range; a peer's figure is its best
variant.
"""
import collections
import glob
import os
import statistics
import sys


def load(outdir):
    data = collections.defaultdict(list)   # (system, workload, variant, metric) -> values
    with open(os.path.join(outdir, "jobq.tsv")) as f:
        for line in f:
            sync, wl, var, rep, met, val = line.rstrip("\n").split("\t")[:6]
            if sync == "on" and val:
                data[("jobq", wl, var, met)].append(float(val))
    for path in glob.glob(os.path.join(outdir, "peers", "*.tsv")):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 8:
                    continue
                _, sync, system, wl, var, rep, met, val = parts[:8]
                if sync == "on" and val:
                    try:
                        data[(system, wl, var, met)].append(float(val))
                    except ValueError:
                        pass
    return data


def stat(values):
    return statistics.median(values), min(values), max(values)


def fmt(s, digits=0):
    if s is None:
        return "–"
    med, lo, hi = s
    if digits:
        return f"{med:,.{digits}f} [{lo:,.{digits}f}–{hi:,.{digits}f}]"
    return f"{med:,.0f} [{lo:,.0f}–{hi:,.0f}]"


def best(data, system, workload, metric, variants=None, lower=False):
    """The best variant of a system for a workload: (label, stat)."""
    found = []
    for (sysname, wl, var, met), vals in data.items():
        if sysname == system and wl == workload and met == metric:
            if variants is None or var in variants:
                found.append((var, stat(vals)))
    if not found:
        return None, None
    key = (lambda x: x[1][0])
    var, s = (min if lower else max)(found, key=key)
    return var, s


def main():
    outdir = sys.argv[1]
    data = load(outdir)
    peers = ["naive", "graphile", "pgboss", "pgq"]
    rows = []

    def row(name, jobq, peer_specs, lower=False, digits=0, extra_ref=None):
        jvar, js = jobq
        cells, best_peer = [], None
        for p in peers:
            spec = peer_specs.get(p)
            if spec is None:
                cells.append("–")
                continue
            pvar, ps = best(data, p, *spec, lower=lower)
            if ps is None:
                cells.append("–")
                continue
            cells.append(f"{fmt(ps, digits)} ({pvar})")
            if best_peer is None or (ps[0] < best_peer[0] if lower else ps[0] > best_peer[0]):
                best_peer = ps
        ratio = "–"
        if js is not None and best_peer is not None and best_peer[0] > 0 and js[0] > 0:
            r = (best_peer[0] / js[0]) if lower else (js[0] / best_peer[0])
            ratio = f"{r:.2f}"
        jcell = "–" if js is None else f"{fmt(js, digits)}" + (f" ({jvar})" if jvar else "")
        rows.append((name, jcell, *cells, ratio))

    # enqueue, one per transaction, 8 clients
    j = best(data, "jobq", "enqueue_1per_tx_pgbench", "jobs_per_s", ["c8"])
    row("enqueue 1/tx, 8 clients (jobs/s)", j,
        {"naive": ("enqueue_1per_tx_pgbench", "jobs_per_s"),
         "graphile": ("enqueue_1per_tx_pgbench", "jobs_per_s"),
         "pgboss": ("enqueue_1per_tx_node", "jobs_per_s"),
         "pgq": ("enqueue_1per_tx_pgbench", "jobs_per_s")})
    ins = best(data, "jobq", "enqueue_1per_tx_pgbench", "jobs_per_s", ["plain_insert"])
    if ins[1] is not None and j[1] is not None:
        rows.append(("plain INSERT 1/tx, same run (rows/s)", fmt(ins[1]), "", "", "", "",
                     f"{j[1][0] / ins[1][0]:.2f} (jobq ÷ INSERT)"))
    # bulk enqueue
    row("bulk enqueue (jobs/s)", best(data, "jobq", "bulk_enqueue", "jobs_per_s"),
        {"graphile": ("bulk_enqueue", "jobs_per_s"),
         "pgboss": ("bulk_enqueue", "jobs_per_s"),
         "pgq": ("bulk_enqueue", "jobs_per_s")})
    # drain
    for (sysname, wl, var, met) in sorted(data):
        if sysname == "jobq" and wl == "process":
            row(f"drain, {var} (jobs/s)", (None, stat(data[(sysname, wl, var, met)])),
                {"naive": ("process_100per_tx", "jobs_per_s"),
                 "graphile": ("process", "jobs_per_s"),
                 "pgboss": ("process", "jobs_per_s"),
                 "pgq": ("process", "jobs_per_s")})
    # latency: each system's variant with the best p50, all percentiles of
    # that one variant
    lat_var = {p: best(data, p, "latency", "p50_ms", lower=True)[0]
               for p in ["jobq"] + peers}
    for met in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        row(f"latency commit→start {met[:-3]} (ms)",
            best(data, "jobq", "latency", met, [lat_var["jobq"]], lower=True),
            {p: ("latency", met, [lat_var[p]]) for p in ("graphile", "pgboss", "pgq")
             if lat_var[p] is not None},
            lower=True, digits=2)
    # external executors: the client-side drain of the peers is the like-for-like
    # comparison (graphile-worker's and pg-boss's executors are clients too);
    # the naive drain deletes jobs in the transaction that claims them, which an
    # executor outside the server cannot do: the plain-table row below is this
    # protocol's ceiling instead
    for (sysname, wl, var, met) in sorted(data):
        if sysname == "jobq" and wl == "executor_api":
            row(f"executors: claim 100 + complete, {var.split('_c')[-1]} clients (jobs/s)",
                (None, stat(data[(sysname, wl, var, met)])),
                {"graphile": ("process", "jobs_per_s"),
                 "pgboss": ("process", "jobs_per_s"),
                 "pgq": ("process", "jobs_per_s")})
    for (sysname, wl, var, met) in sorted(data):
        if sysname == "jobq" and wl == "executor_ceiling":
            c = stat(data[(sysname, wl, var, met)])
            j = data.get((sysname, "executor_api", var, met))
            rows.append((f"plain table, claim 100 (commit) + DELETE (commit), {var.split('_c')[-1]} clients, same run (jobs/s)",
                         fmt(c), "", "", "", "",
                         f"{stat(j)[0] / c[0]:.2f} (jobq ÷ plain)" if j and c[0] > 0 else "–"))
    v = best(data, "jobq", "executor_work", "jobs_per_s")
    if v[1] is not None:
        rows.append(("executors: jobq work, a process per job, per executor (jobs/s)",
                     fmt(v[1]), "", "", "", "", ""))
    for met in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        if best(data, "jobq", "executor_latency", met)[1] is None:
            continue
        row(f"executors: commit→claim of an idle executor, {met[:-3]} (ms)",
            best(data, "jobq", "executor_latency", met, lower=True),
            {p: ("latency", met, [lat_var[p]]) for p in ("graphile", "pgboss", "pgq")
             if lat_var[p] is not None},
            lower=True, digits=2)
    # memory
    for met in ("rss_before_kb", "rss_after_kb"):
        v = best(data, "jobq", "memory", met)
        if v[1] is not None:
            rows.append((f"worker private memory, {met[4:-3]} (kB)", fmt(v[1]), "", "", "", "", ""))
    # steady state and held xmin (jobq only: the anchors have no such run)
    steady = [("steady", "producer_rate", "steady state: offered rate (jobs/s)", 0),
              ("steady", "jobs_per_s", "steady state: throughput (jobs/s)", 0),
              ("steady", "p99_ms", "steady state: enqueue→start p99, median 10-s window (ms)", 2),
              ("steady", "p99_worst_ms", "steady state: enqueue→start p99, worst 10-s window (ms)", 2),
              ("steady", "depth_max", "steady state: deepest queue (jobs)", 0),
              ("steady", "claim_path_kb_first", "steady state: jobq.job heap+indexes, first sample (kB)", 0),
              ("steady", "claim_path_kb_last", "steady state: jobq.job heap+indexes, last sample (kB)", 0),
              ("steady", "claim_path_kb_max", "steady state: jobq.job heap+indexes, largest (kB)", 0),
              ("steady", "dead_tuples_max", "steady state: dead tuples in jobq.job, most (rows)", 0),
              ("steady", "history_kb_last", "steady state: jobq.job_history, last sample (kB)", 0),
              ("heldxmin", "producer_rate", "held xmin: offered rate (jobs/s)", 0)]
    for ph in ("before", "during", "after"):
        steady += [("heldxmin", f"jobs_per_s_{ph}", f"held xmin: throughput {ph} the hold (jobs/s)", 0),
                   ("heldxmin", f"p99_ms_{ph}", f"held xmin: enqueue→start p99 {ph} the hold (ms)", 2),
                   ("heldxmin", f"depth_max_{ph}", f"held xmin: deepest queue {ph} the hold (jobs)", 0),
                   ("heldxmin", f"claim_path_kb_max_{ph}", f"held xmin: jobq.job heap+indexes {ph} the hold, largest (kB)", 0)]
    steady += [("heldxmin", "during_over_before", "held xmin: throughput during ÷ before", 2),
               ("heldxmin", "recovery_s", "held xmin: seconds after the hold until the queue is back to its depth before", 0)]
    for wl, met, label, digits in steady:
        v = best(data, "jobq", wl, met)
        if v[1] is not None:
            rows.append((label, fmt(v[1], digits), "", "", "", "", ""))
    # calibration
    for when in ("start", "end"):
        v = best(data, "jobq", "calib_select1_c8", "tps", [when])
        if v[1] is not None:
            rows.append((f"machine: pgbench SELECT 1, 8 clients, {when} (tps)", fmt(v[1]), "", "", "", "", ""))

    head = ["workload", "jobq", "naive SKIP LOCKED", "graphile-worker", "pg-boss", "PgQ", "jobq ÷ best peer"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def compare(outdir, ref):
    """Two builds' runs: COMPARE_DIR/old-N/jobq.tsv and new-N/jobq.tsv."""
    sides = {}
    for side in ("old", "new"):
        data = collections.defaultdict(list)
        for path in sorted(glob.glob(os.path.join(outdir, side + "-*", "jobq.tsv"))):
            with open(path) as f:
                for line in f:
                    sync, wl, var, rep, met, val = line.rstrip("\n").split("\t")[:6]
                    if sync == "on" and val:
                        data[(wl, var, met)].append(float(val))
        sides[side] = data
    print(f"| workload | variant | metric | before ({ref}) | after (working tree) "
          "| after ÷ before (above 1 is better) |")
    print("|---|---|---|---|---|---|")
    worse = 0
    for key in sorted(set(sides["old"]) & set(sides["new"])):
        wl, var, met = key
        o, n = stat(sides["old"][key]), stat(sides["new"][key])
        digits = 2 if met.endswith("_ms") else 0
        if o[0] <= 0 or n[0] <= 0:
            continue
        r = o[0] / n[0] if met.endswith("_ms") else n[0] / o[0]
        flag = ""
        # the machine's calibration and the plain INSERT are references
        if wl != "calib_select1_c8" and var != "plain_insert" and r < 0.90:
            flag = " **more than 10 % worse**"
            worse += 1
        print(f"| {wl} | {var} | {met} | {fmt(o, digits)} | {fmt(n, digits)} | {r:.2f}{flag} |")
    print()
    print(f"{worse} figure(s) more than 10 % worse; medians of "
          f"{len(glob.glob(os.path.join(outdir, 'old-*')))} runs of each build.")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        main()
