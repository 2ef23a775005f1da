//! nf_tables rule expressions as small Rust types, encoded the way `nft`
//! (libnftnl) encodes them, so `nft list ruleset` prints our rules as if an
//! admin had typed them.
//!
//! Attribute numbers are from `include/uapi/linux/netfilter/nf_tables.h`.
//! A rule is a `Vec<Expr>` evaluated left to right over 16-byte registers;
//! [`Expr::list`] turns it into `NFTA_RULE_EXPRESSIONS`.

use crate::Attrs;

pub use gatewarden_core::net::Fam;

/// The verdict register.
pub const REG_VERDICT: u32 = 0;
/// The first 16-byte data register (`NFT_REG_1`), big enough for an IPv6 address.
pub const REG_1: u32 = 1;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// Which header a payload offset is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The link-layer (Ethernet) header (`NFT_PAYLOAD_LL_HEADER`).
    LinkLayer = 0,
    /// The IP header (`NFT_PAYLOAD_NETWORK_HEADER`).
    Network = 1,
    /// The TCP/UDP/ICMP header (`NFT_PAYLOAD_TRANSPORT_HEADER`).
    Transport = 2,
}

/// Packet metadata keys we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The input interface's name, 16 bytes NUL-padded (`NFT_META_IIFNAME`).
    IifName = 6,
    /// The input interface's hardware type (`NFT_META_IIFTYPE`), `ARPHRD_ETHER` = 1.
    IifType = 8,
    /// IPv4 or IPv6 in an inet table (`NFT_META_NFPROTO`).
    NfProto = 15,
    /// The transport protocol number (`NFT_META_L4PROTO`).
    L4Proto = 16,
}

/// Comparison operators (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq = 0,
    /// `!=`
    Neq = 1,
    /// `<=`
    Lte = 3,
    /// `>=`
    Gte = 5,
}

/// What a rule does with a packet once everything before it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through this chain (later tables still see it).
    Accept,
    /// Discard silently.
    Drop,
    /// Evaluate a regular chain, then come back.
    Jump(String),
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Load packet metadata into a register.
    Meta {
        /// What to load.
        key: MetaKey,
        /// Destination register.
        dreg: u32,
    },
    /// Load `len` bytes at `offset` of a header into a register.
    Payload {
        /// Header the offset counts from.
        base: Base,
        /// Byte offset.
        offset: u32,
        /// Bytes to load.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// Compare a register with constant bytes; stop the rule if false.
    Cmp {
        /// Source register.
        sreg: u32,
        /// Operator.
        op: CmpOp,
        /// Constant, in packet byte order.
        data: Vec<u8>,
    },
    /// `reg = (reg & mask) ^ xor`.
    Bitwise {
        /// Source and destination register.
        reg: u32,
        /// Mask.
        mask: Vec<u8>,
        /// Xor.
        xor: Vec<u8>,
    },
    /// Is the register's value in a named set?
    Lookup {
        /// Set name.
        set: String,
        /// Source register.
        sreg: u32,
    },
    /// Count into a named counter object (`counter name "x"`).
    CounterRef(String),
    /// An anonymous counter on the rule.
    Counter,
    /// Packet-rate limit; with `over`, matches packets *above* the rate.
    Limit {
        /// Packets per `unit_s`.
        rate: u64,
        /// Rate unit in seconds.
        unit_s: u64,
        /// Extra packets allowed at once.
        burst: u32,
        /// Match when over the rate (`limit rate over`).
        over: bool,
    },
    /// Add or update the register's value in a set, with a per-element
    /// stateful expression (a meter): `update @set { key limit rate over … }`.
    Dynset {
        /// Set name.
        set: String,
        /// Register holding the key.
        sreg_key: u32,
        /// Element timeout in ms (refreshed on every update); 0 uses the set's.
        timeout_ms: u64,
        /// The per-element expression (e.g. [`Expr::Limit`]).
        expr: Box<Expr>,
    },
    /// Load the connection tracking state bits.
    CtState {
        /// Destination register.
        dreg: u32,
    },
    /// Log the packet with a prefix (kernel log, or NFLOG group).
    Log {
        /// Text before the packet summary.
        prefix: String,
        /// NFLOG group, or None for the kernel log.
        group: Option<u16>,
    },
    /// Set the verdict.
    Verdict(Verdict),
}

fn data_value(v: &[u8]) -> Attrs {
    Attrs::new().bytes(NFTA_DATA_VALUE, v)
}

