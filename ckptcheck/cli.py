"""The command line: the list of commands. Each parses its options, calls the library, and hands the report to
the render package and the console (which prints, and maps errors to exit codes)."""

from __future__ import annotations

import copy
import os
import sys
from typing import Annotated, Any

import click
import typer

from ckptcheck import __version__
from ckptcheck.console import (
    EXIT_PROBLEM,
    OUT_PIECE,
    SPOOL_BYTES,
    OutputClosed,
    byte_progress,
    bytes_ticker,
    emit,
    emit_json,
    emit_pieces,
    errors_to_exit,
    escape_undecodable,
    fit_tables_to_terminal,
    progress_bar,
    progress_over,
    show_progress,
    stop_like_a_closed_pipe,
    terminate_as_interrupt,
    warn_unsafe,
    warnings_to_stderr,
)
from ckptcheck.errors import UsageError

app = typer.Typer(
    name="ckptcheck",
    help="See exactly what a machine-learning checkpoint does and does not record.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _Command(typer.core.TyperCommand):
    """A command whose help shows every argument's help text, whatever the installed click does with it.

    typer (through 0.24) stores an argument's help on the click parameter before calling click's constructor, and
    click 8.5 added a ``help`` parameter to ``Argument`` that resets it to None: under that pairing ``COMMAND
    --help`` listed ``PATH [required]`` with no word of what PATH may be. The text is taken again from the
    command's own signature when help is shown (never at start-up), so any pairing of the two shows it.
    """

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _restore_argument_help(self)
        super().format_help(ctx, formatter)

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Nothing: typer's ``format_options`` lists the arguments (click 8.5's own section would list them twice)."""


def _restore_argument_help(command: click.Command) -> None:
    import inspect
    import typing

    if command.callback is None:
        return
    function = inspect.unwrap(command.callback)
    hints = typing.get_type_hints(function, include_extras=True)
    defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()}
    for param in command.params:
        if not isinstance(param, click.Argument) or getattr(param, "help", None) or param.name is None:
            continue
        declared = [*getattr(hints.get(param.name), "__metadata__", ()), defaults.get(param.name)]
        texts = [info.help for info in declared if isinstance(info, typer.models.ArgumentInfo) and info.help]
        if texts:
            param.help = texts[0]  # type: ignore[attr-defined,unused-ignore]  # click < 8.5 types no help

JsonOption = Annotated[bool, typer.Option("--json",
                                          help="Print JSON (schemas in docs/json-schemas.md) instead of tables.")]
JobsOption = Annotated[int | None, typer.Option(
    "--jobs", "-j", min=1, metavar="N",
    help="Range reads in flight at once, ahead of the checks (tensor bundles; 1: one read at a time). Default: 8 "
         "for a URL, else half the cores up to 4.")]
KindOption = Annotated[list[str] | None, typer.Option(
    "--kind", metavar="KIND", click_type=click.Choice(["weights", "optimizer", "counters", "bookkeeping"]),
    help="Only tensors of this kind (repeatable): weights, optimizer (its state), counters (step counters and "
         "other values), bookkeeping (the format's own: object graph, save counter).")]
ExcludeOption = Annotated[list[str] | None, typer.Option(
    "--exclude", metavar="PATTERN",
    help="Leave out tensors whose key or variable matches PATTERN (a glob, or a substring; repeatable).")]


def _version(value: bool) -> None:
    if value:
        emit(f"ckptcheck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """See exactly what a machine-learning checkpoint does and does not record."""
    from ckptcheck.formats.location import command_scope

    ctx.with_resource(command_scope())  # a small Keras file at a URL is fetched once per command
    escape_undecodable()
    fit_tables_to_terminal()
    warnings_to_stderr()


@app.command(cls=_Command)
def inspect(
    path: Annotated[str, typer.Argument(help="Checkpoint prefix, .index/.data file, model_dir, SavedModel, "
                                              ".keras, .weights.h5 or .h5; at a path or a URL (s3://, gs://, "
                                              "https://, ...).")],
    json_output: JsonOption = False,
    objects: Annotated[bool, typer.Option("--objects", help="TF2: every object path reaching each tensor, "
                                                            "and which variable each optimizer slot belongs to.")]
    = False,
    stats: Annotated[bool, typer.Option("--stats", help="Per-tensor min, max, mean, std, NaN/Inf counts and "
                                                        "constant values (streamed, bounded memory).")] = False,
    tensor: Annotated[str | None, typer.Option("--tensor", metavar="NAME",
                                               help="Print this tensor's values (its key or its variable).")]
    = None,
    filter_: Annotated[str | None, typer.Option("--filter", metavar="PATTERN",
                                                help="Only tensors whose key or variable matches PATTERN (a glob, or a "
                                                     "substring).")]
    = None,
    all_: Annotated[bool, typer.Option("--all", help="List every checkpoint the directory's `checkpoint` state "
                                                     "file names, with its step.")] = False,
    sort: Annotated[str, typer.Option("--sort", click_type=click.Choice(["name", "size"]),
                                      help="Order of the tensors (table and JSON): name (natural order: dense_2 "
                                           "before dense_10) or size (largest first).")] = "name",
    group: Annotated[bool, typer.Option("--group", help="One row per layer and kind (weights, optimizer state, "
                                                        "counters, bookkeeping): tensors, elements and bytes, "
                                                        "instead of one per tensor. The layer is the layer part of "
                                                        "each tensor's variable (conv1_conv), the same in every "
                                                        "format; an optimizer slot counts with its variable's "
                                                        "layer.")]
    = False,
    config: Annotated[bool, typer.Option("--config/--no-config",
                                         help="Keras files: show the architecture their config records (with "
                                              "--filter, only the layers it matches).")] = True,
    kind: KindOption = None,
    exclude: ExcludeOption = None,
) -> None:
    """List what a checkpoint stores: format, files, and every tensor's name, dtype, shape and size."""
    from ckptcheck import open_checkpoint
    from ckptcheck.formats.interface import paused_gc
    from ckptcheck.listing import check_options, inspect_checkpoint
    from ckptcheck.render.inspect import (
        architecture_text,
        groups_dicts,
        groups_table,
        inspect_dict,
        inspect_header,
        inspect_json_pieces,
        state_dict,
        state_table,
        summary_dict,
        summary_text,
        tensor_dict,
        tensor_text,
        tensors_table,
    )
    from ckptcheck.render.jsontext import escape_surrogates

    with errors_to_exit():
        check_options(group=group, stats=stats, objects=objects, tensor=tensor)
        if all_:
            if tensor or stats or objects or group:
                raise UsageError("--all lists checkpoints; it does not combine with --tensor, --stats, --objects "
                                 "or --group")
            from ckptcheck.formats.resolve import list_state

            entries = list_state(path)
            if json_output:
                emit_json(state_dict(path, entries))
            else:
                emit(state_table(entries))
            return
        warn_unsafe(path)
        with open_checkpoint(path) as reader:
            if tensor is not None:
                values = reader.read(tensor)
                t_info = reader.tensor_info(tensor)
                if json_output:
                    emit_json(tensor_dict(t_info, values))
                else:
                    emit(tensor_text(t_info, values))
                return
            report = inspect_checkpoint(
                reader, filter_=filter_, sort=sort, objects=objects, stats=stats, group=group, kinds=kind,
                exclude=exclude, each=lambda shown: progress_over(shown, "statistics", show_progress(json_output)))
        info, shown = report.info, report.tensors
        extra: dict[str, Any] = {"summary": summary_dict(report.summary)}
        if report.groups is not None:
            extra["groups"] = groups_dicts(report.groups)
        if json_output:
            if report.stats is None and report.refs is None and not sys.stdout.isatty():
                # Compact, as emit_json prints it when piped: the common case, made fast, and written as made.
                try:
                    pieces = inspect_json_pieces(info, shown, extra=extra, kinds=report.kinds)
                except ValueError:  # a NaN in a config: emit_json writes it as it documents
                    emit_json(inspect_dict(info, shown, extra=extra, kinds=report.kinds))
                    return
                with paused_gc():
                    emit_pieces(map(escape_surrogates, pieces), raw=True)
                return
            with paused_gc():
                data = inspect_dict(info, shown, report.stats, report.refs, extra=extra, kinds=report.kinds)
            emit_json(data)
            return
        emit(inspect_header(info, len(shown)))
        emit("")
        emit(summary_text(report.summary, len(shown) if report.filtered else None))
        if info.architecture is not None and config:
            emit("")
            emit(architecture_text(info.architecture, report.layers))
        emit("")
        with paused_gc():
            if not shown:
                table = "(no tensors match)"
            elif report.groups is not None:
                table = groups_table(report.groups)
            else:
                table = tensors_table(shown, report.stats, report.refs)
        emit(table)


