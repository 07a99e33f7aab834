"""The `w4tui` command: the TUI by default, and a headless CLI over the same runner.

Exit codes: 0 ok, 1 a stage or action failed, 2 a usage or config mistake, 3 a run crashed,
130 cancelled / interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core import evaltable, specs
from core.config import SHARDS, Config, load_config
from core.errors import EXIT_BY_STATUS, EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, ActionableError
from core.names import EventKind, RunStatus
from core.ollama import promote as op
from core.ollama.client import OllamaError, unload_all
from core.program import report_error
from core.units import duration
from w4tui import adapter_import
from w4tui.nightly.cli import COMMANDS as NIGHTLY_COMMANDS
from w4tui.nightly.cli import add_commands as add_nightly_commands
from w4tui.report import config_lines, result, status_lines
from w4tui.runs.estimate import eta_first
from w4tui.runs.follow import follow, follow_log, follow_pipeline
from w4tui.runs.pipeline import run_pipeline, stage_range
from w4tui.runs.pipeline_job import command
from w4tui.runs.runner import Run, RunError, Runner
from w4tui.runs.start import checked_start


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $W4TUI_CONFIG, else the embedded config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="w4tui",
        parents=[common],
        description="Fine-tune Qwen2.5-Coder into the Web4 agent and serve it with "
        "Ollama. Without a command, opens the TUI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="start one stage (detached); follow its progress")
    run.add_argument("stage", choices=specs.RUNNABLE)
    run.add_argument("--wait", action="store_true", help="follow to the end; exit with the stage's result")
    run.add_argument(
        "--force", action="store_true", help="start even when the pre-flight checks (disk, memory, one training) refuse"
    )
    run.add_argument(
        "--no-defaults", action="store_true", help="pass only the arguments after -- (no defaults from the config)"
    )
    run.add_argument(
        "--eta", action="store_true", help="train: measure how long it would take first, then ask before starting"
    )
    run.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="train: N ranks under torchrun, one per GPU (default: [train] gpus); the same as -- --gpus N",
    )
    run.add_argument(
        "--shard",
        choices=SHARDS,
        help="train with --gpus: ddp (the whole base on every GPU) or fsdp (1/N each, for a base that does not "
        "fit one GPU; default: [train] shard); the same as -- --shard X",
    )
    run.epilog = (
        "Stage arguments go after --, e.g. w4tui run train -- --epochs 3: each replaces the same flag "
        "of the defaults from the config; the others stay."
    )

    sub.add_parser("runs", parents=[common], help="list runs, newest first")
    status = sub.add_parser("status", parents=[common], help="what is running and how the last runs ended")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    logs = sub.add_parser("logs", parents=[common], help="print a run's output.log")
    logs.add_argument("run", nargs="?", default="last", help="run id, unique prefix, stage name or 'last'")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a run (SIGINT, escalating after a grace period)")
    cancel.add_argument("run")
    pipe = sub.add_parser(
        "pipeline",
        parents=[common],
        help="run the stages in order as one detached job, followed here (Ctrl-C detaches)",
    )
    pipe.add_argument("--from", dest="start", choices=specs.NAMES, help="first stage (default: download)")
    pipe.add_argument("--to", dest="stop", choices=specs.NAMES, help="last stage (default: verify)")
    demo = sub.add_parser("demo", parents=[common], help="create the offline demo and open the TUI on it")
    demo.add_argument("action", nargs="?", choices=["init"], help="init: only create it")
    demo.add_argument("dir", nargs="?", help="where (default: ~/.local/share/w4tui/demo)")
    sub.add_parser("rollback", parents=[common], help="make the previous Ollama build 'latest' again")
    sub.add_parser("unload", parents=[common], help="unload every model Ollama has in memory (keep_alive=0)")
    evaluate = sub.add_parser(
        "eval", parents=[common], help="measure what conversion and each quantization cost; print the table"
    )
    evaluate.add_argument("build", nargs="?", help="a GGUF file or a build name (default: the newest quantized build)")
    sub.add_parser("config", parents=[common], help="check the config; print each value in effect and its file")
    adapter = sub.add_parser("adapter", parents=[common], help="bring home an adapter trained on another machine")
    adapter_sub = adapter.add_subparsers(dest="adapter_command", metavar="ACTION", required=True)
    imp = adapter_sub.add_parser(
        "import", parents=[common], help="check and copy in an adapter folder or host:path (rsync over ssh)"
    )
    imp.add_argument("source", help="the adapter's folder, or host:path on the GPU box")
    imp.add_argument("--name", help="its name under outputs/adapters and its build tag (default: imported-<time>-...)")
    build = adapter_sub.add_parser(
        "build", parents=[common], help="convert, quantize, deploy, verify and promote an imported adapter"
    )
    build.add_argument("name", help="the imported adapter's name")
    add_nightly_commands(sub, common)  # schedule, nightly, daemon
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" belongs to the stage, untouched by our parser.
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    args.stage_args = argv[split + 1 :]
    try:
        if args.command == "demo":
            return cmd_demo(args)
        config = load_config(getattr(args, "config", None))
        handler = COMMANDS.get(args.command or "tui")
        code = handler(config, args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
        return code
    except ActionableError as exc:  # a config or usage mistake, a refused run (2), Ollama down (1)
        report_error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except BrokenPipeError:
        # `w4tui runs | head`: the reader has gone, the rest is not wanted. stdout goes to /dev/null so the
        # interpreter's last flush does not fail again (as Python's signal module docs advise).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def cmd_tui(config: Config, args: argparse.Namespace) -> int:
    from w4tui.ui.app import run_tui  # Textual only for the TUI, not for the headless commands

    return run_tui(config)


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    runner = Runner(config)
    if args.gpus is not None:
        if args.stage != "train" or args.gpus < 1:
            print("error: --gpus N (N at least 1) is for w4tui run train", file=sys.stderr)
            return EXIT_USAGE
        args.stage_args = [*args.stage_args, "--gpus", str(args.gpus)]
    if args.shard is not None:
        if args.stage != "train":
            print("error: --shard is for w4tui run train", file=sys.stderr)
            return EXIT_USAGE
        args.stage_args = [*args.stage_args, "--shard", args.shard]
    if args.eta:  # the measured ETA first (w4tui/runs/estimate.py); None: start as asked
        if (code := eta_first(runner, args.stage, args.stage_args, no_defaults=args.no_defaults)) is not None:
            return code
    inv = (
        runner.invocation(args.stage, args=args.stage_args)
        if args.no_defaults
        else runner.invocation(args.stage, args.stage_args)
    )
    run = checked_start(runner, inv, force=args.force)
    print(f"started {args.stage}: run {run.id} (pid {run.pid}); logs: {config.cli} logs {run.id}", flush=True)
    if (shape := run.record.get("train")) and shape["ranks"] > 1:
        print(
            f"{shape['ranks']} ranks x batch {shape['batch_size']} x accumulation {shape['gradient_accumulation']}"
            f" = global batch {shape['global_batch']}",
            flush=True,
        )
    for event in run.events():  # pre-flight warnings (on battery): said here too, not only in the events
        if event.get("kind") == EventKind.LOG and event.get("source") == "preflight":
            print(f"warning: {event.get('message')}", file=sys.stderr, flush=True)
    if not args.wait and not sys.stdout.isatty():
        return 0
    try:
        status = follow(runner, run)
    except KeyboardInterrupt:
        print(
            f"\ndetached; {args.stage} keeps running. Follow again: {config.cli} logs -f {run.id}; "
            f"stop it: {config.cli} cancel {run.id}"
        )
        return EXIT_CANCELLED if args.wait else 0
    ended = runner.get(run.id)
    _print_end(ended)
    if not args.wait:
        return 0
    # A stage's usage mistake (a bad flag after --) is this command's usage mistake too: exit 2.
    return (
        EXIT_USAGE
        if status == RunStatus.FAILED and ended.record.get("exit_code") == EXIT_USAGE
        else EXIT_BY_STATUS.get(status, 1)
    )


def _print_end(run: Run) -> None:
    print(f"{run.stage} {run.status} ({run.id})")
    error = run.error()
    if run.status in (RunStatus.FAILED, RunStatus.CRASHED):
        if error:
            print(f"error: {error.get('message')}" + (f" ({error['hint']})" if error.get("hint") else ""))
        print("\n".join(["-- last lines of output.log:", *run.log_tail(10)]))


def cmd_runs(config: Config, args: argparse.Namespace) -> int:
    runs = Runner(config).runs()
    if not runs:
        print(f"no runs yet in {config.paths.runs}")
    for run in runs:
        took = (run.ended or time.time()) - run.started
        # A night or a pipeline writes no output of its own: how it ended instead (its events are short).
        what = run.output or (
            result(run, run.events(), config.base_dir) if run.stage in ("nightly", "pipeline") else ""
        )
        print(
            f"{run.id:<34} {run.stage:<9} {run.status:<10} {time.strftime('%Y-%m-%d %H:%M', time.localtime(run.started))}"
            f"  {duration(took):>7}  {what}"
        )
    return 0


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    runs = Runner(config).runs()
    if args.json:
        print(json.dumps({"config": str(config.file), "runs": [r.summary() for r in runs]}, indent=2))
        return 0

    print("\n".join(status_lines(runs, config, time.time())))
    return 0


def cmd_logs(config: Config, args: argparse.Namespace) -> int:
    runner = Runner(config)
    run = runner.get(args.run)
    if args.follow:
        follow_log(run, runner)
    else:
        try:
            sys.stdout.write(run.log_path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            pass
    return 0


def cmd_cancel(config: Config, args: argparse.Namespace) -> int:
    run = Runner(config).cancel(args.run)
    grace = run.record.get("cancel_grace_s", 120)
    print(f"cancelling {run.stage} run {run.id}: SIGINT sent; it is stopped for good after {grace:.0f} s")
    return 0


def cmd_pipeline(config: Config, args: argparse.Namespace) -> int:
    """The pipeline as a detached job (it survives this terminal), followed here; Ctrl-C detaches."""
    stages = stage_range(args.start, args.stop)
    runner = Runner(config)
    job = runner.start_command("pipeline", command(str(config.file), args.start, args.stop))
    print(
        f"pipeline started: {' > '.join(stages)} (run {job.id}; it keeps running if this terminal closes)", flush=True
    )
    try:
        status = follow_pipeline(runner, job)
    except KeyboardInterrupt:
        print(
            f"\ndetached; the pipeline keeps running. Follow again: {config.cli} logs -f {job.id}; "
            f"stop it: {config.cli} cancel {job.id}"
        )
        return EXIT_CANCELLED
    print(f"pipeline {status}" + (f": {' > '.join(stages)}" if status == RunStatus.SUCCEEDED else ""))
    return EXIT_BY_STATUS.get(status, 1)


def cmd_adapter(config: Config, args: argparse.Namespace) -> int:
    if args.adapter_command == "import":
        try:
            path = adapter_import.import_adapter(config, args.source, args.name)
        except adapter_import.ImportError_ as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"imported {path} (lineage: {path / adapter_import.LINEAGE})")
        print(
            f"next: {config.cli} adapter build {path.name}  (convert > quantize > deploy > verify --promote; "
            "once promoted, the nightly loop continues from it)"
        )
        return 0

    if not (config.paths.outputs / "adapters" / args.name / "adapter_config.json").is_file():
        print(f"error: no adapter {args.name} in {config.paths.outputs / 'adapters'}", file=sys.stderr)
        return EXIT_USAGE

    def said(event) -> None:
        if event.kind == "started":
            print(f"[{event.index + 1}/{event.total}] {event.stage}: run {event.run_id}", flush=True)
        elif event.status != RunStatus.SUCCEEDED:
            print(f"{event.stage} {event.status}" + (f": {event.error}" if event.error else ""), flush=True)

    ended = run_pipeline(Runner(config), adapter_import.chain(config, args.name), said, build=args.name)
    status = ended[-1].status if ended else RunStatus.FAILED
    if status == RunStatus.SUCCEEDED and len(ended) == len(adapter_import.chain(config, args.name)):
        print(f"{args.name} is built, verified and promoted; the next night continues from it")
        return 0
    return EXIT_BY_STATUS.get(status, EXIT_FAILED)


def cmd_rollback(config: Config, args: argparse.Namespace) -> int:
    try:
        print(op.rollback(config))
    except OllamaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_unload(config: Config, args: argparse.Namespace) -> int:
    try:
        unloaded = unload_all(config)
    except OllamaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("unloaded: " + ", ".join(unloaded) if unloaded else "nothing loaded")
    return 0


def cmd_eval(config: Config, args: argparse.Namespace) -> int:
    """The eval stage on a build, followed to the end, then its table (the run's arguments after --)."""
    runner = Runner(config)
    inv = runner.invocation("eval", args.stage_args, input_path=_build_gguf(config, args.build) if args.build else None)
    run = checked_start(runner, inv)
    print(f"started eval: run {run.id} (pid {run.pid}); logs: {config.cli} logs {run.id}", flush=True)
    try:
        status = follow(runner, run)
    except KeyboardInterrupt:
        print(f"\ndetached; eval keeps running. Follow again: {config.cli} logs -f {run.id}")
        return EXIT_CANCELLED
    finished = runner.get(run.id)
    report = next((a["path"] for a in reversed(finished.artifacts()) if a.get("type") == "eval"), None)
    doc = evaltable.read(report) if report and status == RunStatus.SUCCEEDED else None
    if doc is None:
        _print_end(finished)
        return EXIT_BY_STATUS.get(status, 1)
    print("\n".join(evaltable.format_table(doc)))
    return 0


def _build_gguf(config: Config, build: str) -> str:
    """BUILD as a GGUF file, or the F16 GGUF of the build of that name in <outputs>/gguf."""
    if Path(build).is_file():
        return str(Path(build).resolve())
    found = sorted((config.paths.outputs / "gguf").glob(f"{build}-*.gguf"))
    f16 = [p for p in found if p.name.lower().endswith(("-f16.gguf", "-bf16.gguf", "-f32.gguf"))]
    if not (f16 or found):
        raise RunError(f"no build '{build}': not a GGUF file, and no {build}-*.gguf in {config.paths.outputs / 'gguf'}")
    return str((f16 or found)[0])


def cmd_config(config: Config, args: argparse.Namespace) -> int:
    print("\n".join(config_lines(config, dict(os.environ))))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from w4tui.demo.workspace import default_demo_dir, init_demo  # numpy (the tiny model): only for `demo`

    directory = Path(args.dir) if args.dir else default_demo_dir()
    config_file = directory / "config.toml"
    if args.action == "init":
        try:
            path = init_demo(directory)
        except FileExistsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"demo ready: {path}\n  next: w4tui --config {path}\n        w4tui --config {path} pipeline --to quantize"
        )
        return 0
    if not config_file.exists():
        config_file = init_demo(directory)
        print(f"demo created in {config_file.parent}")
    return cmd_tui(load_config(config_file), args)


COMMANDS = {
    "tui": cmd_tui,
    "run": cmd_run,
    "runs": cmd_runs,
    "status": cmd_status,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "pipeline": cmd_pipeline,
    "rollback": cmd_rollback,
    "adapter": cmd_adapter,
    "unload": cmd_unload,
    "config": cmd_config,
    "eval": cmd_eval,
    **NIGHTLY_COMMANDS,
}
