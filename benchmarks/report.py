"""The benchmark summary: benchmarks/results/summary.md, the plots, and README's table.

``python -m benchmarks.report`` rebuilds them from benchmarks/results/*.json (suite.py calls it
at the end). README's part between the ``benchmarks:begin`` and ``benchmarks:end`` markers is
replaced, so README always shows the latest run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.cli import cli_table, cli_targets
from benchmarks.dataset_import import import_table, import_targets
from benchmarks.training import target_rows as training_targets

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
GB_1_2_MIB = 1.2e9 / 2**20  # the memory target, 1.2 GB, in MiB
MB_200_MIB = 200e6 / 2**20  # what each additional served model may add, 200 MB, in MiB
SERVERS = {
    "onebox-gateway": "onebox through the gateway (nginx → BentoML container)",
    "onebox-gateway-model": "the same, at the model's own prefix",
    "onebox-bento": "the same bento directly (`bentoml serve`)",
    "flask-gunicorn": "torch `.pt` in Flask under gunicorn (what onebox replaces)",
    "mlflow-serve": "stock `mlflow models serve`",
}
REQUESTS = {"image": "multipart PNG upload", "json": "one image as a JSON array"}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _mark(ok: bool | None) -> str:
    if ok is None:
        return "reference"
    return "met" if ok else "**missed**"


def _cell(run: dict[str, Any]) -> str:
    errors = f" ({run['errors']} errors)" if run["errors"] else ""
    return f"{run['rps']:,.0f} · {run['p50_ms']:.1f} / {run['p99_ms']:.1f} ms{errors}"


def serving_table(serving: dict[str, Any]) -> list[str]:
    lines = [
        f"Requests/s, p50 / p99 latency; {serving['worker_processes']} worker processes per server; "
        f"{serving['load_generator']} on loopback; each cell the median of {serving.get('rounds', 1)} rounds of "
        f"{serving['seconds_per_run']:.0f} s, the servers measured in turns.",
        "",
        "| server | request (endpoint) | 1 client | 8 clients | 64 clients |",
        "|---|---|---|---|---|",
    ]
    for request in REQUESTS:
        for server, label in SERVERS.items():
            rows = [r for r in serving["runs"] if r["server"] == server and r["request"] == request]
            if not rows:
                continue
            cells = [
                f"{r['rps']:,.0f} · {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms"
                + (f" ({r['errors']} errors)" if r["errors"] else "")
                for r in sorted(rows, key=lambda r: r["connections"])
            ]
            lines.append(f"| {label} | {REQUESTS[request]} (`/{rows[0]['endpoint']}`) | " + " | ".join(cells) + " |")
    limit = serving["in_process"]
    cpu_lines = [
        "",
        "Server CPU per request, ms (every process a request passes through: for the gateway also nginx; "
        "not the load generator). Other load on the machine shifts requests/s, hardly this:",
        "",
        "| server | request | 1 client | 8 clients | 64 clients |",
        "|---|---|---|---|---|",
    ]
    for request in REQUESTS:
        for server in SERVERS:
            rows = sorted(
                (r for r in serving["runs"] if r["server"] == server and r["request"] == request),
                key=lambda r: r["connections"],
            )
            if rows and all("server_cpu_ms_per_request" in r for r in rows):
                cpu = [r["server_cpu_ms_per_request"] for r in rows]
                cpu_cells = " | ".join(f"{ms:.3f}" if ms > 0 else "n/a" for ms in cpu)
                cpu_lines.append(f"| {server} | {REQUESTS[request]} | {cpu_cells} |")
    lines.append(
        f"| ONNX Runtime in-process, no HTTP ({limit['processes']} processes) | PNG decode + model; model alone | "
        f"{limit['png_decode_and_predict_per_s']:,} /s; {limit['model_only_per_s']:,} /s | | |"
    )
    return lines + (cpu_lines if len(cpu_lines) > 6 else [])


def prediction_log_targets(log: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The prediction log's targets (benchmarks/prediction_log.py): at most 10% more CPU per request
    with it on, at each connection count, and no record lost below the queue bound."""
    rows: list[tuple[str, str, bool | None]] = []
    for run in log["runs"]:
        ratio = run["cpu_per_request_on_vs_off"]
        rows.append(
            (f"prediction log adds <= 10% CPU per request, {run['connections']} clients", f"{ratio - 1:+.1%}",
             ratio <= 1.10)
        )  # fmt: skip
    records = log["records"]
    rows.append(
        ("no prediction record lost below the queue bound", f"{records['missing']} missing of {records['on_disk']:,}",
         records["missing"] == 0)
    )  # fmt: skip
    return rows


