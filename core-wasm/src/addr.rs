//! Addresses as integers, and the index space the allocator searches.
//!
//! Every address is a `u128` tagged with its family, so IPv4 and IPv6 share one code path.
//! Two kinds of parsing: [`parse_go_ip`]/[`parse_go_cidr`] read what users write exactly as
//! Whereabouts' Go does (k8s.io/utils' sloppy parser, where `00192.00168.1.0` is `192.168.1.0`,
//! or Go's strict `net.ParseIP`; 16-byte values where IPv4 lives in `::ffff:0:0/96`), and
//! [`parse_address`]/[`parse_cidr`] read the canonical text of a normalised config.
//!
//! The *index space* removes the addresses the allocator never hands out for structural
//! reasons: for IPv4, every address whose last octet is 0. Index `i` ↔ address
//! `(i / 255) << 8 | (i % 255 + 1)`. In index space the allocatable addresses of a range are
//! contiguous apart from excludes and allocations, so "lowest free" is one interval lookup
//! instead of a walk that hops over every `.0`.

use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The all-ones address of the family.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }
}

/// Parses an address in canonical or near-canonical form (what [`crate::config`] writes into a
/// normalised config); `None` when it is not one. Reading what users wrote is
/// [`parse_go_ip`]'s job.
pub fn parse_address(text: &str) -> Option<(Family, u128)> {
    let text = text.trim();
    if text.contains(':') {
        return text.parse::<Ipv6Addr>().ok().map(|a| (Family::V6, u128::from(a)));
    }
    let mut value: u32 = 0;
    let mut parts = 0;
    for part in text.split('.') {
        if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let octet: u32 = part.parse().ok()?;
        if octet > 255 {
            return None;
        }
        value = (value << 8) | octet;
        parts += 1;
    }
    (parts == 4).then_some((Family::V4, value as u128))
}

pub fn format_address(family: Family, value: u128) -> String {
    match family {
        Family::V4 => Ipv4Addr::from(value as u32).to_string(),
        Family::V6 => Ipv6Addr::from(value).to_string(),
    }
}

/// Parses `address/prefix`; the address keeps its host bits.
pub fn parse_cidr(text: &str) -> Option<(Family, u128, u32)> {
    let (address, prefix) = text.trim().split_once('/')?;
    let (family, value) = parse_address(address)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    (prefix <= family.bits()).then_some((family, value, prefix))
}

/// How Go reads an address: Whereabouts uses both parsers, for different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoParser {
    /// k8s.io/utils `ParseIPSloppy`/`ParseCIDRSloppy`: Go 1.16's parser, kept because Go 1.17
    /// started rejecting leading zeros. Decimal IPv4 fields and hexadecimal IPv6 groups may carry
    /// any number of leading zeros (`000000192.168.1.25`, `fd00::00001`).
    Sloppy,
    /// Go's own `net.ParseIP`/`net.ParseCIDR`, built on netip in the Go 1.25 Whereabouts is
    /// built with: no leading zero in an IPv4 field, at most four digits in an IPv6 group, no
    /// zone.
    Strict,
}

/// The IPv4-mapped block `::ffff:0:0/96`. Go's `net.IP` keeps every IPv4 address in it (16 bytes,
/// `::ffff:a.b.c.d`), and treats every address in it as IPv4 (`To4()` succeeds), whatever text it
/// was parsed from.
pub const IPV4_MAPPED_FIRST: u128 = 0xffff << 32;
pub const IPV4_MAPPED_LAST: u128 = IPV4_MAPPED_FIRST | u32::MAX as u128;

/// An address in Go's 16-byte form.
pub fn to_go16(family: Family, value: u128) -> u128 {
    match family {
        Family::V4 => IPV4_MAPPED_FIRST | value,
        Family::V6 => value,
    }
}

/// The family Go sees in a 16-byte address: IPv4 inside `::ffff:0:0/96`, IPv6 elsewhere.
pub fn from_go16(value: u128) -> (Family, u128) {
    if (IPV4_MAPPED_FIRST..=IPV4_MAPPED_LAST).contains(&value) {
        (Family::V4, value & u32::MAX as u128)
    } else {
        (Family::V6, value)
    }
}