# --- verify / manifest / diff -----------------------------------------------------------------------------------

AtolOption = Annotated[float, typer.Option("--atol", min=0.0, help="Absolute tolerance for float values.")]
RtolOption = Annotated[float, typer.Option("--rtol", min=0.0, help="Relative tolerance (of B's magnitude).")]
VerifyAtolOption = Annotated[float, typer.Option(
    "--atol", min=0.0, help="With --against: absolute tolerance for float values, compared through the manifest's "
                            "statistics (min, max, mean, std).")]
VerifyRtolOption = Annotated[float, typer.Option(
    "--rtol", min=0.0, help="With --against: relative tolerance, of the manifest's value (each statistic within "
                            "atol + rtol * |manifest's|).")]


def _jobs(jobs: int | None, reader: Any) -> int:
    """--jobs, or the default for where the reader's files are."""
    from ckptcheck.formats.prefetch import default_jobs

    return jobs if jobs is not None else default_jobs(list(reader.info().files))


@app.command(cls=_Command)
def verify(
    path: Annotated[str, typer.Argument(help="The checkpoint to check (a path or a URL).")],
    against: Annotated[str | None, typer.Option(
        "--against", metavar="MANIFEST",
        help="Also compare with a manifest written by `ckptcheck manifest`: every tensor's dtype, shape, NaN/Inf "
             "counts and values (sha256 digest; with --atol/--rtol, statistics). Tensors are paired by variable, "
             "as diff pairs them (by key for manifests that record no variables); differences are listed most "
             "severe first: missing/extra, dtype, shape, non-finite, values.")] = None,
    atol: VerifyAtolOption = 0.0,
    rtol: VerifyRtolOption = 0.0,
    finite: Annotated[bool, typer.Option("--finite", help="Also check that every floating-point tensor holds only "
                                                          "finite values (no NaN, no Inf); exit 1 naming each "
                                                          "that does not.")] = False,
    kind: KindOption = None,
    exclude: ExcludeOption = None,
    json_output: JsonOption = False,
    jobs: JobsOption = None,
) -> None:
    """Check integrity: every checksum, shard and dataset. Exit 0 clean, 1 damaged or different, 2 unreadable."""
    from ckptcheck.render.checks import verify_dict, verify_text
    from ckptcheck.selection import Selection
    from ckptcheck.verify import verify as run_verify

    warn_unsafe(path)
    with errors_to_exit(), byte_progress("verify", show_progress(json_output)) as progress:
        report = run_verify(path, against=against, atol=atol, rtol=rtol, progress=progress, jobs=jobs,
                            selection=Selection.of(None, exclude, kind), finite=finite)
    if json_output:
        emit_json(verify_dict(report))
    else:
        emit(verify_text(report))
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEM)


