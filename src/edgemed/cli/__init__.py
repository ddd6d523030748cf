"""The `edgemed` command line. Subcommands are imported only when run, so `--help` is instant."""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from edgemed import __version__
from edgemed.errors import ConfigError, EdgemedError

__all__ = ["main"]

# name → (module, function, one-line help). Add a command: one line here + its module.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("edgemed.cli._bench", "bench", "Benchmark a bundle: latency (also normalised), peak memory, Dice."),
    "build": ("edgemed.cli._build", "build", "Build a TensorRT engine bundle from an ONNX bundle, on the target GPU."),
    "check": ("edgemed.cli._check", "check", "CI gate: fail when a bundle's latency, memory or Dice regressed."),
    "compress": ("edgemed.cli._compress", "compress",
                 "Recipe → fastest organ models in a latency budget, Dice floor; report.html."),
    "demo": ("edgemed.cli._demo", "demo", "The whole story on built-in CT phantoms: teacher → student, measured."),
    "distill": ("edgemed.cli._distill", "distill", "Distill a teacher into an organ-specific student (label-free)."),
    "ensemble": ("edgemed.cli._ensemble", "ensemble", "Pool separately distilled students into one ensemble student."),
    "export": ("edgemed.cli._export", "export", "Export a student to an ONNX bundle, parity-checked against torch."),
    "pack": ("edgemed.cli._trust", "pack", "Pack an artifact into one .tar(.gz) file for shipping (verified first)."),
    "precompute": ("edgemed.cli._precompute", "precompute",
                   "Run a teacher once per scan into a sharded store (parallel under torchrun) for distill."),
    "profile": ("edgemed.cli._profile", "profile",
                "Profile a bundle on a scan: stage latency, FLOP/s vs host peak, Dice; writes a report."),
    "profiles": ("edgemed.cli._profiles", "profiles",
                 "List hardware target profiles (Jetson, GPUs, CPUs, your TOML; --host measures this one)."),
    "prune": ("edgemed.cli._prune", "prune", "Structured channel pruning (torch-pruning) + distillation fine-tune."),
    "quantize": ("edgemed.cli._quantize", "quantize",
                 "INT8 quantization (NNCF or ONNX Runtime), Dice-checked, kept only where faster."),
    "segment": ("edgemed.cli._segment", "segment", "Segment a scan with a bundle; write the mask in the scan's geometry."),
    "serve": ("edgemed.cli._serve", "serve",
              "Run a DICOM node: series in (C-STORE, DICOMweb), DICOM-SEG back to the PACS; --status."),
    "inspect": ("edgemed.cli._inspect", "inspect", "Print an artifact's manifest, or a label map's classes."),
    "keygen": ("edgemed.cli._trust", "keygen", "Create an ed25519 key pair for signing bundles."),
    "sign": ("edgemed.cli._trust", "sign", "Sign artifacts (ed25519 over the manifest of sha256 hashes)."),
    "unpack": ("edgemed.cli._trust", "unpack", "Extract a packed artifact safely (no traversal, no links, capped), verified."),
    "verify": ("edgemed.cli._trust", "verify", "Check artifacts as the runtime does: hashes, no extra files, signature."),
    "students": ("edgemed.cli._inspect", "students", "List the student architectures of the zoo."),
}


# Groups a reader finds related commands under; each command stays runnable by its old top-level
# name too (`edgemed sign` = `edgemed trust sign`), so scripts written against either keep working.
_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "measure": ("Measure bundles: profile a scan, benchmark, the CI gate, hardware target profiles.",
                ("bench", "check", "profile", "profiles")),
    "trust": ("Sign, verify, pack and unpack artifacts (ed25519, sha256, safe archives).",
              ("keygen", "pack", "sign", "unpack", "verify")),
}
_GROUPED = frozenset(name for _, names in _GROUPS.values() for name in names)


