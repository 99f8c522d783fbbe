//! The pods' fast path: a tc-BPF program (tcx ingress, Linux 6.6 and
//! later) on the uplink and on every pod's host-side veth that hands a
//! pod's TCP and UDP packets to where the kernel's own route sends them
//! without the host's IP stack in between, as Cilium's host routing does:
//! a packet for a pod of this node goes straight into the pod's namespace
//! (`bpf_redirect_peer`, no second pass through a veth's backlog), one for
//! a pod of a node routed directly on the uplink (host-gw) goes straight
//! out of the uplink (`bpf_redirect_neigh`). The TTL is decremented as a
//! router would.
//!
//! Only what the host's stack would pass unchanged takes it: IPv4 without
//! options or fragments, addressed to the host's MAC, TTL above 1, coming
//! in by the way its source is routed (strict reverse-path filtering, so
//! no pod passes with another's address), from and to addresses of the
//! cluster CIDR (the answer to anything else would go through the stack,
//! which would take it for a new connection leaving the cluster and
//! masquerade it), and of no connection the host's conntrack knows. A connection
//! the stack translated (a clusterIP's DNAT, a host port, a masquerade)
//! or saw first keeps going through it, so its replies are translated
//! back (`bpf_skb_ct_lookup`, a kfunc found in the kernel's BTF, or in
//! `nf_conntrack`'s where conntrack is a module).
//! Everything else (ICMP, Services' addresses, traffic over VXLAN or
//! leaving the cluster) goes through the stack as before.
//!
//! The program is assembled here, loaded and checked by the kernel's
//! verifier; each attachment is a BPF link held by the agent, so an agent
//! that stops takes its fast path with it and pods' traffic goes through
//! the stack meanwhile. Where the kernel lacks what it needs (BTF, the
//! conntrack kfuncs, tcx), the agent runs without it.
//!
//! The BPF crates (aya, libbpf-rs) load ELF objects built by a BPF
//! toolchain (clang or bpf-linker), which the build does not have; a
//! program this small is assembled here instead, and the two `bpf(2)`
//! calls (load, link, and finding a module's BTF) are this module's only
//! `unsafe`.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use skiff_objects::Ipv4Net;

use super::subnet::Subnet;

/// Errors loading or attaching the fast path.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("the kernel cannot run the pods' fast path: {0}")]
    Unsupported(String),
    #[error("the kernel refused the fast path program: {source}; verifier: {log}")]
    Load {
        #[source]
        source: std::io::Error,
        log: String,
    },
    #[error("attaching the fast path to {device}: {source}")]
    Attach {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the program sends packets: the addresses and devices it is
/// built for.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Every pod's address is in it; nothing else is taken.
    pub cluster: Subnet,
    /// This node's pods.
    pub local: Subnet,
    /// The device holding the node IP: the only way out it takes.
    pub uplink: u32,
    /// Whether other nodes' pods may be routed on the uplink (host-gw,
    /// auto); if not, their packets go to the stack unlooked-at.
    pub routes_directly: bool,
    /// The gateway's bridge, which carries no pod: never a way in.
    pub bridge: u32,
}

/// The BTF ids of the conntrack kfuncs the program calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kfuncs {
    pub ct_lookup: u32,
    pub ct_release: u32,
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const CONNTRACK_BTF: &str = "/sys/kernel/btf/nf_conntrack";

/// The loaded program and the devices it is attached to.
#[derive(Debug)]
pub struct FastPath {
    program: OwnedFd,
    /// Device name → (its index when attached, the link).
    links: Mutex<HashMap<String, (u32, OwnedFd)>>,
}

