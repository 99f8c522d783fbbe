"""Run by scripts/linker for the link that asks for a symbol order:

    python3 link-order.py ORDER RESOLVED REPORT LINKER-ARGS...

ORDER (cli/link-order.txt) lists the functions that a running agent and
master execute, agent first, by their demangled names
(scripts/profile-link-order writes it). lld wants mangled names, and a
mangled name carries a hash of its crate's path on disk, so a list of them
written here would match nothing in another checkout. This resolves each
demangled name to the symbols of that name in the objects being linked
(the `.o`, `.rlib` and `.a` files among LINKER-ARGS), writes them to
RESOLVED for `--symbol-ordering-file`, and what it resolved to REPORT.
Exits non-zero, saying why, when it cannot; scripts/linker then links
without an order.
"""
import os
import subprocess
import sys

NM = os.environ.get("SKIFF_LINK_NM", "nm")


def symbol_names(files, demangle):
    # Unsorted, so both listings are in the objects' own order, line for line.
    cmd = [NM, "--defined-only", "--no-sort", "--format=just-symbols"]
    if demangle:
        cmd.append("--demangle")
    run = subprocess.run(cmd + files, capture_output=True, text=True, errors="replace")
    if run.returncode != 0:
        raise RuntimeError(f"{NM} exited with {run.returncode}: {run.stderr.strip()[:300]}")
    return run.stdout.splitlines()


def demangled_names(files):
    """(mangled, demangled) for every symbol the files define; also used by
    scripts/profile-link-order."""
    mangled = symbol_names(files, demangle=False)
    demangled = symbol_names(files, demangle=True)
    if len(mangled) != len(demangled):
        raise RuntimeError(f"{NM} listed the symbols differently with and without --demangle")
    return [(m, d) for m, d in zip(mangled, demangled) if m]


def resolve(order_path, files):
    """(symbols in order, names listed, names found)."""
    by_name = {}
    for m, d in demangled_names(files):
        by_name.setdefault(d, []).append(m)
    with open(order_path, errors="replace") as f:
        wanted = [line.rstrip("\n") for line in f if line.strip()]
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
    if len(sys.argv) < 4:
        sys.exit("usage: link-order.py ORDER RESOLVED REPORT LINKER-ARGS...")
    order_path, resolved, report = sys.argv[1:4]
    files = [a for a in sys.argv[4:] if a.endswith((".o", ".rlib", ".a")) and os.path.isfile(a)]
    try:
        symbols, listed, found = resolve(order_path, files)
        with open(resolved, "w") as f:
            f.write("\n".join(symbols) + "\n")
        with open(report, "w") as f:
            f.write(f"{found} of {listed} names in {order_path} resolved to {len(symbols)} symbols\n")
    except (OSError, RuntimeError, UnicodeError) as e:
        sys.exit(f"link-order.py: {e}")


if __name__ == "__main__":
    main()