# --- scan (issue 26): the safety check on its own --------------------------------------------------------------


@app.command(cls=_Command)
def scan(
    paths: Annotated[list[str], typer.Argument(
        help="Model files (.keras, .h5, .weights.h5), SavedModel or unzipped .keras directories, or directories "
             "to search for them.")],
    json_output: JsonOption = False,
    sarif: Annotated[str | None, typer.Option("--sarif", metavar="FILE",
                                              help="Also write the findings as SARIF 2.1.0 (GitHub code "
                                                   "scanning).")] = None,
) -> None:
    """Find what loading each model would do beyond computing: code, files, network, other processes. Nothing
    is loaded, run, unpickled or fetched. Exit 0 clean, 1 findings, 2 unreadable."""
    import json

    from ckptcheck.render import scan as scan_render
    from ckptcheck.scan import scan_paths

    with errors_to_exit():
        if sarif is not None and any(os.path.exists(p) and os.path.samefile(p, sarif) for p in paths
                                     if os.path.exists(sarif)):
            raise UsageError("refusing to write the SARIF report over a file being scanned", path=sarif)
        report = scan_paths(paths)
        if sarif is not None:
            with open(sarif, "w", encoding="utf-8") as f:
                json.dump(scan_render.sarif_dict(report, version=__version__), f, indent=2)
    for line in scan_render.scan_errors(report):
        typer.echo(f"ckptcheck: {line}", err=True)
    if json_output:
        emit_json(scan_render.scan_dict(report))
    else:
        emit(scan_render.scan_text(report))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command(cls=_Command)