/// Go's dotted-quad reader: exactly four decimal fields, each at most 255.
fn parse_go_ipv4(text: &[u8], parser: GoParser) -> Option<u32> {
    let mut rest = text;
    let mut value = 0u32;
    for field in 0..4 {
        if field > 0 {
            rest = rest.strip_prefix(b".")?;
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || (parser == GoParser::Strict && digits > 1 && rest[0] == b'0') {
            return None;
        }
        let mut octet = 0u32;
        for &digit in &rest[..digits] {
            octet = octet * 10 + u32::from(digit - b'0');
            if octet > 255 {
                return None;
            }
        }
        value = (value << 8) | octet;
        rest = &rest[digits..];
    }
    rest.is_empty().then_some(value)
}

/// Go's IPv6 reader: hexadecimal groups, one `::`, an optional dotted quad in the last 32 bits.
fn parse_go_ipv6(text: &[u8], parser: GoParser) -> Option<u128> {
    let mut bytes = [0u8; 16];
    let mut ellipsis = None;
    let mut rest = text;
    if rest.starts_with(b"::") {
        ellipsis = Some(0);
        rest = &rest[2..];
        if rest.is_empty() {
            return Some(0);
        }
    }
    let mut filled = 0;
    while filled < 16 {
        let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || (parser == GoParser::Strict && digits > 4) {
            return None;
        }
        let mut group = 0u32;
        for &digit in &rest[..digits] {
            group = group * 16 + char::from(digit).to_digit(16)?;
            if group > 0xffff {
                return None;
            }
        }
        if rest.get(digits) == Some(&b'.') {
            // A dotted quad replaces the last two groups, or ends a `::` form.
            if (ellipsis.is_none() && filled != 12) || filled + 4 > 16 {
                return None;
            }
            let v4 = parse_go_ipv4(rest, parser)?;
            bytes[filled..filled + 4].copy_from_slice(&v4.to_be_bytes());
            rest = &[];
            filled += 4;
            break;
        }
        bytes[filled..filled + 2].copy_from_slice(&(group as u16).to_be_bytes());
        filled += 2;
        rest = &rest[digits..];
        if rest.is_empty() {
            break;
        }
        if rest[0] != b':' || rest.len() == 1 {
            return None;
        }
        rest = &rest[1..];
        if rest[0] == b':' {
            if ellipsis.is_some() {
                return None;
            }
            ellipsis = Some(filled);
            rest = &rest[1..];
            if rest.is_empty() {
                break;
            }
        }
    }
    if !rest.is_empty() {
        return None;
    }
    if filled < 16 {
        let at = ellipsis?;
        let gap = 16 - filled;
        bytes.copy_within(at..filled, at + gap);
        bytes[at..at + gap].fill(0);
    } else if ellipsis.is_some() {
        return None; // `::` must stand for at least one group
    }
    Some(u128::from_be_bytes(bytes))
}

/// Go's `ParseIP` (sloppy or strict), in the 16-byte form. The first `.` or `:` decides the
/// family; no trimming, so `" 10.0.0.1"` is not an address.
pub fn parse_go_ip(text: &str, parser: GoParser) -> Option<u128> {
    let bytes = text.as_bytes();
    match bytes.iter().find(|b| **b == b'.' || **b == b':')? {
        b'.' => parse_go_ipv4(bytes, parser).map(|v4| to_go16(Family::V4, u128::from(v4))),
        _ => parse_go_ipv6(bytes, parser),
    }
}

/// `address/prefix` as Go's `ParseCIDR` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoCidr {
    /// The address before the slash, host bits kept, 16-byte form.
    pub address: u128,
    /// 32 when the address was written as a dotted quad, 128 otherwise (`::ffff:10.0.0.0/120`
    /// has a 128-bit mask).
    pub bits: u32,
    pub prefix: u32,
}

impl GoCidr {
    /// The network as Go's `IPNet.String()` and `IPNet.Contains` see it: a 128-bit mask over an
    /// IPv4-mapped address that keeps it mapped (prefix ≥ 96) is an IPv4 network of prefix − 96
    /// (`::ffff:10.0.0.0/120` is `10.0.0.0/24`); a shorter one leaves an IPv6 network
    /// (`::ffff:10.0.0.5/90` is `::ffc0:0:0/90`).
    pub fn network(&self) -> (Family, u128, u32) {
        if self.bits == 32 {
            let v4 = self.address & u32::MAX as u128;
            return (Family::V4, v4 & !host_mask(Family::V4, self.prefix), self.prefix);
        }
        let masked = self.address & !host_mask(Family::V6, self.prefix);
        match from_go16(masked) {
            (Family::V4, v4) => (Family::V4, v4, self.prefix - 96),
            (Family::V6, v6) => (Family::V6, v6, self.prefix),
        }
    }
}

