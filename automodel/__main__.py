"""Command line: `python -m automodel <verb> [key=value ...] [--cfg job] [--help]`.

The verb is popped; the rest are Hydra overrides composed over conf/ with Hydra's Compose
API, so that every error (Hydra's included) comes out as one line with exit code 2.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from automodel import __version__
from automodel.config import CONF_DIR, SPACES_DIR, ConfigError

VERBS = {
    "search": "run a model search, or resume the study of the same name",
    "worker": "join an existing study (same settings) from another process or host",
    "status": "list the studies under runs_dir, or the top trials of study.name=...",
    "export": "write <study>/export/best_model.py for study.name=... (trial=<n>: another "
    "trial; ensemble.size=<k>: an ensemble of the best trials)",
    "ui": "start the MLflow UI for the tracking store on ui.host:ui.port (Ctrl-C stops it)",
}

EXIT_USAGE = 2


def usage() -> str:
    verbs = "\n".join(f"  {name:<8} {text}" for name, text in VERBS.items())
    groups = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        groups.append(f"  {group.name}={{{options}}}")
    spaces = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
    return (
        f"automodel {__version__}: automated neural-network search\n\n"
        "usage: python -m automodel <verb> [key=value ...] [--cfg job] [--help]\n\n"
        f"verbs:\n{verbs}\n\n"
        "config groups (pick one with group=name):\n" + "\n".join(groups) + "\n"
        f"  search_space={{{spaces}}} or a path to a YAML file; its entries are keys too\n\n"
        "any value can be overridden, for example:\n"
        "  python -m automodel search data=mnist1d search_space=cnn study.n_trials=40\n"
        "  python -m automodel search trainer.max_epochs=10 study.pruner=hyperband seed=1\n"
        "  python -m automodel search search_space=resnet search_space.params.lr.high=0.1 \\\n"
        "      ~search_space.params.momentum +search_space.params.label_smoothing=0.1\n"
        "  python -m automodel search --cfg job      # print the resolved config and exit\n"
        "  python -m automodel status study.name=digits-mlp\n"
        "  python -m automodel export study.name=digits-mlp trial=12\n"
        "  python -m automodel ui ui.port=5001       # browse runs, models and plots in MLflow\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    verb, args = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}; known: {', '.join(VERBS)}", file=sys.stderr)
        return EXIT_USAGE
    if "--help" in args or "-h" in args:
        print(usage())
        return 0
    show_cfg, overrides = _pop_cfg(args)
    try:
        return _run(verb, overrides, show_cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as err:
        from automodel.errors import interrupted

        if interrupted(err):  # a library's cleanup that Ctrl-C (or SIGTERM) cut short
            return _interrupted()
        # Disk full, folder not writable, a database gone: often wrapped by a library (Optuna
        # re-raises storage errors as other exceptions). Say what failed in one line; results
        # written before stay intact (every output is written atomically).
        stop = _storage_failure(err)
        if stop is not None:
            print(f"error: {stop}", file=sys.stderr)
            return 1
        os_err = _os_error(err)
        if os_err is None:
            raise
        where = f" ({os_err.filename})" if os_err.filename else ""
        print(
            f"error: {os_err.strerror or os_err}{where}; results written before this are intact",
            file=sys.stderr,
        )
        return 1


def _interrupted() -> int:
    print(
        "\ninterrupted: finished trials are saved; rerun the same command to resume",
        file=sys.stderr,
    )
    return 130


def _storage_failure(err: BaseException) -> str | None:
    """One line for a study storage that cannot be read or went away, or None."""
    from automodel.config import mask_url
    from automodel.errors import StorageError, lost_database, reason

    if isinstance(err, StorageError):
        return str(err)
    lost = lost_database(err)
    if lost is None:
        return None
    return mask_url(
        f"lost the study's database ({reason(lost)}); finished trials are saved: rerun the "
        "same command once it is back to resume"
    )


def _os_error(err: BaseException | None) -> OSError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _pop_cfg(args: list[str]) -> tuple[str | None, list[str]]:
    """Take Hydra's `--cfg job|hydra|all` (or `-c job`) out of the overrides."""
    show, rest, i = None, [], 0
    while i < len(args):
        if args[i] in ("--cfg", "-c"):
            show = args[i + 1] if i + 1 < len(args) else ""
            if show not in ("job", "all"):
                raise SystemExit(_usage_error(f"--cfg takes job or all, got {show!r}"))
            i += 2
            continue
        rest.append(args[i])
        i += 1
    return show, rest


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(verb: str, overrides: list[str], show_cfg: str | None) -> int:
    from omegaconf import OmegaConf

    from automodel import config

    composed = config.compose(overrides)
    if show_cfg:
        print(OmegaConf.to_yaml(composed, resolve=True), end="")
        return 0
    cfg = config.to_run_config(composed)
    # Recorded in summary.json, the export's provenance and the MLflow run: never with a
    # URL's password in it.
    command = config.mask_url(
        "python -m automodel " + " ".join(shlex.quote(a) for a in [verb, *overrides])
    )
    if verb in ("search", "worker"):
        from automodel.processes import stop_on_sigterm

        stop_on_sigterm()
        return _search(cfg, command, attach=verb == "worker")
    if verb == "status":
        from automodel import status

        one = any(o.lstrip("+").startswith("study.name=") for o in overrides)
        return status.show(cfg, one_study=one)
    if verb == "export":
        # ensemble.* given: select an ensemble anew; else export what the study shipped.
        given = any(o.lstrip("+").startswith("ensemble.") for o in overrides)
        return _export(cfg, command, given)
    if verb == "ui":
        from automodel import ui

        return ui.serve(cfg)
    raise AssertionError(verb)


def _export(cfg, command: str, ensemble_given: bool = False) -> int:
    from automodel import study_export

    path = study_export.export_study(cfg, command, ensemble_given)
    print(path / "best_model.py")
    return 0


def _search(cfg, command: str, attach: bool) -> int:
    from automodel import search

    try:
        summary = search.search(cfg, command, attach=attach)
    except search.SearchStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if cfg.quiet:
        print(Path(cfg.study_dir) / "summary.json")
    else:
        search.print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