def manifest(
    path: Annotated[str, typer.Argument(help="The checkpoint to describe (a path or a URL).")],
    output: Annotated[str | None, typer.Option("-o", "--output", metavar="FILE",
                                               help="Write the manifest here instead of stdout.")] = None,
    # The manifest is JSON whatever is asked; --json stays accepted (hidden) so that scripts passing it still run.
    _json_output: Annotated[bool, typer.Option("--json", hidden=True)] = False,
    kind: KindOption = None,
    exclude: ExcludeOption = None,
    jobs: JobsOption = None,
) -> None:
    """Write a deterministic JSON manifest (per tensor: variable, kind, dtype, shape, size, value digest,
    statistics) to commit in git. The output is JSON (schema ckptcheck.manifest/2 in docs/json-schemas.md); with
    --kind or --exclude it records the selection, and verify --against applies it to the checkpoint too."""
    import tempfile

    from ckptcheck import open_checkpoint
    from ckptcheck.manifest import write_manifest
    from ckptcheck.selection import Selection

    warn_unsafe(path)
    with errors_to_exit(), open_checkpoint(path) as reader:
        if output is not None and os.path.realpath(output) in {os.path.realpath(f) for f in reader.info().files}:
            raise UsageError("refusing to write the manifest over one of the checkpoint's own files", path=output,
                             hint="write it beside the checkpoint, e.g. -o model.manifest.json")
        # A progress bar in bytes only while writing to a file (stdout is the manifest itself). Records are written
        # as they are made, into a spool that moves to disk past 32 MiB: memory stays flat however many tensors
        # there are, and nothing reaches the output unless every tensor was read.
        with byte_progress("manifest", show_progress(output is None)) as progress, \
                tempfile.SpooledTemporaryFile(SPOOL_BYTES, mode="w+", encoding="utf-8", newline="") as spool:
            count = write_manifest(reader, spool.write, on_tensor=bytes_ticker(reader, progress),
                                   jobs=_jobs(jobs, reader), selection=Selection.of(None, exclude, kind))
            spool.seek(0)
            pieces = iter(lambda: spool.read(OUT_PIECE), "")
            if output is None:
                for piece in pieces:
                    emit(piece, nl=False, raw=True)
                return
            with open(output, "w", encoding="utf-8", newline="") as f:
                for piece in pieces:
                    f.write(piece)
        typer.echo(f"wrote {output}: {count} tensors", err=True)


@app.command(cls=_Command)
def diff(
    a: Annotated[str, typer.Argument(help="The first checkpoint (A; a path or a URL).")],
    b: Annotated[str, typer.Argument(help="The second checkpoint (B; a path or a URL).")],
    atol: AtolOption = 0.0,
    rtol: RtolOption = 0.0,
    filter_: Annotated[str | None, typer.Option("--filter", metavar="PATTERN",
                                                help="Only tensors whose key or variable matches PATTERN (a glob, or a "
                                                     "substring).")]
    = None,
    json_output: JsonOption = False,
    sort: Annotated[str, typer.Option("--sort", click_type=click.Choice(["name", "change"]),
                                      help="Order of the changed tensors: name (natural order of the variables, "
                                           "weights first: dense_2 before dense_10) or change (largest difference "
                                           "first: dtype and shape changes, NaN/Inf, then the largest absolute "
                                           "difference).")] = "name",
    unchanged: Annotated[bool, typer.Option("--unchanged", help="List the unchanged tensors by variable (their "
                                                                "count is always shown): which layers did not "
                                                                "train.")] = False,
    kind: KindOption = None,
    exclude: ExcludeOption = None,
    jobs: JobsOption = None,
    rename_map: Annotated[str | None, typer.Option(
        "--rename-map", metavar="FILE",
        help="Pair tensors as a rename map (written by restore-check --rename-map) maps them: its key on one side "
             "with its variable on the other.")] = None,
) -> None:
    """Tensors added, removed and changed from A to B; for changed values, by how much. Exit 1 if different.

    Tensors are paired by variable (the name the model knows them by: a Keras variable path, a TF2 object graph's
    saved name, a TF1 variable name) wherever it is unique on its side, in every pair of formats and within one;
    keys pair only tensors without such a name. A variable stored under another key in B is said once, not
    reported as a change. Exact (bit for bit, NaN equals NaN) unless --atol/--rtol; NaN and Inf that appear or go
    are named."""
    from ckptcheck import open_checkpoint
    from ckptcheck.diff import diff_readers, sort_changes
    from ckptcheck.render.checks import diff_dict, diff_text
    from ckptcheck.selection import Selection

    warn_unsafe(a, b)
    with errors_to_exit(), open_checkpoint(a) as ra, open_checkpoint(b) as rb:
        selection = Selection.of(filter_, exclude, kind)
        if rename_map is not None:
            from ckptcheck.renames import load_rename_map

            load_rename_map(rename_map)  # a bad map is said before any value is read
        with byte_progress("diff", show_progress(json_output)) as progress:
            report = diff_readers(ra, rb, atol, rtol, selection=selection,
                                  on_tensor=bytes_ticker(ra, progress), jobs=(_jobs(jobs, ra), _jobs(jobs, rb)),
                                  rename_map=rename_map)
        report = sort_changes(report, sort)
        if json_output:
            emit_json(diff_dict(report))
        else:
            emit(diff_text(report, unchanged=unchanged))
        if not report.same:
            raise typer.Exit(EXIT_PROBLEM)


# --- export -----------------------------------------------------------------------------------------------------


