//! Addresses as the appliance handles them: IPv4 or IPv6 ([`Fam`]), networks
//! ([`Cidr`], parsed strictly: host bits set is a typo, not a network), address
//! ranges as integers, and link-layer addresses ([`Mac`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// IPv4 or IPv6: the family of an address, a network, a rule or a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fam {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Fam {
    /// "4" or "6", for set names.
    pub fn digit(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }
    /// Address length in bytes.
    pub fn addr_len(self) -> u32 {
        match self {
            Fam::V4 => 4,
            Fam::V6 => 16,
        }
    }
}

/// An address with a prefix length (`192.0.2.0/24`, `2001:db8::/32`, or a bare address = /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// IPv4 or IPv6.
    pub fn fam(&self) -> Fam {
        match self.addr {
            IpAddr::V4(_) => Fam::V4,
            IpAddr::V6(_) => Fam::V6,
        }
    }

    fn bits(&self) -> u8 {
        if self.fam() == Fam::V4 {
            32
        } else {
            128
        }
    }

    /// First and last address as integers (inclusive).
    pub fn range(&self) -> (u128, u128) {
        let v = addr_u128(&self.addr);
        let host = self.bits() - self.prefix;
        let mask = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
        (v & !mask, (v & !mask) | mask)
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        if fam_of(addr) != self.fam() {
            return false;
        }
        let (lo, hi) = self.range();
        let v = addr_u128(addr);
        lo <= v && v <= hi
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.fam() != other.fam() {
            return false;
        }
        let (a, b) = self.range();
        let (c, d) = other.range();
        a <= d && c <= b
    }

    /// A single address as a /32 or /128.
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }
}

/// How many addresses of family `fam` the union of `nets` covers (overlaps
/// counted once; the whole IPv6 space saturates at `u128::MAX`). The
/// allowlist's breadth check needs the union: `0.0.0.0/1` + `128.0.0.0/1`
/// is no /0, yet it disables blocking just as well.
pub fn union_size(nets: &[Cidr], fam: Fam) -> u128 {
    let mut ranges: Vec<(u128, u128)> = nets.iter().filter(|c| c.fam() == fam).map(Cidr::range).collect();
    ranges.sort_unstable();
    let mut total: u128 = 0;
    let mut current: Option<(u128, u128)> = None;
    for (lo, hi) in ranges {
        match current {
            Some((clo, chi)) if lo <= chi.saturating_add(1) => current = Some((clo, chi.max(hi))),
            Some((clo, chi)) => {
                total = total.saturating_add((chi - clo).saturating_add(1));
                current = Some((lo, hi));
            }
            None => current = Some((lo, hi)),
        }
    }
    if let Some((clo, chi)) = current {
        total = total.saturating_add((chi - clo).saturating_add(1));
    }
    total
}

fn fam_of(a: &IpAddr) -> Fam {
    if a.is_ipv4() {
        Fam::V4
    } else {
        Fam::V6
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn addr_u128(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(*v) as u128,
        IpAddr::V6(v) => u128::from(*v),
    }
}

/// The address for an integer of family `fam`.
pub fn u128_addr(fam: Fam, v: u128) -> IpAddr {
    match fam {
        Fam::V4 => IpAddr::V4((v as u32).into()),
        Fam::V6 => IpAddr::V6(v.into()),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == self.bits() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Host bits must be zero (`192.0.2.1/24` is refused: it is usually a typo).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("prefix /{p} is not 0 to {max}")),
            },
        };
        let c = Cidr { addr, prefix };
        let (lo, _) = c.range();
        if lo != addr_u128(&addr) {
            return Err(format!("{s} has host bits set; did you mean {}/{prefix}?", u128_addr(c.fam(), lo)));
        }
        Ok(c)
    }
}