/// Go's `ParseCIDR` (sloppy or strict). The prefix is decimal and may have leading zeros in
/// both (`/024`: Go's `dtoi`).
pub fn parse_go_cidr(text: &str, parser: GoParser) -> Option<GoCidr> {
    let (address, prefix) = text.split_once('/')?;
    let (address, bits) = match parse_go_ipv4(address.as_bytes(), parser) {
        Some(v4) => (to_go16(Family::V4, u128::from(v4)), 32),
        None => (parse_go_ipv6(address.as_bytes(), parser)?, 128),
    };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix = prefix.bytes().try_fold(0u32, |n, digit| {
        let n = n * 10 + u32::from(digit - b'0');
        (n <= bits).then_some(n)
    })?;
    Some(GoCidr { address, bits, prefix })
}

/// The host-bit mask of a prefix (e.g. 0xff for an IPv4 /24).
pub fn host_mask(family: Family, prefix: u32) -> u128 {
    let host_bits = family.bits() - prefix;
    if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
}

/// Address → index; `None` for addresses that have no index (IPv4 `.0`).
pub fn to_index(family: Family, address: u128) -> Option<u128> {
    match family {
        Family::V6 => Some(address),
        Family::V4 => {
            let low = address & 0xff;
            (low != 0).then(|| (address >> 8) * 255 + low - 1)
        }
    }
}

pub fn from_index(family: Family, index: u128) -> u128 {
    match family {
        Family::V6 => index,
        Family::V4 => ((index / 255) << 8) | (index % 255 + 1),
    }
}

/// The indices of the indexable addresses in `[first, last]`, or `None` if there are none.
pub fn index_span(family: Family, first: u128, last: u128) -> Option<(u128, u128)> {
    if first > last {
        return None;
    }
    let (first, last) = match family {
        Family::V6 => (first, last),
        Family::V4 => {
            let first = if first & 0xff == 0 { first + 1 } else { first };
            let last = if last & 0xff == 0 {
                if last == 0 {
                    return None;
                }
                last - 1
            } else {
                last
            };
            if first > last {
                return None;
            }
            (first, last)
        }
    };
    Some((to_index(family, first)?, to_index(family, last)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_with_leading_zeros_is_decimal_like_whereabouts() {
        assert_eq!(
            parse_address("00192.00168.1.010"),
            Some((Family::V4, u32::from(Ipv4Addr::new(192, 168, 1, 10)) as u128))
        );
        assert_eq!(parse_address("256.0.0.1"), None);
        assert_eq!(parse_address("1.2.3"), None);
        assert_eq!(parse_address("1.2.3.4.5"), None);
        assert_eq!(parse_address(""), None);
        assert_eq!(parse_address("fd00::1"), Some((Family::V6, 0xfd00_u128 << 112 | 1)));
    }

    #[test]
    fn cidr_parsing_checks_the_prefix_length() {
        assert_eq!(parse_cidr("10.0.0.5/24"), Some((Family::V4, 0x0a00_0005, 24)));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("10.0.0.0"), None);
        assert_eq!(parse_cidr("10.0.0.0/"), None);
        assert_eq!(parse_cidr("fd00::/129"), None);
        assert_eq!(parse_cidr("::/0"), Some((Family::V6, 0, 0)));
    }

    #[test]
    fn index_space_skips_ipv4_dot_zero_and_round_trips() {
        for address in [1u128, 2, 255, 257, 0x0a00_01ff, 0x0a00_0201, u32::MAX as u128] {
            let index = to_index(Family::V4, address).unwrap();
            assert_eq!(from_index(Family::V4, index), address);
        }
        assert_eq!(to_index(Family::V4, 0x0a00_0100), None);
        // .255 and the next .1 are adjacent in index space.
        assert_eq!(
            to_index(Family::V4, 0x0a00_01ff).unwrap() + 1,
            to_index(Family::V4, 0x0a00_0201).unwrap()
        );
        assert_eq!(index_span(Family::V4, 0x0a00_0100, 0x0a00_0100), None);
        assert_eq!(index_span(Family::V4, 0x0a00_0100, 0x0a00_0101).map(|(a, b)| b - a), Some(0));
        assert_eq!(index_span(Family::V6, 5, 9), Some((5, 9)));
    }
}