impl FastPath {
    /// Finds the kfuncs in the kernel's BTF, assembles the program for
    /// `layout` and loads it.
    pub fn load(layout: Layout) -> Result<FastPath, FastPathError> {
        let open = |path: &str| {
            std::fs::File::open(path)
                .map(|f| BufReader::with_capacity(64 * 1024, f))
                .map_err(|e| FastPathError::Unsupported(format!("{path}: {e}")))
        };
        let (vmlinux, base) = scan_btf(open(VMLINUX_BTF)?, BtfBase::default())?;
        let program = match vmlinux.kfuncs {
            Some(kfuncs) => load_program(&program(layout, kfuncs), None)?,
            None => {
                // Conntrack as a module (most distributions' kernels):
                // its BTF continues the kernel's, and the program names
                // it by a descriptor.
                let (module, _) = scan_btf(open(CONNTRACK_BTF)?, base)?;
                let kfuncs = module.kfuncs.ok_or_else(no_kfuncs)?;
                let btf = module_btf("nf_conntrack")?;
                let mut code = program(layout, kfuncs);
                for insn in &mut code {
                    if insn.code == CALL && insn.regs >> 4 == PSEUDO_KFUNC_CALL {
                        insn.off = 1; // fd_array[1]
                    }
                }
                load_program(&code, Some(&btf))?
            }
        };
        Ok(FastPath {
            program,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Attaches the program to `device`'s ingress; a device already
    /// holding it (the same index) is left as it is.
    pub fn attach(&self, device: &str) -> Result<(), FastPathError> {
        let index = nix::net::if_::if_nametoindex(device).map_err(|e| FastPathError::Attach {
            device: device.to_owned(),
            source: e.into(),
        })?;
        self.attach_index(device, index)
    }

    /// [`FastPath::attach`] for a device known by its index, `device`
    /// naming it.
    pub fn attach_index(&self, device: &str, index: u32) -> Result<(), FastPathError> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(device).is_some_and(|(held, _)| *held == index) {
            return Ok(());
        }
        let link =
            attach_ingress(&self.program, index).map_err(|source| FastPathError::Attach {
                device: device.to_owned(),
                source,
            })?;
        links.insert(device.to_owned(), (index, link));
        Ok(())
    }

    /// Takes the program off `device` (nothing if it was not on it).
    pub fn detach(&self, device: &str) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device);
    }

    /// How many devices hold the program.
    pub fn attached(&self) -> usize {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

// ---------------------------------------------------------------------
// BTF: the type ids of two functions, read as a stream (the file is
// several MB; it is never held whole).

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_KIND_FUNC: u32 = 12;
const KFUNC_LOOKUP: &[u8] = b"bpf_skb_ct_lookup";
const KFUNC_RELEASE: &[u8] = b"bpf_ct_release";

/// What a BTF blob was read to: the kfuncs' ids if it holds them, and
/// what a split blob (a module's) built on it continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BtfScan {
    pub kfuncs: Option<Kfuncs>,
    /// The last type id.
    pub last_type: u32,
    /// The length of the string section.
    pub strings: u32,
}

/// Where a BTF blob's ids and strings start: nothing for the kernel's
/// own, the kernel's for a module's (split BTF continues its base).
#[derive(Debug, Clone, Copy, Default)]
pub struct BtfBase {
    pub last_type: u32,
    pub strings: u32,
    /// The names' offsets among the base's strings, if there.
    lookup_name: Option<u32>,
    release_name: Option<u32>,
}

impl BtfBase {
    fn of(scan: &BtfScan, names: (Option<u32>, Option<u32>)) -> BtfBase {
        BtfBase {
            last_type: scan.last_type,
            strings: scan.strings,
            lookup_name: names.0,
            release_name: names.1,
        }
    }
}

fn no_kfuncs() -> FastPathError {
    FastPathError::Unsupported(
        "the kernel's BTF: no conntrack kfuncs (bpf_skb_ct_lookup, bpf_ct_release)".into(),
    )
}

/// Reads a BTF blob as a stream (the kernel's is several MB; it is never
/// held whole): the kfuncs' ids if it has them, and the base a module's
/// blob continues from.
pub fn scan_btf<R: Read + Seek>(
    mut btf: R,
    base: BtfBase,
) -> Result<(BtfScan, BtfBase), FastPathError> {
    let bad = |what: String| FastPathError::Unsupported(format!("the kernel's BTF: {what}"));
    let io = |e: std::io::Error| bad(e.to_string());
    let mut header = [0u8; 24];
    btf.read_exact(&mut header).map_err(io)?;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if u16::from_le_bytes([header[0], header[1]]) != BTF_MAGIC {
        return Err(bad("not little-endian BTF".into()));
    }
    let hdr_len = u64::from(u32_at(&header, 4));
    let (type_off, type_len) = (u32_at(&header, 8), u32_at(&header, 12));
    let (str_off, str_len) = (u32_at(&header, 16), u32_at(&header, 20));

    // The names' offsets in the string section (each string starts after
    // a NUL), past the base's strings.
    btf.seek(SeekFrom::Start(hdr_len + u64::from(str_off)))
        .map_err(io)?;
    let (mut lookup_name, mut release_name) = (None, None);
    let mut current = Vec::new();
    let mut start = 0u32;
    let mut strings = (&mut btf).take(u64::from(str_len));
    let mut chunk = [0u8; 8192];
    let mut at = 0u32;
    loop {
        let n = strings.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        for &byte in &chunk[..n] {
            if byte == 0 {
                if current == KFUNC_LOOKUP {
                    lookup_name = Some(base.strings + start);
                } else if current == KFUNC_RELEASE {
                    release_name = Some(base.strings + start);
                }
                current.clear();
                start = at + 1;
            } else if current.len() <= KFUNC_LOOKUP.len() {
                current.push(byte);
            }
            at += 1;
        }
    }
    let lookup_name = base.lookup_name.or(lookup_name);
    let release_name = base.release_name.or(release_name);

    // The types, in id order after the base's: a 12-byte head, then what
    // its kind carries.
    btf.seek(SeekFrom::Start(hdr_len + u64::from(type_off)))
        .map_err(io)?;
    let mut types = BufReader::new((&mut btf).take(u64::from(type_len)));
    let (mut ct_lookup, mut ct_release) = (None, None);
    let mut id = base.last_type;
    let mut head = [0u8; 12];
    loop {
        match types.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
        id += 1;
        let (name, info) = (u32_at(&head, 0), u32_at(&head, 4));
        let (kind, vlen) = ((info >> 24) & 0x1f, u64::from(info & 0xffff));
        if kind == BTF_KIND_FUNC {
            if Some(name) == lookup_name {
                ct_lookup = Some(id);
            } else if Some(name) == release_name {
                ct_release = Some(id);
            }
        }
        let tail = match kind {
            1 | 14 | 17 => 4,             // int, var, decl tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
            6 | 13 => 8 * vlen,           // enum, func proto
            2 | 7..=12 | 16 | 18 => 0,
            other => return Err(bad(format!("type {id} has unknown kind {other}"))),
        };
        std::io::copy(&mut (&mut types).take(tail), &mut std::io::sink()).map_err(io)?;
    }
    let scan = BtfScan {
        kfuncs: match (ct_lookup, ct_release) {
            (Some(ct_lookup), Some(ct_release)) => Some(Kfuncs {
                ct_lookup,
                ct_release,
            }),
            _ => None,
        },
        last_type: id,
        strings: base.strings + str_len,
    };
    let next = BtfBase::of(&scan, (lookup_name, release_name));
    Ok((scan, next))
}

// ---------------------------------------------------------------------
// The program.

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }

    fn bytes(self) -> [u8; 8] {
        let [o0, o1] = self.off.to_le_bytes();
        let [i0, i1, i2, i3] = self.imm.to_le_bytes();
        [self.code, self.regs, o0, o1, i0, i1, i2, i3]
    }
}