@app.command("export", cls=_Command)
def export_command(
    source: Annotated[str, typer.Argument(help="The checkpoint to export: any format `inspect` reads, at a path "
                                               "or a URL.")],
    out: Annotated[str, typer.Argument(help="The file to write; its suffix picks the format: .safetensors or "
                                            ".npz.")],
    names: Annotated[str, typer.Option("--names", click_type=click.Choice(["variable", "key"]),
                                       help="Name each tensor by its variable (the name the model knows it by) "
                                            "or by its storage key.")] = "variable",
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", metavar="KIND", click_type=click.Choice(["weights", "optimizer", "counters", "bookkeeping"]),
        help="Export only tensors of this kind (repeatable). Default: weights, optimizer and counters; format "
             "bookkeeping (the TF2 object graph, a save counter) only when asked for.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", metavar="PATTERN",
                                                help="Only tensors whose key or variable matches PATTERN (a glob, "
                                                     "or a substring).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", metavar="PATTERN",
                                                      help="Leave out tensors whose key or variable matches PATTERN "
                                                           "(repeatable).")] = None,
    rename_map: Annotated[str | None, typer.Option(
        "--rename-map", metavar="FILE",
        help="Rename tensors as FILE says: restore-check's rename map (each entry's key exported as its "
             "variable) or a JSON object {\"old\": \"new\"} (old: a key or a variable).")] = None,
    skip_unsupported: Annotated[bool, typer.Option(
        "--skip-unsupported", help="Leave out (and list) tensors of a dtype the format cannot hold, instead of "
                                   "refusing the export.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every tensor written.")] = False,
    json_output: JsonOption = False,
    jobs: JobsOption = None,
) -> None:
    """Write a checkpoint's variables to safetensors or npz, streamed, without TensorFlow: OUT appears only when
    every tensor was read (checksums checked) and written. Exit 0 written, 2 unreadable input or misuse."""
    from ckptcheck.export import export_checkpoint
    from ckptcheck.render.export import export_dict, export_text

    warn_unsafe(source)
    with errors_to_exit(), terminate_as_interrupt(), \
            byte_progress("export", show_progress(json_output)) as progress:
        report = export_checkpoint(source, out, names=names, kinds=kind, filter=filter_, exclude=exclude or (),
                                   rename_map=rename_map, skip_unsupported=skip_unsupported, force=force,
                                   progress=progress, jobs=jobs)
    if json_output:
        emit_json(export_dict(report))
    else:
        emit(export_text(report, verbose=verbose))


# --- history (issue 25): a training run read from its checkpoints ---------------------------------------------


@app.command(cls=_Command)
def history(
    directory: Annotated[str, typer.Argument(help="A model_dir or CheckpointManager directory (its `checkpoint` "
                                                  "state file names the run's checkpoints), or a directory of "
                                                  "checkpoint prefixes or Keras files.")],
    json_output: JsonOption = False,
    html: Annotated[str | None, typer.Option("--html", metavar="FILE",
                                             help="Also write a self-contained page (heatmap of change, norms over "
                                                  "the steps, findings) to FILE; nothing in it is fetched.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also the checkpoints on disk the state file no longer "
                                                     "names.")] = False,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", metavar="KIND",
        click_type=click.Choice(["weights", "optimizer", "counters", "bookkeeping", "all"]),
        help="What to follow (repeatable): weights (the default), optimizer (its state), counters, bookkeeping, "
             "or all.")] = None,
    group: Annotated[bool, typer.Option("--group", help="Findings and tables by layer (or top-level object) "
                                                        "instead of by variable.")] = False,
    filter_: Annotated[str | None, typer.Option("--filter", metavar="PATTERN",
                                                help="Only variables whose name or key matches PATTERN (a glob, or a "
                                                     "substring).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, metavar="N",
                                             help="Checkpoints read at once (default: half the cores, up to 4).")]
    = None,
) -> None:
    """A training run read from its checkpoints, in step order: per variable (or layer) its norm, its change from
    the checkpoint before and its NaN/Inf counts; findings first. Exit 0; 1 when NaN/Inf appear or a checkpoint is
    damaged or unreadable; 2 when none can be read."""
    from ckptcheck.formats.prefetch import default_jobs
    from ckptcheck.history import find_run, read_history
    from ckptcheck.render import history as render
    from ckptcheck.summary import KINDS

    with errors_to_exit():
        kinds = list(KINDS) if "all" in (kind or ()) else list(kind or ["weights"])
        plan = find_run(directory, all_=all_)
        files = list(plan.paths)
        if html is not None and os.path.realpath(html) in {os.path.realpath(f) for f in files}:
            raise UsageError("refusing to write the page over a checkpoint", path=html)
        warn_unsafe(*(p for p in files if not os.path.isdir(p) and p.endswith((".keras", ".h5", ".hdf5"))))
        with progress_bar(show_progress(json_output), 2 * len(plan.paths), "history") as tick:
            report = read_history(plan, kinds=kinds, group=group, filter_=filter_,
                                  jobs=jobs if jobs is not None else default_jobs(files),
                                  on_checkpoint=lambda: tick("reading"))
        if html is not None:
            with open(html, "w", encoding="utf-8") as f:
                f.write(render.history_html(report, version=__version__))
    for line in render.errors_lines(report):
        typer.echo(f"ckptcheck: {line}", err=True)
    if json_output:
        emit_json(render.history_dict(report))
    else:
        emit(render.history_text(report))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


