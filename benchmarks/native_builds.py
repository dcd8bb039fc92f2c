"""The native kernels' tunable sizes compared: builds of src/onebyone/_native.c side by side.

Each ``-D`` list is one variant build of the kernels (``-D NAME=VALUE`` overrides a size or a switch
that _native.c keeps under ``#ifndef``: KCMAX, TILE_BYTES, WIDE_TILE_BYTES, GW_OUTER_BYTES,
GW_OUTER_IMAGES_BYTES, CL_GW_MIN_TILE, PFD, PACK_MIN_PIXELS, KSPLIT, FLOPS_PER_THREAD,
FWD_PREFETCH_Y, CL_PREFETCH_Y, PREFETCH_Y_MIN_BYTES; for the bfloat16 AMX kernel, ``--dtype bfloat16
--candidate amx``: AMX_A_BYTES). Two builds without overrides are made too: the
control, which every time is divided by, and a second copy of it, which shows how finely the
comparison resolves (the same code, loaded at another address). All builds are loaded into one
process and run in turn, interleaved, on the same data, through conv1x1's own native passes.

``--against REV`` adds a build of the kernels as they were at a git revision (another commit of
this repository), to time a change of the code itself against the code before it. The calls into
the kernels are this checkout's: a revision whose kernels take other arguments stops the run with
a message.

    python benchmarks/native_builds.py -D WIDE_TILE_BYTES=196608L [-D GW_OUTER_BYTES=131072L ...]
        [--against HEAD~1 ...] [--layout nchw|channels_last] [--shapes GLOB ...] [--passes forward ...]
        [--dtype float32|bfloat16] [--candidate native|native_turned|amx|amx_turned] [--repeats 9]
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidates import DTYPES, PASSES, _runners, _time
from conv1x1 import suite
from onebyone import ops

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "onebyone" / "_native.c"
# the flags setup.py builds the kernels with
CFLAGS = ["-O3", "-std=gnu11", "-pthread", "-fno-math-errno", "-fPIC", "-shared"]


def build(defines: list[str], out: Path, source: Path = SOURCE) -> Path:
    """Compile _native.c with these -D overrides into out; raise with the compiler's message."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    include = sysconfig.get_paths()["include"]
    cmd = [cc, *CFLAGS, *(f"-D{d}" for d in defines), f"-I{include}", str(source), "-ldl", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building with {defines} failed:\n{done.stderr[-2000:]}")
    return out


def checkout(rev: str, into: Path) -> Path:
    """The kernels' sources (_native.c and the header it includes) as they were at git revision rev,
    written into the folder into; returns the path of _native.c there."""
    into.mkdir(parents=True)
    for name in ("_native.c", "_native_kernels.h", "_native_amx.h"):
        rel = SOURCE.with_name(name).relative_to(ROOT).as_posix()
        done = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, check=False)
        if done.returncode != 0 and name == "_native_amx.h":  # a revision from before the AMX kernel
            continue
        if done.returncode != 0:
            raise RuntimeError(f"--against {rev}: git show {rev}:{rel} failed: {done.stderr.decode()[-500:]}")
        (into / name).write_bytes(done.stdout)
    return into / "_native.c"


def load(path: Path) -> types.ModuleType:
    """A build as its own module (another copy of the library), on PyTorch's OpenMP threads."""
    spec = importlib.util.spec_from_file_location("onebyone._native", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runtime = ops.native._torch_openmp_runtime()
    if runtime is not None:
        module.use_openmp(runtime)
    return module


def on(module: types.ModuleType, fn: Callable[[], object]) -> Callable[[], object]:
    """fn with conv1x1's native and AMX passes running on this build."""

    def run() -> object:
        before, ops.native._native, ops.amx._native = ops.native._native, module, module
        try:
            return fn()
        finally:
            ops.native._native = ops.amx._native = before

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-D", dest="variants", action="append", nargs="+", default=[], metavar="NAME=VALUE",
                        help="one variant build (repeat -D for more variants)")
    parser.add_argument("--against", action="append", default=[], metavar="REV",
                        help="also a build of the kernels at this git revision (repeatable)")
    parser.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    parser.add_argument("--shapes", nargs="+", metavar="GLOB", help="only shapes whose name matches")
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--candidate", choices=["native", "native_turned", "amx", "amx_turned"],
                        default="native", help="which of conv1x1's candidates runs on the builds")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds; the median is kept")
    parser.add_argument("--min-sample-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    if ops.native_isa() is None:
        print("the native kernels were not built: nothing to compare", file=sys.stderr)
        return 1
    for variant in args.variants:
        for d in variant:
            if "=" not in d or not d.split("=", 1)[0].isidentifier():
                print(f"-D {d}: expected NAME=VALUE, e.g. TILE_BYTES=262144L", file=sys.stderr)
                return 2
    shapes = [s for s in suite() if not args.shapes or any(fnmatch.fnmatch(s.name, p) for p in args.shapes)]
    if not shapes:
        print(f"no shape matches {args.shapes}", file=sys.stderr)
        return 2
    names = ["control", "control copy"] + [" ".join(v) for v in args.variants] + args.against
    with tempfile.TemporaryDirectory() as tmp:
        try:
            paths = [build([], Path(tmp) / "control.so")]
            paths.append(Path(shutil.copy(paths[0], Path(tmp) / "control_copy.so")))
            paths += [build(v, Path(tmp) / f"variant{i}.so") for i, v in enumerate(args.variants)]
            paths += [build([], Path(tmp) / f"rev{i}.so", checkout(rev, Path(tmp) / f"rev{i}"))
                      for i, rev in enumerate(args.against)]
        except RuntimeError as err:
            print(err, file=sys.stderr)
            return 1
        modules = [load(p) for p in paths]
    cl = args.layout == "channels_last"
    header = "| shape | pass | control ms | " + " | ".join(f"{n} / control" for n in names[1:]) + " |"
    print(f"native kernels: {ops.native_isa()}, {args.layout}, {args.dtype}, candidate {args.candidate}; "
          f"median of {args.repeats} interleaved rounds")
    print(header)
    print("|---" * (3 + len(names) - 1) + "|")
    for shape in shapes:
        for pass_, fns in _runners(shape, cl, DTYPES[args.dtype]).items():
            if pass_ not in args.passes or args.candidate not in fns:
                continue
            try:
                t = _time({n: on(m, fns[args.candidate]) for n, m in zip(names, modules, strict=True)},
                          args.repeats, args.min_sample_ms / 1e3)
            except TypeError as err:  # a revision's kernels that take other arguments than this checkout's
                print(f"{shape.name} {pass_}: a build cannot take this checkout's call: {err}",
                      file=sys.stderr)
                return 1
            ratios = " | ".join(f"{t[n] / t['control']:.3f}" for n in names[1:])
            print(f"| {shape.name} | {pass_} | {t['control'] * 1e3:.3f} | {ratios} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
