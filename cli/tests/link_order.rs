//! `scripts/linker` lays a program's functions out in the order that a list
//! of demangled names gives, whatever the hashes in this build's mangled
//! names: the mechanism behind the release binary's layout
//! (`cli/link-order.txt`, `cli/build.rs`). A real rustc, cc, nm and lld.

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAM: &str = r#"
#[inline(never)]
pub fn first(x: u64) -> u64 { x.wrapping_mul(31) ^ 7 }
#[inline(never)]
pub fn second(x: u64) -> u64 { x.rotate_left(9).wrapping_add(3) }
#[inline(never)]
pub fn generic<T: std::fmt::Debug>(t: T) -> String { format!("{t:?}/{t:?}") }
#[inline(never)]
pub fn third(x: u64) -> u64 { x.wrapping_sub(5).wrapping_mul(x) }
fn main() {
    let n = std::env::args().count() as u64;
    println!("{} {} {} {} {}", first(n), second(n), third(n), generic(n as u8), generic("s"));
}
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles PROGRAM through scripts/linker with `order` as its symbol
/// order; returns (demangled name -> address, the linker's report).
fn link(order: &[&str]) -> (Vec<(String, u64)>, String) {
    let (symbols, report) = link_with(order, &[]);
    (
        symbols,
        report.expect("scripts/linker writes <output>.link-order"),
    )
}

/// As `link`, with more rustc arguments; the report is None if the linker
/// wrote none.
fn link_with(order: &[&str], extra: &[&str]) -> (Vec<(String, u64)>, Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("prog.rs");
    std::fs::write(&src, PROGRAM).expect("write program");
    let order_file = dir.path().join("order.txt");
    std::fs::write(&order_file, order.join("\n") + "\n").expect("write order");
    let out = dir.path().join("prog");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let linker = repo().join("scripts/linker");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "symbol-mangling-version=v0",
        ])
        .arg(format!("-Clinker={}", linker.display()))
        .arg(format!(
            "-Clink-arg=-Wl,--symbol-ordering-file={}",
            order_file.display()
        ))
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("run {rustc} (it is needed to test scripts/linker): {e}"));
    assert!(
        status.success(),
        "rustc through scripts/linker failed: {status}"
    );
    let report = std::fs::read_to_string(out.with_extension("link-order")).ok();
    let nm = Command::new("nm")
        .args(["--defined-only", "--demangle"])
        .arg(&out)
        .output()
        .expect("run nm (binutils; it is needed to test scripts/linker)");
    assert!(nm.status.success(), "nm failed on the linked program");
    let symbols = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
            let _kind = parts.next()?;
            Some((parts.next()?.to_string(), addr))
        })
        .collect();
    (symbols, report)
}

fn address(symbols: &[(String, u64)], name: &str) -> u64 {
    symbols
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not in the linked program"))
        .1
}

#[test]
fn the_linker_lays_functions_out_in_the_listed_order_by_demangled_name() {
    // The reverse of the source's order, with one generic instance between,
    // and a name this program does not have.
    let order = [
        "prog::third",
        "prog::generic::<u8>",
        "prog::no_such_function",
        "prog::second",
        "prog::first",
    ];
    let (symbols, report) = link(&order);
    assert!(
        report.starts_with("4 of 5 names"),
        "the report should say 4 of the 5 names resolved: {report}"
    );
    let listed: Vec<u64> = [
        "prog::third",
        "prog::generic::<u8>",
        "prog::second",
        "prog::first",
    ]
    .iter()
    .map(|n| address(&symbols, n))
    .collect();
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "functions should be laid out in the listed order: {listed:x?}"
    );
    // The other instance of `generic` was not listed: it comes after them.
    let other = address(&symbols, "prog::generic::<&str>");
    assert!(
        other > listed[3],
        "an unlisted instance should come after the listed ones ({other:x} vs {listed:x?})"
    );

    // The same program listed the other way round is laid out the other way.
    let (symbols, _) = link(&["prog::first", "prog::second", "prog::third"]);
    let (a, b, c) = (
        address(&symbols, "prog::first"),
        address(&symbols, "prog::second"),
        address(&symbols, "prog::third"),
    );
    assert!(
        a < b && b < c,
        "listed order first, second, third: {a:x} {b:x} {c:x}"
    );
}

#[test]
fn a_link_by_another_linker_than_lld_goes_on_without_the_order() {
    // GNU ld (binutils) knows no --symbol-ordering-file: given it, the link
    // would fail. scripts/linker leaves the order out instead.
    let order = ["prog::third", "prog::second", "prog::first"];
    let (symbols, report) = link_with(&order, &["-Clink-arg=-fuse-ld=bfd"]);
    assert_eq!(
        report, None,
        "no order should have been resolved for GNU ld"
    );
    for name in order {
        address(&symbols, name); // linked, and the program has them
    }
}