// Opcodes (class | size or op | source).
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const STX_W: u8 = 0x63;
const STX_H: u8 = 0x6b;
const STX_B: u8 = 0x73;
const ST_B: u8 = 0x72;
const ST_W: u8 = 0x62;
const ST_DW: u8 = 0x7a;
const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const ADD64_K: u8 = 0x07;
const AND32_K: u8 = 0x54;
const JA: u8 = 0x05;
const JEQ_K: u8 = 0x15;
const JEQ_X: u8 = 0x1d;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const JGT_X: u8 = 0x2d;
const JLT_K: u8 = 0xa5;
const JLE_K: u8 = 0xb5;
const JEQ32_K: u8 = 0x16;
const JNE32_K: u8 = 0x56;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// `src_reg` of a call to a kernel function by BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;

// Helpers.
const FIB_LOOKUP: i32 = 69;
const REDIRECT_NEIGH: i32 = 152;
const REDIRECT_PEER: i32 = 155;
const FIB_LOOKUP_SKIP_NEIGH: i32 = 4;

// `struct __sk_buff` fields.
const SKB_PKT_TYPE: i16 = 4;
const SKB_INGRESS_IFINDEX: i16 = 36;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// What tcx does next: the next program, or the stack.
const TCX_NEXT: i32 = -1;
const ENOENT: i32 = 2;

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
/// The context (`__sk_buff`), kept across calls.
const CTX: u8 = 6;
/// The L4 protocol.
const PROTO: u8 = 7;
/// The destination address, as the packet holds it.
const DADDR: u8 = 8;
/// The device the route leaves by.
const OUT: u8 = 9;
const FP: u8 = 10;

// The stack: the conntrack tuple, its options, the FIB lookup.
const TUPLE: i16 = -16;
const OPTS: i16 = -32;
/// `NF_BPF_CT_OPTS_OLD_SZ`: what every kernel with these kfuncs takes
/// (6.11 and later take 16 too, with zone fields that are zero here).
const OPTS_SIZE: i32 = 12;
const FIB: i16 = -96;