# --- generate / roundtrip ---------------------------------------------------------------------------------------

FormatChoice = Annotated[str, typer.Option("--format", help="tf1, tf2, keras, keras-weights or keras-h5.")]
InitOption = Annotated[list[str] | None, typer.Option(
    "--init", metavar="SPEC",
    help="Initializer of every variable (constant:0.5, zeros, ones, random_normal:mean=0,stddev=0.05, "
         "truncated_normal:stddev=0.1, random_uniform:minval=-1,maxval=1, glorot_uniform, glorot_normal, "
         "he_normal, he_uniform, lecun_normal, orthogonal, identity), or kernel=SPEC and bias=SPEC, each once. "
         "Default: kernel=glorot_uniform bias=zeros.")]
LayersOption = Annotated[str, typer.Option("--layers", metavar="UNITS",
                                           help="Units of each Dense layer, comma-separated; the last is the "
                                                "output.")]
InputsOption = Annotated[int, typer.Option("--inputs", help="Input features.")]
StepsOption = Annotated[int, typer.Option("--train-steps", help="Optimizer steps before saving (0: save the "
                                                                "initial values).")]
OptimizerOption = Annotated[str, typer.Option("--optimizer", help="sgd or adam.")]
LearningRateOption = Annotated[float, typer.Option("--learning-rate", help="The optimizer's learning rate.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seeds initializers and data: same seed, same bits.")]


def _generate_options(fmt: str, init: list[str] | None, layers: str, inputs: int, train_steps: int,
                      optimizer: str, learning_rate: float, seed: int) -> Any:
    from ckptcheck.lab.generate import check_options, parse_layers
    from ckptcheck.lab.initializers import parse_plan
    from ckptcheck.lab.reports import GenerateOptions

    options = GenerateOptions(format=fmt.lower(), layers=parse_layers(layers), inputs=inputs, train_steps=train_steps,
                              optimizer=optimizer.lower(), learning_rate=learning_rate, seed=seed,
                              init=parse_plan(init))
    check_options(options)
    return options


@app.command("generate", cls=_Command)
def generate_command(
    out: Annotated[str, typer.Argument(help="Directory to write into (tf1: an Estimator-style model_dir); for "
                                            "Keras formats also a file name with the format's suffix.")],
    format_: FormatChoice,
    init: InitOption = None,
    layers: LayersOption = "64,10",
    inputs: InputsOption = 100,
    train_steps: StepsOption = 10,
    optimizer: OptimizerOption = "adam",
    learning_rate: LearningRateOption = 0.01,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
) -> None:
    """Build a small Dense model with chosen initializers, train it a few steps, save it in one format."""
    from ckptcheck.lab.gate import import_keras
    from ckptcheck.lab.generate import generate
    from ckptcheck.render.lab import generate_dict, generate_text

    with errors_to_exit():
        options = _generate_options(format_, init, layers, inputs, train_steps, optimizer, learning_rate, seed)
        import_keras()  # before the progress bar: TensorFlow's start-up lines and a missing install come first
        with progress_bar(show_progress(json_output), options.train_steps, "training") as tick:
            report = generate(out, options, on_step=lambda step, loss: tick(f"step {step}, loss {loss:.4g}"))
        if json_output:
            emit_json(generate_dict(report))
        else:
            emit(generate_text(report))