def prediction_log_table(log: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"The prediction log on vs off ({log['model']}, {log['worker_processes']} worker, median of "
        f"{log['rounds']} rounds of {log['seconds_per_run']:g} s; requests/s · p50 / p99 · server CPU per request):",
        "",
        "| clients | log on | log off | CPU per request, on/off |",
        "|---|---|---|---|",
    ]
    for run in log["runs"]:
        on, off = run["log_on"], run["log_off"]
        cells = [
            f"{side['rps']:,.0f} · {side['p50_ms']:.1f} / {side['p99_ms']:.1f} ms · "
            f"{side['server_cpu_ms_per_request']:.3f} ms"
            for side in (on, off)
        ]
        lines.append(f"| {run['connections']} | {cells[0]} | {cells[1]} | {run['cpu_per_request_on_vs_off']}x |")
    writer = log.get("writer_unique_inputs")
    if writer:
        lines += [
            "",
            f"Every input new (a file each): {writer['submit_us_per_record']} µs per record on the request path, "
            f"{writer['writer_us_per_record']:,.0f} µs in the writer thread; {writer['written']:,} of "
            f"{writer['records']:,} written.",
        ]
    return lines


def targets_table(data: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, bool | None]] = []
    serving, appliance, pipeline = data.get("serving"), data.get("appliance"), data.get("pipeline")
    if serving:
        for clients in ("8", "64"):
            ratio = serving["ratios"][clients]
            gateway_p99, flask_p99 = ratio["gateway_p99_ms"], ratio["flask_p99_ms"]
            rows += [
                (f"gateway >= 1.5x Flask's requests/s, {clients} clients", f"{ratio['gateway_vs_flask_rps']}x",
                 ratio["gateway_vs_flask_rps"] >= 1.5),
                (f"gateway p99 <= Flask's, {clients} clients", f"{gateway_p99:.1f} vs {flask_p99:.1f} ms",
                 gateway_p99 <= flask_p99),
                (f"gateway >= 2x `mlflow models serve` (JSON), {clients} clients",
                 f"{ratio['gateway_vs_mlflow_rps']}x", ratio["gateway_vs_mlflow_rps"] >= 2),
            ]  # fmt: skip
            if ratio.get("gateway_vs_flask_cpu_efficiency"):
                rows.append(
                    (
                        f"(for reference) requests per CPU-second, gateway vs Flask / vs MLflow, {clients} clients",
                        f"{ratio['gateway_vs_flask_cpu_efficiency']}x / {ratio['gateway_vs_mlflow_cpu_efficiency']}x",
                        None,
                    )
                )
    if appliance:
        failed, sent = appliance["swap_requests_failed"], appliance["swap_requests_sent"]
        seconds = appliance["registered_to_serving_s"]
        memory = appliance["idle_memory_total_mib"]["usage_mib"]
        rows += [
            ("0 failed requests during a swap", f"{failed} of {sent:,}", failed == 0),
            ("registered -> serving <= 30 s", f"{seconds} s", seconds <= 30),
            (f"idle memory of the appliance <= 1.2 GB ({GB_1_2_MIB:,.0f} MiB)", f"{memory:,.0f} MiB",
             memory <= GB_1_2_MIB),
        ]  # fmt: skip
        if "extra_model_memory_mib" in appliance:
            extra = appliance["extra_model_memory_mib"]["usage_mib"]
            target = f"each additional served model <= 200 MB ({MB_200_MIB:,.0f} MiB) idle"
            rows.append((target, f"{extra:,.0f} MiB", extra <= MB_200_MIB))
    if data.get("prediction_log"):
        rows += prediction_log_targets(data["prediction_log"])
    if data.get("cli"):
        rows += cli_targets(data["cli"])
    if data.get("dataset_import"):
        rows += import_targets(data["dataset_import"])
    if pipeline:
        measured = (
            f"{pipeline['flow_vs_plain']}x ({pipeline['flow_median_s']} vs {pipeline['plain_script_median_s']} s)"
        )
        rows.append(("pipeline <= 1.15x the plain script", measured, pipeline["flow_vs_plain"] <= 1.15))
    if data.get("training"):
        rows += training_targets(data["training"])
    return ["| target | measured | |", "|---|---|---|", *(f"| {t} | {m} | {_mark(ok)} |" for t, m, ok in rows)]


