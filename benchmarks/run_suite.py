"""Run the benchmark suite in dependency order and record what ran (benchmarks/results/suite_run.json).

    .venv/bin/python benchmarks/run_suite.py --list                     # steps in order, what each reads/writes
    .venv/bin/python benchmarks/run_suite.py --dry-run                  # the commands, nothing run
    .venv/bin/python benchmarks/run_suite.py                            # every suite step (hours on 2 cores)
    .venv/bin/python benchmarks/run_suite.py --only int8_peak --keep-going
    .venv/bin/python benchmarks/run_suite.py --from quantize_pruned_liver
    .venv/bin/python benchmarks/run_suite.py --studies                  # the studies too

A step is one command: a script of benchmarks/suite/ or benchmarks/studies/ with the arguments that
produce one result file, or an `edgemed` command between them (the INT8 build of the pruned student,
its profile). Each step declares the result files and run folders it reads and writes; a step runs
after every step that writes something it reads, so the order below is derived, not hand-kept. A
selected step whose input is missing pulls in the step that writes it, studies included (the suite's
liver steps start from the students of benchmarks/studies/cross_scan.py --tag final).

Stops at the first failure unless `--keep-going` (then steps that need a failed one are skipped).
GPU steps are skipped where `nvidia-smi` is missing unless named with `--only`. Exit status: 0 when
every step that ran passed, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import glob
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import DATA, RESULTS, ROOT, write_result  # noqa: E402

SUITE, STUDY, CLI = "suite", "study", "edgemed"
R = "benchmarks/results"
WITHIN = 'augment={"scale":[0.9,1.1],"aspect":0,"elastic":0,"organ_contrast":0,"context_truncate":0}'
CT = "{data}/totalseg/example_ct.nii.gz"
SEG = "{data}/totalseg/example_seg_fast_force_split.nii.gz"
PRUNED = "runs/prune_liver/pruned_kd.edgemed"
PRUNED_INT8 = "runs/prune_liver/pruned_kd_int8.edgemed"
#: The default liver students of seeds 0-4 (cross_scan.py --tag final); paths are listed, not globbed, so that
#: a missing one is noticed.
FINAL = tuple(f"runs/cross_scan/final_s{seed}" for seed in range(5))


@dataclass(frozen=True)
class Step:
    """One command of the suite and the files/run folders (repo-relative, globs allowed) it reads and writes."""

    name: str
    kind: str
    argv: tuple[str, ...]
    writes: tuple[str, ...]
    reads: tuple[str, ...] = ()
    gpu: bool = False
    collect: tuple[tuple[str, str], ...] = ()  # (from, to) copied after success: results kept from a run folder

    @property
    def script(self) -> str:
        """The benchmark script this step runs, or the edgemed command."""
        found = [a for a in self.argv if a.startswith("benchmarks/") and a.endswith((".py", ".sh"))]
        return found[0] if found else " ".join(("edgemed", *(a for a in self.argv[3:5] if not a.startswith(("runs/", "-")))))

    def command(self) -> list[str]:
        """argv with {python} and {data} filled in and run-folder globs resolved (to one match each)."""
        out = []
        for arg in self.argv:
            arg = arg.replace("{python}", sys.executable).replace("{data}", str(DATA))
            if "*" in arg and not arg.startswith("--"):
                matches = sorted(glob.glob(arg, root_dir=ROOT))
                arg = matches[0] if len(matches) == 1 else arg  # left as is: the step fails and says so
            out.append(arg)
        return out


def _py(name: str, kind: str, script: str, *args: str, writes: tuple[str, ...], reads: tuple[str, ...] = (),
        **kw: object) -> Step:
    folder = "suite" if kind == SUITE else "studies"
    return Step(name, kind, ("{python}", f"benchmarks/{folder}/{script}", *args), writes, reads, **kw)  # type: ignore[arg-type]


def _cli(name: str, *args: str, writes: tuple[str, ...], reads: tuple[str, ...] = (), **kw: object) -> Step:
    return Step(name, SUITE, ("{python}", "-m", "edgemed", *args), writes, reads, **kw)  # type: ignore[arg-type]


def _pytest(name: str, test_file: str) -> Step:
    return Step(name, SUITE, ("{python}", "-m", "pytest", f"benchmarks/suite/{test_file}", "--benchmark-only", "-q",
                              "-p", "no:cacheprovider", f"--benchmark-json=runs/benchmarks/{name}.pytest.json",
                              f"--edgemed-result={R}/{name}.json"), (f"{R}/{name}.json", f"runs/benchmarks/{name}.*"))


def _screenshot(name: str, run: str, png: str) -> Step:
    return _py(name, SUITE, "report_screenshot.py", f"runs/{run}/report.html", "--out", f"{R}/{png}.png",
               "--result", f"{R}/{png}.screenshot.json", reads=(f"runs/{run}/report.html",),
               writes=(f"{R}/{png}.png", f"{R}/{png}.screenshot.json"))


def _distill(name: str, *args: str) -> Step:
    return _py(name, SUITE, "distill_totalseg.py", *args, "--out", f"{R}/{name}.json", writes=(f"{R}/{name}.json",))


def _compress(tag: str) -> Step:
    name, run = ("compress_totalseg", "totalseg_4organs") if not tag else \
        (f"compress_totalseg_{tag}", f"totalseg_4organs_{tag}")
    recipe = f"benchmarks/suite/recipes/{run}.toml"
    args = ("--recipe", recipe) + (("--tag", tag) if tag else ())
    return _py(name, SUITE, "compress_totalseg.py", *args, reads=(recipe,),
               writes=(f"{R}/{name}.json", f"{R}/{name}_pareto.png", f"runs/{run}"))


#: The registry, in the order a reader meets the results; `ordered()` derives the run order from reads/writes.
STEPS: tuple[Step, ...] = (
    _distill("distill_totalseg"),
    _distill("distill_totalseg_kidneys", "--organs", "kidney_left", "kidney_right", "--epochs", "100"),
    _distill("distill_totalseg_within_s0", "--organs", "liver", "--epochs", "100", "--seed", "0",
             "--set", WITHIN, "threads=1"),
    _distill("distill_totalseg_within_s1", "--organs", "liver", "--epochs", "100", "--seed", "1",
             "--set", WITHIN, "threads=1"),
    _distill("distill_totalseg_joint4", "--joint", "--epochs", "100", "--set", WITHIN, "threads=2"),
    _py("distill_distributed", SUITE, "distill_distributed.py", writes=(f"{R}/distill_distributed.json",)),
    _compress(""),
    _compress("quick"),
    _compress("full"),
    _compress("joint"),
    _py("recipes_check", SUITE, "recipes_check.py", "--recipes", "totalseg_4organs_quick", "--repeat", "2",
        "--seeds", "0", "1", writes=(f"{R}/recipes_check.json", "runs/check")),
    _py("recipes_check_default", SUITE, "recipes_check.py", "--recipes", "totalseg_4organs", "--repeat", "2",
        "--seeds", "0", "1", "--out", f"{R}/recipes_check_default.json",
        writes=(f"{R}/recipes_check_default.json", "runs/check/totalseg_4organs_s0_r0", "runs/check/totalseg_4organs_s0_r1",
                "runs/check/totalseg_4organs_s1_r0")),
    _py("runoff_repeat", SUITE, "runoff_repeat.py", "runs/check/totalseg_4organs_s0_r1", "runs/check/totalseg_4organs_s1_r0",
        "--repeats", "3", reads=("runs/check/totalseg_4organs_s0_r1", "runs/check/totalseg_4organs_s1_r0"),
        writes=(f"{R}/runoff_repeat.json",)),
    _py("readme_commands", SUITE, "readme_commands.py", writes=(f"{R}/readme_commands.json", "runs/readme")),
    _screenshot("report_screenshot", "totalseg_4organs", "compress_totalseg_report"),
    _screenshot("report_screenshot_full", "totalseg_4organs_full", "compress_totalseg_full_report"),
    _screenshot("report_screenshot_joint", "totalseg_4organs_joint", "compress_totalseg_joint_report"),
    _py("cross_scan_final", STUDY, "cross_scan.py", "--tag", "final",
        writes=(f"{R}/cross_scan_final.json", *FINAL)),
    _py("cross_scan_final_s5", STUDY, "cross_scan.py", "--tag", "final", "--seeds", "5",
        "--out", f"{R}/cross_scan_final_s5.json", writes=(f"{R}/cross_scan_final_s5.json", "runs/cross_scan/final_s5")),
    _py("cross_scan_final_ens2", STUDY, "cross_scan.py", "--tag", "final", "--pool", "2",
        reads=tuple(f"runs/cross_scan/final_s{seed}/student" for seed in range(6)),
        writes=(f"{R}/cross_scan_final_ens2.json", "runs/cross_scan/final_ens2_s*")),
    _py("cross_scan_flat", STUDY, "cross_scan.py", "--tag", "flat", "--seeds", "3", "0",
        "--set", 'augment={"context_flat":0.25}', writes=(f"{R}/cross_scan_flat.json", "runs/cross_scan/flat_s*")),
    _py("prune_liver", SUITE, "prune_liver.py", "--prune-head-inputs",
        reads=("runs/cross_scan/final_s0/student",),
        writes=(f"{R}/prune_liver.json", "runs/prune_liver/pruned", "runs/prune_liver/pruned_kd",
                "runs/prune_liver/unpruned.edgemed", PRUNED)),
    _py("prune_liver_seeds", SUITE, "prune_liver.py", "--seeds", "0", "1", "2", "3", "4", "--prune-head-inputs",
        reads=tuple(f"{d}/student" for d in FINAL), writes=(f"{R}/prune_liver_seeds.json", "runs/prune_liver_s*")),
    _cli("quantize_pruned_liver", "quantize", PRUNED, "--scans", CT, "--out", PRUNED_INT8,
         reads=(PRUNED,), writes=(PRUNED_INT8,)),
    _py("int8_peak", SUITE, "int8_peak.py", reads=(PRUNED, PRUNED_INT8), writes=(f"{R}/int8_peak.json",)),
    _py("reference_teacher", SUITE, "reference_teacher.py", writes=(f"{R}/reference_teacher.json",)),
    _py("reference_teacher_pruned_int8", SUITE, "reference_teacher.py", "--bundle", PRUNED_INT8,
        "--out", f"{R}/reference_teacher_pruned_int8.json", reads=(PRUNED_INT8,),
        writes=(f"{R}/reference_teacher_pruned_int8.json",)),
    _cli("profile_pruned_int8", "measure", "profile", PRUNED_INT8, "--scan", CT, "--teacher-predictions", SEG,
         "--out", "runs/profile_pruned_int8", reads=(PRUNED_INT8,),
         writes=("runs/profile_pruned_int8", f"{R}/profile_pruned_int8"),
         collect=(("runs/profile_pruned_int8/report.json", f"{R}/profile_pruned_int8/report.json"),
                  ("runs/profile_pruned_int8/report.md", f"{R}/profile_pruned_int8/report.md"))),
    _py("quantize_liver", SUITE, "quantize_liver.py",
        reads=("runs/cross_scan/final_s0/bundle", "runs/cross_scan/final_s0/student", f"{R}/reference_teacher.json"),
        writes=(f"{R}/quantize_liver.json",)),
    _py("quantize_liver_qat", SUITE, "quantize_liver.py", "--flows", "nncf_ptq_plain_openvino", "nncf_qat_openvino",
        "--out", f"{R}/quantize_liver_qat.json",
        reads=("runs/cross_scan/final_s0/bundle", "runs/cross_scan/final_s0/student", f"{R}/reference_teacher.json"),
        writes=(f"{R}/quantize_liver_qat.json",)),
    _py("predict_latency", SUITE, "predict_latency.py",
        writes=(f"{R}/predict_latency.json", "src/edgemed/measure/calibrations/calibration_host_*.json",
                "runs/predict_latency")),
    _py("gate_study", SUITE, "gate_study.py", "--runs", "20", writes=(f"{R}/gate_study.json",)),
    # Beside one busy process during all 20 runs (the models and baseline are made on the quiet machine first).
    _py("gate_study_busy1", SUITE, "gate_study.py", "--runs", "20", "--busy", "1",
        writes=(f"{R}/gate_study_busy1.json",)),
    _py("fuzz_loaders", SUITE, "fuzz_loaders.py", writes=(f"{R}/fuzz_loaders.json",)),
    _py("segment_memory", SUITE, "segment_memory.py", writes=(f"{R}/segment_memory.json", "runs/segment_memory")),
    _py("busy_machine", SUITE, "busy_machine.py",
        writes=(f"{R}/busy_machine.json", "runs/busy_machine")),
    _py("demo_seeds", SUITE, "demo_seeds.py", "--seeds", "0", "1", "2", "--busy-seed", "0", "--distill-real",
        writes=(f"{R}/demo_seeds.json", "runs/demo_seeds")),
    _py("qc_cases", SUITE, "qc_cases.py", writes=(f"{R}/qc_cases.json", "runs/qc")),
    _py("dicom_node", SUITE, "dicom_node.py", reads=("runs/segment_memory",),
        writes=(f"{R}/dicom_node.json", "runs/dicom_node")),
    _pytest("zoo_bench", "test_zoo_bench.py"),
    _pytest("pipeline_bench", "test_pipeline_bench.py"),
    Step("gpu_trt_check", SUITE, ("bash", "benchmarks/suite/gpu_trt_check.sh", f"{R}/gpu_trt_check.json"),
         (f"{R}/gpu_trt_check.json",), gpu=True),
    _py("dcmqi_boundary", STUDY, "dcmqi_boundary.py", PRUNED, "runs/prune_liver_s3/pruned_kd.edgemed",
        "runs/prune_liver_s4/pruned_kd.edgemed", "runs/cross_scan/final_s0/bundle", "runs/cross_scan/final_s3/bundle",
        reads=(PRUNED, "runs/prune_liver_s3/pruned_kd.edgemed", "runs/prune_liver_s4/pruned_kd.edgemed",
               "runs/cross_scan/final_s0/bundle", "runs/cross_scan/final_s3/bundle"),
        writes=(f"{R}/dcmqi_boundary.json",)),
    _py("dcmqi_probes", STUDY, "dcmqi_probes.py", "--joint-run", "runs/totalseg_4organs_joint",
        reads=(*(f"{d}/bundle" for d in FINAL), "runs/totalseg_4organs_joint"), writes=(f"{R}/dcmqi_probes.json",)),
    _py("prune_joint", STUDY, "prune_joint.py", "--parent", "runs/totalseg_4organs_joint/stages/distill-*/artifact",
        reads=("runs/totalseg_4organs_joint",), writes=(f"{R}/prune_joint.json",)),
)


def _overlaps(a: str, b: str) -> bool:
    """Whether two repo paths name the same file or one lies inside the other (`*` globs allowed on one side)."""
    pa, pb = a.split("/"), b.split("/")
    return all(fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x) for x, y in zip(pa, pb))


def needs(step: Step, steps: tuple[Step, ...] = STEPS) -> list[Step]:
    """The steps that write something `step` reads."""
    return [s for s in steps if s is not step and any(_overlaps(r, w) for r in step.reads for w in s.writes)]


def ordered(steps: tuple[Step, ...] = STEPS) -> list[Step]:
    """`steps` sorted so that every step comes after the steps it needs (registry order otherwise)."""
    done: list[Step] = []
    pending = list(steps)
    while pending:
        ready = next((s for s in pending if all(n in done for n in needs(s, steps))), None)
        if ready is None:
            raise SystemExit(f"dependency cycle among: {', '.join(s.name for s in pending)}")
        done.append(ready)
        pending.remove(ready)
    return done


def _missing(path: str) -> bool:
    return not glob.glob(path, root_dir=ROOT)


def select(args: argparse.Namespace) -> list[Step]:
    """The steps to run, in order: --only/--studies/--from, plus the writers of inputs that are missing.

    Raises:
        ValueError: A step name that is not in the registry; names the closest one.
    """
    order = ordered()
    by_name = {s.name: s for s in order}
    by_script: dict[str, list[Step]] = {}
    for step in order:
        by_script.setdefault(Path(step.script).stem.removeprefix("test_"), []).append(step)
    for name in [*(args.only or []), *([args.from_] if args.from_ else [])]:
        if name not in by_name and (name == args.from_ or name.removeprefix("test_") not in by_script):
            hint = difflib.get_close_matches(name, by_name, n=1)
            raise ValueError(f"unknown step {name!r}{f'; did you mean {hint[0]!r}' if hint else ''} "
                             "(--list shows them)")
    # --only takes step names, or script names for all of a script's steps (`--only cross_scan`).
    chosen = {s for n in args.only for s in ([by_name[n]] if n in by_name else by_script[n.removeprefix("test_")])} \
        if args.only else {s for s in order if s.kind == SUITE or args.studies}
    if args.from_:
        start = order.index(by_name[args.from_])
        chosen = {s for s in chosen if order.index(s) >= start} | {by_name[args.from_]}
    frontier = list(chosen)
    while frontier:  # a missing input pulls in its writer (and, through it, the writer's missing inputs)
        step = frontier.pop()
        for dep in needs(step):
            missing = [r for r in step.reads if _missing(r) and any(_overlaps(r, w) for w in dep.writes)]
            if dep not in chosen and missing:
                print(f"adding {dep.name}: {step.name} reads {missing[0]}, which is missing", file=sys.stderr)
                chosen.add(dep)
                frontier.append(dep)
    return [s for s in order if s in chosen]


def print_list() -> None:
    for i, step in enumerate(ordered(), 1):
        after = ", ".join(n.name for n in needs(step)) or "-"
        gpu = " [gpu]" if step.gpu else ""
        print(f"{i:>2}. {step.name:<30} {step.kind:<6} {step.script}{gpu}\n"
              f"      after: {after}\n      writes: {', '.join(step.writes)}")


def _record(steps: list[dict[str, object]], args: argparse.Namespace, started: float) -> None:
    config = {"only": args.only, "from": args.from_, "studies": args.studies, "keep_going": args.keep_going,
              "selected": [s["name"] for s in steps], "python": sys.executable, "data": str(DATA)}
    metrics = {"steps": steps, "seconds": round(time.perf_counter() - started, 1),
               "failed": [s["name"] for s in steps if s["status"] == "failed"],
               "complete": all(s["status"] in ("passed", "skipped") for s in steps)}
    write_result(RESULTS / "suite_run.json", benchmark="suite_run", script=__file__, config=config, metrics=metrics)


def run(steps: list[Step], args: argparse.Namespace) -> int:
    """Run `steps` in order, writing suite_run.json after each; 0 when all that ran passed."""
    started = time.perf_counter()
    rows: list[dict[str, object]] = [{"name": s.name, "script": s.script, "command": shlex.join(s.command()),
                                      "status": "pending", "exit_code": None, "seconds": None} for s in steps]
    failed: set[str] = set()
    has_gpu = shutil.which("nvidia-smi") is not None
    for step, row in zip(steps, rows):
        blocked = [n.name for n in needs(step) if n.name in failed]
        if step.gpu and not has_gpu and step.name not in (args.only or []):
            row.update(status="skipped", reason="no NVIDIA GPU here (nvidia-smi not found)")
        elif blocked:
            row.update(status="skipped", reason=f"needs {', '.join(blocked)}, which failed")
            failed.add(step.name)
        else:
            command = step.command()  # now: globs name run folders that earlier steps made
            row["command"] = shlex.join(command)
            print(f"== {step.name}: {row['command']}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            code = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
            for src, dst in step.collect if code == 0 else ():
                if not (ROOT / src).is_file():
                    print(f"{step.name} passed but did not write {src}", file=sys.stderr)
                    code = 1
                    continue
                (ROOT / dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / src, ROOT / dst)
            row.update(status="passed" if code == 0 else "failed", exit_code=code,
                       seconds=round(time.perf_counter() - t0, 1))
            print(f"== {step.name}: exit {code} after {row['seconds']} s", file=sys.stderr, flush=True)
            if code != 0:
                failed.add(step.name)
        _record(rows, args, started)
        if step.name in failed and not args.keep_going:
            print(f"stopped after {step.name} failed (--keep-going runs the rest)", file=sys.stderr)
            break
    print(f"wrote {RESULTS / 'suite_run.json'}")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the steps in run order and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these steps, or all steps of these scripts (and missing inputs' writers)")
    parser.add_argument("--from", dest="from_", metavar="NAME", help="start at this step (earlier ones are done)")
    parser.add_argument("--studies", action="store_true", help="run the studies' steps too")
    parser.add_argument("--dry-run", action="store_true", help="print the commands in order; run nothing")
    parser.add_argument("--keep-going", action="store_true", help="after a failure, run the steps that do not need it")
    args = parser.parse_args(argv)
    if args.list:
        print_list()
        return 0
    try:
        steps = select(args)
    except ValueError as err:
        parser.error(str(err))
    if args.dry_run:
        for step in steps:
            print(shlex.join(step.command()))
        return 0
    return run(steps, args)


if __name__ == "__main__":
    sys.exit(main())