@app.command("roundtrip", cls=_Command)
def roundtrip_command(
    format_: Annotated[str | None, typer.Option("--format", help="tf1, tf2, keras, keras-weights, keras-h5, or "
                                                                 "all (the default without --from).")] = None,
    from_: Annotated[str | None, typer.Option("--from", metavar="PATH",
                                              help="Restore this checkpoint instead of generating one; give the "
                                                   "options it was generated with.")] = None,
    keep: Annotated[str | None, typer.Option("--keep", metavar="DIR",
                                             help="Work in DIR/<format>/ and keep it, instead of a temporary "
                                                  "directory that is removed.")] = None,
    init: InitOption = None,
    layers: LayersOption = "64,10",
    inputs: InputsOption = 100,
    train_steps: StepsOption = 10,
    optimizer: OptimizerOption = "adam",
    learning_rate: LearningRateOption = 0.01,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
) -> None:
    """Save, restore into fresh models with other initializers, compare every tensor bit for bit, and show what
    the checkpoint records. Exit 1 if any tensor did not restore exactly."""
    from ckptcheck.lab.gate import import_keras
    from ckptcheck.lab.generate import GENERATE_FORMATS
    from ckptcheck.lab.roundtrip import roundtrip, source_format
    from ckptcheck.render.lab import roundtrip_dict, roundtrip_matrix, roundtrip_text

    with errors_to_exit():
        fmt = (format_ or "").lower()
        if from_ is not None:
            if fmt == "all":
                raise UsageError("--from takes one checkpoint; --format all generates one of each format")
            fmt = fmt or source_format(from_)[0]
        fmt = fmt or "all"
        formats = GENERATE_FORMATS if fmt == "all" else (fmt,)
        # Check every option before any TensorFlow work.
        _generate_options(formats[0], init, layers, inputs, train_steps, optimizer, learning_rate, seed)
        import_keras()  # before the progress bar: TensorFlow's start-up lines and a missing install come first
        stages = (2 if from_ else 3) + 1  # generate, one restore per fresh model, facts
        reports = []
        with progress_bar(show_progress(json_output), stages * len(formats), "roundtrip") as tick:
            for name in formats:
                options = _generate_options(name, init, layers, inputs, train_steps, optimizer, learning_rate,
                                            seed)
                reports.append(roundtrip(options, source=from_, keep=keep, on_stage=tick))
        if json_output:
            data = [roundtrip_dict(r) for r in reports]
            emit_json(data if fmt == "all" else data[0])
        elif fmt == "all":
            emit(roundtrip_matrix(reports))
        else:
            emit(roundtrip_text(reports[0]))
        if not all(r.ok for r in reports):
            raise typer.Exit(EXIT_PROBLEM)


# --- explain ---