def other_tables(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if data.get("prediction_log"):
        lines += prediction_log_table(data["prediction_log"])
    if data.get("cli"):
        lines += cli_table(data["cli"], data.get("cli-before"))
    if data.get("dataset_import"):
        lines += import_table(data["dataset_import"])
    runtimes, appliance, pipeline = data.get("runtimes"), data.get("appliance"), data.get("pipeline")
    if runtimes:
        lines += [
            "",
            f"Inference runtimes ({runtimes['model']}; torch {runtimes['torch_threads']} threads, ONNX Runtime 1):",
            "",
        ]
        lines += ["| batch | torch eager | ONNX Runtime | ONNX Runtime speed-up |", "|---|---|---|---|"]
        for batch, row in runtimes["batches"].items():
            lines.append(
                f"| {batch} | {row['torch_ms']:.3f} ms ({row['torch_images_per_s']:,} images/s) | "
                f"{row['onnx_ms']:.3f} ms ({row['onnx_images_per_s']:,} images/s) | {row['onnx_speedup']}x |"
            )
    if appliance:
        memory = appliance["idle_memory_mib"]
        lines += [
            "",
            "Idle memory per container (MiB): cgroup usage less page cache; RSS and PSS summed over its processes:",
            "",
        ]
        lines += memory_table(memory, appliance["idle_memory_total_mib"])
        if "two_models_idle_memory_mib" in appliance:
            extra = appliance["extra_model_memory_mib"]
            lines += [
                "",
                f"A second served model ({appliance['other_model_workers']} worker) adds "
                f"{extra['usage_mib']:,.0f} MiB usage ({extra['rss_mib']:,.0f} RSS, {extra['pss_mib']:,.0f} PSS); "
                "the idle appliance with two models, per container:",
                "",
            ]
            two = appliance["two_models_idle_memory_mib"]
            lines += memory_table(two, appliance["two_models_idle_memory_total_mib"])
        lines += [
            "",
            f"For comparison: Kubeflow recommends 16 GB RAM and 8 cores (kubeflow/manifests README); "
            f"ClearML server 8 GB. Cold `up` to all healthy (images built): {appliance['cold_up_to_healthy_s']} s. "
            f"Swap phases (s): {', '.join(f'{k} {v}' for k, v in appliance['swap_phases_s'].items())}.",
        ]
    if pipeline:
        lines += [
            "",
            f"Pipeline, {pipeline['epochs']} epochs, median of {pipeline['repeats']}: plain script "
            f"{pipeline['plain_script_median_s']} s, Prefect + MLflow flow {pipeline['flow_median_s']} s "
            f"(difference {pipeline['flow_overhead_s']:+.2f} s; the flow adds tracking, two logged models, "
            "registration and the evaluation report).",
        ]
    return lines


def plots(data: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    serving = data.get("serving")
    if serving:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for axis, request in zip(axes, REQUESTS, strict=True):
            servers = [s for s in SERVERS if any(r["server"] == s and r["request"] == request for r in serving["runs"])]
            for index, server in enumerate(servers):
                rows = sorted(
                    (r for r in serving["runs"] if r["server"] == server and r["request"] == request),
                    key=lambda r: r["connections"],
                )
                positions = [i + index * 0.8 / len(servers) for i in range(len(rows))]
                axis.bar(positions, [r["rps"] for r in rows], width=0.8 / len(servers), label=server)
            axis.set_xticks([i + 0.4 - 0.4 / len(servers) for i in range(3)], ["1 client", "8 clients", "64 clients"])
            axis.set_title(REQUESTS[request])
            axis.set_ylabel("requests/s")
            axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(RESULTS / "serving.png", dpi=110)
        made.append("serving.png")
        plt.close(figure)
    appliance = data.get("appliance")
    if appliance:
        figure, axis = plt.subplots(figsize=(6, 3.2))
        memory = appliance["idle_memory_mib"]
        names = sorted(memory)
        left = 0.0
        for name in names:
            width = memory[name]["usage_mib"] / 1024
            axis.barh(["onebox (idle)"], [width], left=left, label=name)
            left += width
        axis.barh(["ClearML server (recommended)"], [8], color="grey")
        axis.barh(["Kubeflow (recommended)"], [16], color="grey")
        axis.set_xlabel("GiB of memory")
        axis.legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        figure.savefig(RESULTS / "memory.png", dpi=110)
        made.append("memory.png")
        plt.close(figure)
    return made


def memory_table(memory: dict[str, dict[str, float]], total: dict[str, float]) -> list[str]:
    """Markdown rows: each container's idle memory (MiB), then the sum."""
    lines = ["| container | usage | RSS | PSS |", "|---|---|---|---|"]
    for name, row in sorted(memory.items()):
        rss, pss = row.get("rss_mib", 0), row.get("pss_mib", 0)
        lines.append(f"| {name} | {row['usage_mib']:,.0f} | {rss:,.0f} | {pss:,.0f} |")
    lines.append(f"| **all** | **{total['usage_mib']:,.0f}** | {total['rss_mib']:,.0f} | {total['pss_mib']:,.0f} |")
    return lines


def summary(data: dict[str, Any]) -> str:
    lines = []
    when = next((d["date"] for d in data.values() if d and "date" in d), "?")
    machine = next((d["machine"] for d in data.values() if d and "machine" in d), "?")
    lines += [f"Latest `make bench`: {when}, {machine}.", ""]
    lines += targets_table(data)
    if data.get("serving"):
        lines += ["", *serving_table(data["serving"])]
    lines += other_tables(data)
    lines += [
        "",
        *[
            f"![{name}](benchmarks/results/{name})"
            for name in ("serving.png", "memory.png")
            if (RESULTS / name).is_file()
        ],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    names = (
        "appliance",
        "serving",
        "prediction_log",
        "runtimes",
        "pipeline",
        "cli",
        "cli-before",
        "dataset_import",
        "training",
    )
    data = {name: _load(name) for name in names}
    plots(data)
    text = summary(data)
    (RESULTS / "summary.md").write_text(text)
    readme = README.read_text()
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        README.write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])
    print(text)


if __name__ == "__main__":
    main()
