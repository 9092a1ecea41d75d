#!/usr/bin/env python3
"""Reduce the 10-second samples of a steady-state run to result lines.

usage: steady.py SAMPLES_TSV WORKLOAD REP SYNC RATE

Prints bench/run result lines (sync, workload, variant, rep, metric, value,
note) on stdout.  Samples: t_s, phase (steady | before | during | after),
jobs_per_s, p99_ms, depth, job_heap_kb, job_index_kb, job_dead_tuples,
history_kb.  The first sample (start-up) is left out of rates and
percentiles.
"""
import statistics
import sys


def main():
    path, workload, rep, sync, rate = sys.argv[1:6]
    rate = float(rate)
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 9:
                continue
            rows.append({"t": int(p[0]), "phase": p[1], "rate": float(p[2]),
                         "p99": float(p[3]), "depth": int(p[4]),
                         "heap": int(p[5]), "idx": int(p[6]),
                         "dead": int(p[7] or 0), "hist": int(p[8])})
    if len(rows) < 2:
        return
    body = rows[1:]

    def out(metric, value, note=""):
        print(f"{sync}\t{workload}\tw2\t{rep}\t{metric}\t{value}\t{note}")

    def mean(xs):
        return round(statistics.mean(xs)) if xs else ""

    def med(xs):
        return round(statistics.median(xs), 2) if xs else ""

    out("producer_rate", round(rate), "jobs/s offered (pgbench -R)")
    if workload == "steady":
        out("jobs_per_s", mean([r["rate"] for r in body]))
        out("p99_ms", med([r["p99"] for r in body]), "median of 10-s windows")
        out("p99_worst_ms", max(r["p99"] for r in body), "worst 10-s window")
        out("depth_max", max(r["depth"] for r in body))
        out("claim_path_kb_first", body[0]["heap"] + body[0]["idx"],
            "jobq.job heap + indexes")
        out("claim_path_kb_last", body[-1]["heap"] + body[-1]["idx"])
        out("claim_path_kb_max", max(r["heap"] + r["idx"] for r in body))
        out("dead_tuples_max", max(r["dead"] for r in body))
        out("history_kb_last", body[-1]["hist"])
        return

    phases = {ph: [r for r in body if r["phase"] == ph]
              for ph in ("before", "during", "after")}
    for ph, rs in phases.items():
        out(f"jobs_per_s_{ph}", mean([r["rate"] for r in rs]))
        out(f"p99_ms_{ph}", med([r["p99"] for r in rs]))
        out(f"depth_max_{ph}", max((r["depth"] for r in rs), default=""))
        out(f"claim_path_kb_max_{ph}", max((r["heap"] + r["idx"] for r in rs), default=""))
    before, during = phases["before"], phases["during"]
    if before and during and phases["after"]:
        base = mean([r["rate"] for r in before])
        if base:
            out("during_over_before", round(mean([r["rate"] for r in during]) / base, 2))
        # caught up: the queue is back to what it was before the hold
        limit = max(r["depth"] for r in before) + rate
        end = during[-1]["t"]
        back = next((r["t"] - end for r in phases["after"] if r["depth"] <= limit), "")
        out("recovery_s", back, "from the end of the hold until the queue is back to its depth before it")


if __name__ == "__main__":
    main()