impl Expr {
    /// The expression's kernel name and attributes.
    fn encode(&self) -> (&'static str, Attrs) {
        match self {
            Expr::Meta { key, dreg } => ("meta", Attrs::new().u32(2, *key as u32).u32(1, *dreg)),
            Expr::Payload { base, offset, len, dreg } => {
                ("payload", Attrs::new().u32(1, *dreg).u32(2, *base as u32).u32(3, *offset).u32(4, *len))
            }
            Expr::Cmp { sreg, op, data } => {
                ("cmp", Attrs::new().u32(1, *sreg).u32(2, *op as u32).nested(3, data_value(data)))
            }
            Expr::Bitwise { reg, mask, xor } => (
                "bitwise",
                Attrs::new()
                    .u32(1, *reg)
                    .u32(2, *reg)
                    .u32(3, mask.len() as u32)
                    .nested(4, data_value(mask))
                    .nested(5, data_value(xor)),
            ),
            Expr::Lookup { set, sreg } => ("lookup", Attrs::new().str(1, set).u32(2, *sreg)),
            // NFTA_OBJREF_IMM_TYPE = NFT_OBJECT_COUNTER (1), NFTA_OBJREF_IMM_NAME.
            Expr::CounterRef(name) => ("objref", Attrs::new().u32(1, 1).str(2, name)),
            Expr::Counter => ("counter", Attrs::new().u64(1, 0).u64(2, 0)),
            Expr::Limit { rate, unit_s, burst, over } => (
                "limit",
                // RATE, UNIT, BURST, TYPE = NFT_LIMIT_PKTS, FLAGS = NFT_LIMIT_F_INV for "over".
                Attrs::new().u64(1, *rate).u64(2, *unit_s).u32(3, *burst).u32(4, 0).u32(5, u32::from(*over)),
            ),
            Expr::Dynset { set, sreg_key, timeout_ms, expr } => {
                // NFTA_DYNSET_SET_NAME, OP = NFT_DYNSET_OP_UPDATE, SREG_KEY, TIMEOUT, EXPR.
                let mut a = Attrs::new().str(1, set).u32(3, 1).u32(4, *sreg_key);
                if *timeout_ms > 0 {
                    a = a.u64(6, *timeout_ms);
                }
                ("dynset", a.nested(7, expr.element()))
            }
            // NFTA_CT_DREG, NFTA_CT_KEY = NFT_CT_STATE (0).
            Expr::CtState { dreg } => ("ct", Attrs::new().u32(1, *dreg).u32(2, 0)),
            Expr::Log { prefix, group } => {
                // NFTA_LOG_GROUP (be16), NFTA_LOG_PREFIX.
                let mut a = Attrs::new();
                if let Some(g) = group {
                    a = a.bytes(1, &g.to_be_bytes());
                }
                ("log", a.str(2, prefix))
            }
            Expr::Verdict(v) => {
                let verdict = match v {
                    Verdict::Accept => Attrs::new().u32(NFTA_VERDICT_CODE, 1),
                    Verdict::Drop => Attrs::new().u32(NFTA_VERDICT_CODE, 0),
                    Verdict::Jump(chain) => {
                        Attrs::new().u32(NFTA_VERDICT_CODE, (-3i32) as u32).str(NFTA_VERDICT_CHAIN, chain)
                    }
                };
                (
                    "immediate",
                    Attrs::new().u32(1, REG_VERDICT).nested(2, Attrs::new().nested(NFTA_DATA_VERDICT, verdict)),
                )
            }
        }
    }

    /// `NFTA_EXPR_NAME` + `NFTA_EXPR_DATA`: the body of one list element.
    pub fn element(&self) -> Attrs {
        let (name, data) = self.encode();
        Attrs::new().str(NFTA_EXPR_NAME, name).nested(NFTA_EXPR_DATA, data)
    }

    /// A whole rule body: each expression as an `NFTA_LIST_ELEM`.
    pub fn list(exprs: &[Expr]) -> Attrs {
        exprs.iter().fold(Attrs::new(), |a, e| a.nested(NFTA_LIST_ELEM, e.element()))
    }
}

/// `NFTA_SET_EXPR`: one stateful expression every element of a set gets
/// (nft's `set s { …; counter; }`).
pub const NFTA_SET_EXPR: u16 = 17;
/// `NFTA_SET_ELEM_EXPR`: the kernel's dump of an element's only expression.
pub const NFTA_SET_ELEM_EXPR: u16 = 7;
/// `NFTA_SET_ELEM_EXPRESSIONS`: the dump when a set has several expressions.
pub const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