/// Sorts and merges overlapping or adjacent networks into inclusive ranges (one family).
pub fn merge(cidrs: &[Cidr]) -> Vec<(u128, u128)> {
    let mut r: Vec<(u128, u128)> = cidrs.iter().map(Cidr::range).collect();
    r.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Renders an inclusive range as a CIDR when it is one, else `a-b`.
pub fn range_text(fam: Fam, lo: u128, hi: u128) -> String {
    let size = hi.wrapping_sub(lo).wrapping_add(1);
    let bits: u32 = if fam == Fam::V4 { 32 } else { 128 };
    if size == 0 && lo == 0 {
        return format!("{}/0", u128_addr(fam, 0));
    }
    if size.is_power_of_two() && lo % size == 0 {
        let prefix = bits - size.trailing_zeros();
        return Cidr { addr: u128_addr(fam, lo), prefix: prefix as u8 }.to_string();
    }
    format!("{}-{}", u128_addr(fam, lo), u128_addr(fam, hi))
}

/// The network `addr/prefix` with host bits cleared (a prefix past the
/// family's width is taken as the full width).
pub fn network(addr: IpAddr, prefix: u8) -> Cidr {
    let fam = fam_of(&addr);
    let bits: u32 = if fam == Fam::V4 { 32 } else { 128 };
    let prefix = prefix.min(bits as u8);
    let v = addr_u128(&addr);
    let host_bits = bits - prefix as u32;
    let masked = if host_bits >= 128 { 0 } else { v >> host_bits << host_bits };
    Cidr { addr: u128_addr(fam, masked), prefix }
}

/// A link-layer (Ethernet) address.
pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`, lower case, as nft prints it.
pub fn mac_text(mac: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

/// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (two hex digits a byte).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_size_counts_overlaps_once_and_sees_split_halves() {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse::<Cidr>().unwrap()).collect::<Vec<_>>();
        assert_eq!(union_size(&nets(&["0.0.0.0/1", "128.0.0.0/1"]), Fam::V4), 1u128 << 32);
        assert_eq!(union_size(&nets(&["10.0.0.0/8", "10.1.0.0/16", "10.0.0.1"]), Fam::V4), 1u128 << 24);
        // Adjacent networks merge; a hole between two does not count.
        assert_eq!(union_size(&nets(&["192.0.2.0/25", "192.0.2.128/25"]), Fam::V4), 256);
        assert_eq!(union_size(&nets(&["192.0.2.0/24", "198.51.100.0/24"]), Fam::V4), 512);
        // Families are counted apart; the whole IPv6 space saturates.
        assert_eq!(union_size(&nets(&["::/1", "8000::/1", "192.0.2.0/24"]), Fam::V6), u128::MAX);
        assert_eq!(union_size(&nets(&["2001:db8::/32"]), Fam::V6), 1u128 << 96);
        assert_eq!(union_size(&[], Fam::V6), 0);
    }

    #[test]
    fn cidrs_parse_and_refuse_host_bits() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains(&"192.0.2.77".parse().unwrap()));
        assert!(!c.contains(&"198.51.100.1".parse().unwrap()));
        assert!(!c.contains(&"2001:db8::1".parse().unwrap()));
        assert_eq!("2001:db8::/32".parse::<Cidr>().unwrap().prefix, 32);
        assert_eq!("203.0.113.9".parse::<Cidr>().unwrap(), Cidr::host("203.0.113.9".parse().unwrap()));
        let e = "192.0.2.1/24".parse::<Cidr>().unwrap_err();
        assert!(e.contains("did you mean 192.0.2.0/24"), "{e}");
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }

    #[test]
    fn merge_joins_overlapping_and_adjacent_networks() {
        let cs: Vec<Cidr> = ["192.0.2.0/25", "192.0.2.128/25", "192.0.2.7", "198.51.100.0/24"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let m = merge(&cs);
        assert_eq!(m.len(), 2);
        assert_eq!(range_text(Fam::V4, m[0].0, m[0].1), "192.0.2.0/24");
        assert_eq!(range_text(Fam::V4, m[1].0, m[1].1), "198.51.100.0/24");
        assert_eq!(range_text(Fam::V4, 10, 12), "0.0.0.10-0.0.0.12");
        assert_eq!(range_text(Fam::V6, 1, 1), "::1");
    }

    #[test]
    fn overlap() {
        let a: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(a.overlaps(&"192.0.2.128/25".parse().unwrap()));
        assert!(a.overlaps(&"192.0.0.0/16".parse().unwrap()));
        assert!(!a.overlaps(&"198.51.100.0/24".parse().unwrap()));
    }

    #[test]
    fn macs_round_trip_and_malformed_ones_are_refused() {
        let m = parse_mac("02:00:00:00:0A:66").unwrap();
        assert_eq!(mac_text(&m), "02:00:00:00:0a:66");
        assert_eq!(parse_mac("02-00-00-00-0a-66"), Some(m));
        for bad in
            ["", "02:00:00:00:0a", "02:00:00:00:0a:66:01", "2:0:0:0:a:66", "zz:00:00:00:0a:66", "+2:00:00:00:0a:66"]
        {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
