"""Run by scripts/linker (the x86_64 linker, .cargo/config.toml) for a link
that asks for a symbol order.

cli/build.rs asks the release link of `skiff` for
`-Wl,--symbol-ordering-file=cli/link-order.txt`: the functions that a
running agent and master execute, agent first, by their demangled names
(scripts/profile-link-order writes it). lld wants mangled names, and a
mangled name carries a hash of its crate's path on disk, so a list written
here would match nothing in another checkout. This resolves each demangled
name to the symbols of that name in the objects being linked, writes them
to a temporary file, and hands that to the linker instead.

Whatever cannot be resolved (nm missing or failing) is reported on stderr
and the link goes on without an order: the layout is an optimisation, never
a reason for a build to fail. `<output>.link-order` records what was
resolved.
"""
import os
import subprocess
import sys
import tempfile

FLAG = "-Wl,--symbol-ordering-file="
LINKER = os.environ.get("SKIFF_LINK_CC", "cc")


def expanded(args):
    """The arguments with @response files read, for finding inputs only."""
    out = []
    for a in args:
        if a.startswith("@") and os.path.isfile(a[1:]):
            with open(a[1:]) as f:
                out.extend(line.strip().strip('"') for line in f if line.strip())
        else:
            out.append(a)
    return out


def inputs(args):
    return [a for a in args if a.endswith((".o", ".rlib", ".a")) and os.path.isfile(a)]


def symbol_names(files, demangle):
    cmd = ["nm", "--defined-only", "--format=just-symbols"]
    if demangle:
        cmd.append("--demangle")
    run = subprocess.run(cmd + files, capture_output=True, text=True, errors="replace")
    if run.returncode != 0:
        raise RuntimeError(f"nm exited with {run.returncode}: {run.stderr.strip()[:300]}")
    return run.stdout.splitlines()


def resolve(order_path, files):
    """(symbols in order, names listed, names found)."""
    mangled = symbol_names(files, demangle=False)
    demangled = symbol_names(files, demangle=True)
    if len(mangled) != len(demangled):
        raise RuntimeError("nm listed the symbols differently with and without --demangle")
    by_name = {}
    for m, d in zip(mangled, demangled):
        if not m or m.endswith(":"):
            continue  # an archive member's header, or the blank line before it
        by_name.setdefault(d, []).append(m)
        if d != m:
            by_name.setdefault(m, []).append(m)
    with open(order_path, errors="replace") as f:
        wanted = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    symbols, seen, found = [], set(), 0
    for name in wanted:
        hits = by_name.get(name)
        if not hits:
            continue
        found += 1
        for m in hits:
            if m not in seen:
                seen.add(m)
                symbols.append(m)
    return symbols, len(wanted), found


def main():
    args = sys.argv[1:]
    index = next((i for i, a in enumerate(args) if a.startswith(FLAG)), None)
    if index is None:
        os.execvp(LINKER, [LINKER] + args)  # scripts/linker sends only links with one
    order_path = args[index][len(FLAG):]
    output = None
    flat = expanded(args)
    for i, a in enumerate(flat[:-1]):
        if a == "-o":
            output = flat[i + 1]
    tmp = None
    try:
        symbols, listed, found = resolve(order_path, inputs(flat))
        fd, tmp = tempfile.mkstemp(prefix="skiff-link-order-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(symbols) + "\n")
        args[index] = FLAG + tmp
        report = f"{found} of {listed} names in {order_path} resolved to {len(symbols)} symbols\n"
    except (OSError, RuntimeError) as e:
        del args[index]
        report = f"no symbol order: {e}\n"
        sys.stderr.write(f"scripts/link-order.py: {report}")
    if output:
        try:
            with open(output + ".link-order", "w") as f:
                f.write(report)
        except OSError:
            pass
    try:
        code = subprocess.call([LINKER] + args)
    finally:
        if tmp:
            os.unlink(tmp)
    sys.exit(code)


if __name__ == "__main__":
    main()
