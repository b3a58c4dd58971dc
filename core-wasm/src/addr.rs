//! Addresses as integers, and the index space the allocator searches.
//!
//! Every address is a `u128` tagged with its family, so IPv4 and IPv6 share one code path.
//! Parsing is Whereabouts-compatible: IPv4 octets with leading zeros are read as decimal
//! (`00192.00168.1.0` is `192.168.1.0`, as Go's `ParseIPSloppy` does), which std's and
//! `ipnet`'s strict parsers reject — hence this small parser instead of a crate.
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

/// Parses an address; `None` when it is not one.
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