@app.command("explain", cls=_Command)
def explain_command(
    question: Annotated[str, typer.Argument(help="A question's number or name (see --list), or all.")] = "all",
    list_: Annotated[bool, typer.Option("--list", help="List the questions (runs nothing, needs no TensorFlow).")]
    = False,
    keep: Annotated[str | None, typer.Option("--keep", metavar="DIR",
                                             help="Keep each experiment's saved files in DIR/<name>/ instead of a "
                                                  "temporary directory that is removed.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Settle common claims about initializers and checkpoints by experiment: the claim, the verdict (true, false
    or depends), and the evidence, measured in real TensorFlow runs."""
    from ckptcheck.lab.explain import explain, find_questions
    from ckptcheck.render.lab import explain_dict, explain_text, questions_dict, questions_table

    with errors_to_exit():
        chosen = find_questions(question)
        if list_:
            if json_output:
                emit_json(questions_dict(chosen))
            else:
                emit(questions_table(chosen))
            return
        from ckptcheck.lab.gate import import_tensorflow

        import_tensorflow()  # before the progress bar: TensorFlow's start-up lines and a missing install come first
        with progress_bar(show_progress(json_output), len(chosen), "explain") as tick:
            answers = explain(chosen, keep=keep, on_question=lambda slug: tick(f"{slug} done"))
        if json_output:
            emit_json(explain_dict(answers))
        else:
            emit(explain_text(answers))


# --- restore-check ---


@app.command("restore-check", cls=_Command)
def restore_check_command(
    checkpoint: Annotated[str, typer.Argument(help="The checkpoint to restore: any format `inspect` reads, at a "
                                                   "path or a URL.")],
    model: Annotated[str, typer.Option("--model", metavar="FILE.py:FUNCTION|FILE.keras",
                                       help="FUNCTION() in FILE.py returns the model to restore into (a Keras "
                                            "model, a tf.Module, or a dict of trackables for tf.train.Checkpoint); "
                                            "or a .keras file whose architecture is built fresh.")],
    input_shape: Annotated[list[str] | None, typer.Option(
        "--input-shape", metavar="DIMS",
        help="Call the model once on zeros of this shape (without the batch dimension, e.g. 3 or 28,28,1; once "
             "per input) so that it creates variables it creates lazily.")] = None,
    rename_map: Annotated[str | None, typer.Option("--rename-map", metavar="FILE",
                                                   help="Write the likely matches as a JSON mapping to review.")]
    = None,
    apply_rename_map: Annotated[str | None, typer.Option(
        "--apply-rename-map", metavar="FILE",
        help="After the restore, assign each mapped variable the stored value a rename map names, then check.")]
    = None,
    allow_unused: Annotated[bool, typer.Option("--allow-unused", help="Stored values no variable takes do not "
                                                                     "fail the check.")] = False,
    ignore_optimizer: Annotated[bool, typer.Option(
        "--ignore-optimizer", help="Optimizer state and step counters (in the model and in the checkpoint) do not "
                                   "fail the check; they are still shown.")] = False,
    allow_missing: Annotated[list[str] | None, typer.Option(
        "--allow-missing", metavar="PATTERN",
        help="Variables whose names match this glob (e.g. 'predictions/*' for a new head; repeatable) may be left "
             "unrestored: exit 0 when everything else restored.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every variable and stored value, not only "
                                                                  "the problems and counts.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Restore a checkpoint into your model and report every variable (restored from which value, or what it
    keeps) and every stored value (used or not). Exit 0 all restored, 1 not, 2 bad input."""
    from ckptcheck.render.restore_check import restore_check_dict, restore_check_text
    from ckptcheck.restore_check import parse_input_shapes, restore_check, write_rename_map

    warn_unsafe(checkpoint, *([model] if model.endswith(".keras") else []))
    with errors_to_exit():
        shapes = parse_input_shapes(input_shape)
        from ckptcheck.lab.gate import import_tensorflow
        from ckptcheck.restore_check.arguments import check_arguments

        check_arguments(checkpoint, model, apply_rename_map)  # a typo is said before TensorFlow's start-up

        import_tensorflow()  # before the progress bar: TensorFlow's start-up lines and a missing install come first
        with progress_bar(show_progress(json_output), 4, "restore-check") as tick:
            report = restore_check(checkpoint, model, input_shapes=shapes, allow_unused=allow_unused,
                                   ignore_optimizer=ignore_optimizer, apply_map=apply_rename_map, on_stage=tick,
                                   allow_missing=tuple(allow_missing or ()))
        if rename_map is not None:
            written = write_rename_map(report, rename_map)
            typer.echo(f"wrote {rename_map}: {len(written['renames'])} renames to review", err=True)
    if json_output:
        emit_json(restore_check_dict(report))
    else:
        emit(restore_check_text(report, verbose=verbose))
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEM)


# --- keras3-check ---


@app.command("keras3-check", cls=_Command)
def keras3_check_command(
    path: Annotated[str, typer.Argument(help="A legacy .h5 model file (Keras 2 / tf_keras model.save).")],
    write_fixed: Annotated[str | None, typer.Option(
        "--write-fixed", metavar="OUT.h5",
        help="Write a copy of the file whose config has the certain fixes (when every failing layer has one).")]
    = None,
    json_output: JsonOption = False,
) -> None:
    """Will Keras 3 load this Keras 2 .h5? Each layer of its config is deserialized by the installed Keras; certain
    fixes are checked, and the fixed file is loaded and measured (weights, optimizer state). Exit 0 loads as it is,
    1 some layers fail, 2 bad input."""
    from ckptcheck.render.keras3 import keras3_dict, keras3_text
    from ckptcheck.restore_check.keras3 import keras3_check

    warn_unsafe(path)
    with errors_to_exit():
        from ckptcheck.formats.resolve import resolve
        from ckptcheck.lab.gate import import_keras

        resolve(path)  # a typo is said before TensorFlow's start-up
        if write_fixed is not None and os.path.exists(write_fixed) and os.path.samefile(write_fixed, path):
            raise UsageError("refusing to write the fixed copy over the file itself", path=write_fixed)
        import_keras()
        report = keras3_check(path, fixed_copy=write_fixed)
        if write_fixed is not None:
            if report.load is None or report.fixed_config is None:
                typer.echo(f"ckptcheck: {write_fixed} not written: "
                           + ("no fix to apply" if report.fixed_config is None else "not every failing layer has a "
                              "certain fix"), err=True)
            else:
                typer.echo(f"wrote {write_fixed}: the file with the fixed config", err=True)
    if json_output:
        emit_json(keras3_dict(report))
    else:
        emit(keras3_text(report))
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEM)


def _app_for(args: list[str]) -> typer.Typer:
    """``app`` with only the command ``args`` start with registered, when they start with one: Typer builds every
    registered command's parameters at each start (~20 ms here), one command's in a fraction of that. Anything else
    (no command, an option of the app's own, a misspelling) gets the whole app."""
    if args:
        chosen = [c for c in app.registered_commands
                  if (c.name or (c.callback and typer.main.get_command_name(c.callback.__name__))) == args[0]]
        if len(chosen) == 1:
            one = copy.copy(app)
            one.registered_commands = chosen
            return one
    return app


def main() -> None:
    try:
        if sys.argv[1:] == ["--version"]:  # answered before Typer builds every command's parameters
            emit(f"ckptcheck {__version__}", raw=True)
            return
        _app_for(sys.argv[1:])()
    except OutputClosed:
        stop_like_a_closed_pipe()


if __name__ == "__main__":
    main()