/// An IPv4 address or mask as a 32-bit load of the packet sees it.
fn as_loaded(bytes: [u8; 4]) -> i32 {
    i32::from_le_bytes(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Pass,
    L4,
    Untracked,
    Local,
    Carry(u8),
}

/// A tiny assembler: jumps name labels, resolved at the end.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn::new(code, dst, src, off, imm));
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    fn label(&mut self, label: Label) {
        self.labels.push((label, self.insns.len()));
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|(_, i)| *i)
                .expect("every jump's label is placed");
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }

    /// r2 = data, r3 = data_end, and leaves for the stack unless `len`
    /// bytes are there.
    fn packet(&mut self, len: i32) {
        self.op(LDX_W, R2, CTX, SKB_DATA, 0);
        self.op(LDX_W, R3, CTX, SKB_DATA_END, 0);
        self.op(MOV64_X, R4, R2, 0, 0);
        self.op(ADD64_K, R4, 0, 0, len);
        self.jump(JGT_X, R4, R3, 0, Label::Pass);
    }

    /// Jumps to `to` by `code` (`JEQ32_K` or `JNE32_K`) as r4, an address
    /// as loaded, is or is not in `net`.
    fn in_net(&mut self, code: u8, net: Ipv4Net, to: Label) {
        self.op(AND32_K, R4, 0, 0, as_loaded(net.mask().to_be_bytes()));
        self.jump(code, R4, 0, as_loaded(net.addr.octets()), to);
    }

    /// Looks the packet's route up into the FIB struct on the stack
    /// (`reverse`: the route back to its source, as it came in) and leaves
    /// for the stack unless one forwards it.
    fn fib_lookup(&mut self, reverse: bool) {
        for at in (0..64).step_by(8) {
            self.op(ST_DW, FP, 0, FIB + at, 0);
        }
        self.op(ST_B, FP, 0, FIB, 2); // AF_INET
        self.op(STX_B, FP, PROTO, FIB + 1, 0);
        self.op(LDX_W, R4, CTX, SKB_INGRESS_IFINDEX, 0);
        self.op(STX_W, FP, R4, FIB + 8, 0);
        let (source, destination) = if reverse { (32, 16) } else { (16, 32) };
        self.op(LDX_W, R4, FP, TUPLE, 0);
        self.op(STX_W, FP, R4, FIB + source, 0);
        self.op(STX_W, FP, DADDR, FIB + destination, 0);
        self.op(MOV64_X, R1, CTX, 0, 0);
        self.op(MOV64_X, R2, FP, 0, 0);
        self.op(ADD64_K, R2, 0, 0, FIB.into());
        self.op(MOV64_K, R3, 0, 0, 64);
        self.op(MOV64_K, R4, 0, 0, FIB_LOOKUP_SKIP_NEIGH);
        self.op(CALL, 0, 0, 0, FIB_LOOKUP);
        self.jump(JNE_K, R0, 0, 0, Label::Pass);
    }

    /// Decrements the TTL and mends the header checksum as the kernel's
    /// `ip_decrease_ttl` does (packet pointers read again: a call before
    /// may have moved the data).
    fn decrease_ttl(&mut self, which: u8) {
        self.packet(34);
        self.op(LDX_H, R4, R2, 24, 0);
        self.op(ADD64_K, R4, 0, 0, 1); // htons(0x0100) as loaded
        self.jump(JLT_K, R4, 0, 0xffff, Label::Carry(which));
        self.op(ADD64_K, R4, 0, 0, 1);
        self.label(Label::Carry(which));
        self.op(STX_H, R2, R4, 24, 0);
        self.op(LDX_B, R4, R2, 22, 0);
        self.op(ADD64_K, R4, 0, 0, -1);
        self.op(STX_B, R2, R4, 22, 0);
    }
}