/// The `NFTA_SET_EXPR` body for a per-element counter, byte for byte what
/// `nft add set … { counter; }` sends (nft 1.0.6): the name and an empty
/// data nest. The kernel then gives each element its own counter, which a
/// lookup that matches the element increments; a GETSETELEM dump reports it.
pub fn set_counter() -> Attrs {
    Attrs::new().str(NFTA_EXPR_NAME, "counter").nested(NFTA_EXPR_DATA, Attrs::new())
}

/// What an element's counter holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValue {
    /// Packets that matched the element.
    pub packets: u64,
    /// Their bytes (network layer and up, as nft counts).
    pub bytes: u64,
}

/// Reads the counter out of an element attribute of type `ty`
/// ([`NFTA_SET_ELEM_EXPR`] or [`NFTA_SET_ELEM_EXPRESSIONS`]); `Ok(None)` for
/// any other attribute or an element without a counter. Truncated or
/// malformed nests are an error, never a panic and never a made-up zero.
pub fn element_counter(ty: u16, value: &[u8]) -> Result<Option<CounterValue>, crate::NlError> {
    match ty {
        NFTA_SET_ELEM_EXPR => one_counter(value),
        NFTA_SET_ELEM_EXPRESSIONS => {
            for (t, e) in crate::parse_attrs_strict(value, "element expressions")? {
                if t != NFTA_LIST_ELEM {
                    return Err(crate::NlError::Protocol(format!("element expressions: attribute {t} in the list")));
                }
                if let Some(c) = one_counter(e)? {
                    return Ok(Some(c));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// `{NFTA_EXPR_NAME, NFTA_EXPR_DATA}`: the counter's values if it is one.
fn one_counter(value: &[u8]) -> Result<Option<CounterValue>, crate::NlError> {
    let attrs = crate::parse_attrs_strict(value, "element expression")?;
    let name = attrs.iter().find(|(t, _)| *t == NFTA_EXPR_NAME).map(|(_, v)| crate::c_str(v));
    match name.as_deref() {
        Some("counter") => {}
        Some(_) => return Ok(None),
        None => return Err(crate::NlError::Protocol("element expression without a name".into())),
    }
    let data = attrs
        .iter()
        .find(|(t, _)| *t == NFTA_EXPR_DATA)
        .ok_or_else(|| crate::NlError::Protocol("element counter without data".into()))?;
    let (mut packets, mut bytes) = (None, None);
    for (t, v) in crate::parse_attrs_strict(data.1, "element counter")? {
        match t {
            NFTA_COUNTER_BYTES => bytes = Some(crate::be_u64_exact(v, "element counter bytes")?),
            NFTA_COUNTER_PACKETS => packets = Some(crate::be_u64_exact(v, "element counter packets")?),
            _ => {}
        }
    }
    match (packets, bytes) {
        (Some(packets), Some(bytes)) => Ok(Some(CounterValue { packets, bytes })),
        _ => Err(crate::NlError::Protocol("element counter without packets or bytes".into())),
    }
}

/// The netfilter protocol number of a family (`NFPROTO_IPV4`/`NFPROTO_IPV6`).
fn nfproto(fam: Fam) -> u8 {
    match fam {
        Fam::V4 => 2,
        Fam::V6 => 10,
    }
}

/// Which address of the packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Source address.
    Saddr,
    /// Destination address.
    Daddr,
}

/// `meta nfproto ipv4|ipv6` — needed before reading addresses in an inet table.
pub fn match_family(fam: Fam) -> Vec<Expr> {
    vec![
        Expr::Meta { key: MetaKey::NfProto, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![nfproto(fam)] },
    ]
}

/// Loads the source or destination address into `REG_1`.
pub fn load_addr(fam: Fam, dir: Dir) -> Expr {
    let offset = match (fam, dir) {
        (Fam::V4, Dir::Saddr) => 12,
        (Fam::V4, Dir::Daddr) => 16,
        (Fam::V6, Dir::Saddr) => 8,
        (Fam::V6, Dir::Daddr) => 24,
    };
    Expr::Payload { base: Base::Network, offset, len: fam.addr_len(), dreg: REG_1 }
}

/// `ether saddr @set`: the frame's source MAC in a set of `ether_addr`.
/// Like nft, it first checks `meta iiftype ether`, so the link-layer
/// header read is an Ethernet one (hooks without one do not match).
pub fn ether_saddr_in_set(set: &str) -> Vec<Expr> {
    vec![
        Expr::Meta { key: MetaKey::IifType, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: 1u16.to_ne_bytes().to_vec() },
        Expr::Payload { base: Base::LinkLayer, offset: 6, len: 6, dreg: REG_1 },
        Expr::Lookup { set: set.into(), sreg: REG_1 },
    ]
}

/// `iifname "name"`: the frame came in on this interface.
pub fn iifname_is(name: &str) -> Vec<Expr> {
    let mut data = [0u8; 16];
    let n = name.len().min(15);
    data[..n].copy_from_slice(&name.as_bytes()[..n]);
    vec![
        Expr::Meta { key: MetaKey::IifName, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: data.to_vec() },
    ]
}

/// `ip saddr @set` / `ip6 daddr @set` …
pub fn addr_in_set(fam: Fam, dir: Dir, set: &str) -> Vec<Expr> {
    let mut v = match_family(fam);
    v.push(load_addr(fam, dir));
    v.push(Expr::Lookup { set: set.into(), sreg: REG_1 });
    v
}

/// `meta l4proto N`.
pub fn match_l4proto(proto: u8) -> Vec<Expr> {
    vec![Expr::Meta { key: MetaKey::L4Proto, dreg: REG_1 }, Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![proto] }]
}

/// `tcp flags & (fin|syn|rst|ack) == syn`: a connection opening, not a retransmit of anything else.
pub fn tcp_syn_only() -> Vec<Expr> {
    let mut v = match_l4proto(6);
    v.push(Expr::Payload { base: Base::Transport, offset: 13, len: 1, dreg: REG_1 });
    v.push(Expr::Bitwise { reg: REG_1, mask: vec![0x17], xor: vec![0] });
    v.push(Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![0x02] });
    v
}

/// `ct state new`.
pub fn ct_state_new() -> Vec<Expr> {
    vec![
        Expr::CtState { dreg: REG_1 },
        // IP_CT_NEW is bit 3 of the state bitmask; ct state is host-endian u32.
        Expr::Bitwise { reg: REG_1, mask: 8u32.to_ne_bytes().to_vec(), xor: vec![0; 4] },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Neq, data: vec![0; 4] },
    ]
}

/// `th dport lo-hi` (any transport with ports at offset 2).
pub fn dport_range(lo: u16, hi: u16) -> Vec<Expr> {
    let mut v = vec![Expr::Payload { base: Base::Transport, offset: 2, len: 2, dreg: REG_1 }];
    if lo == hi {
        v.push(Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: lo.to_be_bytes().to_vec() });
    } else {
        v.push(Expr::Cmp { sreg: REG_1, op: CmpOp::Gte, data: lo.to_be_bytes().to_vec() });
        v.push(Expr::Cmp { sreg: REG_1, op: CmpOp::Lte, data: hi.to_be_bytes().to_vec() });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{be_u32, be_u64, c_str, parse_attrs};

    fn attrs(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        parse_attrs(b).map(|(t, v)| (t, v.to_vec())).collect()
    }

    /// One element of `nft list set` after three pings, as this machine's
    /// kernel (6.18) dumped it: key 10.0.0.1, `NFTA_SET_ELEM_EXPR` {counter
    /// bytes 252 packets 3}, timeout, expiration, comment "x".
    const DUMPED_ELEMENT: &str = "0c000100080001000a0000012c0007000c000100636f756e746572001c0002000c00010000000000000000fc0c00020000000000000000030c000400000000000036ee800c000500000000000036af680800060000027800";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn the_kernels_element_counter_is_read() {
        let el = hex(DUMPED_ELEMENT);
        let attrs = crate::parse_attrs_strict(&el, "element").unwrap();
        let (ty, v) = attrs[1];
        assert_eq!(ty, NFTA_SET_ELEM_EXPR);
        assert_eq!(element_counter(ty, v).unwrap(), Some(CounterValue { packets: 3, bytes: 252 }));
        // The list form (a set with several expressions) holds the same nest.
        let list = Attrs::new().nested(NFTA_LIST_ELEM, Attrs::new().str(1, "limit")).bytes(NFTA_LIST_ELEM, v);
        assert_eq!(
            element_counter(NFTA_SET_ELEM_EXPRESSIONS, list.as_bytes()).unwrap(),
            Some(CounterValue { packets: 3, bytes: 252 })
        );
        assert_eq!(element_counter(4, attrs[2].1).unwrap(), None, "a timeout is no counter");
    }

    #[test]
    fn a_truncated_counter_is_an_error_at_every_cut() {
        let el = hex(DUMPED_ELEMENT);
        let v = crate::parse_attrs_strict(&el, "element").unwrap()[1].1.to_vec();
        for cut in 0..v.len() {
            assert!(element_counter(NFTA_SET_ELEM_EXPR, &v[..cut]).is_err(), "cut at {cut} accepted");
        }
        // A 4-byte packet count is refused, not read as 0.
        let short = Attrs::new()
            .str(NFTA_EXPR_NAME, "counter")
            .nested(NFTA_EXPR_DATA, Attrs::new().u64(NFTA_COUNTER_BYTES, 1).u32(NFTA_COUNTER_PACKETS, 1));
        assert!(element_counter(NFTA_SET_ELEM_EXPR, short.as_bytes()).is_err());
    }

    #[test]
    fn the_set_counter_is_what_nft_sends() {
        // nft --debug=mnl add set … { counter; }: 00020|N-|00017 { 00012|--|00001 "counter", 00004|N-|00002 }
        assert_eq!(set_counter().as_bytes(), &hex("0c000100636f756e7465720004000280")[..]);
    }

    proptest::proptest! {
        #[test]
        fn hostile_element_expressions_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = element_counter(NFTA_SET_ELEM_EXPR, &bytes);
            let _ = element_counter(NFTA_SET_ELEM_EXPRESSIONS, &bytes);
        }
    }

    #[test]
    fn payload_matches_libnftnl_layout() {
        // [ payload load 4b @ network header + 12 => reg 1 ]
        let e = load_addr(Fam::V4, Dir::Saddr).element();
        let top = attrs(e.as_bytes());
        assert_eq!(top[0], (1, b"payload\0".to_vec()));
        let data = attrs(&top[1].1);
        let vals: Vec<(u16, u32)> = data.iter().map(|(t, v)| (*t, be_u32(v))).collect();
        assert_eq!(vals, vec![(1, 1), (2, 1), (3, 12), (4, 4)]);
    }

    #[test]
    fn limit_over_sets_the_invert_flag_and_packets_type() {
        let (name, a) = Expr::Limit { rate: 100, unit_s: 1, burst: 20, over: true }.encode();
        assert_eq!(name, "limit");
        let v = attrs(a.as_bytes());
        assert_eq!(be_u64(&v[0].1), 100);
        assert_eq!(be_u64(&v[1].1), 1);
        assert_eq!(be_u32(&v[2].1), 20);
        assert_eq!(be_u32(&v[3].1), 0);
        assert_eq!(be_u32(&v[4].1), 1);
    }

    #[test]
    fn dynset_nests_the_meter_expression() {
        let d = Expr::Dynset {
            set: "syn4".into(),
            sreg_key: REG_1,
            timeout_ms: 60_000,
            expr: Box::new(Expr::Limit { rate: 5, unit_s: 1, burst: 5, over: true }),
        };
        let (_, a) = d.encode();
        let v = attrs(a.as_bytes());
        assert_eq!(c_str(&v[0].1), "syn4");
        assert_eq!((v[1].0, be_u32(&v[1].1)), (3, 1), "op update");
        assert_eq!((v[3].0, be_u64(&v[3].1)), (6, 60_000));
        assert_eq!(v[4].0, 7);
        let inner = attrs(&v[4].1);
        assert_eq!(c_str(&inner[0].1), "limit");
    }

    #[test]
    fn jump_verdict_is_minus_three_with_chain_name() {
        let (_, a) = Expr::Verdict(Verdict::Jump("guard".into())).encode();
        let v = attrs(a.as_bytes());
        assert_eq!(be_u32(&v[0].1), REG_VERDICT);
        let data = attrs(&v[1].1);
        let verdict = attrs(&data[0].1);
        assert_eq!(be_u32(&verdict[0].1) as i32, -3);
        assert_eq!(c_str(&verdict[1].1), "guard");
    }

    #[test]
    fn rule_list_wraps_each_expression_in_a_list_element() {
        let l = Expr::list(&addr_in_set(Fam::V6, Dir::Daddr, "block6_admin"));
        let elems = attrs(l.as_bytes());
        assert_eq!(elems.len(), 4);
        assert!(elems.iter().all(|(t, _)| *t == 1));
        let names: Vec<String> = elems.iter().map(|(_, v)| c_str(&attrs(v)[0].1)).collect();
        assert_eq!(names, ["meta", "cmp", "payload", "lookup"]);
        // ip6 daddr is 16 bytes at offset 24.
        let payload = attrs(&attrs(&elems[2].1)[1].1);
        assert_eq!((be_u32(&payload[2].1), be_u32(&payload[3].1)), (24, 16));
    }

    #[test]
    fn port_range_uses_gte_and_lte_and_single_port_eq() {
        let r = dport_range(20, 30);
        assert!(matches!(r[1], Expr::Cmp { op: CmpOp::Gte, .. }));
        assert!(matches!(r[2], Expr::Cmp { op: CmpOp::Lte, .. }));
        assert_eq!(dport_range(22, 22).len(), 2);
    }
}
