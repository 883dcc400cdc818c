//! Property tests of [`key_slot`] and [`slot_tag`]: `key_slot` agrees with
//! an independent reference (bitwise CRC16/XMODEM and the hash-tag rule as
//! Redis's `keyHashSlot` states it) on arbitrary byte strings, brace-heavy
//! ones included, and a key whose first hash tag is `slot_tag(s)` is in
//! slot `s` whatever surrounds it.

use proptest::prelude::*;

use super::*;
use crate::prop_values::config;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection), one
/// bit at a time.
fn reference_crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Redis's `keyHashSlot`: find the first `{`; if there is none, or no `}`
/// after it, or the first `}` after it comes right after it, hash the whole
/// key; otherwise hash what lies between them. The slot is the low 14 bits.
fn reference_slot(key: &[u8]) -> u16 {
    let whole = reference_crc16(key) & 0x3FFF;
    let Some(open) = (0..key.len()).find(|&i| key[i] == b'{') else {
        return whole;
    };
    let Some(close) = (open + 1..key.len()).find(|&j| key[j] == b'}') else {
        return whole;
    };
    if close == open + 1 {
        return whole;
    }
    reference_crc16(&key[open + 1..close]) & 0x3FFF
}

/// Bytes that matter to the rule (braces) mixed with ordinary and binary
/// ones.
fn key_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'{'),
        3 => Just(b'}'),
        3 => proptest::sample::select(b"abc01:".to_vec()),
        1 => Just(0u8),
        1 => Just(0xff_u8),
        2 => any::<u8>(),
    ]
}

/// The reference itself gives the slots a Redis 7.0 server gave (the
/// module's table tests), so agreeing with it means agreeing with Redis.
#[test]
fn the_reference_matches_redis() {
    let cases: &[(&[u8], u16)] = &[
        (b"123456789", 12739),
        (b"foo", 12182),
        (b"{user1000}.following", 3443),
        (b"foo{}{bar}", 8363),
        (b"foo{{bar}}zap", 4015),
        (b"}{a}", 15495),
        (b"\xff", 7920),
        (b"x{\xff\xfe}y", 3374),
        (b"", 0),
    ];
    for &(key, slot) in cases {
        assert_eq!(
            reference_slot(key),
            slot,
            "{:?}",
            key.escape_ascii().to_string()
        );
    }
}

proptest! {
    #![proptest_config(config())]

    /// `key_slot` equals the reference on arbitrary keys dense in braces.
    #[test]
    fn key_slot_matches_the_reference(key in proptest::collection::vec(key_byte(), 0..48)) {
        prop_assert_eq!(key_slot(&key), reference_slot(&key));
        prop_assert!(key_slot(&key) < SLOT_COUNT);
    }

    /// `key_slot` equals the reference on arbitrary bytes of any length up
    /// to 1 KiB.
    #[test]
    fn key_slot_matches_the_reference_on_any_bytes(
        key in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        prop_assert_eq!(key_slot(&key), reference_slot(&key));
    }

    /// A key whose first hash tag is `slot_tag(s)` lives in slot `s`,
    /// whatever precedes the tag (without a `{`) and whatever follows it.
    #[test]
    fn slot_tag_decides_the_slot(
        slot in 0..SLOT_COUNT,
        prefix in proptest::collection::vec(key_byte().prop_filter("no {", |b| *b != b'{'), 0..16),
        suffix in proptest::collection::vec(key_byte(), 0..16),
    ) {
        let mut key = prefix;
        key.push(b'{');
        key.extend_from_slice(slot_tag(slot).as_bytes());
        key.push(b'}');
        key.extend_from_slice(&suffix);
        prop_assert_eq!(key_slot(&key), slot);
        prop_assert_eq!(reference_slot(&key), slot);
    }
}