/// The program for `layout`.
pub fn program(layout: Layout, kfuncs: Kfuncs) -> Vec<Insn> {
    let mut a = Asm::default();
    let cluster = layout.cluster.net();
    let local = layout.local.net();
    a.op(MOV64_X, CTX, R1, 0, 0);
    // Addressed to this host (ip_forward drops the rest too).
    a.op(LDX_W, R4, CTX, SKB_PKT_TYPE, 0);
    a.jump(JNE_K, R4, 0, 0, Label::Pass);
    // Ethernet, IPv4 with no options, and the ports.
    a.packet(14 + 20 + 4);
    a.op(LDX_H, R4, R2, 12, 0);
    a.jump(JNE_K, R4, 0, as_loaded([0x08, 0x00, 0, 0]), Label::Pass);
    a.op(LDX_B, R4, R2, 14, 0);
    a.jump(JNE_K, R4, 0, 0x45, Label::Pass);
    // Neither a fragment nor more to come.
    a.op(LDX_H, R4, R2, 20, 0);
    a.op(AND32_K, R4, 0, 0, as_loaded([0x3f, 0xff, 0, 0]));
    a.jump(JNE_K, R4, 0, 0, Label::Pass);
    a.op(LDX_B, R4, R2, 22, 0);
    a.jump(JLE_K, R4, 0, 1, Label::Pass);
    a.op(LDX_B, PROTO, R2, 23, 0);
    a.jump(JEQ_K, PROTO, 0, 6, Label::L4);
    a.jump(JNE_K, PROTO, 0, 17, Label::Pass);
    a.label(Label::L4);
    a.op(LDX_W, DADDR, R2, 30, 0);
    a.op(MOV64_X, R4, DADDR, 0, 0);
    a.in_net(JNE32_K, cluster, Label::Pass);
    // From a pod too: the answer to anything else goes through the stack,
    // which would take it for a new connection leaving the cluster and
    // masquerade it.
    a.op(LDX_W, R4, R2, 26, 0);
    a.in_net(JNE32_K, cluster, Label::Pass);
    if !layout.routes_directly {
        a.op(MOV64_X, R4, DADDR, 0, 0);
        a.in_net(JNE32_K, local, Label::Pass);
    }

    // Known to conntrack? Then the stack has it (and may translate it).
    a.op(LDX_W, R4, R2, 26, 0);
    a.op(STX_W, FP, R4, TUPLE, 0);
    a.op(STX_W, FP, DADDR, TUPLE + 4, 0);
    a.op(LDX_W, R4, R2, 34, 0);
    a.op(STX_W, FP, R4, TUPLE + 8, 0);
    a.op(ST_DW, FP, 0, OPTS, 0);
    a.op(ST_DW, FP, 0, OPTS + 8, 0);
    a.op(ST_W, FP, 0, OPTS, -1); // netns_id: the packet's own
    a.op(STX_B, FP, PROTO, OPTS + 8, 0); // l4proto
    a.op(MOV64_X, R1, CTX, 0, 0);
    a.op(MOV64_X, R2, FP, 0, 0);
    a.op(ADD64_K, R2, 0, 0, TUPLE.into());
    a.op(MOV64_K, R3, 0, 0, 12);
    a.op(MOV64_X, R4, FP, 0, 0);
    a.op(ADD64_K, R4, 0, 0, OPTS.into());
    a.op(MOV64_K, R5, 0, 0, OPTS_SIZE);
    a.op(CALL, 0, PSEUDO_KFUNC_CALL, 0, kfuncs.ct_lookup as i32);
    a.jump(JEQ_K, R0, 0, 0, Label::Untracked);
    a.op(MOV64_X, R1, R0, 0, 0);
    a.op(CALL, 0, PSEUDO_KFUNC_CALL, 0, kfuncs.ct_release as i32);
    a.jump(JA, 0, 0, 0, Label::Pass);
    a.label(Label::Untracked);
    // Only "no such connection" lets it by; any other error (options
    // this kernel reads otherwise, say) leaves it to the stack.
    a.op(LDX_W, R4, FP, OPTS + 4, 0);
    a.jump(JNE32_K, R4, 0, -ENOENT, Label::Pass);

    // Where the kernel's route sends it.
    a.fib_lookup(false);
    a.op(LDX_W, OUT, FP, FIB + 8, 0);
    a.op(LDX_W, R4, CTX, SKB_INGRESS_IFINDEX, 0);
    a.jump(JEQ_X, R4, OUT, 0, Label::Pass);

    // The source's own way back must be the way it came in (strict
    // reverse-path filtering): no pod, and nothing on the uplink, passes
    // with another's address.
    a.fib_lookup(true);
    a.op(LDX_W, R4, FP, FIB + 8, 0);
    a.op(LDX_W, R5, CTX, SKB_INGRESS_IFINDEX, 0);
    a.jump(JNE_X, R4, R5, 0, Label::Pass);
    a.op(MOV64_X, R4, DADDR, 0, 0);
    a.in_net(JEQ32_K, local, Label::Local);

    // Another node's pod: out of the uplink only (not over VXLAN).
    a.jump(JNE32_K, OUT, 0, layout.uplink as i32, Label::Pass);
    a.decrease_ttl(0);
    a.op(MOV64_X, R1, OUT, 0, 0);
    a.op(MOV64_K, R2, 0, 0, 0);
    a.op(MOV64_K, R3, 0, 0, 0);
    a.op(MOV64_K, R4, 0, 0, 0);
    a.op(CALL, 0, 0, 0, REDIRECT_NEIGH);
    a.op(EXIT, 0, 0, 0, 0);

    // A pod of this node: into its namespace.
    a.label(Label::Local);
    a.jump(JEQ32_K, OUT, 0, layout.bridge as i32, Label::Pass);
    a.decrease_ttl(1);
    a.op(MOV64_X, R1, OUT, 0, 0);
    a.op(MOV64_K, R2, 0, 0, 0);
    a.op(CALL, 0, 0, 0, REDIRECT_PEER);
    a.op(EXIT, 0, 0, 0, 0);

    a.label(Label::Pass);
    a.op(MOV64_K, R0, 0, 0, TCX_NEXT);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

// ---------------------------------------------------------------------
// The bpf(2) calls.

const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
/// Room for every `union bpf_attr` member used here; the rest is zero.
const ATTR_SIZE: usize = 128;

/// `bpf(cmd, attr)`: what it returns, or the error.
fn bpf_call(cmd: i32, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed `union bpf_attr` of ATTR_SIZE bytes whose
    // pointers (set by the callers) point at buffers alive for the call,
    // of the sizes the attr gives.
    let r =
        unsafe { nix::libc::syscall(nix::libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE as u32) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// A `bpf` command that makes a descriptor.
fn bpf(cmd: i32, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<OwnedFd> {
    let fd = bpf_call(cmd, attr)?;
    // SAFETY: a successful call returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Loads `program`; `module` is the BTF its kfunc calls name (as
/// `fd_array[1]`) when not the kernel's own.
fn load_program(program: &[Insn], module: Option<&OwnedFd>) -> Result<OwnedFd, FastPathError> {
    let fds: [i32; 2] = [-1, module.map_or(-1, |m| m.as_raw_fd())];
    let fds = module.map(|_| &fds);
    // Without a log first: a long one can make a good program fail
    // (ENOSPC); asked again with one only to say why it failed.
    match load_with_log(program, fds, None) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            let mut log = vec![0u8; 64 * 1024];
            let result = load_with_log(program, fds, Some(&mut log));
            result.map_err(|source| {
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                // The end says why.
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                FastPathError::Load {
                    source,
                    log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                }
            })
        }
    }
}

fn load_with_log(
    program: &[Insn],
    fd_array: Option<&[i32; 2]>,
    log: Option<&mut Vec<u8>>,
) -> std::io::Result<OwnedFd> {
    let code: Vec<u8> = program.iter().flat_map(|i| i.bytes()).collect();
    let license = b"GPL\0";
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, &BPF_PROG_TYPE_SCHED_CLS.to_le_bytes());
    put(&mut attr, 4, &(program.len() as u32).to_le_bytes());
    put(&mut attr, 8, &(code.as_ptr() as u64).to_le_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_le_bytes());
    if let Some(log) = log {
        put(&mut attr, 24, &1u32.to_le_bytes()); // log level
        put(&mut attr, 28, &(log.len() as u32).to_le_bytes());
        put(&mut attr, 32, &(log.as_mut_ptr() as u64).to_le_bytes());
    }
    put(&mut attr, 48, b"skiff_fast_path");
    if let Some(fds) = fd_array {
        put(&mut attr, 120, &(fds.as_ptr() as u64).to_le_bytes());
    }
    bpf(BPF_PROG_LOAD, &mut attr)
}

const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;
const BPF_BTF_GET_FD_BY_ID: i32 = 19;
const BPF_BTF_GET_NEXT_ID: i32 = 23;

/// A descriptor of the kernel's BTF object named `name` (a module's, or
/// `vmlinux`).
fn module_btf(name: &str) -> Result<OwnedFd, FastPathError> {
    let unsupported =
        |what: String| FastPathError::Unsupported(format!("the BTF of {name}: {what}"));
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; ATTR_SIZE];
        put(&mut attr, 0, &id.to_le_bytes());
        if let Err(e) = bpf_call(BPF_BTF_GET_NEXT_ID, &mut attr) {
            return Err(unsupported(
                if e.raw_os_error() == Some(nix::libc::ENOENT) {
                    "not loaded".into()
                } else {
                    e.to_string()
                },
            ));
        }
        id = u32::from_le_bytes([attr[4], attr[5], attr[6], attr[7]]);
        let mut attr = [0u8; ATTR_SIZE];
        put(&mut attr, 0, &id.to_le_bytes());
        let Ok(btf) = bpf(BPF_BTF_GET_FD_BY_ID, &mut attr) else {
            continue; // gone meanwhile
        };
        let mut object_name = [0u8; 64];
        let mut info = [0u8; 32];
        put(
            &mut info,
            16,
            &(object_name.as_mut_ptr() as u64).to_le_bytes(),
        );
        put(&mut info, 24, &(object_name.len() as u32).to_le_bytes());
        let mut attr = [0u8; ATTR_SIZE];
        put(&mut attr, 0, &(btf.as_raw_fd() as u32).to_le_bytes());
        put(&mut attr, 4, &(info.len() as u32).to_le_bytes());
        put(&mut attr, 8, &(info.as_mut_ptr() as u64).to_le_bytes());
        // The kernel writes at most `info_len` bytes into `info` and
        // `name_len` into `object_name`.
        if bpf_call(BPF_OBJ_GET_INFO_BY_FD, &mut attr).is_err() {
            continue;
        }
        let end = object_name.iter().position(|b| *b == 0).unwrap_or(0);
        if &object_name[..end] == name.as_bytes() {
            return Ok(btf);
        }
    }
}