class _LazyGroup(click.Group):
    """A group whose commands are imported only when run (the table above gives names and help)."""

    def __init__(self, *args: object, names: tuple[str, ...] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._names = names  # None: the top level (its own commands, the groups, and the aliases)

    def list_commands(self, ctx: click.Context) -> list[str]:
        if self._names is not None:
            return list(self._names)
        return sorted({*(_COMMANDS.keys() - _GROUPED), *_GROUPS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if self._names is None and name in _GROUPS:
            text, names = _GROUPS[name]
            return _LazyGroup(name=name, help=text, names=names)
        if name not in _COMMANDS or (self._names is not None and name not in self._names):
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the tables, so listing commands imports none of them.
        rows = [(name, _GROUPS[name][0] if name in _GROUPS else _COMMANDS[name][2])
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        if self._names is None:
            with formatter.section("Also runnable by their old names"):
                formatter.write_text(", ".join(f"{name} (= {group} {name})" for group, (_, names) in _GROUPS.items()
                                               for name in names))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemed")
def _cli() -> None:
    """edgemed: distill, compress, export and profile organ-specific medical segmentation models.

    Every command prints what it wrote and the next command to run; logs go to stderr.
    """


#: Commands that train or run torch (OpenMP) in this process.
_TORCH_COMMANDS = frozenset({"compress", "demo", "distill", "ensemble", "export", "precompute", "prune", "quantize"})


def _passive_openmp(argv: list[str] | None) -> None:
    """On a busy machine, let OpenMP threads sleep, not spin, while they wait (before torch's libgomp loads).

    A spinning thread burns a CPU that another program needs; on a 2-core machine beside one busy
    process, 2 torch threads distilled 1.8x slower per epoch spinning than waiting passively. On an
    idle machine spinning is faster (~30% per epoch there), so the load is sampled first (~0.2 s, torch
    commands only). The CLI is an application, so it may set this for its own process; the user's own
    OMP_WAIT_POLICY / GOMP_SPINCOUNT win, and EDGEMED_THREADS=legacy leaves OpenMP's defaults.
    """
    import os

    from edgemed._threads import free_cpus, legacy_requested, usable_cpus

    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in _TORCH_COMMANDS or legacy_requested():
        return
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    if free_cpus() < usable_cpus():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning edgemed errors into a one-paragraph message.

    Exit codes: 0 ok, 1 failed, 2 bad usage or config.
    """
    _show_edgemed_warnings_plainly()
    _passive_openmp(argv)
    try:
        _cli.main(args=argv, prog_name="edgemed", standalone_mode=False)
    except click.exceptions.Abort as err:
        if isinstance(err.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort; keep its 130 and hint
            hint = str(err.__cause__)
            click.echo(f"interrupted{f'; {hint}' if hint else ''}", err=True)
            sys.exit(130)
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except ConfigError as err:
        click.echo(f"error: {_shown(err, argv)}", err=True)
        sys.exit(2)
    except EdgemedError as err:
        click.echo(f"error: {_shown(err, argv)}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as err:  # a command needing an extra this install lacks (e.g. torch on a device)
        from edgemed._deps import EXTRAS, install_hint

        top = (err.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        click.echo(f"error: {top} is needed for this command but is not installed. Install it: {install_hint(top)}",
                   err=True)
        sys.exit(1)
    except OSError as err:  # one that no write site turned into an OutputError: still one line, no traceback
        from edgemed._atomic import describe_os_error

        click.echo(f"error: {describe_os_error(err, output=False)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as err:
        # A command may say how to continue (distill: "--resume"); one line either way.
        click.echo(f"interrupted{f'; {err}' if str(err) else ''}", err=True)
        sys.exit(130)


def _shown(err: BaseException, argv: list[str] | None) -> str:
    """An error message as printed: any DICOM path given on the command line with its identifiers
    redacted (a message quoting an argument must not print the patient's name it holds)."""
    from edgemed.io import redacted_path

    text = str(err)
    args = sys.argv[1:] if argv is None else argv
    for arg in sorted({a for a in args if len(a) > 2 and a in text}, key=len, reverse=True):
        shown = redacted_path(arg)
        if shown != arg:
            text = text.replace(arg, shown)
    return text


def _show_edgemed_warnings_plainly() -> None:
    """edgemed's own warnings print as "warning: ..." lines; other libraries' keep Python's format."""
    from edgemed.errors import EdgemedWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, EdgemedWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