fn attach_ingress(program: &OwnedFd, ifindex: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, &(program.as_raw_fd() as u32).to_le_bytes());
    put(&mut attr, 4, &ifindex.to_le_bytes());
    put(&mut attr, 8, &BPF_TCX_INGRESS.to_le_bytes());
    bpf(BPF_LINK_CREATE, &mut attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BTF ids of `bpf_skb_ct_lookup` and `bpf_ct_release` in the
    /// kernel's BTF (`vmlinux`), where conntrack is built in.
    pub fn find_kfuncs<R: Read + Seek>(btf: R) -> Result<Kfuncs, FastPathError> {
        scan_btf(btf, BtfBase::default())?
            .0
            .kfuncs
            .ok_or_else(no_kfuncs)
    }

    fn subnet(s: &str) -> Subnet {
        Subnet::new(s.parse().unwrap()).unwrap()
    }

    fn layout() -> Layout {
        Layout {
            cluster: subnet("10.42.0.0/16"),
            local: subnet("10.42.3.0/24"),
            uplink: 2,
            routes_directly: true,
            bridge: 5,
        }
    }

    /// A type's name: its own string, or an offset among a base's.
    enum Name<'a> {
        Own(&'a str),
        At(u32),
    }

    /// A BTF blob with the given types (kind, name, vlen), its strings
    /// numbered after `base_strings` (a split blob's are).
    fn split_btf(types: &[(u32, Name<'_>, u32)], base_strings: u32) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut type_bytes = Vec::new();
        for (kind, name, vlen) in types {
            let name_off = match name {
                Name::Own(name) => {
                    let at = base_strings + strings.len() as u32;
                    strings.extend_from_slice(name.as_bytes());
                    strings.push(0);
                    at
                }
                Name::At(at) => *at,
            };
            type_bytes.extend_from_slice(&name_off.to_le_bytes());
            type_bytes.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            type_bytes.extend_from_slice(&0u32.to_le_bytes());
            let tail = match kind {
                1 => 4,
                4 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
            type_bytes.extend(std::iter::repeat_n(0xaa, tail as usize));
        }
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [24, 0, type_bytes.len() as u32, type_bytes.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    fn btf(types: &[(u32, &str, u32)]) -> Vec<u8> {
        let types: Vec<(u32, Name<'_>, u32)> = types
            .iter()
            .map(|(k, n, v)| (*k, Name::Own(n), *v))
            .collect();
        split_btf(&types, 0)
    }

    #[test]
    fn a_modules_split_btf_continues_the_kernels_ids_and_strings() {
        // The kernel's: no such functions, but one of the names (a
        // struct's), which the module's types may point back at.
        let vmlinux = btf(&[(1, "int", 0), (4, "bpf_ct_release", 2), (13, "", 1)]);
        let (scan, base) =
            scan_btf(std::io::Cursor::new(vmlinux.clone()), BtfBase::default()).unwrap();
        assert_eq!(scan.kfuncs, None);
        assert_eq!(scan.last_type, 3);
        assert!(find_kfuncs(std::io::Cursor::new(vmlinux)).is_err());
        let release_in_base = 5; // after "\0int\0"
        let module = split_btf(
            &[
                (13, Name::Own(""), 2),
                (12, Name::Own("bpf_skb_ct_lookup"), 0),
                (12, Name::At(release_in_base), 0),
            ],
            scan.strings,
        );
        let (module, _) = scan_btf(std::io::Cursor::new(module), base).unwrap();
        assert_eq!(
            module.kfuncs,
            Some(Kfuncs {
                ct_lookup: 5,
                ct_release: 6
            })
        );
    }

    #[test]
    fn the_kfuncs_are_found_by_name_and_kind_past_types_of_every_size() {
        let blob = btf(&[
            (1, "int", 0),
            (4, "bpf_skb_ct_lookup", 3), // a struct of that name is not it
            (13, "", 5),
            (12, "bpf_ct_release", 0),
            (6, "e", 2),
            (12, "bpf_skb_ct_lookup", 0),
        ]);
        let found = find_kfuncs(std::io::Cursor::new(blob)).unwrap();
        assert_eq!(
            found,
            Kfuncs {
                ct_lookup: 6,
                ct_release: 4
            }
        );
    }

    #[test]
    fn a_kernel_without_the_kfuncs_is_said_to_be_unsupported() {
        let blob = btf(&[(1, "int", 0), (12, "bpf_ct_release", 0)]);
        let err = find_kfuncs(std::io::Cursor::new(blob)).unwrap_err();
        assert!(err.to_string().contains("no conntrack kfuncs"), "{err}");
        let err = find_kfuncs(std::io::Cursor::new(vec![0u8; 24])).unwrap_err();
        assert!(err.to_string().contains("not little-endian BTF"), "{err}");
    }

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_exits() {
        let program = program(
            layout(),
            Kfuncs {
                ct_lookup: 7,
                ct_release: 8,
            },
        );
        for (at, insn) in program.iter().enumerate() {
            let class = insn.code & 0x07;
            if (class == 0x05 || class == 0x06) && insn.code != CALL && insn.code != EXIT {
                let target = at as isize + 1 + insn.off as isize;
                assert!(
                    (0..program.len() as isize).contains(&target),
                    "jump at {at} to {target}"
                );
            }
        }
        assert_eq!(program.last().unwrap().code, EXIT);
        // The addresses are compared as the packet holds them.
        let checks = program
            .iter()
            .filter(|i| i.code == JNE32_K && i.imm == as_loaded([10, 42, 0, 0]))
            .count();
        assert_eq!(checks, 2, "source and destination in the cluster CIDR");
        let lookups = program
            .iter()
            .filter(|i| i.code == CALL && i.imm == FIB_LOOKUP)
            .count();
        assert_eq!(lookups, 2, "the destination's route and the source's");
        assert!(
            program
                .iter()
                .any(|i| i.code == LDX_W && i.off == SKB_PKT_TYPE),
            "only frames addressed to the host"
        );
        let local = program
            .iter()
            .find(|i| i.code == JEQ32_K && i.imm == as_loaded([10, 42, 3, 0]));
        assert!(local.is_some(), "the local subnet is checked");

        // Without direct routes, another node's pod is left to the stack
        // before any lookup.
        let kfuncs = Kfuncs {
            ct_lookup: 7,
            ct_release: 8,
        };
        let vxlan_only = super::program(
            Layout {
                routes_directly: false,
                ..layout()
            },
            kfuncs,
        );
        let first_call = vxlan_only.iter().position(|i| i.code == CALL).unwrap();
        let local_first = vxlan_only
            .iter()
            .position(|i| i.code == JNE32_K && i.imm == as_loaded([10, 42, 3, 0]));
        assert!(local_first.is_some_and(|at| at < first_call));
        let direct_first_call = program.iter().position(|i| i.code == CALL).unwrap();
        assert!(!program[..direct_first_call]
            .iter()
            .any(|i| i.imm == as_loaded([10, 42, 3, 0])));
    }

    /// The kernel's verifier is the judge of the program: loaded here
    /// against this machine's kernel (root and BTF needed).
    #[test]
    fn the_kernel_accepts_the_program() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { nix::libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "loading a BPF program needs root; CI runs as root"
            );
            return;
        }
        // In a network namespace of the test's own thread, so that no
        // device of the machine's carries it even for a moment.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let vxlan_only = Layout {
                routes_directly: false,
                ..layout()
            };
            FastPath::load(vxlan_only).unwrap();
            // What a module's BTF is found by, tried on the kernel's own.
            module_btf("vmlinux").unwrap();
            let err = module_btf("skiff_no_such_module").unwrap_err();
            assert!(err.to_string().contains("not loaded"), "{err}");
            let fast_path = FastPath::load(layout()).unwrap();
            fast_path.attach("lo").unwrap();
            fast_path.attach("lo").unwrap();
            assert_eq!(fast_path.attached(), 1);
            let err = fast_path.attach("skiff-none0").unwrap_err();
            assert!(err.to_string().contains("skiff-none0"), "{err}");
            fast_path.detach("lo");
            assert_eq!(fast_path.attached(), 0);
        })
        .join()
        .unwrap();
    }
}
